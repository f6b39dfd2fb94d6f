package replication

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// The link's reader polls on the sending side while one or two writes wait
// for their ack, none for a sync, none is still being journaled or applied
// here, and the last 8 acks completed one write and no barrier each, or
// while nothing waits after such acks; on the receiving side while each of
// the last 8 Records frames carried one record and came alone.
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
	l.sends.Store(true) // the sending side, between writes
	l.ackBatched = 0    // the last 8 acks came alone
	if !l.wantPoll() {
		t.Error("nothing in flight after lone acks: wantPoll false")
	}
	l.ackBatched.Note(true)
	if l.wantPoll() {
		t.Error("nothing in flight after an ack of many writes: wantPoll true")
	}
	l.sends.Store(false) // the receiving side
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
	l.acking = sync.NewCond(&l.mu)
	l.track(&pending{seq: 1, need: wire.Journaled, done: func(bool, wire.AckKind) {}})
	l.track(&pending{seq: 2, need: wire.Journaled, done: func(bool, wire.AckKind) {}})
	if n := l.inflight.Load(); n != 2 {
		t.Fatalf("two writes pending: inflight %d", n)
	}
	l.track(&pending{seq: 2, need: wire.Synced, done: func(bool, wire.AckKind) {}})
	if n := l.inflight.Load(); n != -1 {
		t.Fatalf("a barrier pending: inflight %d", n)
	}
	if !l.ack(wire.Ack{Kind: wire.Synced, Seq: 2}) {
		t.Fatal("an ack of two writes and a barrier: not batched")
	}
	if n := l.inflight.Load(); n != 0 {
		t.Fatalf("all acked: inflight %d", n)
	}
	l.track(&pending{seq: 3, need: wire.Journaled, done: func(bool, wire.AckKind) {}})
	if l.ack(wire.Ack{Kind: wire.Journaled, Seq: 3}) {
		t.Fatal("the ack of one write: batched")
	}
	l.track(&pending{seq: 3, need: wire.Synced, done: func(bool, wire.AckKind) {}})
	if !l.ack(wire.Ack{Kind: wire.Synced, Seq: 3}) {
		t.Fatal("the ack of a barrier alone: not batched")
	}
}

// A Primary's reader, asleep while nothing was in flight, polls once the
// last 8 acks came alone: while idle, for the next write, whose record it
// sends itself while the writer journals and applies it; and, once that
// poll has timed out and it sleeps, for the ack of a lone write as soon as
// this node is done with the write's local half (which kicks it).
func TestPrimaryPollsForTheAckOfALoneWrite(t *testing.T) {
	p := newFakePeer(t)
	r := openPollingPrimary(t, p, 3*time.Second) // the test waits for one poll to time out
	until(t, "no link", func() bool { return r.currentLink() != nil })
	l := r.currentLink()
	// Eight lone writes, each acked alone, before the reader polls.
	for seq := uint64(1); seq <= 8; seq++ {
		until(t, "the reader never slept between writes", l.pr.Sleeping)
		done := startWrite(r, 0, false)
		p.next(wire.TypeRecords)
		p.ack(wire.Journaled, seq)
		returns(t, done)
	}
	until(t, "the reader does not poll for the next write", l.pr.Polling)
	done := startWrite(r, 0, false)
	p.next(wire.TypeRecords)
	p.ack(wire.Journaled, 9)
	returns(t, done)
	if n := r.readerSends.Load(); n != 1 {
		t.Fatalf("the polling reader sent %d times; want the ninth write's record", n)
	}
	// The poll times out; the next write finds the reader asleep.
	until(t, "the reader never stopped polling", l.pr.Sleeping)
	done = startWrite(r, 0, false)
	p.next(wire.TypeRecords)
	until(t, "the reader still sleeps with a write waiting for its ack", func() bool { return !l.pr.Sleeping() })
	p.ack(wire.Journaled, 10)
	returns(t, done)
	if polled := r.linkPolled.Load(); polled != 2 {
		t.Fatalf("link reads: %d polled, %d slept; want the ninth and tenth acks polled for", polled, r.linkSlept.Load())
	}
	if n := r.readerSends.Load(); n != 1 {
		t.Fatalf("the reader sent %d times; want only the ninth write's record", n)
	}
}

// openPollingPrimary opens a Primary whose link may poll for up to poll,
// with a second P to poll on, connected to p. A test that must see the
// reader poll has only that long to look after the poll starts: on a
// loaded machine a second was not always enough.
func openPollingPrimary(t *testing.T, p *fakePeer, poll time.Duration) *Resource {
	t.Helper()
	if runtime.GOMAXPROCS(0) < 2 {
		t.Cleanup(func() { runtime.GOMAXPROCS(runtime.GOMAXPROCS(2)) })
	}
	secret := []byte("protocol-test-secret")
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Primary, Created: true, Peer: p.ln.Addr().String(),
		Secret: secret, PeerTimeout: time.Minute, PeerPoll: poll, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p.accept(secret)
	return r
}
