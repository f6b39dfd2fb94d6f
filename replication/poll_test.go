package replication

import (
	"runtime"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// The link's reader polls while one or two sends wait for their ack, and
// on the receiving side while each of the last 8 frames carried one record.
func TestLinkWantsToPoll(t *testing.T) {
	l := &link{batched: 0xff}
	for n, want := range map[int32]bool{1: true, 2: true, 3: false, 32: false} {
		l.inflight.Store(n)
		if got := l.wantPoll(); got != want {
			t.Errorf("%d waiting for their ack: wantPoll %v, want %v", n, got, want)
		}
	}
	l.inflight.Store(0)
	if l.wantPoll() {
		t.Error("nothing sent and no record received yet: wantPoll true")
	}
	for i := range 8 {
		if l.wantPoll() {
			t.Fatalf("after %d lone records of 8: wantPoll true", i)
		}
		l.noteBatched(false)
	}
	if !l.wantPoll() {
		t.Fatal("after 8 lone records: wantPoll false")
	}
	l.noteBatched(true) // a frame of many records, or an ack
	if l.wantPoll() {
		t.Fatal("right after a batch: wantPoll true")
	}
}

// A Primary's reader, asleep while nothing was in flight, is kicked by a
// lone write and polls for its ack.
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
	for !l.pr.Sleeping() {
		time.Sleep(time.Millisecond)
	}
	done := startWrite(r, 0, false)
	p.next(wire.TypeRecords)
	for end := time.Now().Add(5 * time.Second); l.pr.Sleeping(); time.Sleep(time.Millisecond) {
		if time.Now().After(end) {
			t.Fatal("the reader still sleeps with a write waiting for its ack")
		}
	}
	p.ack(wire.Journaled, 1)
	returns(t, done)
	if polled, slept := r.linkPolled.Load(), r.linkSlept.Load(); polled != 1 || slept != 0 {
		t.Fatalf("link reads: %d polled, %d slept; want the ack polled for", polled, slept)
	}
}
