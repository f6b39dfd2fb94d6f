package coordinator

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/etcdtest"
)

// fakeNode is a resource that only remembers its role.
type fakeNode struct {
	mu      sync.Mutex
	primary bool
	changed chan struct{} // closed and replaced at each role change
}

func newFakeNode() *fakeNode { return &fakeNode{changed: make(chan struct{})} }

func (n *fakeNode) State() NodeState {
	n.mu.Lock()
	defer n.mu.Unlock()
	return NodeState{Primary: n.primary, Disk: "UpToDate", Gen: 1,
		Peer: PeerView{Mirroring: true, PeerDisk: "UpToDate", Replication: "Established"}}
}

func (n *fakeNode) set(primary bool) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.primary != primary {
		n.primary = primary
		close(n.changed)
		n.changed = make(chan struct{})
	}
	return nil
}

func (n *fakeNode) Promote() error { return n.set(true) }
func (n *fakeNode) Demote() error  { return n.set(false) }
func (n *fakeNode) Depose()        { n.set(false) }

// await waits until the node's role is primary, or fails after timeout.
func (n *fakeNode) await(t *testing.T, primary bool, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		n.mu.Lock()
		is, ch := n.primary, n.changed
		n.mu.Unlock()
		if is == primary {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("node not primary=%v after %v", primary, timeout)
		}
	}
}

func startCoordinator(t *testing.T, eps []string, id string, mayStart bool) (*Coordinator, *fakeNode, *Gate) {
	t.Helper()
	n := newFakeNode()
	g := NewGate(Suspend, func() bool { return true })
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(Config{Endpoints: eps, Prefix: "/test", Name: "r0", ID: id, TTL: 2 * time.Second,
		MayStart: mayStart, Logger: log.With("node", id)}, n, g)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, n, g
}

// TestElectionFencesOnQuorumLoss: the node named at start wins and
// promotes; with two of three etcd members stopped its gate holds writes
// before its lease runs out and the other node does not promote; once
// etcd is back the same node is still the holder and its held write's
// reply goes out.
func TestElectionFencesOnQuorumLoss(t *testing.T) {
	if !etcdtest.Available() {
		t.Skip("etcd not installed (.ci/run installs etcd-server)")
	}
	cl := etcdtest.Start(t, 3, nil)
	a, na, ga := startCoordinator(t, cl.Endpoints(), "a", true)
	_, nb, _ := startCoordinator(t, cl.Endpoints(), "b", false)
	na.await(t, true, 10*time.Second)
	if err := a.CheckPromote(); err != nil {
		t.Fatal(err)
	}

	cl.Stop(1)
	cl.Stop(2)
	lost := time.Now()
	replied := make(chan error, 1)
	// The deadline passes on this node's clock alone: at most TTL - margin
	// after the last renewal granted, and an etcd leader that lost its
	// quorum may still grant renewals until it steps down (an election
	// timeout, 500ms in etcdtest).
	for ga.Verdict() == Serve {
		if time.Since(lost) > 2*time.Second+time.Second {
			t.Fatal("still serving a TTL and an election timeout after etcd lost its quorum")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ga.Reply(nil, func(err error) { replied <- err })
	select {
	case err := <-replied:
		t.Fatalf("a reply went out after the lease's deadline: %v", err)
	case <-time.After(3 * time.Second): // longer than a TTL: b had every chance to win
	}
	if nb.State().Primary {
		t.Fatal("the other node promoted without quorum")
	}

	cl.Restart(1)
	cl.Restart(2)
	if err := <-replied; err != nil {
		t.Fatalf("held reply failed after etcd came back: %v", err)
	}
	na.await(t, true, 10*time.Second)
	if st := a.Status(); st.Holder != "a" || st.Suspended {
		t.Fatalf("after etcd came back: %+v", st)
	}
	if nb.State().Primary {
		t.Fatal("two Primaries")
	}
}
