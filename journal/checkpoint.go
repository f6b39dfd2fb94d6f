package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// The checkpoint file (frozen): 32 bytes, little endian.
//
//	0  8  magic "nbdmjcp1"
//	8  8  checkpoint seq: records <= it are applied and the disk synced
//	16 8  reserved, zero
//	24 4  CRC32C of bytes 0..23
//	28 4  reserved, zero
const (
	checkpointFile  = "CHECKPOINT"
	checkpointTmp   = checkpointFile + ".tmp" // as vfs.WriteFileAtomic names it
	checkpointSize  = 32
	checkpointMagic = "nbdmjcp1"
)

func encodeCheckpoint(seq uint64) []byte {
	b := make([]byte, checkpointSize)
	copy(b, checkpointMagic)
	binary.LittleEndian.PutUint64(b[8:], seq)
	binary.LittleEndian.PutUint32(b[24:], crc32.Checksum(b[:24], castagnoli))
	return b
}

// readCheckpoint returns the checkpoint seq in dir, 0 if there is none.
func (j *Journal) readCheckpoint() (uint64, error) {
	f, err := j.fs.Open(j.path(checkpointFile))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("journal: read checkpoint: %w", err)
	}
	defer f.Close()
	b := make([]byte, checkpointSize)
	if n, err := f.ReadAt(b, 0); n < checkpointSize {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, fmt.Errorf("journal: read checkpoint %s: %w", j.path(checkpointFile), err)
	}
	if string(b[:8]) != checkpointMagic ||
		binary.LittleEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return 0, &CorruptionError{Segment: j.path(checkpointFile), Offset: 0,
			Err: fmt.Errorf("%w: bad checkpoint file", ErrCorruptRecord)}
	}
	return binary.LittleEndian.Uint64(b[8:]), nil
}

// writeCheckpoint replaces the checkpoint file atomically: temp file, write,
// fsync, rename, fsync the directory.
func (j *Journal) writeCheckpoint(seq uint64) error {
	if err := vfs.WriteFileAtomic(j.fs, j.dir, checkpointFile, encodeCheckpoint(seq)); err != nil {
		return fmt.Errorf("journal: write checkpoint %d: %w", seq, err)
	}
	return nil
}

// checkpoint syncs the journal, applies everything before it to the disk,
// syncs the disk, records the checkpoint and removes the segments no longer
// needed for recovery nor retained for replay.
func (j *Journal) checkpoint() error {
	j.ckptMu.Lock()
	defer j.ckptMu.Unlock()
	if j.LastSeq() > j.ckptSeq.Load() {
		t := j.clock()
		seq, err := j.checkpointDisk()
		j.observe(StageCheckpoint, t)
		if err != nil {
			return err
		}
		seq = j.capCheckpoint(seq)
		if seq > j.ckptSeq.Load() {
			if err := j.writeCheckpoint(seq); err != nil {
				return err
			}
			j.ckptSeq.Store(seq)
			j.st.checkpoints.Add(1)
		}
	}
	j.shrinkActivity()
	return j.removeSegments()
}

// checkpointDisk queues a checkpoint marker and waits for the applier to
// reach it and sync the disk.
func (j *Journal) checkpointDisk() (uint64, error) {
	type result struct {
		seq uint64
		err error
	}
	ch := make(chan result, 1)
	if err := j.queueCheckpoint(func(seq uint64, err error) { ch <- result{seq, err} }); err != nil {
		return 0, err
	}
	res := <-ch
	return res.seq, res.err
}

// queueCheckpoint queues a checkpoint marker; done gets the seq its disk
// sync covers, or the error.
func (j *Journal) queueCheckpoint(done func(uint64, error)) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	switch {
	case j.failure != nil:
		return j.failure
	case j.stopping:
		return ErrClosed
	}
	j.enqueueLocked(item{ckptDone: done}, true)
	return nil
}

// removeSegments removes the segments wholly at or before the checkpoint
// that segmentsToRemove gives up. Requires ckptMu.
func (j *Journal) removeSegments() error {
	cp := j.ckptSeq.Load()
	j.mu.Lock()
	total := j.bytes
	j.mu.Unlock()
	j.segMu.Lock()
	segs := append([]*segment(nil), j.segs...)
	sizes, pinned := make([]int64, len(segs)), len(segs)
	for i, s := range segs {
		sizes[i] = s.size.Load()
		if s.readers > 0 && pinned == len(segs) {
			pinned = i
		}
	}
	done := 0 // segments before this one are wholly at or before cp
	for done+1 < len(segs) && segs[done+1].firstSeq <= cp+1 {
		done++
	}
	remove := segmentsToRemove(sizes, done, total, pinned, &j.opts)
	for _, s := range segs[:remove] {
		s.removed.Store(true) // no Reader pins it from here on
	}
	j.segMu.Unlock()
	if remove == 0 {
		return nil
	}
	return j.removeOldest(segs[:remove])
}

// segmentsToRemove says how many of the oldest segments (of sizes, oldest
// first) a checkpoint removes: of the done ones wholly at or before it, those
// beyond RetainBytes, and more while the journal (total bytes) is past half
// its MaxBytes. A Reader keeps the segment it reads, pinned, and every later
// one, unless the journal is past its high-water mark: a reader that falls so
// far behind loses its records (ErrNotRetained) rather than stall appends.
func segmentsToRemove(sizes []int64, done int, total int64, pinned int, o *Options) int {
	remove, kept := 0, int64(0)
	for i := done - 1; i >= 0; i-- {
		kept += sizes[i]
		if kept > o.RetainBytes {
			remove = i + 1
			break
		}
	}
	full := total > o.highWater()
	for left := total; remove < done && left > o.MaxBytes/2; remove++ {
		left -= sizes[remove]
	}
	if !full {
		remove = min(remove, pinned)
	}
	return remove
}

// removeOldest retires segs, oldest first, so a crash in between leaves the
// journal without a hole.
func (j *Journal) removeOldest(segs []*segment) error {
	var freed int64
	var err error
	n := 0
	for _, s := range segs {
		if err = j.retire(s); err != nil {
			break
		}
		freed += s.size.Load()
		n++
	}
	j.segMu.Lock()
	j.segs = j.segs[n:]
	for _, s := range segs[n:] { // kept: their retirement failed
		s.removed.Store(false)
	}
	j.segMu.Unlock()
	j.mu.Lock()
	j.bytes -= freed
	j.space.Broadcast()
	j.mu.Unlock()
	if n > 0 {
		if serr := j.fs.SyncDir(j.dir); serr != nil && err == nil {
			err = fmt.Errorf("journal: remove segments: sync dir: %w", serr)
		}
	}
	return err
}
