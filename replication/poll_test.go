package replication

import (
	"runtime"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/nbdserver/netio"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// The link's reader polls on the sending side while one or two writes wait
// for their ack, none for a sync, none is still being journaled or applied
// here, and the last 8 acks completed one write and no barrier each; on the
// receiving side while each of the last 8 Records frames carried one record
// and came alone.
func TestLinkWantsToPoll(t *testing.T) {
	l := &link{recBatched: netio.AllBatched, ackBatched: netio.AllBatched}
	l.inflight.Store(1)
	for i := range 8 {
		if l.wantPoll() {
			t.Fatalf("after %d lone acks of 8: wantPoll true", i)
		}
		l.ackBatched.Note(false)
	}
	for n, want := range map[int32]bool{1: true, 2: true, 3: false, 32: false, -1: false} {
		l.inflight.Store(n)
		if got := l.wantPoll(); got != want {
			t.Errorf("inflight %d: wantPoll %v, want %v", n, got, want)
		}
	}
	l.inflight.Store(1)
	l.localBusy.Store(1) // this node still journals and applies the write
	if l.wantPoll() {
		t.Error("while the awaited write is still local work: wantPoll true")
	}
	l.localBusy.Store(0)
	if !l.wantPoll() {
		t.Error("once the awaited write is done here: wantPoll false")
	}
	l.ackBatched.Note(true) // an ack that completed many writes
	if l.wantPoll() {
		t.Error("right after an ack of many writes: wantPoll true")
	}

	l.inflight.Store(0)
	if l.wantPoll() {
		t.Error("nothing sent and no record received yet: wantPoll true")
	}
	for i := range 8 {
		if l.wantPoll() {
			t.Fatalf("after %d lone records of 8: wantPoll true", i)
		}
		l.recBatched.Note(false)
	}
	if !l.wantPoll() {
		t.Fatal("after 8 lone records: wantPoll false")
	}
	l.recBatched.Note(true) // a frame of many records, or one with more behind it
	if l.wantPoll() {
		t.Fatal("right after a batch: wantPoll true")
	}
}

// inflight counts what waits for an ack, and is -1 while a barrier waits
// for the peer's sync; an ack of several writes or of a barrier is batched.
func TestLinkCountsPending(t *testing.T) {
	l := &link{pr: netio.NewPollReader(nil, 0)}
	l.track(&pending{seq: 1, need: wire.Journaled, done: func(bool) {}})
	l.track(&pending{seq: 2, need: wire.Journaled, done: func(bool) {}})
	if n := l.inflight.Load(); n != 2 {
		t.Fatalf("two writes pending: inflight %d", n)
	}
	l.track(&pending{seq: 2, need: wire.Synced, done: func(bool) {}})
	if n := l.inflight.Load(); n != -1 {
		t.Fatalf("a barrier pending: inflight %d", n)
	}
	if !l.ack(wire.Ack{Kind: wire.Synced, Seq: 2}) {
		t.Fatal("an ack of two writes and a barrier: not batched")
	}
	if n := l.inflight.Load(); n != 0 {
		t.Fatalf("all acked: inflight %d", n)
	}
	l.track(&pending{seq: 3, need: wire.Journaled, done: func(bool) {}})
	if l.ack(wire.Ack{Kind: wire.Journaled, Seq: 3}) {
		t.Fatal("the ack of one write: batched")
	}
	l.track(&pending{seq: 3, need: wire.Synced, done: func(bool) {}})
	if !l.ack(wire.Ack{Kind: wire.Synced, Seq: 3}) {
		t.Fatal("the ack of a barrier alone: not batched")
	}
}

// A Primary's reader, asleep while nothing was in flight, is kicked by a
// lone write and polls for its ack, once the last 8 acks came alone.
func TestPrimaryPollsForTheAckOfALoneWrite(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 { // a place to poll
		defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(2))
	}
	p := newFakePeer(t)
	secret := []byte("protocol-test-secret")
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Primary, Created: true, Peer: p.ln.Addr().String(),
		Secret: secret, PeerTimeout: time.Minute, PeerPoll: time.Minute, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p.accept(secret)
	for r.currentLink() == nil {
		time.Sleep(time.Millisecond)
	}
	l := r.currentLink()
	// Eight lone writes, each acked alone, before the reader polls.
	for seq := uint64(1); seq <= 9; seq++ {
		for !l.pr.Sleeping() {
			time.Sleep(time.Millisecond)
		}
		done := startWrite(r, 0, false)
		p.next(wire.TypeRecords)
		if seq == 9 {
			for end := time.Now().Add(5 * time.Second); l.pr.Sleeping(); time.Sleep(time.Millisecond) {
				if time.Now().After(end) {
					t.Fatal("the reader still sleeps with a write waiting for its ack")
				}
			}
		}
		p.ack(wire.Journaled, seq)
		returns(t, done)
	}
	if polled := r.linkPolled.Load(); polled != 1 {
		t.Fatalf("link reads: %d polled, %d slept; want the ninth ack polled for", polled, r.linkSlept.Load())
	}
}
