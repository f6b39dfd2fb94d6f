package replication

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// freeAddr is a loopback address no one listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// listenLoopback binds a loopback listener for a Resource's PeerListen,
// and returns its address and the Config.Listen that hands the Resource
// that listener. The port stays bound from the start: one freed and bound
// again later (freeAddr) may be taken in between, even by the next
// freeAddr (about one pair in 10,000 gets the same port twice: the first
// node then dials itself, and the second fails to listen, "address already
// in use"), or by the source port of any dial.
func listenLoopback(t *testing.T) (addr string, listen func(string) (net.Listener, error)) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() }) // closed already by the Resource that took it
	addr = ln.Addr().String()
	return addr, func(a string) (net.Listener, error) {
		if a != addr {
			return nil, fmt.Errorf("replication test: listen on %s: the listener bound is %s", a, addr)
		}
		return ln, nil
	}
}

// openDialingPair opens two Resources on loopback that dial each other, the
// first Primary, both on empty disks (in sync from the start), each on a
// small in-memory journal.
func openDialingPair(t *testing.T) (a, b *Resource) {
	t.Helper()
	return openPairDialing(t, true)
}

// openPairDialing is openDialingPair; without bDials the second node only
// listens (it has no peer address) and the first dials it.
func openPairDialing(t *testing.T, bDials bool) (a, b *Resource) {
	t.Helper()
	secret := []byte("pair-test-secret")
	la, listenA := listenLoopback(t)
	lb, listenB := listenLoopback(t)
	open := func(role wire.Role, addr string, listen func(string) (net.Listener, error), peer string) *Resource {
		r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
			FS: journal.NewMemFS(), JournalSize: 4 << 20, Role: role, Logger: slog.New(slog.DiscardHandler), Created: true, PeerListen: addr, Peer: peer,
			Listen: listen, Secret: secret, PeerTimeout: 5 * time.Second, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		return r
	}
	if !bDials {
		return open(wire.Primary, la, listenA, lb), open(wire.Secondary, lb, listenB, "")
	}
	return open(wire.Primary, la, listenA, lb), open(wire.Secondary, lb, listenB, la)
}

// waitState waits until ok holds for r's status, woken by every change of
// its link or StandAlone state, and fails the test after timeout.
func waitState(t *testing.T, r *Resource, what string, timeout time.Duration, ok func(Status) bool) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		r.mu.Lock()
		changed := r.linkChange
		r.mu.Unlock()
		st := r.Status()
		if ok(st) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			t.Fatalf("%s: not %s after %v: %s, connection %s, standalone %q, generation %+v", r.name, what,
				timeout, st.Role, st.Peer.Connection, st.StandAlone, st.Gen)
		}
	}
}

func connected(st Status) bool { return st.Peer.Connection == "Connected" }

func splitBrained(st Status) bool {
	return st.Peer.Connection == "StandAlone" && strings.Contains(st.StandAlone, "split brain")
}

// TestSplitBrainBothStandAlone: after a split brain, whichever node connects
// first, both end StandAlone with "split brain": the node that finds it
// first tells the other when it dials, instead of leaving it Connecting.
// Each run: a connected pair, disconnect both, promote the Secondary, write
// on both, connect both in quick succession (alternating who is first).
func TestSplitBrainBothStandAlone(t *testing.T) {
	splitBrainRuns(t, true)
}

// TestSplitBrainBothStandAloneListenOnly is TestSplitBrainBothStandAlone
// with a Secondary that only listens: it learns of the split brain from the
// node that dials it, whichever connects first.
func TestSplitBrainBothStandAloneListenOnly(t *testing.T) {
	splitBrainRuns(t, false)
}

func splitBrainRuns(t *testing.T, bDials bool) {
	const runs = 50
	for i := range runs {
		a, b := openPairDialing(t, bDials)
		waitState(t, a, "connected", 10*time.Second, connected)
		waitState(t, b, "connected", 10*time.Second, connected)
		a.Disconnect()
		b.Disconnect()
		for _, r := range []*Resource{a, b} {
			waitState(t, r, "apart", 10*time.Second, func(st Status) bool {
				return st.Peer.Connection == "StandAlone" && !r.Mirroring()
			})
		}
		if err := b.SetRole(wire.Primary, false); err != nil {
			t.Fatalf("run %d: promote: %v", i, err)
		}
		if ga, gb := a.Status().Gen, b.Status().Gen; ga.Bitmap == 0 || gb.Bitmap == 0 || ga.Current == gb.Current {
			t.Fatalf("run %d: not apart: generations %+v and %+v", i, ga, gb)
		}
		for n, r := range []*Resource{a, b} {
			if _, err := r.WriteAt(bytes.Repeat([]byte{byte(n + 1)}, 4096), int64(n)*4096); err != nil {
				t.Fatalf("run %d: write on %d: %v", i, n, err)
			}
		}
		first, second := a, b
		if i%2 == 1 {
			first, second = b, a
		}
		first.Connect()
		second.Connect()
		for _, r := range []*Resource{a, b} {
			waitState(t, r, fmt.Sprintf("StandAlone for split brain in run %d", i), 10*time.Second, splitBrained)
		}
		a.Close() // frees the ports now; the test's cleanup closes them again, harmlessly
		b.Close()
	}
}
