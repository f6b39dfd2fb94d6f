package journal

import "fmt"

// A checkpoint syncs the disk. That can take long (every write since the last
// one may still be in the page cache), so it runs in its own goroutine while
// the applier goes on. The disk may make durable any record applied by then,
// as the kernel's own write-back may at any time: records are applied before
// their journal sync only inside the activity set (see activity.go).

// diskSync asks the disk syncer for a sync covering seqs up to seq.
type diskSync struct {
	seq      uint64
	done     func(seq uint64, err error) // the checkpoint's callback
	finished chan struct{}               // closed when the sync has returned
	// marker, if set, is the checkpoint marker's batch, handed over by the
	// applier before its journal sync is done: the disk syncer waits for
	// that sync (which covers every record applied before it), completes
	// the batch's FUA records and recycles it. The applier goes on
	// applying meanwhile.
	marker *batch
}

// diskSyncLoop is the disk syncer goroutine.
func (j *Journal) diskSyncLoop() {
	for req := range j.diskq {
		if b := req.marker; b != nil {
			if err := b.settleMarker(); err != nil {
				close(req.finished)
				req.done(0, err)
				continue
			}
		}
		j.st.diskSyncs.Add(1)
		seq, err := req.seq, j.disk.Sync()
		if err != nil {
			// The disk may have dropped writes: never checkpoint past them.
			seq, err = 0, fmt.Errorf("journal: sync disk: %w", err)
			j.fail(err)
		}
		if err == nil {
			storeMax(&j.diskCovered, seq)
		}
		close(req.finished)
		req.done(seq, err)
	}
}

// startDiskSync hands a checkpoint's disk sync to the disk syncer: it covers
// every record applied so far, all of them synced in the journal once
// marker's sync (if marker is set) or the one syncErr reports is done.
func (j *Journal) startDiskSync(a *applier, syncErr error, done func(uint64, error), marker *batch) {
	if a.syncing != nil { // one at a time
		<-a.syncing
		a.syncing = nil
	}
	switch {
	case a.failed != nil:
		if marker != nil {
			marker.settleMarker()
		}
		done(0, a.failed)
		return
	case syncErr != nil:
		done(0, syncErr)
		return
	}
	a.syncing = make(chan struct{})
	j.diskq <- diskSync{seq: j.appliedSeq.Load(), done: done, finished: a.syncing, marker: marker}
}

// settleMarker waits for the journal sync of b, a checkpoint marker's
// batch, completes its FUA records, recycles it and returns the sync's
// error.
func (b *batch) settleMarker() error {
	b.synced.Wait()
	b.completeFUA()
	err := b.syncErr
	b.recycle()
	return err
}
