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
// An open Reader keeps the segment it reads and every later one: checkpoints
// remove them only once it has moved past them or is closed, unless the
// journal fills up past its high-water mark (see segmentsToRemove). A Reader
// is for one goroutine.
type Reader struct {
	j    *Journal
	from uint64   // records below it are skipped
	seg  *segment // pinned (segment.readers) while f is open
	f    vfs.File
	sc   *scanner
}

// NewReader returns a Reader positioned at fromSeq (0: the oldest retained).
// It returns ErrNotRetained when fromSeq is older than OldestRetainedSeq.
// Close it when done: until then it keeps its segments.
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
	if fromSeq < oldest || seg == nil || seg.removed.Load() {
		j.segMu.Unlock()
		return nil, fmt.Errorf("%w: seq %d, oldest is %d", ErrNotRetained, fromSeq, oldest)
	}
	seg.readers++
	j.segMu.Unlock()
	if last := j.LastSeq(); fromSeq > last+1 {
		j.unpin(seg)
		return nil, fmt.Errorf("journal: reader from seq %d past the end (%d)", fromSeq, last)
	}
	r := &Reader{j: j, from: fromSeq}
	if err := r.open(seg); err != nil {
		return nil, err
	}
	return r, nil
}

// pin keeps s for a Reader, unless a checkpoint is removing it.
func (j *Journal) pin(s *segment) error {
	j.segMu.Lock()
	defer j.segMu.Unlock()
	if s.removed.Load() {
		return fmt.Errorf("%w: segment %s removed", ErrNotRetained, s.name)
	}
	s.readers++
	return nil
}

// unpin lets checkpoints remove s again, as far as this Reader goes.
func (j *Journal) unpin(s *segment) {
	j.segMu.Lock()
	s.readers--
	j.segMu.Unlock()
}

// open moves the reader to the start of s, which the caller pinned, and
// unpins the segment it leaves. On failure s is unpinned and the reader
// stays where it was.
func (r *Reader) open(s *segment) error {
	f, err := r.j.fs.Open(r.j.path(s.name))
	if err != nil {
		r.j.unpin(s)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("%w: segment %s removed", ErrNotRetained, s.name)
		}
		return fmt.Errorf("journal: reader: %w", err)
	}
	if r.f != nil {
		r.f.Close()
		r.j.unpin(r.seg)
	}
	r.seg, r.f = s, f
	r.sc = newScanner(f, 0, s.size.Load())
	r.sc.winSize = 256 << 10
	return nil
}

// Next returns the next record. Its payload is the reader's own copy, in a
// pooled buffer that Release gives back (or the garbage collector takes).
// At the current end of the journal it returns io.EOF; call Next again
// later for the records written since.
func (r *Reader) Next() (Record, error) {
	rec, err := r.scan(func() (Record, error) { return r.sc.next() }) // r.sc changes with the segment
	if err != nil {
		return Record{}, err
	}
	if p := rec.Payload; len(p) > 0 {
		rec.CopyPayload(p)
	}
	return rec, nil
}

// scan returns the next record from r.from on that read finds, moving to
// the next segment at the end of one: Next reads whole records, TailBytes
// their headers alone.
func (r *Reader) scan(read func() (Record, error)) (Record, error) {
	for {
		if r.f == nil {
			return Record{}, ErrClosed
		}
		next := r.j.segmentAfter(r.seg)
		r.sc.limit = r.seg.size.Load() // published before the next segment exists
		rec, err := read()
		if err == io.EOF && next != nil {
			if err := r.j.pin(next); err != nil {
				return Record{}, err
			}
			if err := r.open(next); err != nil {
				return Record{}, err
			}
			continue
		}
		if err == nil && (rec.Seq < r.seg.firstSeq || next != nil && rec.Seq >= next.firstSeq) {
			err = fmt.Errorf("%w: seq %d out of place", ErrCorruptRecord, rec.Seq)
		}
		if err != nil && err != io.EOF && r.seg.removed.Load() {
			// The segment was removed under the reader: it fell behind.
			return Record{}, fmt.Errorf("%w: segment %s removed while reading", ErrNotRetained, r.seg.name)
		}
		if err != nil {
			if err != io.EOF {
				err = &CorruptionError{Segment: r.j.path(r.seg.name), Offset: r.sc.off, Err: err}
			}
			return Record{}, err
		}
		if rec.Seq >= r.from {
			return rec, nil
		}
	}
}

// Close releases the reader's file and the segments it kept.
func (r *Reader) Close() error {
	if r.f == nil {
		return nil
	}
	err := r.f.Close()
	r.f = nil
	r.j.unpin(r.seg)
	return err
}

// segmentAfter returns the segment following s, nil if s is the newest.
func (j *Journal) segmentAfter(s *segment) *segment { return s.next.Load() }
