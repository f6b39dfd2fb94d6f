package journal

import (
	"fmt"
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
const (
	spareExt  = ".free"
	maxSpares = 2
)

func isSpareName(name string) bool {
	hex, ok := strings.CutSuffix(name, spareExt)
	return ok && len(hex) == 16
}

// retire recycles s as a spare, or removes it when there are spares enough or
// it is too small to be worth it. Requires ckptMu.
func (j *Journal) retire(s *segment) error {
	s.removed.Store(true)
	j.segMu.Lock()
	recycle := len(j.spares) < maxSpares && s.size.Load() >= j.opts.SegmentSize/2
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
	j.segMu.Lock()
	j.spares = append(j.spares, spare)
	j.segMu.Unlock()
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
