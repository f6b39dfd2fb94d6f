package journal

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// ErrNotRetained is returned for a seq older than what the journal keeps.
var ErrNotRetained = errors.New("journal: seq not retained")

// Reader reads the journal's records in seq order from a retained seq, while
// the journal goes on. Resync uses it to replay the journal tail to a peer.
// A Reader is for one goroutine.
type Reader struct {
	j    *Journal
	from uint64 // records below it are skipped
	seg  *segment
	f    vfs.File
	sc   *scanner
}

// NewReader returns a Reader positioned at fromSeq (0: the oldest retained).
// It returns ErrNotRetained when fromSeq is older than OldestRetainedSeq.
func (j *Journal) NewReader(fromSeq uint64) (*Reader, error) {
	j.segMu.Lock()
	oldest := j.segs[0].firstSeq
	if fromSeq == 0 {
		fromSeq = oldest
	}
	var seg *segment
	for _, s := range j.segs {
		if s.firstSeq <= fromSeq {
			seg = s
		}
	}
	j.segMu.Unlock()
	if fromSeq < oldest || seg == nil {
		return nil, fmt.Errorf("%w: seq %d, oldest is %d", ErrNotRetained, fromSeq, oldest)
	}
	if last := j.LastSeq(); fromSeq > last+1 {
		return nil, fmt.Errorf("journal: reader from seq %d past the end (%d)", fromSeq, last)
	}
	r := &Reader{j: j, from: fromSeq}
	if err := r.open(seg); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *Reader) open(s *segment) error {
	f, err := r.j.fs.Open(r.j.path(s.name))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: segment %s removed", ErrNotRetained, s.name)
	}
	if err != nil {
		return fmt.Errorf("journal: reader: %w", err)
	}
	if r.f != nil {
		r.f.Close()
	}
	r.seg, r.f = s, f
	r.sc = newScanner(f, 0, s.size.Load())
	r.sc.winSize = 256 << 10
	return nil
}

// Next returns the next record. Its payload is the reader's own copy. At the
// current end of the journal it returns io.EOF; call Next again later for
// the records written since.
func (r *Reader) Next() (Record, error) {
	for {
		if r.f == nil {
			return Record{}, ErrClosed
		}
		next := r.j.segmentAfter(r.seg)
		r.sc.limit = r.seg.size.Load() // published before the next segment exists
		rec, err := r.sc.next()
		if err == io.EOF && next != nil {
			if err := r.open(next); err != nil {
				return Record{}, err
			}
			continue
		}
		if err == nil && (rec.Seq < r.seg.firstSeq || next != nil && rec.Seq >= next.firstSeq) {
			err = fmt.Errorf("%w: seq %d out of place", ErrCorruptRecord, rec.Seq)
		}
		if err != nil && err != io.EOF && r.seg.removed.Load() {
			// The segment was recycled under the reader: it fell behind.
			return Record{}, fmt.Errorf("%w: segment %s removed while reading", ErrNotRetained, r.seg.name)
		}
		if err != nil {
			if err != io.EOF {
				err = &CorruptionError{Segment: r.j.path(r.seg.name), Offset: r.sc.off, Err: err}
			}
			return Record{}, err
		}
		if rec.Seq < r.from {
			continue
		}
		rec.Payload = append([]byte(nil), rec.Payload...)
		return rec, nil
	}
}

// Close releases the reader's file.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	return err
}

// segmentAfter returns the segment following s, nil if s is the newest.
func (j *Journal) segmentAfter(s *segment) *segment { return s.next.Load() }
