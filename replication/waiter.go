package replication

import (
	"sync"
	"sync/atomic"
)

// waiter completes a write when both of its halves are done: the local
// journal append and the peer's acknowledgement. Whichever finishes second
// wakes the writer, or calls then; neither half blocks a goroutine.
type waiter struct {
	left  atomic.Int32
	err   error // the local half's error; written before its decrement
	ready chan struct{}
	then  func(error) // if set, called with the local error instead of a wake
	// busy, if set, is the link the write went out on: its localBusy
	// counts the write until the local half is done.
	busy *link
}

var waiters = sync.Pool{New: func() any { return &waiter{ready: make(chan struct{}, 1)} }}

func newWaiter() *waiter {
	w := waiters.Get().(*waiter)
	w.left.Store(2)
	w.err, w.then, w.busy = nil, nil, nil
	return w
}

// localDone is the journal's completion. It wakes the busy link's reader
// when this was the last local work its pending writes waited for.
func (w *waiter) localDone(_ uint64, err error) {
	if l := w.busy; l != nil {
		w.busy = nil
		if l.localBusy.Add(-1) == 0 && l.inflight.Load() > 0 {
			l.pr.Kick()
		}
	}
	w.err = err
	w.done()
}

// peerDone is the peer's acknowledgement, or the link giving up on it.
func (w *waiter) peerDone() { w.done() }

func (w *waiter) done() {
	if w.left.Add(-1) != 0 {
		return
	}
	if then := w.then; then != nil {
		err := w.err
		waiters.Put(w)
		then(err)
		return
	}
	w.ready <- struct{}{}
}

// wait blocks until both halves are done, returns the local error and
// recycles the waiter.
func (w *waiter) wait() error {
	<-w.ready
	err := w.err
	waiters.Put(w)
	return err
}
