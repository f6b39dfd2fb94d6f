package journal

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

const (
	segmentExt = ".seg"
	// pageSize is the boundary writes to a recycled segment are padded to
	// (with a padding frame), so that the kernel never reads a partly
	// overwritten page from disk.
	pageSize = 4096
)

func alignPage(off int64) int64 { return (off + pageSize - 1) &^ (pageSize - 1) }

// segment is one segment file. Its records have seqs >= firstSeq, and below
// the next segment's firstSeq.
type segment struct {
	name     string // file name in the journal directory
	firstSeq uint64
	size     atomic.Int64            // bytes of whole frames; grows as the writer publishes
	lastSeq  atomic.Uint64           // seq of the last whole frame, 0 if none
	next     atomic.Pointer[segment] // the segment after this one, set when it is created
	removed  atomic.Bool             // removed or recycled: its file may hold other data now
	readers  int                     // open Readers in it, which keep it; guarded by Journal.segMu
}

// segmentName is the file name of the segment whose first seq is seq.
func segmentName(seq uint64) string { return fmt.Sprintf("%016x%s", seq, segmentExt) }

func parseSegmentName(name string) (uint64, bool) {
	hex, ok := strings.CutSuffix(name, segmentExt)
	if !ok || len(hex) != 16 {
		return 0, false
	}
	seq, err := strconv.ParseUint(hex, 16, 64)
	return seq, err == nil
}

// publish makes frames up to size (the last of seq) visible to readers.
func (s *segment) publish(size int64, seq uint64) {
	s.lastSeq.Store(seq)
	s.size.Store(size)
}

// listSegments returns the segments in dir, oldest first, with their file
// sizes, and the spare files.
func listSegments(fs FS, dir string) (segs []*segment, spares []string, err error) {
	names, err := fs.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("journal: list %s: %w", dir, err)
	}
	for _, name := range names { // sorted, and fixed-width hex sorts by seq
		seq, ok := parseSegmentName(name)
		if !ok {
			if isSpareName(name) {
				spares = append(spares, name)
			}
			continue
		}
		fi, err := fs.Stat(dir + "/" + name)
		if err != nil {
			return nil, nil, fmt.Errorf("journal: %w", err)
		}
		s := &segment{name: name, firstSeq: seq}
		s.size.Store(fi.Size())
		segs = append(segs, s)
	}
	return segs, spares, nil
}

// createSegment creates the segment starting at seq, from a spare if there
// is one, and makes its directory entry durable. It becomes the writer's
// active segment; recycled says whether old data follows what is written.
func (j *Journal) createSegment(seq uint64) (f vfs.File, s *segment, recycled bool, err error) {
	s = &segment{name: segmentName(seq), firstSeq: seq}
	if f, err = j.takeSpare(s); err != nil {
		j.log.Warn("journal: spare segment lost", "err", err)
	}
	recycled = f != nil
	if f == nil {
		if f, err = j.fs.Create(j.path(s.name)); err != nil {
			return nil, nil, false, fmt.Errorf("journal: create segment: %w", err)
		}
	}
	if err := j.fs.SyncDir(j.dir); err != nil {
		f.Close()
		j.fs.Remove(j.path(s.name))
		return nil, nil, false, fmt.Errorf("journal: create segment %s: sync dir: %w", s.name, err)
	}
	return f, s, recycled, nil
}

// rotate syncs and closes the active segment and starts a new one whose
// first record will be seq. The old one is synced first, so only the newest
// segment can ever have a torn tail. A failure to create the new one leaves
// the old one active; a failure to sync the old one fails the journal.
func (j *Journal) rotate(seq uint64) error {
	w := &j.w
	if err := j.trimRecycled(); err != nil {
		return err
	}
	// The syncer is done with w.f. If a sync it made failed, a second
	// fdatasync would prove nothing.
	j.waitSyncs()
	if err := j.failErr(); err != nil {
		return err
	}
	if w.dirty {
		j.st.syncs.Add(1)
		if err := w.f.Sync(); err != nil {
			err = fmt.Errorf("journal: sync segment %s: %w", w.seg.name, err)
			j.fail(err)
			return err
		}
		w.dirty = false
		storeMax(&j.durableSeq, j.writtenSeq.Load())
	}
	f, s, recycled, err := j.createSegment(seq)
	if err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		j.log.Warn("journal: close segment", "segment", w.seg.name, "err", err)
	}
	old := w.seg
	w.f, w.seg, w.off, w.recycled, w.started, w.presynced = f, s, 0, recycled, 0, false
	j.segMu.Lock()
	j.segs = append(j.segs, s)
	j.segMu.Unlock()
	old.next.Store(s)
	return nil
}

// trimRecycled cuts the old data off the end of a recycled active segment, so
// that only the newest segment can ever end in something other than a frame.
// A failure fails the journal.
func (j *Journal) trimRecycled() error {
	w := &j.w
	if !w.recycled {
		return nil
	}
	if err := w.f.Truncate(w.off); err != nil {
		err = fmt.Errorf("journal: trim recycled segment %s: %w", w.seg.name, err)
		j.fail(err)
		return err
	}
	w.recycled, w.dirty = false, true
	return nil
}

// scanner reads the frames of one segment file in order, through a window
// of the file. Record payloads alias the window: valid until the next call.
type scanner struct {
	f       io.ReaderAt
	limit   int64  // bytes of the file to read
	off     int64  // offset of the next frame
	win     []byte // file bytes from winOff
	winOff  int64
	winSize int
}

func newScanner(f io.ReaderAt, from, limit int64) *scanner {
	return &scanner{f: f, off: from, limit: limit, winOff: from, winSize: 1 << 20}
}

// next returns the frame at sc.off and advances past it. At the limit it
// returns io.EOF; a bad frame gives ErrTornRecord or ErrCorruptRecord and
// does not advance.
func (sc *scanner) next() (Record, error) {
	for {
		if sc.off >= sc.limit {
			return Record{}, io.EOF
		}
		r, err := sc.frame()
		if err != nil || r.Kind != kindPad {
			return r, err
		}
	}
}

// frame decodes the frame at sc.off and advances past it.
func (sc *scanner) frame() (Record, error) {
	b, err := sc.window(headerSize)
	if err != nil {
		return Record{}, err
	}
	if len(b) >= headerSize {
		if h, herr := parseHeader(b); herr == nil {
			b, err = sc.window(headerSize + align(int(h.length)))
			if err != nil {
				return Record{}, err
			}
		}
	}
	r, n, err := decodeRecord(b)
	if err != nil {
		return Record{}, err
	}
	sc.off += int64(n)
	return r, nil
}

// window returns the file bytes from sc.off, at least n of them unless the
// limit comes first.
func (sc *scanner) window(n int) ([]byte, error) {
	start := sc.off - sc.winOff
	if start+int64(n) <= int64(len(sc.win)) {
		return sc.win[start:], nil
	}
	want := min(int64(max(n, sc.winSize)), sc.limit-sc.off)
	if int64(cap(sc.win)) < want {
		sc.win = make([]byte, want)
	}
	sc.win = sc.win[:want]
	got, err := sc.f.ReadAt(sc.win, sc.off)
	if err != nil && !(err == io.EOF && int64(got) == want) {
		if err == io.EOF {
			err = fmt.Errorf("%w: file ends at %d", ErrTornRecord, sc.off+int64(got))
		}
		return nil, err
	}
	sc.winOff = sc.off
	return sc.win, nil
}
