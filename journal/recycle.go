package journal

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// Segments no longer needed are recycled rather than deleted: renamed to a
// spare (<hex>.free) and later renamed into the next segment and overwritten
// from the start. Overwriting a file's existing blocks needs no allocation,
// so fdatasync has no metadata to commit, which makes FUA writes cheaper.
// The old frames left after a recycled segment's new ones have seqs below its
// firstSeq, or do not decode: either ends the segment (see checkSegment).
//
// A fresh journal has no retired segments yet, so Open prepares Options.spares
// zero-filled spares in the background (a one-time cost of writing them),
// while its file system has room for a spare and as much again.
const (
	spareExt  = ".free"
	prepExt   = ".prep" // a spare being prepared; removed at Open
	maxSpares = 2       // retired segments kept as spares
)

func isSpareName(name string) bool {
	hex, ok := strings.CutSuffix(name, spareExt)
	return ok && len(hex) == 16
}

// prepareSpares writes zero-filled spares until there are n, unless Close
// comes first. It runs in its own goroutine.
func (j *Journal) prepareSpares(n int) {
	for {
		j.segMu.Lock()
		enough := len(j.spares) >= n
		j.segMu.Unlock()
		if enough {
			return
		}
		if free, short := j.spaceShort(); short {
			j.log.Info("journal: no spare segment prepared: the file system is short of space",
				"free_bytes", free, "segment_bytes", j.opts.segmentSize)
			return
		}
		name, err := j.prepareSpare()
		if err != nil {
			j.log.Warn("journal: prepare spare segment", "err", err)
			return
		}
		if name == "" {
			return // closing
		}
		j.addSpare(name)
	}
}

// spaceShort says whether the journal's file system lacks room for a spare
// and as much again: spares only make syncs cheaper, and must not take the
// last free space from the segments and metadata that need it. A file
// system that cannot tell is never short.
func (j *Journal) spaceShort() (free int64, short bool) {
	sr, ok := j.fs.(vfs.SpaceReporter)
	if !ok {
		return 0, false
	}
	free, err := sr.Free(j.dir)
	return free, err == nil && free < 2*j.opts.segmentSize
}

// addSpare adds a spare file to the pool.
func (j *Journal) addSpare(name string) {
	j.segMu.Lock()
	j.spares = append(j.spares, name)
	j.nspares.Store(int32(len(j.spares)))
	j.segMu.Unlock()
}

// prepareSpare writes one zero-filled spare of segmentSize bytes and returns
// its name, or "" if Close came first.
func (j *Journal) prepareSpare() (string, error) {
	hex := fmt.Sprintf("%016x", rand.Uint64()|1<<63)
	tmp := j.path(hex + prepExt)
	f, err := j.fs.Create(tmp)
	if err != nil {
		return "", err
	}
	defer j.fs.Remove(tmp) // fails once renamed
	zeros := make([]byte, min(j.opts.segmentSize, 1<<20))
	for off := int64(0); off < j.opts.segmentSize; off += int64(len(zeros)) {
		select {
		case <-j.stop:
			f.Close()
			return "", nil
		default:
		}
		if _, err := f.WriteAt(zeros, off); err != nil {
			f.Close()
			return "", err
		}
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = j.fs.Rename(tmp, j.path(hex+spareExt))
	}
	if err == nil {
		err = j.fs.SyncDir(j.dir)
	}
	return hex + spareExt, err
}

// retire recycles s as a spare, or removes it when there are spares enough,
// its file is too small to be worth it or a Reader has it open (it reads on
// from the removed file, which nobody overwrites). Requires ckptMu (or
// recovery).
func (j *Journal) retire(s *segment) error {
	s.removed.Store(true)
	fi, err := j.fs.Stat(j.path(s.name))
	j.segMu.Lock()
	recycle := len(j.spares) < maxSpares && err == nil && fi.Size() >= j.opts.segmentSize/2 &&
		s.readers == 0
	j.segMu.Unlock()
	if !recycle {
		if err := j.fs.Remove(j.path(s.name)); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("journal: remove segment: %w", err)
		}
		return nil
	}
	spare := strings.TrimSuffix(s.name, segmentExt) + spareExt
	if err := j.fs.Rename(j.path(s.name), j.path(spare)); err != nil {
		return fmt.Errorf("journal: recycle segment: %w", err)
	}
	j.addSpare(spare)
	return nil
}

// takeSpare renames a spare, if there is one, to the segment starting at seq
// and opens it for writing. It returns nil if there is none.
func (j *Journal) takeSpare(s *segment) (vfs.File, error) {
	j.segMu.Lock()
	if len(j.spares) == 0 {
		j.segMu.Unlock()
		return nil, nil
	}
	spare := j.spares[0]
	j.spares = j.spares[1:]
	j.nspares.Store(int32(len(j.spares)))
	j.segMu.Unlock()
	if err := j.fs.Rename(j.path(spare), j.path(s.name)); err != nil {
		j.fs.Remove(j.path(spare))
		return nil, fmt.Errorf("journal: recycle segment: %w", err)
	}
	f, err := j.fs.OpenFile(j.path(s.name), os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("journal: recycle segment: %w", err)
	}
	return f, nil
}
