package journal

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// recovery is what the read-only pass over the journal found.
type recovery struct {
	ckpt    uint64     // checkpoint seq
	segs    []*segment // every segment, sizes cut to their whole frames
	lastSeq uint64     // last good record
	torn    error      // why the tail was cut, nil if it is old data or nothing
	synced  bool       // replay synced the disk up to lastSeq
}

// recover brings the journal and the disk to a consistent state: it checks
// every segment first and refuses, changing nothing, if a bad record is
// followed by good ones; then it cuts a torn tail, applies the records after
// the checkpoint to the disk and starts a new segment.
func (j *Journal) recover() error {
	ckpt, err := j.readCheckpoint()
	if err != nil {
		return err
	}
	segs, spares, err := listSegments(j.fs, j.dir)
	if err != nil {
		return err
	}
	rc := &recovery{ckpt: ckpt, segs: segs}
	j.spares = spares
	j.nspares.Store(int32(len(spares)))
	for i, s := range segs {
		if err := j.checkSegment(rc, s, i == len(segs)-1); err != nil {
			return err
		}
		j.log.Debug("journal: segment checked", "segment", s.name, "size", s.size.Load(), "last", s.lastSeq.Load())
	}
	if err := j.settleTail(rc); err != nil {
		return err
	}
	if err := j.replay(rc); err != nil {
		return err
	}
	if err := j.recoverActivity(max(rc.lastSeq, rc.ckpt)); err != nil {
		return err
	}
	return j.startAfterRecovery(rc)
}

// checkSegment reads s through and records its last seq. A bad record in the
// last segment with nothing valid after it is a torn tail; anywhere else it
// is corruption.
func (j *Journal) checkSegment(rc *recovery, s *segment, last bool) error {
	f, err := j.fs.Open(j.path(s.name))
	if err != nil {
		return fmt.Errorf("journal: open segment: %w", err)
	}
	defer f.Close()
	size := s.size.Load()
	sc := newScanner(f, 0, size)
	for {
		off := sc.off
		r, err := sc.next()
		if err == io.EOF {
			return nil
		}
		if err == nil && r.Seq < s.firstSeq {
			s.size.Store(off) // old data of a recycled segment
			return nil
		}
		if err == nil && r.Seq <= rc.lastSeq {
			err = fmt.Errorf("%w: seq %d out of order after %d", ErrCorruptRecord, r.Seq, rc.lastSeq)
		}
		if err != nil && !errors.Is(err, ErrTornRecord) && !errors.Is(err, ErrCorruptRecord) {
			return fmt.Errorf("journal: read segment %s: %w", j.path(s.name), err)
		}
		if err != nil {
			if !last || validAfter(f, off, size, max(rc.lastSeq+1, s.firstSeq)) {
				if !errors.Is(err, ErrCorruptRecord) { // torn, yet not at the end
					err = fmt.Errorf("%w: %s, not at the end of the journal",
						ErrCorruptRecord, strings.TrimPrefix(err.Error(), "journal: "))
				}
				return &CorruptionError{Segment: j.path(s.name), Offset: off, Err: err}
			}
			rc.torn = err
			s.size.Store(off)
			return nil
		}
		rc.lastSeq = r.Seq
		s.lastSeq.Store(r.Seq)
	}
}

// validAfter reports whether any valid record with a seq of at least minSeq
// starts at an aligned offset after off: then the bad record at off is not a
// torn tail but corruption. (Older records there are a recycled file's old
// data.)
func validAfter(f io.ReaderAt, off, size int64, minSeq uint64) bool {
	rest := make([]byte, size-off)
	if n, _ := f.ReadAt(rest, off); int64(n) < size-off {
		rest = rest[:n]
	}
	for p := frameAlign; p+headerSize <= len(rest); p += frameAlign {
		if rest[p] == 0 && allZero(rest[p:p+frameAlign]) {
			continue // zeros: no checksum starts with 8 zero bytes often enough to matter
		}
		if r, _, err := decodeRecord(rest[p:]); err == nil && r.Seq >= minSeq {
			return true
		}
	}
	return false
}

// settleTail cuts the torn tail of the last segment, if any, and syncs the
// segment: after a process crash its tail may be in the page cache only, and
// the records replayed from it must be durable before a checkpoint covers
// them. Older segments were synced when the next one was started.
func (j *Journal) settleTail(rc *recovery) error {
	if len(rc.segs) == 0 {
		return nil
	}
	s := rc.segs[len(rc.segs)-1]
	name := j.path(s.name)
	f, err := j.fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("journal: recover: %w", err)
	}
	defer f.Close()
	size, err := f.Size()
	if err != nil {
		return fmt.Errorf("journal: recover: %w", err)
	}
	if cut := s.size.Load(); cut < size {
		if rc.torn != nil && !errors.Is(rc.torn, errZeroHeader) {
			j.log.Info("journal: cutting torn tail", "segment", name, "offset", cut,
				"bytes", size-cut, "reason", rc.torn)
		}
		if err := f.Truncate(cut); err != nil {
			return fmt.Errorf("journal: cut tail of %s at %d: %w", name, cut, err)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("journal: recover: sync %s: %w", name, err)
	}
	return nil
}

// replay applies every record after the checkpoint to the disk, in seq
// order, except over bytes a later extent covers (see inplace.go); then it
// syncs the disk, finds the torn extents and records a checkpoint at the
// last record (with Options.MarkExtents, before the first torn extent).
func (j *Journal) replay(rc *recovery) error {
	if rc.lastSeq <= rc.ckpt {
		return nil
	}
	var exts []Extent
	err := j.scanAfter(rc, func(r *Record) error {
		if r.Kind == KindExtent {
			exts = append(exts, Extent{Seq: r.Seq, Offset: r.Offset, Len: int64(r.RawLen), Sum: r.DataSum})
		}
		return nil
	})
	if err != nil {
		return err
	}
	cover := newCoverMap(exts)
	var scratch []byte
	n := 0
	err = j.scanAfter(rc, func(r *Record) error {
		n++
		if err := replayRecord(j.disk, r, cover, &scratch); err != nil {
			return fmt.Errorf("journal: replay seq %d onto disk: %w", r.Seq, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := j.disk.Sync(); err != nil {
		return fmt.Errorf("journal: replay: sync disk: %w", err)
	}
	torn, err := tornExtents(j.disk, exts)
	if err != nil {
		return err
	}
	j.log.Info("journal: replayed", "dir", j.dir, "records", n, "from", rc.ckpt+1, "to", rc.lastSeq,
		"extents", len(exts), "torn_extents", len(torn))
	return j.recordReplay(rc, exts, torn)
}

// recordReplay notes what replay found and records the checkpoint.
func (j *Journal) recordReplay(rc *recovery, exts, torn []Extent) error {
	if len(exts) > 0 {
		j.extentSeq.Store(exts[len(exts)-1].Seq)
	}
	j.recovered = torn
	ckpt := rc.lastSeq
	if len(torn) > 0 && j.opts.MarkExtents {
		j.ckptHold.Store(torn[0].Seq)
		ckpt = torn[0].Seq - 1
	}
	if ckpt > rc.ckpt {
		if err := j.writeCheckpoint(ckpt); err != nil {
			return err
		}
		rc.ckpt = ckpt
	}
	rc.synced = true
	return nil
}

// scanAfter calls fn for every record after the checkpoint, in seq order.
func (j *Journal) scanAfter(rc *recovery, fn func(r *Record) error) error {
	for i, s := range rc.segs {
		if i+1 < len(rc.segs) && rc.segs[i+1].firstSeq <= rc.ckpt+1 {
			continue // wholly at or before the checkpoint
		}
		f, err := j.fs.Open(j.path(s.name))
		if err != nil {
			return fmt.Errorf("journal: replay: %w", err)
		}
		sc := newScanner(f, 0, s.size.Load())
		for err == nil {
			var r Record
			if r, err = sc.next(); err == nil && r.Seq > rc.ckpt {
				err = fn(&r)
			}
		}
		f.Close()
		if err != io.EOF {
			return err
		}
	}
	return nil
}

// startAfterRecovery sets the journal's counters and opens a new segment for
// the records to come.
func (j *Journal) startAfterRecovery(rc *recovery) error {
	last := max(rc.lastSeq, rc.ckpt)
	segs := rc.segs
	if n := len(segs); n > 0 && segs[n-1].size.Load() == 0 {
		segs = segs[:n-1] // an empty last segment becomes a spare for the new one
		if err := j.retire(rc.segs[n-1]); err != nil {
			return err
		}
	}
	f, s, recycled, err := j.createSegment(last + 1)
	if err != nil {
		return err
	}
	j.removeLeftovers()
	j.w = writer{f: f, seg: s, recycled: recycled}
	j.segs = append(segs, s)
	for i := 1; i < len(j.segs); i++ {
		j.segs[i-1].next.Store(j.segs[i])
	}
	for _, s := range j.segs {
		j.bytes += s.size.Load()
	}
	j.nextSeq = last + 1
	for _, v := range []interface{ Store(uint64) }{&j.lastSeq, &j.writtenSeq, &j.durableSeq, &j.appliedSeq} {
		v.Store(last)
	}
	j.ckptSeq.Store(rc.ckpt)
	j.diskCovered.Store(rc.ckpt)
	if rc.synced {
		j.diskCovered.Store(last)
	}
	return nil
}

// removeLeftovers removes what an interrupted checkpoint or spare
// preparation left behind.
func (j *Journal) removeLeftovers() {
	names, _ := j.fs.ReadDir(j.dir)
	for _, name := range names {
		if name == checkpointTmp || name == activityTmp || strings.HasSuffix(name, prepExt) {
			j.fs.Remove(j.path(name))
		}
	}
}
