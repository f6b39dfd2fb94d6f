package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
)

// Kind is what a record does to the disk.
type Kind uint8

const (
	KindWrite      Kind = 1 // write RawLen bytes (Payload, after decoding) at Offset
	KindTrim       Kind = 2 // discard [Offset, Offset+RawLen); reads as zeros afterwards
	KindZero       Kind = 3 // write zeros over the range; a hole may be punched
	KindZeroNoHole Kind = 4 // write zeros over the range; it stays allocated

	// kindPad is a padding frame in a segment: zeros up to a page boundary,
	// skipped by readers. Its seq is the seq of the frame before it.
	kindPad Kind = 5

	// KindExtent is a write of RawLen bytes at Offset made in place: the
	// segment holds only its extent and DataSum, the data went to the disk
	// directly. Records read back from the journal have it; appenders give
	// KindWrite and the journal chooses (Options.DataMax).
	KindExtent Kind = 6
)

func (k Kind) String() string {
	switch k {
	case KindWrite:
		return "write"
	case KindTrim:
		return "trim"
	case KindZero:
		return "zero"
	case KindZeroNoHole:
		return "zero-nohole"
	case kindPad:
		return "pad"
	case KindExtent:
		return "extent"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindWrite && k <= KindExtent }

// Frame layout constants; see the package doc. Frozen.
const (
	// headerSize is the size of a record header.
	headerSize = 32
	// MaxRawLen is the largest RawLen of a write record (and so of its payload).
	MaxRawLen = 128 << 20
	// frameAlign is the alignment of every frame in a segment.
	frameAlign = 8
	// extentPayload is the payload of an extent frame: the CRC32C of the
	// data written in place, then 4 zero bytes.
	extentPayload = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of reading records. Match them with errors.Is.
var (
	// ErrTornRecord is a record cut short or half written: what a crash
	// leaves at the end of the journal.
	ErrTornRecord = errors.New("journal: torn record")
	// ErrCorruptRecord is a record whose checksum or header is wrong.
	ErrCorruptRecord = errors.New("journal: corrupt record")
)

// errZeroHeader is unwritten space, where a segment's frames end.
var errZeroHeader = fmt.Errorf("%w: zero header", ErrTornRecord)

// CorruptionError says where in the journal a bad record is. Err wraps
// ErrCorruptRecord (or ErrTornRecord), so errors.Is works on it.
type CorruptionError struct {
	Segment string // path of the segment file
	Offset  int64  // offset of the bad record in the segment
	Err     error
}

func (e *CorruptionError) Error() string {
	return fmt.Sprintf("%v (segment %s, offset %d)", e.Err, e.Segment, e.Offset)
}

func (e *CorruptionError) Unwrap() error { return e.Err }

// Record is one journaled change to the disk.
//
// Payload is the stored form: what the segment holds and what replication
// sends. A record built by a Compressor owns its payload; Release gives the
// buffer back once nobody uses the record any more.
type Record struct {
	Kind    Kind
	Seq     uint64 // assigned by AppendLater; zero until then
	Offset  int64  // disk offset
	RawLen  uint32 // bytes of disk the record covers
	Codec   Codec  // codec of Payload
	Payload []byte // stored bytes, compressed or raw; empty for trim, zero and extent
	// DataSum is the CRC32C of the data of an extent record (KindExtent),
	// as read back from the journal.
	DataSum uint32

	sum    uint32  // CRC32C of Payload, when hasSum
	hasSum bool    // sum is valid
	buf    *[]byte // pooled buffer behind Payload, nil if not pooled
	raw    []byte  // the raw data, when the caller lends it (AttachRaw) or DecodeRaw made it
	rawBuf *[]byte // pooled buffer behind raw, from DecodeRaw or WriteToSend
}

// Trim is a record that discards n bytes at off.
func Trim(off, n int64) Record { return noPayload(KindTrim, off, n) }

// Zero is a record that writes n zero bytes at off; with noHole the range
// must stay allocated.
func Zero(off, n int64, noHole bool) Record {
	if noHole {
		return noPayload(KindZeroNoHole, off, n)
	}
	return noPayload(KindZero, off, n)
}

func noPayload(k Kind, off, n int64) Record {
	if n < 0 || n > math.MaxUint32 {
		panic(fmt.Sprintf("journal: %v length %d out of range", k, n))
	}
	return Record{Kind: k, Offset: off, RawLen: uint32(n), hasSum: true}
}

// KnownSum returns the CRC32C of the payload if the record has taken it
// already (ok), without taking it: a Records frame's checksum then covers
// the payload without reading it again (see wire.AppendRecordsHeaderSums).
func (r *Record) KnownSum() (sum uint32, ok bool) { return r.sum, r.hasSum }

// payloadSum returns the CRC32C of the payload, computing it if needed.
func (r *Record) payloadSum() uint32 {
	if !r.hasSum {
		r.sum = crc32.Checksum(r.Payload, castagnoli)
		r.hasSum = true
	}
	return r.sum
}

// encodedLen is the length of the record's frame: header, payload, padding.
func (r *Record) encodedLen() int { return headerSize + align(len(r.Payload)) }

func align(n int) int { return (n + frameAlign - 1) &^ (frameAlign - 1) }

// putHeader encodes the header of r into h, checksum included.
func (r *Record) putHeader(h *[headerSize]byte) {
	binary.LittleEndian.PutUint32(h[4:], uint32(len(r.Payload)))
	h[8] = byte(r.Kind)
	h[9] = byte(r.Codec)
	h[10], h[11] = 0, 0
	binary.LittleEndian.PutUint32(h[12:], r.RawLen)
	binary.LittleEndian.PutUint64(h[16:], r.Seq)
	binary.LittleEndian.PutUint64(h[24:], uint64(r.Offset))
	sum := crc32.Update(r.payloadSum(), castagnoli, h[4:])
	binary.LittleEndian.PutUint32(h[0:], sum)
}

// header is a decoded header before its payload is seen.
type header struct {
	sum    uint32
	length uint32
	rec    Record // every field but Payload
}

// parseHeader decodes and sanity-checks a header. A header of all zero bytes
// is ErrTornRecord (unwritten or preallocated space); one that makes no sense
// is ErrCorruptRecord.
func parseHeader(b []byte) (header, error) {
	var h header
	if allZero(b[:headerSize]) {
		return h, errZeroHeader
	}
	h.sum = binary.LittleEndian.Uint32(b[0:])
	h.length = binary.LittleEndian.Uint32(b[4:])
	h.rec = Record{
		Kind:   Kind(b[8]),
		Codec:  Codec(b[9]),
		RawLen: binary.LittleEndian.Uint32(b[12:]),
		Seq:    binary.LittleEndian.Uint64(b[16:]),
		Offset: int64(binary.LittleEndian.Uint64(b[24:])),
	}
	if err := h.check(b[10], b[11]); err != nil {
		return h, fmt.Errorf("%w: %v", ErrCorruptRecord, err)
	}
	return h, nil
}

func (h *header) check(res0, res1 byte) error {
	r := &h.rec
	switch {
	case !r.Kind.valid():
		return fmt.Errorf("bad kind %d", r.Kind)
	case !r.Codec.valid():
		return fmt.Errorf("bad codec %d", r.Codec)
	case res0 != 0 || res1 != 0:
		return fmt.Errorf("reserved bytes set")
	case r.Seq == 0:
		return fmt.Errorf("seq 0")
	case r.Kind == kindPad && (r.Codec != CodecNone || r.RawLen != 0 || h.length > 2*pageSize):
		return fmt.Errorf("bad padding frame")
	case r.Kind == KindExtent && (h.length != extentPayload || r.Codec != CodecNone || r.RawLen == 0 || r.RawLen > MaxRawLen):
		return fmt.Errorf("bad extent frame")
	case r.Kind != KindWrite && r.Kind != kindPad && r.Kind != KindExtent && (h.length != 0 || r.Codec != CodecNone):
		return fmt.Errorf("%v record with a payload", r.Kind)
	case r.Kind == KindWrite && (r.RawLen > MaxRawLen || h.length > r.RawLen):
		return fmt.Errorf("write of %d bytes stored in %d", r.RawLen, h.length)
	case r.Kind == KindWrite && r.Codec == CodecNone && h.length != r.RawLen:
		return fmt.Errorf("raw write of %d bytes stored in %d", r.RawLen, h.length)
	}
	return nil
}

// finish checks the payload against the header's checksum and completes the
// record. payload must be exactly h.length bytes; the record keeps it.
func (h *header) finish(hdr []byte, payload []byte) (Record, error) {
	psum := crc32.Checksum(payload, castagnoli)
	if crc32.Update(psum, castagnoli, hdr[4:headerSize]) != h.sum {
		return Record{}, fmt.Errorf("%w: checksum mismatch at seq %d", ErrCorruptRecord, h.rec.Seq)
	}
	r := h.rec
	r.Payload = payload
	r.sum, r.hasSum = psum, true
	if r.Kind == KindExtent {
		if binary.LittleEndian.Uint32(payload[4:]) != 0 {
			return Record{}, fmt.Errorf("%w: extent at seq %d: reserved bytes set", ErrCorruptRecord, r.Seq)
		}
		r.DataSum = binary.LittleEndian.Uint32(payload)
		r.Payload, r.hasSum = nil, false
	}
	return r, nil
}

// putExtentHeader encodes into h and p the frame that stands for r, a
// write made in place whose data has the CRC32C sum.
func (r *Record) putExtentHeader(h *[headerSize]byte, p *[extentPayload]byte, sum uint32) {
	binary.LittleEndian.PutUint32(p[0:], sum)
	binary.LittleEndian.PutUint32(p[4:], 0)
	x := Record{Kind: KindExtent, Seq: r.Seq, Offset: r.Offset, RawLen: r.RawLen, Payload: p[:]}
	x.putHeader(h)
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
