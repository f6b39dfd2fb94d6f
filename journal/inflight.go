package journal

import (
	"fmt"
	"sync"
)

// Writes in place run concurrently when they do not overlap. The applier
// starts each on a goroutine of its own (at most maxInFlight at once) and
// goes on with the records after it. Order holds as it does for one write
// at a time:
//
//   - a record waits, before it is applied, for the writes in flight that
//     overlap it: overlapping records land in seq order;
//   - what follows an apply (the written and done callbacks, the end of a
//     batch) runs in seq order: while a write is in flight, the applier
//     queues those steps behind it, and whoever finishes the oldest step
//     runs the ready head of the queue;
//   - appliedSeq is the last seq with every record up to it on the disk,
//     so a checkpoint never passes a write still in flight (a batch that
//     syncs, holds a sync or a checkpoint first waits for every write).
//
// Recovery needs nothing more: an extent frame is in the segment before
// its write starts, and replay never applies an older record over bytes a
// later extent covers (coverMap), whichever writes the crash let through.

// maxInFlight is how many writes in place run at once. Buffered writes to
// one file take its inode lock in turn (ext4): more would spin on it.
const maxInFlight = 2

// flights is the writes in place in flight and the steps queued behind
// them. The applier (whoever holds its role) adds; the goroutines of the
// writes and whoever runs the queue take away.
type flights struct {
	mu       sync.Mutex
	ended    *sync.Cond // on mu: a write ended, or the queue emptied
	queue    []flight   // seq order
	running  int        // writes of queue not yet on the disk
	issued   uint64     // the applier handled the records up to it
	draining bool       // a goroutine runs the queue's head
	failed   error      // the first write in place that failed
	failSeq  uint64     // its seq: appliedSeq stays below it
}

// flight is a step of the queue: a write in place (running until its data
// is on the disk), or only the completion of records applied behind one.
type flight struct {
	seq      uint64
	off, end int64
	running  bool
	then     func() // runs in queue order once running is false
}

func (f *flights) init() { f.ended = sync.NewCond(&f.mu) }

// busy says whether steps are queued: completions must then queue too.
func (f *flights) busy() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue) > 0 || f.draining
}

// awaitRange waits until no write in flight overlaps [off, end).
func (f *flights) awaitRange(off, end int64) {
	f.mu.Lock()
	for f.overlaps(off, end) {
		f.ended.Wait()
	}
	f.mu.Unlock()
}

// overlaps says whether a write in flight overlaps [off, end). Requires mu.
func (f *flights) overlaps(off, end int64) bool {
	if f.running == 0 {
		return false
	}
	for i := range f.queue {
		if q := &f.queue[i]; q.running && q.off < end && off < q.end {
			return true
		}
	}
	return false
}

// awaitIdle waits until every write has ended and every queued step ran.
func (f *flights) awaitIdle() {
	f.mu.Lock()
	for len(f.queue) > 0 || f.draining {
		f.ended.Wait()
	}
	f.mu.Unlock()
}

// failure is the first write in place that failed, if any.
func (f *flights) failure() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.failed
}

// startInPlace starts it's write in place on a goroutine, once no write in
// flight overlaps it and fewer than maxInFlight run; its completion (then)
// queues behind the steps before it.
func (j *Journal) startInPlace(it *item, then func(err error)) {
	f, r := &j.flights, &it.rec
	off, end := r.Offset, r.Offset+int64(r.RawLen)
	f.mu.Lock()
	for f.running >= maxInFlight || f.overlaps(off, end) {
		f.ended.Wait()
	}
	f.queue = append(f.queue, flight{seq: r.Seq, off: off, end: end, running: true})
	f.running++
	f.issued = r.Seq
	f.mu.Unlock()
	go j.writeInPlace(it, then)
}

// writeInPlace is the goroutine of one write in place.
func (j *Journal) writeInPlace(it *item, then func(err error)) {
	t := j.clock()
	r := &it.rec
	var scratch []byte // unused: the data is lent or decoded (prepareInPlace)
	err := applyRecord(j.disk, r, &scratch)
	j.observe(StageApply, t)
	if err != nil {
		err = fmt.Errorf("journal: apply seq %d to disk: %w", r.Seq, err)
		j.fail(err)
	}
	f := &j.flights
	f.mu.Lock()
	for i := range f.queue {
		if q := &f.queue[i]; q.seq == r.Seq && q.running {
			q.running, q.then = false, func() { then(err) }
			break
		}
	}
	f.running--
	if err != nil && f.failed == nil {
		f.failed, f.failSeq = err, r.Seq
	}
	j.appliedSeq.Store(f.appliedLocked())
	f.ended.Broadcast()
	f.mu.Unlock()
	j.prog.signal()
	j.runQueue()
}

// appliedLocked is the last seq with every record up to it on the disk.
// Requires mu.
func (f *flights) appliedLocked() uint64 {
	applied := f.issued
	for i := range f.queue {
		if f.queue[i].running {
			applied = f.queue[i].seq - 1
			break
		}
	}
	if f.failSeq != 0 {
		applied = min(applied, f.failSeq-1)
	}
	return applied
}

// setApplied records that the applier applied the records up to seq:
// appliedSeq moves there unless a write before it is still in flight.
func (j *Journal) setApplied(seq uint64) {
	f := &j.flights
	f.mu.Lock()
	f.issued = seq
	j.appliedSeq.Store(f.appliedLocked())
	f.mu.Unlock()
}

// afterFlights runs then now if nothing is queued, or queues it behind the
// steps queued before it.
func (j *Journal) afterFlights(then func()) {
	f := &j.flights
	f.mu.Lock()
	if len(f.queue) == 0 && !f.draining {
		f.mu.Unlock()
		then()
		return
	}
	f.queue = append(f.queue, flight{seq: f.issued, then: then})
	f.mu.Unlock()
	j.runQueue()
}

// runQueue runs the queue's steps from its head while they are ready,
// unless another goroutine does already.
func (j *Journal) runQueue() {
	f := &j.flights
	f.mu.Lock()
	if f.draining {
		f.mu.Unlock()
		return
	}
	f.draining = true
	for len(f.queue) > 0 && !f.queue[0].running {
		then := f.queue[0].then
		f.queue[0] = flight{}
		f.queue = f.queue[1:]
		f.mu.Unlock()
		then()
		f.mu.Lock()
	}
	f.draining = false
	if len(f.queue) == 0 {
		f.ended.Broadcast()
	}
	f.mu.Unlock()
}
