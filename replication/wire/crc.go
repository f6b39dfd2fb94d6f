package wire

import "hash/crc32"

// crcCombine takes the CRC32C of two pieces back to back from the CRC32C of
// each: a frame's checksum is then taken without reading again a payload
// whose checksum is known (see AppendRecordsHeaderSums), and a receiver
// takes a payload's checksum and the frame's in one pass. The method is
// zlib's crc32_combine (multmodp, x2nmodp): the first checksum is
// multiplied by x^(8 len) modulo the polynomial, in the reflected bit
// order the CRC uses, and the second added.

// x2n holds x^(2^k) modulo the polynomial, for k < 32.
var x2n = func() (t [32]uint32) {
	p := uint32(1) << 30 // x^1
	t[0] = p
	for k := 1; k < 32; k++ {
		p = multModP(p, p)
		t[k] = p
	}
	return t
}()

// multModP is a*b modulo the polynomial.
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ crc32.Castagnoli // the polynomial, reflected
		} else {
			b >>= 1
		}
	}
	return p
}

// crcCombine returns the CRC32C of a followed by b, given crcA of a,
// crcB of b and b's length: crc32.Update(crcA, castagnoli, b) without b.
func crcCombine(crcA, crcB uint32, lenB int) uint32 {
	// p becomes x^(8 lenB), from x^0 by the bits of lenB, each x^(2^k).
	p := uint32(1) << 31
	for n, k := uint64(lenB), 3; n != 0; n, k = n>>1, k+1 {
		if n&1 != 0 {
			p = multModP(x2n[k&31], p)
		}
	}
	return multModP(p, crcA) ^ crcB
}
