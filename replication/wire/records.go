package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
	"github.com/nbdmirror/nbdmirror/journal"
)

// A data Reader (NewDataReader) reads a Records frame record by record:
// each record's head into the part, its stored payload from the stream
// straight into a pooled buffer of its own. A resync's megabytes then reach
// the buffer the journal writes and applies them from without a copy out of
// a frame buffer; on a bufio.Reader a payload at least as large as its
// buffer is read from the socket into it directly. The frame's checksum is
// taken on the way, and no part is returned before it holds.

// maxRecordHead is the longest head of a record in a Records frame: the
// fixed header and a seq delta of binary.MaxVarintLen64 bytes.
const maxRecordHead = RecordHeaderSize + binary.MaxVarintLen64

// RecordPart is one record of a Records frame as a data Reader read it:
// its head and its stored payload, owned by the part until
// ParseRecordPart gives it to the record (or Release gives it back).
type RecordPart struct {
	head    [maxRecordHead]byte
	headLen int
	buf     *[]byte // the payload, pooled; nil if empty
	sum     uint32  // CRC32C of the payload
}

// Release gives the part's payload buffer back, unless a record took it.
func (p *RecordPart) Release() {
	if p.buf != nil {
		bufpool.Put(p.buf)
		p.buf = nil
	}
}

func (p *RecordPart) payload() []byte {
	if p.buf == nil {
		return nil
	}
	return *p.buf
}

// NewDataReader returns a Reader for the data path, once the handshake
// has authenticated the peer: a Records frame comes back as Frame.Records
// (see RecordPart), its Body nil. A payload's buffer is taken whole once
// its head has arrived (at most the frame's length, MaxBodySize), not grown
// as its bytes come as a body's is. Every other frame reads as from
// NewReader. Give it a bufio.Reader.
func NewDataReader(r io.Reader) *Reader {
	return &Reader{r: r, maxBody: MaxBodySize, splitRecords: true}
}

// ParseRecordPart is ParseRecord for a part a data Reader read: the same
// checks, the same record, but the record takes the part's payload buffer
// over instead of a copy of it. The part is empty afterwards, also when the
// record is refused.
func ParseRecordPart(p *RecordPart, diskSize int64, prevSeq uint64) (journal.Record, error) {
	defer p.Release()
	rec, head, n, err := parseHead(p.head[:p.headLen], prevSeq)
	switch {
	case err != nil:
		return rec, err
	case head != p.headLen || n != uint64(len(p.payload())):
		// The Reader split the frame by these very bytes.
		panic(fmt.Sprintf("wire: record part of head %d and payload %d parses as %d and %d", p.headLen, len(p.payload()), head, n))
	}
	err = complete(&rec, p.payload(), diskSize, func() {
		rec.TakePayload(p.buf, p.sum)
		p.buf = nil
	})
	return rec, err
}

// readRecords reads the body (n bytes) of the Records frame whose header is
// h into parts. A body that does not split into records is still read to
// its end: a frame that fails its checksum is reported as such, whatever
// its bytes.
func (r *Reader) readRecords(f Frame, h []byte, n int) (Frame, error) {
	crc := crc32.Update(0, castagnoli, h[:crcOffset])
	parts := r.parts[:0]
	left := n
	var bad error
	for left > 0 && bad == nil {
		parts = append(parts, RecordPart{})
		p := &parts[len(parts)-1]
		var err error
		if bad, err = r.readHead(p, left); err != nil {
			ReleaseParts(parts)
			return Frame{}, fmt.Errorf("wire: read %s body of %d bytes: %w", f.Type, n, noEOF(err))
		}
		crc = crc32.Update(crc, castagnoli, p.head[:p.headLen])
		left -= p.headLen
		if bad != nil {
			parts = parts[:len(parts)-1]
			break
		}
		size := int(binary.LittleEndian.Uint32(p.head[:]))
		if size > left {
			bad = malformed(TypeRecords, "record payload cut short: %d of %d bytes", left, size)
			parts = parts[:len(parts)-1]
			break
		}
		if size == 0 {
			continue
		}
		p.buf = bufpool.Get(size)
		b := *p.buf
		if _, err := io.ReadFull(r.r, b); err != nil {
			ReleaseParts(parts)
			return Frame{}, fmt.Errorf("wire: read %s body of %d bytes: %w", f.Type, n, noEOF(err))
		}
		p.sum = crc32.Checksum(b, castagnoli)
		crc = crcCombine(crc, p.sum, len(b)) // one pass over the payload for both
		left -= size
	}
	if left > 0 { // the rest of a body that does not split: only its checksum matters now
		var err error
		if crc, err = r.skip(crc, left); err != nil {
			ReleaseParts(parts)
			return Frame{}, fmt.Errorf("wire: read %s body of %d bytes: %w", f.Type, n, noEOF(err))
		}
	}
	if want := binary.BigEndian.Uint32(h[crcOffset:]); crc != want {
		ReleaseParts(parts)
		return Frame{}, fmt.Errorf("%w: %s frame of %d bytes", ErrBadChecksum, f.Type, n)
	}
	if bad != nil {
		ReleaseParts(parts)
		return Frame{}, bad
	}
	r.parts = parts
	f.Records = parts
	return f, nil
}

// readHead reads the head of the next record into p, left bytes of the
// body remaining: the fixed header, then the seq delta's bytes up to its
// last (whether the delta is valid is ParseRecordPart's to say). bad is a
// body that does not split there; err a failed read.
func (r *Reader) readHead(p *RecordPart, left int) (bad, err error) {
	if left < RecordHeaderSize {
		return malformed(TypeRecords, "record header cut short: %d bytes", left), nil
	}
	if _, err := io.ReadFull(r.r, p.head[:RecordHeaderSize]); err != nil {
		return nil, err
	}
	p.headLen = RecordHeaderSize
	for {
		if p.headLen == left || p.headLen == maxRecordHead {
			// The delta does not end in the body, or runs past any uvarint.
			return malformed(TypeRecords, "record with a bad seq delta"), nil
		}
		if _, err := io.ReadFull(r.r, p.head[p.headLen:p.headLen+1]); err != nil {
			return nil, err
		}
		p.headLen++
		if p.head[p.headLen-1] < 0x80 {
			return nil, nil
		}
	}
}

// skip reads n bytes and returns crc updated with them.
func (r *Reader) skip(crc uint32, n int) (uint32, error) {
	var scratch [4 << 10]byte
	for n > 0 {
		b := scratch[:min(n, len(scratch))]
		if _, err := io.ReadFull(r.r, b); err != nil {
			return crc, err
		}
		crc = crc32.Update(crc, castagnoli, b)
		n -= len(b)
	}
	return crc, nil
}

// ReleaseParts gives back the payloads of parts no record took.
func ReleaseParts(parts []RecordPart) {
	for i := range parts {
		parts[i].Release()
	}
}
