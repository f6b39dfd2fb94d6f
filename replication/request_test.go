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
// FUA. The peer half of a request on a link ends with the ack its protocol
// asks for (needFor) or lost; one that no link took is marked at
// submission. The client hears success exactly when this node holds the
// write; the region is marked whenever the nodes may differ.
func TestRequestOutcomes(t *testing.T) {
	type row struct {
		local    localState
		peer     string // "acked": the ack the protocol asks for
		ok, mark bool
	}
	rows := []row{
		{localDone, "acked", true, false},
		{localDone, "lost", true, true},     // the peer may lack it
		{localDone, "none", true, false},    // marked when submitted
		{localFailed, "acked", false, true}, // the peer holds what this node failed
		{localFailed, "lost", false, true},  // the peer may hold it
		{localFailed, "none", false, false}, // marked when submitted
	}
	for _, proto := range []Protocol{ProtocolA, ProtocolB, ProtocolC} {
		for _, fua := range []bool{false, true} {
			l := &link{proto: proto}
			need := l.needFor(fua)
			for _, r := range rows {
				for _, localFirst := range []bool{true, false} {
					name := fmt.Sprintf("%c/fua=%v/local=%d/peer=%s/localFirst=%v", proto, fua, r.local, r.peer, localFirst)
					t.Run(name, func(t *testing.T) {
						res := &Resource{oos: newBitmap(testSize)}
						var got []error
						q := newRequest(res, 8192, 4096, func(err error) { got = append(got, err) })
						local := func() {
							if r.local == localDone {
								q.localResult(7, nil)
							} else {
								q.localResult(7, errors.New("injected"))
							}
						}
						peer := func() {
							switch r.peer {
							case "acked":
								q.peerResult(true, need)
							case "lost":
								q.peerResult(false, 0)
							default:
								q.notOnLink()
							}
						}
						if localFirst {
							local()
							if len(got) != 0 {
								t.Fatal("completed before the peer half ended")
							}
							peer()
						} else {
							peer()
							if len(got) != 0 {
								t.Fatal("completed before the local half ended")
							}
							local()
						}
						if len(got) != 1 {
							t.Fatalf("completed %d times", len(got))
						}
						if ok := got[0] == nil; ok != r.ok {
							t.Fatalf("reply %v, want ok=%v", got[0], r.ok)
						}
						if marked := res.oos.bytes() > 0; marked != r.mark {
							t.Fatalf("marked %v, want %v", marked, r.mark)
						}
					})
				}
			}
		}
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
