package journal

import "sync/atomic"

// Stats are the journal's counters since Open.
type Stats struct {
	Appends      uint64 // records appended
	BytesRaw     uint64 // bytes of disk data in write records, before compression
	BytesStored  uint64 // payload bytes stored for them in the journal
	InPlace      uint64 // write records made in place (Options.DataMax)
	BytesInPlace uint64 // bytes of disk data they covered
	// OverlapJournaled counts writes of DataMax bytes or more journaled
	// because they overlapped a record the synced disk may lack.
	OverlapJournaled uint64
	Batches          uint64 // segment writes (one pwritev each)
	Syncs            uint64 // fdatasyncs of the journal
	Presyncs         uint64 // early syncs of the active segment ahead of its rotation
	DiskSyncs        uint64 // syncs of the disk (checkpoints)
	Checkpoints      uint64 // checkpoints recorded
	Stalls           uint64 // Appends that waited for space (back-pressure)
	Size             int64  // bytes of the journal: segment files and queued records
	Segments         int    // segment files

	LastSeq       uint64 // last seq assigned
	DurableSeq    uint64 // last seq synced in the journal
	AppliedSeq    uint64 // last seq applied to the disk
	CheckpointSeq uint64 // last checkpoint
}

// counters are the atomics behind Stats, updated by whichever goroutine does the work.
type counters struct {
	appends, bytesRaw, bytesStored          atomic.Uint64
	inPlace, bytesInPlace, overlapJournaled atomic.Uint64
	batches, syncs, diskSyncs, checkpoints  atomic.Uint64
	presyncs                                atomic.Uint64
	stalls                                  atomic.Uint64
}

// OverlapJournaled is Stats().OverlapJournaled, without the locks.
func (j *Journal) OverlapJournaled() uint64 { return j.st.overlapJournaled.Load() }

// Stats returns the journal's counters.
func (j *Journal) Stats() Stats {
	j.mu.Lock()
	size := j.bytes
	j.mu.Unlock()
	j.segMu.Lock()
	nseg := len(j.segs)
	j.segMu.Unlock()
	return Stats{
		Appends:          j.st.appends.Load(),
		BytesRaw:         j.st.bytesRaw.Load(),
		BytesStored:      j.st.bytesStored.Load(),
		InPlace:          j.st.inPlace.Load(),
		BytesInPlace:     j.st.bytesInPlace.Load(),
		OverlapJournaled: j.st.overlapJournaled.Load(),
		Batches:          j.st.batches.Load(),
		Syncs:            j.st.syncs.Load(),
		Presyncs:         j.st.presyncs.Load(),
		DiskSyncs:        j.st.diskSyncs.Load(),
		Checkpoints:      j.st.checkpoints.Load(),
		Stalls:           j.st.stalls.Load(),
		Size:             size,
		Segments:         nseg,
		LastSeq:          j.LastSeq(),
		DurableSeq:       j.durableSeq.Load(),
		AppliedSeq:       j.appliedSeq.Load(),
		CheckpointSeq:    j.ckptSeq.Load(),
	}
}

// rawBytes is the disk data a write record carries.
func (r *Record) rawBytes() int {
	if r.Kind == KindWrite {
		return int(r.RawLen)
	}
	return 0
}
