package replication

import (
	"fmt"
	"io"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
	"github.com/nbdmirror/nbdmirror/journal"
)

// runRead is a run of out-of-sync regions read from the disk ahead of its
// send, or the error that ended the reading.
type runRead struct {
	reg, regions int64          // first region, and how many
	off, n       int64          // the bytes of the disk they cover
	rec          journal.Record // its data in a pooled buffer of its own (readToSend)
	// asOf is the journal's last seq when the run was read: its data
	// holds every write up to that one and none after.
	asOf uint64
	err  error
}

// readAhead starts reading the out-of-sync runs, from the first, ahead of
// the sender: up to tune.resyncReadAhead of them wait, read and compressed.
// The reading waits for the journal to apply what came before each run,
// and reads and compresses it without Resource.order. stop ends the
// reading and gives back what was read and not sent.
func (r *Resource) readAhead(l *link) (runs <-chan *runRead, stop func()) {
	ch := make(chan *runRead, tune.resyncReadAhead)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer close(ch)
		for reg := r.oos.next(0); reg >= 0; {
			run := r.readRun(l, reg)
			select {
			case ch <- run:
			case <-quit:
				run.rec.Release()
				return
			}
			if run.err != nil {
				return
			}
			reg = r.oos.next(reg + run.regions)
		}
	}()
	return ch, func() {
		close(quit)
		for run := range ch {
			run.rec.Release()
		}
		<-done
	}
}

// readRun reads and compresses the run of marked regions that starts at
// reg, once the journal applied every write appended before.
func (r *Resource) readRun(l *link, reg int64) *runRead {
	asOf := r.journal.LastSeq()
	if err := r.journal.AwaitApplied(asOf, l.closed); err != nil {
		return &runRead{err: err}
	}
	if err := r.lostUnder(l); err != nil {
		return &runRead{err: err}
	}
	regions := max(r.oos.run(reg, tune.maxRun), 1)
	run := &runRead{reg: reg, regions: regions, off: reg * RegionSize, asOf: asOf}
	run.n = min(regions*RegionSize, r.size-run.off)
	var err error
	if run.rec, err = r.readToSend(run.off, run.n); err != nil {
		r.health.fault(OpRead, err) // detach: the resync stops with the disk
		return &runRead{err: err}
	}
	return run
}

// readToSend reads n bytes of the disk at off into a pooled buffer and
// makes them a record to send (journal's WriteToSend), which owns the
// buffer: Release gives it back.
func (r *Resource) readToSend(off, n int64) (journal.Record, error) {
	bp := bufpool.Get(int(n))
	if m, err := r.disk.ReadAt(*bp, off); err != nil || m < len(*bp) {
		bufpool.Put(bp)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return journal.Record{}, err
	}
	return r.comp.WriteToSend(off, bp), nil
}

// rereadRun reads run again once every write appended so far
// reached the disk. The caller holds Resource.order; most of the wait is
// done without it, so that writers do not queue behind a long apply
// backlog (a Primary that wrote alone at full speed has one); under order
// only what was queued meanwhile is left, and no write is appended.
func (r *Resource) rereadRun(l *link, run *runRead) error {
	run.rec.Release()
	r.order.Unlock()
	err := r.journal.AwaitApplied(r.journal.LastSeq(), l.closed)
	r.order.Lock()
	if err == nil {
		err = r.journal.AwaitApplied(r.journal.LastSeq(), l.closed)
	}
	if err == nil {
		err = r.lostUnder(l)
	}
	if err == nil {
		if run.rec, err = r.readToSend(run.off, run.n); err != nil {
			r.health.fault(OpRead, err)
		}
	}
	if err != nil {
		return err
	}
	run.asOf = r.journal.LastSeq()
	return nil
}

// lostUnder fails the resync once a write this link may have carried to
// the peer failed in the journal here. The disk lacks that write, which the
// peer may hold, so any run read from the disk from then on may undo it
// there; and its reply may still be success, through the peer (see
// replyOf), if that run's ack clears the last mark before the write's own
// ack comes (a FUA write waits for a sync). The waits for the journal
// before each read see the failure: a lost record counts as done for them.
func (r *Resource) lostUnder(l *link) error {
	if lost := r.journal.LostSeq(); lost > l.fromSeq {
		return fmt.Errorf("the write of journal seq %d failed here, and the peer may hold it: the disk cannot be the source", lost)
	}
	return nil
}
