package coordinator

import (
	"fmt"
	"sync"
	"syscall"
	"time"
)

// ErrFenced is the error a write gets when the gate fails it: this node
// may no longer be Primary. It wraps EIO, the errno an NBD client gets.
var ErrFenced = fmt.Errorf("coordinator: fenced: this node may no longer be Primary: %w", syscall.EIO)

// Gate stands between a Primary's writes and their replies. Writes pass
// through it while Decide says Pass; otherwise new writes and the replies
// of finished ones are held until the coordinator changes its input, or
// failed with ErrFenced. It never blocks a caller: held work waits in a
// list.
type Gate struct {
	mirroring func() bool // the link to the peer is up (Resource.Mirroring)
	onHold    func()      // told when the gate starts to hold (Coordinator.Kick)
	now       func() time.Time

	mu   sync.Mutex // guards the fields below
	in   GateInput  // Verdict and Mirroring are recomputed at each decision
	ls   Lease
	held []heldWork
}

// heldWork is a new write not yet submitted (submit set) or a reply.
type heldWork struct {
	submit func()
	err    error
	done   func(error)
}

// NewGate returns a gate that passes everything until Enable.
func NewGate(onLost OnLostLease, mirroring func() bool) *Gate {
	return &Gate{mirroring: mirroring, now: time.Now, in: GateInput{OnLost: onLost}}
}

// decide evaluates the rule now. g.mu held.
func (g *Gate) decide() GateAction {
	in := g.in
	in.Holder, in.Verdict = g.ls.Holder, Verdict(g.now(), g.ls)
	if in.Enabled && in.Verdict == Serve && !in.PeerFenced {
		in.Mirroring = g.mirroring()
	}
	return Decide(in)
}

// Submit runs submit now if the gate passes, holds it otherwise, or fails
// the write through done.
func (g *Gate) Submit(submit func(), done func(error)) {
	g.mu.Lock()
	a := g.decide()
	if a == Wait {
		g.held = append(g.held, heldWork{submit: submit, done: done})
	}
	g.mu.Unlock()
	g.holding(a)
	switch a {
	case Pass:
		submit()
	case Fail:
		done(ErrFenced)
	}
}

// Reply sends a finished write's result through done, now or once the
// gate passes; an error goes out at once (it acknowledges nothing).
func (g *Gate) Reply(err error, done func(error)) {
	if err != nil {
		done(err)
		return
	}
	g.mu.Lock()
	a := g.decide()
	if a == Wait {
		g.held = append(g.held, heldWork{done: done})
	}
	g.mu.Unlock()
	g.holding(a)
	switch a {
	case Pass:
		done(nil)
	case Fail:
		done(ErrFenced)
	}
}

// Wrap returns done behind the gate: the callback to hand a write.
func (g *Gate) Wrap(done func(error)) func(error) {
	return func(err error) { g.Reply(err, done) }
}

// update changes the gate's input and lease, then releases or fails what
// it held if the rule now says so.
func (g *Gate) update(f func(in *GateInput, ls *Lease)) {
	g.mu.Lock()
	f(&g.in, &g.ls)
	a := g.decide()
	var run []heldWork
	if a != Wait {
		run, g.held = g.held, nil
	}
	g.mu.Unlock()
	for _, w := range run {
		switch {
		case a == Fail:
			w.done(ErrFenced)
		case w.submit != nil:
			w.submit()
		default:
			w.done(w.err)
		}
	}
}

func (g *Gate) holding(a GateAction) {
	if a == Wait && g.onHold != nil {
		g.onHold()
	}
}

// Recheck re-evaluates the rule: time passed, or the link changed.
func (g *Gate) Recheck() { g.update(func(*GateInput, *Lease) {}) }

// Held is the number of writes and replies the gate holds.
func (g *Gate) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held)
}

// Suspended says whether the gate holds writes, or would hold or fail a
// holder's writes now.
func (g *Gate) Suspended() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.held) > 0 || g.ls.Holder && g.decide() != Pass
}

// Await blocks until the gate passes (nil) or fails (ErrFenced): the
// synchronous form of Submit, for a write about to be made, or of Reply,
// for one that is made. A read needs no peer: it passes without a link.
func (g *Gate) Await(read bool) error {
	g.mu.Lock()
	a := g.decide()
	if read && a == Wait && g.ls.Holder && Verdict(g.now(), g.ls) == Serve {
		a = Pass // waiting only for the peer's fence
	}
	if a != Wait {
		g.mu.Unlock()
		if a == Fail {
			return ErrFenced
		}
		return nil
	}
	ch := make(chan error, 1)
	g.held = append(g.held, heldWork{submit: func() { ch <- nil }, done: func(err error) { ch <- err }})
	g.mu.Unlock()
	g.holding(Wait)
	return <-ch
}

// Verdict is the lease's verdict now.
func (g *Gate) Verdict() LeaseVerdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	return Verdict(g.now(), g.ls)
}

// SetPrimary tells the gate whether the node is Primary now.
func (g *Gate) SetPrimary(p bool) { g.update(func(in *GateInput, _ *Lease) { in.Primary = p }) }

// Close fails everything held and every write from now on: the daemon stops.
func (g *Gate) Close() { g.update(func(in *GateInput, ls *Lease) { *ls = Lease{} }) }
