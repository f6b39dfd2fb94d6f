package journal

import (
	"errors"
	"io"
)

// headerScanWindow is how much of a segment TailBytes reads at a time:
// small records share a read, a large one costs one read of its header.
const headerScanWindow = 16 << 10

// TailBytes is the disk bytes written by the records from fromSeq to the
// journal's current end (the sum of their RawLen), and the seq of the last
// record counted (fromSeq-1 if none). It reads the records' headers only,
// not their payloads: a resync source learns the whole gap a journal tail
// covers before it sends the first record. It returns ErrNotRetained as
// NewReader does.
func (j *Journal) TailBytes(fromSeq uint64) (bytes int64, last uint64, err error) {
	r, err := j.NewReader(fromSeq)
	if err != nil {
		return 0, 0, err
	}
	defer r.Close()
	last = r.from - 1
	for {
		rec, err := r.nextHeader()
		if errors.Is(err, io.EOF) {
			return bytes, last, nil
		}
		if err != nil {
			return bytes, last, err
		}
		bytes += int64(rec.RawLen)
		last = rec.Seq
	}
}

// nextHeader is Next without the payload: the next record's header fields,
// read without reading or checking what follows the header.
func (r *Reader) nextHeader() (Record, error) {
	return r.scan(func() (Record, error) {
		r.sc.winSize = headerScanWindow
		return r.sc.skip()
	})
}

// skip returns the header of the frame at sc.off, padding skipped, and
// advances past the frame without reading its payload.
func (sc *scanner) skip() (Record, error) {
	for {
		if sc.off >= sc.limit {
			return Record{}, io.EOF
		}
		b, err := sc.window(headerSize)
		if err != nil {
			return Record{}, err
		}
		if len(b) < headerSize {
			return Record{}, ErrTornRecord
		}
		h, err := parseHeader(b)
		if err != nil {
			return Record{}, err
		}
		sc.off += int64(headerSize + align(int(h.length)))
		if h.rec.Kind != kindPad {
			return h.rec, nil
		}
	}
}
