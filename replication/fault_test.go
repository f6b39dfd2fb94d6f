package replication

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// until waits, with a deadline, for cond.
func until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal(what)
		}
	}
}

// TestSendFailureWhileTheReaderPollsTakesTheLinkDown: the Primary's reader
// polls for the next lone write and sends its record; the send fails (the
// connection cannot be written any more). The link must go down, the write
// complete on the strength of the local disk with its region marked, and
// the resource close: the failure is handled by the link's owner, never
// from inside the reader's poll.
func TestSendFailureWhileTheReaderPollsTakesTheLinkDown(t *testing.T) {
	p := newFakePeer(t)
	r := openPollingPrimary(t, p, time.Minute) // polls until the next write
	until(t, "no link", func() bool { return r.currentLink() != nil })
	l := r.currentLink()
	for seq := uint64(1); seq <= 8; seq++ { // lone writes, acked alone: the reader polls while idle
		done := startWrite(r, 0, false)
		p.next(wire.TypeRecords)
		p.ack(wire.Journaled, seq)
		returns(t, done)
	}
	until(t, "the reader does not poll for the next write", l.pr.Polling)
	// From here every write to the connection fails; reads still work.
	if err := l.conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	returns(t, startWrite(r, 8192, false))
	until(t, "the link stayed up after a failed send", func() bool { return r.currentLink() == nil })
	if st := r.Status(); st.Peer.Connection == "Connected" || st.Stats.OutOfSyncBytes == 0 {
		t.Fatalf("after the failed send: connection %s, out of sync %d", st.Peer.Connection, st.Stats.OutOfSyncBytes)
	}
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	returns(t, closed) // Close hung here before
}

// TestResyncEndsWhenTheTargetSaysSo: a Primary that went on alone and
// wrote nothing meets its peer again as SyncSource with nothing to send. The
// peer is UpToDate only once it answers the SyncDone, not before it has
// even read it.
func TestResyncEndsWhenTheTargetSaysSo(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, time.Minute)
	l := r.currentLink()
	p.conn.Close() // the Primary goes on alone: a new generation
	until(t, "the link stayed up", func() bool { return r.currentLink() == nil })
	p.accept([]byte("protocol-test-secret"))
	until(t, "no link again", func() bool { return r.currentLink() != nil && r.currentLink() != l })
	f := p.next(wire.TypeSyncDone)
	gen, err := wire.ParseSyncDone(f.Body)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // room for a wrong early end to show
	if st := r.Status(); st.Peer.Replication != "SyncSource" || st.Peer.Disk == "UpToDate" {
		t.Fatalf("before the target answered: %s, peer %s", st.Peer.Replication, st.Peer.Disk)
	}
	p.conn.Write(wire.AppendSyncDone(nil, gen))
	until(t, "the resync never ended", func() bool {
		st := r.Status()
		return st.Peer.Replication == "Established" && st.Peer.Disk == "UpToDate" && st.Gen.Bitmap == 0
	})
}

// TestNextFlapDelay: each link that fails within linkStable doubles the
// wait before the next, up to flapMax; one that lived longer, or carried a
// client write both ways, resets it.
func TestNextFlapDelay(t *testing.T) {
	d := time.Duration(0)
	for _, want := range []time.Duration{tune.flapMin, 2 * tune.flapMin, 4 * tune.flapMin, 8 * tune.flapMin, 16 * tune.flapMin, tune.flapMax, tune.flapMax} {
		if d = nextFlapDelay(d, 10*time.Millisecond, false); d != want {
			t.Fatalf("after a short link: %v, want %v", d, want)
		}
	}
	if d := nextFlapDelay(d, 10*time.Millisecond, true); d != 0 {
		t.Fatalf("after a short link that carried a write: %v", d)
	}
	if d = nextFlapDelay(d, tune.linkStable, false); d != 0 {
		t.Fatalf("after a stable link: %v", d)
	}
}

// TestNextDialBackoff: a failed dial doubles the wait before the next, up
// to dialMax, unless the peer said it is busy: then it is asked again after
// dialMin, however long the wait had grown.
func TestNextDialBackoff(t *testing.T) {
	busy := &wire.RefusedError{Reason: wire.ReasonBusy, ByPeer: true}
	for _, c := range []struct {
		name string
		prev time.Duration
		err  error
		want time.Duration
	}{
		{"refused connection", tune.dialMin, syscall.ECONNREFUSED, 2 * tune.dialMin},
		{"at the cap", tune.dialMax, syscall.ECONNREFUSED, tune.dialMax},
		{"not kept here", 0, errNotKept, tune.dialMin},
		{"split brain", tune.dialMin, &wire.RefusedError{Reason: wire.ReasonSplitBrain, ByPeer: true}, 2 * tune.dialMin},
		{"peer busy", tune.dialMax, busy, tune.dialMin},
		{"peer busy, wrapped", 8 * tune.dialMin, fmt.Errorf("meet: %w", busy), tune.dialMin},
		{"busy, said by this node", tune.dialMin, &wire.RefusedError{Reason: wire.ReasonBusy}, 2 * tune.dialMin},
		{"peer diskless", tune.dialMin, &wire.RefusedError{Reason: wire.ReasonDiskless, ByPeer: true}, tune.dialMax},
	} {
		if got := nextDialBackoff(c.prev, c.err); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
}

// TestPeerThatFailsAtOnceIsNotRedialedAtOnce: a peer that drops every link
// right after the handshake meets a Primary that waits longer each time,
// instead of one that dials again at once, hundreds of times a second.
func TestPeerThatFailsAtOnceIsNotRedialedAtOnce(t *testing.T) {
	p := newFakePeer(t)
	openPrimary(t, p, ProtocolC, time.Minute)
	secret := []byte("protocol-test-secret")
	hello := wire.Hello{Resource: "r0", Size: testSize, NodeID: 99, Role: wire.Secondary,
		Disk: wire.UpToDate, Gen: wire.GenIDs{Current: GenZero}}
	links := 1
	end := time.Now().Add(2 * time.Second)
	for p.conn.Close(); ; p.conn.Close() {
		p.ln.(*net.TCPListener).SetDeadline(end)
		c, err := p.ln.Accept()
		if err != nil {
			break
		}
		p.conn = c
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := wire.Handshake(c, hello, secret, false); err != nil {
			t.Fatal(err)
		}
		if f, err := wire.NewReader(c).Next(); err != nil || f.Type != wire.TypeReady {
			t.Fatalf("agreement: %v %v", f.Type, err)
		}
		c.Write(wire.AppendReady(nil))
		links++
	}
	// Waits of 100, 200, 400, 800 ms and more: at most 5 links in 2 s.
	if links > 5 {
		t.Fatalf("%d links in 2 s with a peer that fails each at once", links)
	}
	t.Logf("%d links in 2 s", links)
}

// TestTailRecordsTheLinkLosesStayMarked: a journal-tail resync sends its
// records and goes live (the target is told the sync is done), and the link
// drops before the target acknowledged them. Their regions must be out of
// sync again: the target may lack them, and once the journal no longer
// holds them only a resync by the bitmap carries them.
func TestTailRecordsTheLinkLosesStayMarked(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, time.Minute)
	p.conn.Close() // the Primary goes on alone
	until(t, "the link stayed up", func() bool { return r.currentLink() == nil })
	const writes = 3
	for i := range writes {
		returns(t, startWrite(r, int64(i)*8192, false))
	}
	if n := r.Status().Stats.OutOfSyncBytes; n != writes*4096 {
		t.Fatalf("written apart: %d bytes out of sync, want %d", n, writes*4096)
	}
	p.accept([]byte("protocol-test-secret"))
	start := p.next(wire.TypeSyncStart)
	if st, err := wire.ParseSyncStart(start.Flags, start.Body); err != nil || st.Mode != wire.SyncTail {
		t.Fatalf("sync start: %+v %v, want a journal tail", st, err)
	}
	p.next(wire.TypeSyncDone) // the tail went live, its records unacknowledged
	if p.seq != writes {
		t.Fatalf("the tail carried %d records, want %d", p.seq, writes)
	}
	p.conn.Close()
	until(t, "the link stayed up", func() bool { return r.currentLink() == nil })
	if n := r.Status().Stats.OutOfSyncBytes; n != writes*4096 {
		t.Fatalf("after the tail's records were lost: %d bytes out of sync, want %d", n, writes*4096)
	}
}

// TestGoLiveOnALinkDownClearsNothing: a tail that reaches the journal's end
// after its link fell (its reader had one more item ready when the link
// closed) must not clear the regions it carried: linkDown has marked those
// the peer never acknowledged, and they would be lost to every later
// resync.
func TestGoLiveOnALinkDownClearsNothing(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, time.Minute)
	l := r.currentLink()
	p.conn.Close()
	until(t, "the link stayed up", func() bool { return r.currentLink() == nil })
	returns(t, startWrite(r, 0, false))
	carried := newBitmap(r.size)
	carried.mark(0, 4096)
	live, err := r.goLive(l, r.journal.LastSeq(), carried)
	if live || !errors.Is(err, ErrLinkDown) {
		t.Fatalf("goLive on a link that is down: live %v, err %v", live, err)
	}
	if n := r.Status().Stats.OutOfSyncBytes; n != 4096 {
		t.Fatalf("after goLive on a link that is down: %d bytes out of sync, want 4096", n)
	}
}
