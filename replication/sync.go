package replication

import (
	"fmt"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// resyncState is the progress of a resync on either side; Resource.mu guards it.
type resyncState struct {
	source, target bool
	tail           bool // the source replays its journal's tail
	// inPlace: the tail holds a write made in place, its target is
	// Inconsistent (see attached in core.go, and tailLoop).
	inPlace bool
	// total is the whole gap, known so far: what the tail or the
	// bitmap held when the pass began, and what writers added to a tail
	// since; done is what the peer acknowledged. Both grow over the passes
	// of one link's resync.
	total, done int64 // bytes
	base        int64 // total before the pass under way
	started     time.Time
	meter       rateMeter // done's rate
}

// startSync begins what the decision asks for on a new link. The source
// says how it syncs (SyncStart); the target answers a bitmap sync with its
// own bitmap (see startTarget).
func (r *Resource) startSync(l *link, d Decision) {
	if d.Outcome != SyncSource {
		return
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := r.runSource(l, d); err != nil {
			l.fail(fmt.Errorf("%w: resync: %v", ErrLinkDown, err))
		}
	}()
}

// runSource drives a sync from this node: the journal's tail when it covers
// the peer's gap, else the bitmap, after a checksum comparison for a full
// sync.
func (r *Resource) runSource(l *link, d Decision) error {
	if l.catchingUp {
		r.mu.Lock()
		r.resync.tail = true
		inPlace := r.resync.inPlace
		r.mu.Unlock()
		l.queue(wire.AppendSyncStart(nil, wire.SyncStart{Mode: wire.SyncTail, InPlace: inPlace}))
		if err := r.tailLoop(l, l.tailFrom); err != nil {
			return err
		}
		if r.oos.bytes() == 0 {
			return r.finishSource(l)
		}
		r.mu.Lock()
		r.resync.tail = false
		r.resync.beginPass(r.oos.bytes())
		r.mu.Unlock()
		l.queue(wire.AppendSyncStart(nil, wire.SyncStart{Mode: wire.SyncBitmap})) // marks the tail did not cover
	} else {
		r.mu.Lock()
		r.resync.tail = false
		r.resync.beginPass(r.oos.bytes()) // this node's marks; the peer's come next
		r.mu.Unlock()
		l.queue(wire.AppendSyncStart(nil, wire.SyncStart{Mode: wire.SyncBitmap, Full: d.Full}))
	}
	if d.Full {
		if _, err := r.compareSums(l); err != nil {
			return err
		}
	}
	return r.resyncLoop(l)
}

// resyncLoop waits for the target's bitmap, then sends every out-of-sync
// region once. A region's bit is cleared when the peer acknowledges it.
// Runs of regions are read from the disk and compressed ahead of their
// send (see readRuns), and up to tune.resyncWindow bytes of them are in
// flight to the peer, so that both disks and the link stay busy; fewer to
// a slow peer (see lagFor). Each run
// is queued under Resource.order, after a check that no write was appended
// since it was read: no write can slip between the read and the send and
// be overwritten on the peer by older data.
func (r *Resource) resyncLoop(l *link) error {
	select {
	case <-l.peerBitmap:
	case <-l.closed:
		return ErrLinkDown
	}
	r.mu.Lock()
	r.resync.total = r.resync.base + r.oos.bytes() // the peer's marks too, before any is cleared
	r.mu.Unlock()
	pace := r.newPacer(false)
	runs, stop := r.readAhead(l)
	defer stop()
	for run := range runs {
		if run.err != nil {
			return run.err
		}
		if err := r.sendRun(l, run); err != nil {
			return err
		}
		pace.wait(run.n, l.closed)
		if err := l.waitLag(r.resyncLag(tune.resyncWindow)); err != nil {
			return err
		}
	}
	return r.finishSource(l)
}

// finishSource sends SyncDone after every resync record. The target
// answers with its own SyncDone once those records are durable there and it
// has recorded itself UpToDate; only then is the peer UpToDate here (see
// syncDoneFrame).
func (r *Resource) finishSource(l *link) error {
	r.order.Lock()
	defer r.order.Unlock()
	r.mu.Lock()
	gen := r.meta.Gen.Current
	var err error
	if r.link == l {
		_, err = r.stepLocked(SyncDoneSent{}) // saved before the send: see meta.DoneSent
	}
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	if l.isDown() {
		return ErrLinkDown
	}
	l.queue(wire.AppendSyncDone(nil, gen))
	return nil
}

// sendRun sends a run of marked regions, read ahead, as one record, whose
// buffers go to the link with it. If a write was appended since the run was
// read, it is read again (rereadRun).
func (r *Resource) sendRun(l *link, run *runRead) error {
	if testHookRunSend != nil {
		testHookRunSend(run.off, run.n)
	}
	r.order.Lock()
	defer r.order.Unlock()
	if r.journal.LastSeq() != run.asOf {
		if err := r.rereadRun(l, run); err != nil {
			run.rec.Release()
			return err
		}
	}
	rec := &run.rec
	rec.Seq = r.allocSeq()
	reg, regions, n, wireBytes := run.reg, run.regions, run.n, wire.RecordHeaderSize+len(rec.Payload)
	sent := l.sendOwnedRecord(rec, func(acked bool, _ wire.AckKind) {
		if !acked {
			return // the bit stays: a later resync sends the region
		}
		for i := range regions {
			r.oos.clear(reg + i)
		}
		r.mu.Lock()
		r.resync.add(n, time.Now())
		r.mu.Unlock()
	})
	if !sent {
		rec.Release()
		return ErrLinkDown
	}
	l.send(false)
	r.resyncWire.Add(uint64(wireBytes))
	return nil
}

// testHookRunSend, if set by a test, is told of each run read ahead,
// before sendRun takes Resource.order to send it.
var testHookRunSend func(off, n int64)

// markLoop starts a resync pass whenever regions are marked while the
// link is established and no resync runs (the bitmap tells it, see
// bitmap.watch): a write the previous link lost whose completion came after
// this link attached, or one that failed here after the peer took it.
// Without it they would wait for the next reconnection.
func (r *Resource) markLoop() {
	for {
		select {
		case <-r.stop:
			return
		case <-r.oos.marked:
		}
		r.resyncMarks()
	}
}

func (r *Resource) resyncMarks() {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.link
	if l == nil || r.oos.bytes() == 0 {
		return
	}
	acts, err := r.stepLocked(MarksWhileLinked{})
	if err != nil {
		r.log.Error("saving metadata", "err", err)
	}
	if _, ok := has[StartSync](acts); ok {
		r.resync.restart(time.Now())
		r.log.Info("regions were marked while connected: another resync pass", "out_of_sync_bytes", r.oos.bytes())
		r.startSync(l, Decision{Outcome: SyncSource})
	}
}

// syncDoneFrame handles a SyncDone frame: on the target, the source's end
// of the resync; on the source, the target's answer that it is UpToDate.
func (r *Resource) syncDoneFrame(l *link, body []byte) error {
	gen, err := wire.ParseSyncDone(body)
	if err != nil {
		return err
	}
	r.mu.Lock()
	source, target := r.link == l && r.resync.source, r.link == l && r.resync.target
	r.mu.Unlock()
	switch {
	case source:
		r.sourceDone(l, gen)
		return nil
	case !target:
		return fmt.Errorf("%w: sync done out of turn", ErrLinkDown)
	}
	if err := r.syncDone(gen); err != nil {
		return err
	}
	l.queue(wire.AppendSyncDone(nil, gen))
	return nil
}

// sourceDone runs when the target answered the end of the resync: this
// node's bitmap generation is gone, both hold the same data.
func (r *Resource) sourceDone(l *link, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	acts, err := r.stepLocked(SyncDoneAcked{Gen: gen, Current: r.link == l && !l.isDown(), Marks: r.oos.bytes() != 0})
	if err != nil {
		r.log.Error("saving metadata after resync", "err", err)
	}
	if _, ok := has[StartSync](acts); ok {
		r.log.Info("regions were marked during the resync: another pass", "out_of_sync_bytes", r.oos.bytes())
		r.startSync(l, Decision{Outcome: SyncSource})
		return
	}
	if _, ok := has[PeerUpToDate](acts); !ok {
		return
	}
	r.log.Info("resync done: the peer is UpToDate", "bytes", r.resync.done,
		"seconds", time.Since(r.resync.started).Seconds())
}

// syncDone handles the source's SyncDone on the target: every resync record
// came before it, so once the journal has them this node is UpToDate in the
// source's generation.
func (r *Resource) syncDone(gen uint64) error {
	if err := r.journal.SyncWait(); err != nil {
		return fmt.Errorf("%w: journal: %v", ErrLinkDown, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, err := r.stepLocked(SyncDoneReceived{Gen: gen}); err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	r.log.Info("resync done: UpToDate", "gen", gen)
	return nil
}
