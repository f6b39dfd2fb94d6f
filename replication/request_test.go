package replication

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// TestRequestOutcomes enumerates how a write ends: every final local state
// against every final peer state, under each protocol, with and without
// FUA, under each --on-io-error policy. The peer half of a request on a
// link ends with the ack its protocol asks for (needFor) or lost; one that
// no link took is marked at submission. The local half ends done, failed
// (an error that is no disk fault), faulted (EIO: the disk failed) or
// none (the node is Diskless: the write went to the peer only). The client
// hears success exactly when a node holds the write and can serve it: this
// one while its disk is in use, or the peer when this node's disk is out or
// going out (detach) and the peer holds everything the disk held. The
// region is marked whenever the nodes may differ and this node's disk
// stays.
func TestRequestOutcomes(t *testing.T) {
	type row struct {
		local    string // done, failed, fault, none
		peer     string // "acked": the ack the protocol asks for
		policy   OnIOError
		ok, mark bool
		// disk: "out" the disk went out (another write's fault) before
		// the request completed; "marked" another region was marked out
		// of sync before: the peer lacks writes only this disk holds.
		disk string
	}
	var rows []row
	for _, policy := range []OnIOError{OnIOErrorDetach, OnIOErrorPassOn} {
		rows = append(rows,
			row{"done", "acked", policy, true, false, ""},
			row{"done", "lost", policy, true, true, ""},     // the peer may lack it
			row{"done", "none", policy, true, false, ""},    // marked when submitted
			row{"failed", "acked", policy, false, true, ""}, // the peer holds what this node failed
			row{"failed", "lost", policy, false, true, ""},  // the peer may hold it
			row{"failed", "none", policy, false, false, ""}, // marked when submitted
			row{"none", "acked", policy, true, false, ""},   // Diskless: the peer holds it
			row{"none", "lost", policy, false, false, ""},   // Diskless, and the peer is gone: EIO
			row{"none", "none", policy, false, false, ""},
		)
	}
	rows = append(rows,
		// detach: the disk goes out under the write; the peer has it.
		row{"fault", "acked", OnIOErrorDetach, true, false, ""},
		row{"fault", "lost", OnIOErrorDetach, false, false, ""},
		row{"fault", "none", OnIOErrorDetach, false, false, ""},
		// pass-on: the client hears the fault, the disk stays, marked.
		row{"fault", "acked", OnIOErrorPassOn, false, true, ""},
		row{"fault", "lost", OnIOErrorPassOn, false, true, ""},
		row{"fault", "none", OnIOErrorPassOn, false, false, ""},
		// The disk went out while the write was done on it: only that
		// disk holds a write the peer never took, and it serves no more.
		row{"done", "acked", OnIOErrorDetach, true, false, "out"},
		row{"done", "lost", OnIOErrorDetach, false, false, "out"},
		row{"done", "none", OnIOErrorDetach, false, false, "out"},
		// Regions marked: the peer lacks writes only this disk holds, and
		// would hold this one the disk lacks; neither copy would be whole.
		row{"fault", "acked", OnIOErrorDetach, false, true, "marked"}, // the peer holds what the disk failed
		row{"done", "lost", OnIOErrorDetach, true, true, "marked"},
	)
	for _, proto := range []Protocol{ProtocolA, ProtocolB, ProtocolC} {
		for _, fua := range []bool{false, true} {
			l := &link{proto: proto}
			need := l.needFor(fua)
			for _, r := range rows {
				for _, localFirst := range []bool{true, false} {
					name := fmt.Sprintf("%c/fua=%v/%s/local=%s/peer=%s/disk=%s/localFirst=%v", proto, fua, r.policy, r.local, r.peer, r.disk, localFirst)
					t.Run(name, func(t *testing.T) {
						checkOutcome(t, r.local, r.peer, r.disk, r.policy, need, localFirst, r.ok, r.mark)
					})
				}
			}
		}
	}
}

// followPendingNow says whether h's followGate waits for its answer.
func followPendingNow(h *diskHealth) bool {
	h.follow.mu.Lock()
	defer h.follow.mu.Unlock()
	return h.follow.state == followPending
}

// A write that succeeds only through the peer, because the disk failed
// under it, replies once the peer is known to have followed the node into
// its Diskless generation, and fails with EIO if that is never known (the
// link ended before): the peer may share the old disk's generation, and
// that disk, restarted on, would be taken for the newer. A FLUSH whose
// journal sync met the fault too: the writes it makes durable, which the
// disk may lack, are then durable on the peer alone.
func TestThroughPeerWaitsForTheFollow(t *testing.T) {
	for _, answer := range []followState{followed, followUnknown} {
		for _, op := range []string{OpWrite, OpFlush} {
			name := fmt.Sprintf("%s/answer %d", op, answer)
			res := &Resource{oos: newBitmap(testSize), health: &diskHealth{policy: OnIOErrorDetach}}
			var got []error
			q := newRequest(res, 8192, 4096, func(err error) { got = append(got, err) })
			if op == OpFlush {
				q = newRequest(res, 0, 0, func(err error) { got = append(got, err) })
				q.op = OpFlush
			}
			q.peerResult(true, wire.Journaled)
			q.localResult(7, fmt.Errorf("injected: %w", syscall.EIO))
			if len(got) != 0 {
				t.Fatalf("%s: replied %v before the follow was known", name, got)
			}
			res.health.follow.set(answer)
			if len(got) != 1 {
				t.Fatalf("%s: completed %d times", name, len(got))
			}
			if ok := got[0] == nil; ok != (answer == followed) || !ok && !errors.Is(got[0], syscall.EIO) {
				t.Fatalf("%s: reply %v", name, got[0])
			}
			// A later one through the peer on the same answer replies at once.
			q = newRequest(res, 0, q.length, func(err error) { got = append(got, err) })
			q.op, q.local = op, localNone
			q.peerResult(true, wire.Journaled)
			if len(got) != 2 || (got[1] == nil) != (answer == followed) {
				t.Fatalf("%s: a later one replied %v", name, got[1:])
			}
		}
	}
}

// checkOutcome runs one request to its end, its halves ending in the order
// given, and checks its reply and mark.
func checkOutcome(t *testing.T, local, peer, disk string, policy OnIOError, need wire.AckKind, localFirst, ok, mark bool) {
	res := &Resource{oos: newBitmap(testSize), health: &diskHealth{policy: policy}}
	other := int64(testSize - RegionSize) // a region apart from the request's
	switch disk {
	case "out":
		res.health.phase.Store(uint32(diskFaulted))
	case "marked":
		res.oos.mark(other, RegionSize)
	}
	var got []error
	q := newRequest(res, 8192, 4096, func(err error) { got = append(got, err) })
	endLocal := func() {
		switch local {
		case "done":
			q.localResult(7, nil)
		case "failed":
			q.localResult(7, errors.New("injected"))
		case "fault":
			q.localResult(7, fmt.Errorf("injected: %w", syscall.EIO))
		}
	}
	if local == "none" {
		q.local, localFirst = localNone, true // set at submission (appendPeerOnly)
	}
	endPeer := func() {
		switch peer {
		case "acked":
			q.peerResult(true, need)
		case "lost":
			q.peerResult(false, 0)
		default:
			q.notOnLink()
		}
	}
	first, second := endLocal, endPeer
	if !localFirst {
		first, second = endPeer, endLocal
	}
	first()
	if len(got) != 0 {
		t.Fatal("completed before both halves ended")
	}
	second()
	if followPendingNow(res.health) && ok {
		// The disk went out under it: a reply through the peer waits until
		// the peer is known to follow (followGate).
		if len(got) != 0 {
			t.Fatal("replied before the peer was known to follow the Diskless node")
		}
		res.health.follow.set(followed)
	}
	if len(got) != 1 {
		t.Fatalf("completed %d times", len(got))
	}
	if (got[0] == nil) != ok {
		t.Fatalf("reply %v, want ok=%v", got[0], ok)
	}
	if !ok && local != "failed" && !errors.Is(got[0], syscall.EIO) {
		t.Fatalf("reply %v, want EIO", got[0])
	}
	if marked := res.oos.anySet(8192, 4096); marked != mark {
		t.Fatalf("marked %v, want %v", marked, mark)
	}
	if faults := res.health.load() != diskAttached; faults != (local == "fault" && policy == OnIOErrorDetach || disk == "out") {
		t.Fatalf("disk phase %d after a %s write under %s", res.health.load(), local, policy)
	}
}

// TestNeedFor: the ack each protocol asks for; FUA always asks for Synced.
func TestNeedFor(t *testing.T) {
	for _, c := range []struct {
		proto Protocol
		fua   bool
		need  wire.AckKind
		state peerState
	}{
		{ProtocolA, false, 0, peerSent},
		{ProtocolB, false, wire.Received, peerReceived},
		{ProtocolC, false, wire.Journaled, peerJournaled},
		{ProtocolA, true, wire.Synced, peerSynced},
		{ProtocolB, true, wire.Synced, peerSynced},
		{ProtocolC, true, wire.Synced, peerSynced},
	} {
		l := &link{proto: c.proto}
		if got := l.needFor(c.fua); got != c.need || ackState(got) != c.state {
			t.Errorf("%c fua=%v: need %v (%v), want %v (%v)", c.proto, c.fua, got, ackState(got), c.need, c.state)
		}
	}
}

// TestSyncRequestWaits: a flush (no region) waits for both halves and
// reports the local error.
func TestSyncRequestWaits(t *testing.T) {
	res := &Resource{oos: newBitmap(testSize)}
	q := newRequest(res, 0, 0, nil)
	q.peerResult(true, wire.Synced)
	go q.localResult(0, errors.New("sync failed"))
	if err := q.wait(); err == nil || res.oos.bytes() != 0 {
		t.Fatalf("flush: err %v, marked %d", err, res.oos.bytes())
	}
}

// TestWriteOutsideTheDiskIsRefused: a write past the end gets EINVAL and
// touches nothing (the NBD server checks first; the Resource does too).
func TestWriteOutsideTheDiskIsRefused(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, time.Minute)
	for _, off := range []int64{testSize, testSize - 2048, -4096} {
		if _, err := r.WriteAt(make([]byte, 4096), off); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("a write at %d: %v", off, err)
		}
	}
	if st := r.Status(); st.Stats.OutOfSyncBytes != 0 || st.Stats.Writes != 0 {
		t.Fatalf("after refused writes: %+v", st.Stats)
	}
}
