package journal

import (
	"fmt"
	"hash/crc32"
	"runtime"
	"sync"

	"github.com/klauspost/compress/s2"
	"github.com/klauspost/compress/zstd"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
)

// Codec is how a write record's payload is stored.
type Codec uint8

const (
	CodecNone Codec = 0 // raw
	CodecS2   Codec = 1 // s2 block format (github.com/klauspost/compress/s2)
	CodecZstd Codec = 2 // one zstd frame without checksum
)

func (c Codec) String() string {
	switch c {
	case CodecNone:
		return "none"
	case CodecS2:
		return "s2"
	case CodecZstd:
		return "zstd"
	}
	return fmt.Sprintf("codec(%d)", uint8(c))
}

func (c Codec) valid() bool { return c <= CodecZstd }

// ParseCodec parses "none", "s2" or "zstd".
func ParseCodec(s string) (Codec, error) {
	for c := CodecNone; c.valid(); c++ {
		if c.String() == s {
			return c, nil
		}
	}
	return 0, fmt.Errorf("journal: unknown codec %q (want none, s2 or zstd)", s)
}

// Compressor turns write payloads into records, compressing each once. It is
// safe for concurrent use; call it from the goroutine that received the
// write, so compression runs in parallel.
type Compressor struct {
	codec Codec
	zenc  *zstd.Encoder // nil unless codec is CodecZstd; safe for concurrent EncodeAll
}

// NewCompressor returns a Compressor for codec.
func NewCompressor(codec Codec) *Compressor {
	c := &Compressor{codec: codec}
	if codec == CodecZstd {
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderCRC(false),
			zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)))
		if err != nil {
			panic("journal: zstd encoder: " + err.Error()) // only bad options fail
		}
		c.zenc = enc
	}
	return c
}

// Write returns a write record of data at off. The payload is compressed when
// that saves at least 1/32 of it, and stored raw otherwise: it never grows.
// Data that a sample says will not shrink by 1/8 is stored raw without
// trying (see worthCompressing).
// The record owns its payload (a pooled buffer, see Release); data may be
// reused as soon as Write returns. len(data) must not exceed 128 MiB
// (MaxRawLen, what a frame can say).
func (c *Compressor) Write(off int64, data []byte) Record {
	return c.write(off, data, false, true)
}

// WriteLent is Write for a caller that keeps data unchanged until the record
// is done with everywhere (journaled and applied, sent to the peer): data is
// lent to the record. When data does not compress the payload is data itself,
// not a copy; either way the journal applies data without decompressing it.
func (c *Compressor) WriteLent(off int64, data []byte) Record {
	return c.write(off, data, true, true)
}

// WriteToSend is WriteLent for a record that is sent to a peer and never
// appended here (a resync's), of the data in bp, a bufpool buffer the
// record takes as its own: Release gives it back. It takes no CRC32C of
// the payload, which only this node's journal would use. The link's
// frames carry a checksum of their own, and the peer's journal takes the
// record's.
func (c *Compressor) WriteToSend(off int64, bp *[]byte) Record {
	r := c.write(off, *bp, true, false)
	r.rawBuf = bp
	return r
}

// write is Write and WriteLent; sum takes the payload's CRC32C now, in the
// caller's goroutine, rather than in the journal's (see Journal.AppendLater).
func (c *Compressor) write(off int64, data []byte, lent, sum bool) Record {
	if len(data) > MaxRawLen {
		panic(fmt.Sprintf("journal: write of %d bytes exceeds %d", len(data), MaxRawLen))
	}
	r := Record{Kind: KindWrite, Offset: off, RawLen: uint32(len(data))}
	if lent {
		r.raw = data
	}
	if c.codec == CodecNone || !worthCompressing(data) {
		return rawRecord(r, data, lent, sum)
	}
	need := len(data)
	if c.codec == CodecS2 {
		need = s2.MaxEncodedLen(len(data))
	}
	bp := bufpool.Get(need)
	b := *bp
	var out []byte
	switch c.codec {
	case CodecS2:
		out = s2.Encode(b, data)
	case CodecZstd:
		out = c.zenc.EncodeAll(data, b[:0])
	}
	// A shorter out was written into b: append grows only past cap(b) >= len(data).
	if out == nil || len(out)+len(data)>>5 >= len(data) {
		bufpool.Put(bp)
		return rawRecord(r, data, lent, sum)
	}
	r.Codec, r.Payload, r.buf = c.codec, out, bp
	if sum {
		r.sum, r.hasSum = crc32.Checksum(r.Payload, castagnoli), true
	}
	return r
}

// rawRecord completes r with data stored raw: data itself when lent, a
// pooled copy otherwise.
func rawRecord(r Record, data []byte, lent, sum bool) Record {
	if lent {
		r.Payload = data
	} else {
		bp := bufpool.Get(len(data))
		r.Payload, r.buf = (*bp)[:len(data)], bp
		copy(r.Payload, data)
	}
	if sum {
		r.sum, r.hasSum = crc32.Checksum(r.Payload, castagnoli), true
	}
	return r
}

// Compressing costs about 1 ns a byte (s2, 4 KiB to 1 MiB) on data that
// shrinks little, such as fio's default buffers (about 7%), and as much as
// the rest of a write's path together. So payloads of sampleMin bytes or
// more are tried first on up to sampleCount pieces of sampleLen bytes spread
// over them, one per sampleEvery bytes (s2.EstimateBlockSize, a fraction of
// the cost): when those would
// not shrink by 1/sampleGain the payload is stored raw. Data that shrinks
// only where no sample falls is stored raw too; the record format does not
// depend on the choice.
const (
	sampleMin   = 4 << 10
	sampleLen   = 512
	sampleEvery = 2 << 10
	sampleCount = 4
	sampleGain  = 8
)

// worthCompressing reports whether samples of data shrink enough to try
// compressing all of it.
func worthCompressing(data []byte) bool {
	if len(data) < sampleMin {
		return true
	}
	n := min(sampleCount, len(data)/sampleEvery)
	step := (len(data) - sampleLen) / max(n-1, 1)
	sampled, packed := 0, 0
	for i := range n {
		s := data[i*step : i*step+sampleLen]
		est := s2.EstimateBlockSize(s)
		if est < 0 { // no gain at all
			est = len(s)
		}
		sampled += len(s)
		packed += est
	}
	return packed+sampled/sampleGain <= sampled
}

// Release gives the record's pooled buffers back for reuse: a Compressor's
// payload, CopyPayload's, DecodeRaw's, WriteToSend's data. Call it once,
// when the record is done with everywhere (journaled, applied, sent); the
// record's Payload and raw data must not be used afterwards. Release on
// other records does nothing.
func (r *Record) Release() {
	if r.buf == nil && r.rawBuf == nil {
		return
	}
	if r.buf != nil {
		bufpool.Put(r.buf)
	}
	if r.rawBuf != nil {
		bufpool.Put(r.rawBuf)
	}
	r.buf, r.rawBuf, r.Payload, r.raw = nil, nil, nil, nil // either may hold the other
}

// DecodeRaw decodes a compressed write's payload into a pooled buffer and
// attaches it as the record's raw data (as AttachRaw does), so that
// applying it decodes nothing; Release gives the buffer back. It returns
// the raw data: the payload itself when stored raw. A payload that does not
// decode to RawLen bytes is an error wrapping ErrCorruptRecord.
func (r *Record) DecodeRaw() ([]byte, error) {
	if r.Kind != KindWrite || r.Codec == CodecNone {
		r.AttachRaw(r.Payload)
		return r.Payload, nil
	}
	bp := bufpool.Get(int(r.RawLen))
	raw, err := r.Raw((*bp)[:0])
	if err != nil {
		bufpool.Put(bp)
		return nil, err
	}
	r.raw, r.rawBuf = raw, bp // raw is in bp when it fits, as RawLen bytes do
	return raw, nil
}

// CopyPayload gives r a copy of p as its Payload, in a pooled buffer that
// Release gives back: a record decoded from elsewhere (the peer's, a
// journal tail's) so owns its payload without a fresh allocation per
// write. Its CRC32C (the record's, see the package doc) is taken on the
// way: piece by piece, each while it is still in the cache from its copy,
// instead of in a second pass over the whole payload later.
func (r *Record) CopyPayload(p []byte) {
	r.Release()
	bp := bufpool.Get(len(p))
	dst := *bp
	r.Payload, r.buf = dst, bp
	var sum uint32
	for off := 0; off < len(p); off += copyPiece {
		n := copy(dst[off:], p[off:min(off+copyPiece, len(p))])
		sum = crc32.Update(sum, castagnoli, dst[off:off+n])
	}
	r.sum, r.hasSum = sum, true
}

// TakePayload makes the pooled buffer bp (from bufpool.Get, len the
// payload's) r's Payload, with sum its CRC32C as its reader took it: a
// record read off the link straight into a buffer of its own owns it with
// no copy. Release gives it back.
func (r *Record) TakePayload(bp *[]byte, sum uint32) {
	r.Release()
	r.Payload, r.buf = *bp, bp
	r.sum, r.hasSum = sum, true
}

// copyPiece is the piece CopyPayload copies and checksums at a time: well
// inside a core's L2 cache.
const copyPiece = 64 << 10

// AttachRaw lends the journal the raw data of a write record, so applying it
// to the disk needs no decompression. data must hold RawLen bytes and stay
// unchanged until the record's done callback has run.
func (r *Record) AttachRaw(data []byte) {
	if r.Kind == KindWrite && len(data) == int(r.RawLen) {
		r.raw = data
	}
}

var zdec = sync.OnceValue(func() *zstd.Decoder {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0),
		zstd.WithDecoderMaxMemory(MaxRawLen))
	if err != nil {
		panic("journal: zstd decoder: " + err.Error())
	}
	return d
})

// Raw appends the record's raw data (Payload decompressed) to dst and
// returns the result. Trim and zero records have none.
func (r *Record) Raw(dst []byte) ([]byte, error) {
	if r.Kind != KindWrite {
		return dst, nil
	}
	n := len(dst)
	var out []byte
	var err error
	switch r.Codec {
	case CodecNone:
		return append(dst, r.Payload...), nil
	case CodecS2:
		dst = grow(dst, int(r.RawLen))
		// s2 decodes into dst when the block fits, so a right-sized result is in place.
		var dec []byte
		dec, err = s2.Decode(dst[n:], r.Payload)
		out = dst[:n+len(dec)]
	case CodecZstd:
		out, err = zdec().DecodeAll(r.Payload, dst)
	default:
		err = fmt.Errorf("bad codec %d", r.Codec)
	}
	if err == nil && len(out)-n != int(r.RawLen) {
		err = fmt.Errorf("decoded %d bytes, want %d", len(out)-n, r.RawLen)
	}
	if err != nil {
		return dst[:n], fmt.Errorf("%w: seq %d: %v: %v", ErrCorruptRecord, r.Seq, r.Codec, err)
	}
	return out, nil
}

// rawData is the data to apply: the lent raw data, the payload itself when
// stored raw, or the payload decoded into scratch.
func (r *Record) rawData(scratch []byte) ([]byte, error) {
	switch {
	case r.raw != nil:
		return r.raw, nil
	case r.Codec == CodecNone:
		return r.Payload, nil
	}
	return r.Raw(scratch[:0])
}

func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b[:len(b)+n]
	}
	nb := make([]byte, len(b)+n, len(b)+n+len(b)/4)
	copy(nb, b)
	return nb
}
