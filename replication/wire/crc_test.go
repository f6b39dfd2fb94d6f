package wire

import (
	"hash/crc32"
	"math/rand/v2"
	"testing"
)

// crcCombine of the checksums of two pieces is the checksum of both, at
// every split of random data, the empty pieces included.
func TestCRCCombine(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{0, 1, 7, 64, 4096, 65537, 1 << 20} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want := crc32.Checksum(data, castagnoli)
		for _, cut := range []int{0, n / 3, n / 2, n} {
			a, b := data[:cut], data[cut:]
			got := crcCombine(crc32.Checksum(a, castagnoli), crc32.Checksum(b, castagnoli), len(b))
			if got != want {
				t.Fatalf("%d bytes cut at %d: %08x, want %08x", n, cut, got, want)
			}
		}
	}
}

func BenchmarkCRCCombine(b *testing.B) {
	for i := 0; i < b.N; i++ {
		crcCombine(uint32(i), 0x1234, 1<<20+4096)
	}
}
