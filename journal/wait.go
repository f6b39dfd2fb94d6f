package journal

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
)

// ErrCanceled is returned by AwaitApplied and AwaitWritten when their cancel
// channel closes first.
var ErrCanceled = errors.New("journal: wait canceled")

// progress wakes the goroutines that wait for the journal to get somewhere
// (AwaitApplied, AwaitWritten). Whoever moves writtenSeq or appliedSeq, fails
// the journal or closes it calls signal afterwards; a waiter takes the
// channel before it looks, so it either sees the progress or is woken by it.
// While nobody waits, signal costs one atomic load.
type progress struct {
	mu   sync.Mutex
	ch   chan struct{} // closed and dropped by signal; nil while nobody waits
	lost seqRange      // the last records a failed segment write dropped

	waiting atomic.Bool  // ch != nil
	ahead   atomic.Int32 // waiters for a seq not appended when they looked
}

// seqRange is the records of the failed segment writes in a row (nothing
// written in between): they were completed with the error and are never
// written nor applied. written is writtenSeq when they failed.
type seqRange struct{ first, last, written uint64 }

// target is what a waiter for seq waits for: the records before the lost
// ones, if seq is one of them.
func (r seqRange) target(seq uint64) uint64 {
	if r.last != 0 && r.first <= seq && seq <= r.last {
		return r.first - 1
	}
	return seq
}

// signal wakes every waiter.
func (p *progress) signal() {
	if !p.waiting.Load() {
		return
	}
	p.mu.Lock()
	if p.ch != nil {
		close(p.ch)
		p.ch = nil
		p.waiting.Store(false)
	}
	p.mu.Unlock()
}

// wait returns the channel the next signal closes, and the lost records.
func (p *progress) wait() (<-chan struct{}, seqRange) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ch == nil {
		p.ch = make(chan struct{})
		p.waiting.Store(true)
	}
	return p.ch, p.lost
}

// lose notes that a failed segment write dropped the records first..last,
// when writtenSeq was written, and wakes the waiters.
func (p *progress) lose(first, last, written uint64) {
	p.mu.Lock()
	if p.lost.last != 0 && p.lost.written == written {
		p.lost.last = last
	} else {
		p.lost = seqRange{first, last, written}
	}
	p.mu.Unlock()
	p.signal()
}

// AwaitApplied waits until the records up to seq are applied to the disk
// (Stats().AppliedSeq >= seq), so that reads of the disk see them. It returns the
// journal's failure, or ErrClosed once Close has begun, if that comes first,
// and an error wrapping ErrCanceled when cancel (may be nil) closes first.
//
// Records a failed segment write dropped (their appenders got the error) are
// never applied: waiting for one of them waits for the records before it.
// A seq not appended yet is waited for too: on a replica, whose seqs may skip,
// the applied seq (Stats().AppliedSeq) passing it is enough.
//
// Waiting wakes the writer: records queued by AppendLater or SyncLater,
// before the call or during it, are written even if nobody calls
// WriteQueued, so a waiter never waits for a record stuck in the queue.
func (j *Journal) AwaitApplied(seq uint64, cancel <-chan struct{}) error {
	return j.await(seq, cancel, &j.appliedSeq, "applied")
}

// AwaitWritten waits until the records up to seq are written to a segment: a Reader opened from then on finds every one of them,
// and recovery after a crash of this process does too. Errors, lost records
// and waking the writer are as for AwaitApplied.
func (j *Journal) AwaitWritten(seq uint64, cancel <-chan struct{}) error {
	return j.await(seq, cancel, &j.writtenSeq, "written")
}

// WaitApplied waits until every record appended before it was called is
// applied to the disk, so reads of the disk see them all: AwaitApplied of
// LastSeq, never canceled.
func (j *Journal) WaitApplied() error { return j.AwaitApplied(j.LastSeq(), nil) }

// await waits until at reaches seq (see AwaitApplied).
func (j *Journal) await(seq uint64, cancel <-chan struct{}, at *atomic.Uint64, what string) error {
	if at.Load() >= seq {
		return nil // reached already: no channel to make, no waiter to signal
	}
	ahead := false // counted in prog.ahead: appends wake the writer
	defer func() {
		if ahead {
			j.prog.ahead.Add(-1)
		}
	}()
	for first := true; ; first = false {
		ch, lost := j.prog.wait()
		target := lost.target(seq)
		if at.Load() >= target {
			return nil
		}
		if err := j.stopped(); err != nil {
			return err
		}
		if first {
			ahead = true
			j.prog.ahead.Add(1) // before looking at lastSeq: see enqueueLocked
		}
		if ahead && j.lastSeq.Load() >= target {
			ahead = false
			j.prog.ahead.Add(-1)
			j.kickQueued()
		}
		select {
		case <-ch:
		case <-cancel:
			return fmt.Errorf("%w: seq %d not %s (at %d)", ErrCanceled, seq, what, at.Load())
		}
	}
}

// stopped returns the journal's failure, or ErrClosed once Close has begun.
func (j *Journal) stopped() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failure != nil {
		return j.failure
	}
	if j.closing {
		return ErrClosed
	}
	return nil
}

// kickQueued wakes the writer if records are queued and nobody holds the
// writer role (whoever holds it wakes the writer when done, see
// releaseWriter). Taking mu orders this after the append that assigned any
// seq the caller saw in lastSeq, so that record is in the queue by now.
func (j *Journal) kickQueued() {
	j.mu.Lock()
	pending := len(j.queue) > 0 && !j.writing
	j.mu.Unlock()
	if pending {
		j.wakeWriter()
	}
}
