package coordinator

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// testGate is a gate on a clock the test moves.
func testGate(onLost OnLostLease) (*Gate, *time.Time, *atomic.Bool) {
	var mirroring atomic.Bool
	mirroring.Store(true)
	now := time.Now()
	g := NewGate(onLost, mirroring.Load)
	g.now = func() time.Time { return now }
	g.update(func(in *GateInput, ls *Lease) {
		in.Enabled, in.Primary = true, true
		*ls = Lease{Holder: true, Deadline: now.Add(3 * time.Second), Gone: now.Add(6 * time.Second)}
	})
	return g, &now, &mirroring
}

type replies struct{ got []error }

func (r *replies) done(err error) { r.got = append(r.got, err) }

func TestGateHoldsRepliesPastTheDeadline(t *testing.T) {
	g, now, _ := testGate(Suspend)
	var r replies
	g.Reply(nil, r.done)
	if len(r.got) != 1 || r.got[0] != nil {
		t.Fatalf("within the lease: %v", r.got)
	}
	*now = now.Add(3 * time.Second)
	g.Reply(nil, r.done)
	submitted := false
	g.Submit(func() { submitted = true }, r.done)
	if len(r.got) != 1 || submitted || g.Held() != 2 || !g.Suspended() {
		t.Fatalf("past the deadline: replies %v, submitted %v, held %d", r.got, submitted, g.Held())
	}
	g.Reply(errors.New("disk"), r.done) // an error acknowledges nothing: it goes out
	if len(r.got) != 2 || r.got[1] == nil {
		t.Fatalf("an error reply was held: %v", r.got)
	}
	renewed := *now
	g.update(func(_ *GateInput, ls *Lease) { ls.Deadline = renewed.Add(3 * time.Second) })
	if len(r.got) != 3 || r.got[2] != nil || !submitted || g.Held() != 0 || g.Suspended() {
		t.Fatalf("after a renewal: replies %v, submitted %v, held %d", r.got, submitted, g.Held())
	}
}

func TestGateFailsHeldWritesWhenDeposed(t *testing.T) {
	g, now, _ := testGate(Suspend)
	var r replies
	*now = now.Add(7 * time.Second) // past Gone: held, not failed, until the lease is known lost
	g.Reply(nil, r.done)
	g.Submit(func() { t.Fatal("submitted after deposition") }, r.done)
	g.update(func(_ *GateInput, ls *Lease) { *ls = Lease{} })
	if len(r.got) != 2 || !errors.Is(r.got[0], ErrFenced) || !errors.Is(r.got[1], ErrFenced) {
		t.Fatalf("held writes of a deposed holder: %v", r.got)
	}
}

func TestGateIOErrorFailsAtOnce(t *testing.T) {
	g, now, _ := testGate(IOError)
	var r replies
	*now = now.Add(4 * time.Second)
	g.Reply(nil, r.done)
	if err := g.Await(true); !errors.Is(err, ErrFenced) || len(r.got) != 1 || !errors.Is(r.got[0], ErrFenced) {
		t.Fatalf("io-error past the deadline: %v, read %v", r.got, err)
	}
}

func TestGateWaitsForThePeerFence(t *testing.T) {
	g, _, mirroring := testGate(IOError)
	mirroring.Store(false)
	var r replies
	g.Reply(nil, r.done)
	if err := g.Await(true); err != nil {
		t.Fatalf("a read waited for the peer's fence: %v", err)
	}
	if len(r.got) != 0 || g.Held() != 1 {
		t.Fatalf("a reply the peer may lack went out before the fence: %v", r.got)
	}
	g.update(func(in *GateInput, _ *Lease) { in.PeerFenced = true })
	if len(r.got) != 1 || r.got[0] != nil {
		t.Fatalf("after the fence: %v", r.got)
	}
}

func TestGateAwaitBlocksUntilRenewal(t *testing.T) {
	g, now, _ := testGate(Suspend)
	*now = now.Add(4 * time.Second)
	held := make(chan struct{}, 1)
	g.onHold = func() { held <- struct{}{} }
	got := make(chan error, 1)
	go func() { got <- g.Await(false) }()
	<-held // Await has registered under the gate's lock
	select {
	case err := <-got:
		t.Fatalf("Await returned %v while the lease was held", err)
	default:
	}
	renewed := *now
	g.update(func(_ *GateInput, ls *Lease) { ls.Deadline = renewed.Add(time.Second) })
	if err := <-got; err != nil {
		t.Fatal(err)
	}
}
