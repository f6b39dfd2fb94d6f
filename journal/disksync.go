package journal

import "fmt"

// A checkpoint syncs the disk. That can take long (every write since the last
// one may still be in the page cache), so it runs in its own goroutine while
// the applier goes on. But the disk must never make durable a record that is
// not durable in the journal: until the disk sync ends, every batch is synced
// in the journal before it is applied. The writer syncs every batch it takes
// while diskSyncing is set, from the moment the checkpoint's marker is queued
// (queueCheckpoint) until the disk sync has ended, except a batch whose
// records all fall in the activity set the checkpoint published before its
// marker (see activity.go): that one is applied at once. Any other batch that is not
// synced waits for the disk sync (holdForDiskSync), which no batch queued
// behind a marker does.

// diskSync asks the disk syncer for a sync covering seqs up to seq.
type diskSync struct {
	seq      uint64
	done     func(seq uint64, err error) // the checkpoint's callback
	finished chan struct{}               // closed when the sync has returned
}

// diskSyncLoop is the disk syncer goroutine.
func (j *Journal) diskSyncLoop() {
	for req := range j.diskq {
		j.st.diskSyncs.Add(1)
		seq, err := req.seq, j.disk.Sync()
		j.withdrawActivity()
		if err != nil {
			// The disk may have dropped writes: never checkpoint past them.
			seq, err = 0, fmt.Errorf("journal: sync disk: %w", err)
			j.fail(err)
		}
		if err == nil {
			storeMax(&j.diskCovered, seq)
		}
		close(req.finished)
		req.done(seq, err) // the checkpoint closes the activity set
	}
}

// startDiskSync hands a checkpoint's disk sync to the disk syncer: it covers
// every record applied so far, all of them synced in the journal.
func (j *Journal) startDiskSync(a *applier, syncErr error, done func(uint64, error)) {
	if a.syncing != nil { // one at a time
		<-a.syncing
		a.syncing = nil
	}
	switch {
	case a.failed != nil:
		done(0, a.failed)
		return
	case syncErr != nil:
		done(0, syncErr)
		return
	}
	a.syncing = make(chan struct{})
	j.diskq <- diskSync{seq: j.appliedSeq.Load(), done: done, finished: a.syncing}
}

// holdForDiskSync waits, while a disk sync runs, until b may be applied: at
// once if its records are in the activity set, once it is synced in the
// journal, or once the disk sync has ended if the writer will not sync b.
func (j *Journal) holdForDiskSync(a *applier, b *batch) {
	if a.syncing == nil || b.unsynced && !b.needSync {
		return
	}
	select {
	case <-a.syncing:
		a.syncing = nil
		return
	default:
	}
	if b.needSync {
		b.synced.Wait()
		return
	}
	<-a.syncing
	a.syncing = nil
}
