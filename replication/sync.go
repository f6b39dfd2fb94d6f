package replication

import (
	"fmt"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// resyncState is the progress of a resync on either side; Resource.mu guards it.
type resyncState struct {
	source, target bool
	tail           bool  // the source replays its journal's tail
	total, done    int64 // bytes
	started        time.Time
}

// refuseOutcome says why this node will not go on with a decision, or ""
// when it will; r.mu held. Split brain and unrelated data make both nodes
// StandAlone: nothing is changed until an operator says which data wins.
func (r *Resource) refuseOutcome(d Decision, remote wire.Hello) string {
	switch {
	case d.Outcome == SplitBrain && !plant.On(plant.MergeSplitBrain):
		r.standAlone = "split brain: both nodes wrote while apart"
	case d.Outcome == Unrelated:
		r.standAlone = "unrelated data: the generation ids share no history"
	case d.Outcome == SyncTarget && r.role == wire.Primary:
		r.standAlone = "the peer holds newer data than this Primary"
	case d.Outcome == SyncSource && remote.Role == wire.Primary:
		r.standAlone = "this node holds newer data than the Primary peer"
	default:
		return ""
	}
	r.log.Error("StandAlone", "why", r.standAlone, "local_gen", fmt.Sprintf("%+v", r.meta.Gen),
		"peer_gen", fmt.Sprintf("%+v", remote.Gen))
	return r.standAlone
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
		r.mu.Unlock()
		l.queue(appendSyncStart(syncTail, false))
		if err := r.tailLoop(l, l.tailFrom); err != nil {
			return err
		}
		if r.oos.bytes() == 0 {
			return r.finishSource(l)
		}
		r.mu.Lock()
		r.resync.tail = false
		r.mu.Unlock()
		l.queue(appendSyncStart(syncBitmap, false)) // marks the tail did not cover
	} else {
		l.queue(appendSyncStart(syncBitmap, d.Full))
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
// Each run of regions is read and queued under Resource.order after the
// journal has applied everything before it, so no write can slip between
// the read and the send and be overwritten on the peer by older data.
func (r *Resource) resyncLoop(l *link) error {
	select {
	case <-l.peerBitmap:
	case <-l.closed:
		return ErrLinkDown
	}
	r.mu.Lock()
	r.resync.total = r.resync.done + r.oos.bytes()
	r.mu.Unlock()
	pace := newPacer(r.cfg.ResyncRate)
	buf := make([]byte, maxRun*RegionSize)
	for reg := r.oos.next(0); reg >= 0; {
		if l.isDown() {
			return ErrLinkDown
		}
		n, err := r.sendRun(l, reg, buf)
		if err != nil {
			return err
		}
		pace.wait(n, l.closed)
		reg = r.oos.next(reg + (n+RegionSize-1)/RegionSize)
	}
	return r.finishSource(l)
}

// finishSource sends SyncDone and a barrier; when the barrier's ack comes
// back the peer is UpToDate.
func (r *Resource) finishSource(l *link) error {
	r.order.Lock()
	defer r.order.Unlock()
	r.mu.Lock()
	gen := r.meta.Gen.Current
	r.mu.Unlock()
	l.queue(wire.AppendSyncDone(nil, gen))
	if !l.sendBarrier(func(acked bool) {
		if acked {
			r.wg.Add(1)
			go func() { defer r.wg.Done(); r.sourceDone(l, gen) }()
		}
	}) {
		return ErrLinkDown
	}
	return nil
}

// sendRun sends the run of marked regions that starts at reg as one record
// and returns its length in bytes.
func (r *Resource) sendRun(l *link, reg int64, buf []byte) (int64, error) {
	r.order.Lock()
	defer r.order.Unlock()
	if err := r.journal.WaitApplied(); err != nil {
		return 0, err
	}
	regions := max(r.oos.run(reg, maxRun), 1)
	off := reg * RegionSize
	n := min(regions*RegionSize, r.size-off)
	if _, err := r.disk.ReadAt(buf[:n], off); err != nil {
		return 0, err
	}
	rec := r.comp.Write(off, buf[:n])
	rec.Seq = r.allocSeq()
	defer rec.Release()
	sent := l.sendRecord(&rec, false, func(acked bool) {
		if !acked {
			return // the bit stays: a later resync sends the region
		}
		for i := range regions {
			r.oos.clear(reg + i)
		}
		r.mu.Lock()
		r.resync.done += n
		r.mu.Unlock()
	})
	if !sent {
		return 0, ErrLinkDown
	}
	l.send(false)
	r.resyncWire.Add(uint64(wireRecordHeader + len(rec.Payload)))
	return n, nil
}

// sourceDone runs when the target acknowledged the end of the resync:
// this node's bitmap generation is gone, both hold the same data.
func (r *Resource) sourceDone(l *link, gen uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link != l || l.isDown() || r.meta.Gen.Current != gen || r.oos.bytes() != 0 {
		return
	}
	r.meta.Gen.Bitmap = 0
	r.resync.source = false
	r.peer.Disk = wire.UpToDate
	if err := saveMeta(r.cfg.MetaDir, r.meta); err != nil {
		r.log.Error("saving metadata after resync", "err", err)
	}
	r.log.Info("resync done: the peer is UpToDate", "bytes", r.resync.done,
		"seconds", time.Since(r.resync.started).Seconds())
}

// syncDone handles the source's SyncDone on the target: every resync record
// came before it, so once the journal has them this node is UpToDate in the
// source's generation.
func (r *Resource) syncDone(l *link, body []byte) error {
	gen, err := wire.ParseSyncDone(body)
	if err != nil {
		return err
	}
	if err := r.journal.SyncWait(); err != nil {
		return fmt.Errorf("%w: journal: %v", ErrLinkDown, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.meta.Gen.Current != gen {
		copy(r.meta.Gen.History[1:], r.meta.Gen.History[:])
		r.meta.Gen.History[0] = r.meta.Gen.Current
	}
	r.meta.Gen.Current, r.meta.Gen.Bitmap = gen, 0
	r.meta.Disk = wire.UpToDate.String()
	r.meta.DiscardMyData = false
	r.oos.reset() // its marks were sent to the source and synced from there
	r.resync.target = false
	if err := saveMeta(r.cfg.MetaDir, r.meta); err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	r.log.Info("resync done: UpToDate", "gen", gen)
	return nil
}
