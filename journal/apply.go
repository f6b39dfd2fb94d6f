package journal

import (
	"fmt"
	"io"
)

// applier is the state of the goroutine that applies records to the disk.
// Only that goroutine touches it (and recovery, before it runs).
type applier struct {
	scratch []byte        // decompression buffer
	failed  error         // the first apply failure; later records are not applied
	syncing chan struct{} // closed when the disk sync in flight ends; nil if none
}

// applyLoop is the applier goroutine: it applies every batch the writer hands
// over, in seq order, and completes its records.
func (j *Journal) applyLoop() {
	var a applier
	for b := range j.applyq {
		j.applyBatch(&a, b)
	}
	if a.syncing != nil {
		<-a.syncing
	}
	close(j.diskq)
}

// applyBatch applies b's records; a record without FUA completes as soon as
// it is applied. Records with FUA complete when b's sync is done too: the
// applier does not wait for that, whichever of it and the writer finishes
// last completes them. A checkpoint marker syncs the disk after the whole
// batch, once the batch is synced in the journal.
func (j *Journal) applyBatch(a *applier, b *batch) {
	j.holdForDiskSync(a, b)
	var ckpt func(uint64, error)
	for i := range b.items {
		it := &b.items[i]
		if it.ckptDone != nil {
			ckpt = it.ckptDone
		}
		if !it.isRecord() {
			continue
		}
		err := j.applyOne(a, &it.rec)
		if it.fua && err == nil {
			continue // completed once synced
		}
		it.done(it.rec.Seq, err)
		it.completed = true
	}
	switch {
	case ckpt != nil:
		b.synced.Wait()
		b.completeFUA()
		j.startDiskSync(a, b.syncErr, ckpt)
		b.recycle()
	case !b.needSync || b.finish():
		b.completeFUA()
		b.recycle()
	}
}

// finish reports whether the caller (writer or applier) is the last of the
// two to be done with a synced batch: it then completes the FUA records.
func (b *batch) finish() bool { return b.left.Add(-1) == 0 }

// completeFUA completes the FUA records not completed yet, with the batch's
// sync result.
func (b *batch) completeFUA() {
	for i := range b.items {
		if it := &b.items[i]; it.fua && it.isRecord() && !it.completed {
			it.done(it.rec.Seq, b.syncErr)
		}
	}
}

// applyOne applies r to the disk unless an earlier apply failed.
func (j *Journal) applyOne(a *applier, r *Record) error {
	if a.failed != nil {
		return a.failed
	}
	if err := applyRecord(j.disk, r, &a.scratch); err != nil {
		a.failed = fmt.Errorf("journal: apply seq %d to disk: %w", r.Seq, err)
		j.fail(a.failed)
		return a.failed
	}
	j.appliedSeq.Store(r.Seq)
	return nil
}

// applyRecord does what r says to disk. scratch is reused for decompression.
func applyRecord(disk Disk, r *Record, scratch *[]byte) error {
	switch r.Kind {
	case KindWrite:
		data, err := r.rawData(*scratch)
		if err != nil {
			return err
		}
		if r.Codec != CodecNone && r.raw == nil {
			*scratch = data
		}
		n, err := disk.WriteAt(data, r.Offset)
		if err == nil && n < len(data) {
			err = io.ErrShortWrite
		}
		return err
	case KindTrim:
		return disk.Trim(r.Offset, int64(r.RawLen))
	case KindZero, KindZeroNoHole:
		return disk.Zero(r.Offset, int64(r.RawLen), r.Kind == KindZeroNoHole)
	}
	return fmt.Errorf("%w: bad kind %d", ErrCorruptRecord, r.Kind)
}
