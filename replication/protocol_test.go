package replication

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// memDisk is journal.MemDisk with the Size a Resource needs.
type memDisk struct{ *journal.MemDisk }

func (d memDisk) Size() (int64, error) { return int64(len(d.Bytes())), nil }

const testSize = 1 << 20

// fakePeer is a Secondary that speaks the wire protocol by hand, so a test
// decides when each ack goes out.
type fakePeer struct {
	t    *testing.T
	ln   net.Listener
	conn net.Conn
	r    *wire.Reader
	seq  uint64 // records read
	last uint64 // journal seq of the last record read
}

func newFakePeer(t *testing.T) *fakePeer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &fakePeer{t: t, ln: ln}
}

// accept takes the Resource's connection and completes the handshake.
func (p *fakePeer) accept(secret []byte) {
	p.t.Helper()
	c, err := p.ln.Accept()
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { c.Close() })
	hello := wire.Hello{Resource: "r0", Size: testSize, NodeID: 99, Role: wire.Secondary,
		Disk: wire.UpToDate, Gen: wire.GenIDs{Current: GenZero}}
	if _, err := wire.Handshake(c, hello, secret, false); err != nil {
		p.t.Fatal(err)
	}
	if f, err := wire.NewReader(c).Next(); err != nil || f.Type != wire.TypeReady {
		p.t.Fatalf("agreement: %v %v", f.Type, err)
	}
	c.Write(wire.AppendReady(nil))
	p.conn, p.r = c, wire.NewReader(bufio.NewReader(c))
}

// next reads frames until one of type t, counting records.
func (p *fakePeer) next(t wire.Type) wire.Frame {
	p.t.Helper()
	for {
		p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := p.r.Next()
		if err != nil {
			p.t.Fatalf("fake peer: %v", err)
		}
		if f.Type == wire.TypeRecords {
			p.last = eachRecord(p.t, f.Body, p.last, func(journal.Record) { p.seq++ })
		}
		if f.Type == t {
			return f
		}
	}
}

// eachRecord calls fn with each record of a Records frame's body, the
// record before which had seq prev, and returns the last one's seq.
func eachRecord(t *testing.T, body []byte, prev uint64, fn func(journal.Record)) uint64 {
	t.Helper()
	for len(body) > 0 {
		rec, n, err := wire.ParseRecord(body, testSize, prev)
		if err != nil {
			t.Fatal(err)
		}
		body, prev = body[n:], rec.Seq
		fn(rec)
	}
	return prev
}

func (p *fakePeer) ack(kind wire.AckKind, seq uint64) {
	p.conn.Write(wire.AppendAck(nil, wire.Ack{Kind: kind, Seq: seq}))
}

func openPrimary(t *testing.T, p *fakePeer, proto Protocol, timeout time.Duration) *Resource {
	t.Helper()
	secret := []byte("protocol-test-secret")
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Primary, Created: true, Peer: p.ln.Addr().String(),
		Secret: secret, Protocol: proto, PeerTimeout: timeout, CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	p.accept(secret)
	until(t, "no link after the agreement", func() bool { return r.currentLink() != nil })
	return r
}

// startWrite writes 4 KiB in the background and reports when it returns.
func startWrite(r *Resource, off int64, fua bool) chan error {
	done := make(chan error, 1)
	go func() {
		buf := bytes.Repeat([]byte{0x5a}, 4096)
		var err error
		if fua {
			_, err = r.WriteAtFUA(buf, off)
		} else {
			_, err = r.WriteAt(buf, off)
		}
		done <- err
	}()
	return done
}

// pendingFor fails if the write returned within d: it must still wait.
func pendingFor(t *testing.T, done chan error, d time.Duration, why string) {
	t.Helper()
	select {
	case err := <-done:
		t.Fatalf("the write returned (%v) %s", err, why)
	case <-time.After(d):
	}
}

func returns(t *testing.T, done chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("it never returned")
	}
}

func TestProtocolCWaitsForJournaledAck(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, time.Minute)
	done := startWrite(r, 0, false)
	p.next(wire.TypeRecords)
	pendingFor(t, done, 100*time.Millisecond, "before any ack")
	p.ack(wire.Received, p.seq)
	pendingFor(t, done, 100*time.Millisecond, "on a Received ack under protocol C")
	p.ack(wire.Journaled, p.seq)
	returns(t, done)

	done = startWrite(r, 4096, true) // FUA: durable on the peer
	p.next(wire.TypeBarrier)
	p.ack(wire.Journaled, p.seq)
	pendingFor(t, done, 100*time.Millisecond, "for a FUA write before the barrier's Synced ack")
	p.ack(wire.Synced, p.seq)
	returns(t, done)
}

func TestProtocolBWaitsForReceivedAck(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolB, time.Minute)
	done := startWrite(r, 0, false)
	p.next(wire.TypeRecords)
	pendingFor(t, done, 100*time.Millisecond, "before any ack")
	p.ack(wire.Received, p.seq)
	returns(t, done)
}

func TestProtocolADoesNotWaitForAcks(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolA, time.Minute)
	done := startWrite(r, 0, false)
	returns(t, done)
	p.next(wire.TypeRecords) // it was sent all the same
}

func TestFlushWaitsForPeerBarrier(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolA, time.Minute)
	returns(t, startWrite(r, 0, false))
	done := make(chan error, 1)
	go func() { done <- r.Sync() }()
	f := p.next(wire.TypeBarrier)
	seq, _ := wire.ParseBarrier(f.Body)
	pendingFor(t, done, 100*time.Millisecond, "a FLUSH before the peer's Synced ack")
	p.ack(wire.Synced, seq)
	returns(t, done)
}

func TestSilentPeerIsGivenUpAfterTimeout(t *testing.T) {
	p := newFakePeer(t)
	r := openPrimary(t, p, ProtocolC, 300*time.Millisecond)
	done := startWrite(r, 8192, false)
	p.next(wire.TypeRecords)
	returns(t, done) // the peer never acks: the write completes once the link is given up
	st := r.Status()
	if st.Peer.Connection == "Connected" || st.Stats.OutOfSyncBytes == 0 || st.Disk != "UpToDate" {
		t.Fatalf("after the silent peer: %+v", st)
	}
	if r.meta.Gen.Bitmap != GenZero || r.meta.Gen.Current == GenZero {
		t.Fatalf("the Primary did not start a new generation: %+v", r.meta.Gen)
	}
}

// TestCloseDoesNotWaitForASilentPeer: a peer that takes the connection and
// never says hello holds the handshake up to the peer timeout; Close must
// not wait for it.
func TestCloseDoesNotWaitForASilentPeer(t *testing.T) {
	p := newFakePeer(t)
	r, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Primary, Created: true, Peer: p.ln.Addr().String(),
		Secret: []byte("protocol-test-secret"), Protocol: ProtocolC, PeerTimeout: 10 * time.Minute,
		CheckpointInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	c, err := p.ln.Accept() // and say nothing
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan error, 1)
	go func() { closed <- r.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		t.Fatal("Close waited for the handshake with a silent peer")
	}
}

// A write whose disk write fails on a Primary succeeds through its peer
// (--on-io-error detach), but only once the peer is known to have taken
// the Diskless announcement that goes out behind it: the pong of the ping
// sent after it. If the link ends first, the write fails with EIO: the
// peer may still share the old disk's generation, and the old disk, met
// again after a crash, would be taken for the newer.
func TestWriteThroughThePeerWaitsForItsFollow(t *testing.T) {
	for _, answered := range []bool{true, false} {
		p := newFakePeer(t)
		disk := journal.NewMemDisk(testSize)
		var failing atomic.Bool
		disk.Fail = func(op string) error {
			if failing.Load() && op == "write" {
				return syscall.EIO
			}
			return nil
		}
		secret := []byte("protocol-test-secret")
		r, err := Open(Config{Name: "r0", Disk: memDisk{disk}, MetaDir: t.TempDir(),
			FS: journal.NewMemFS(), Role: wire.Primary, Created: true, Peer: p.ln.Addr().String(),
			Secret: secret, Protocol: ProtocolC, PeerTimeout: time.Minute, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		p.accept(secret)
		until(t, "no link after the agreement", func() bool { return r.currentLink() != nil })
		failing.Store(true)
		done := startWrite(r, 0, false)
		p.next(wire.TypeRecords)
		p.ack(wire.Journaled, p.seq)
		p.next(wire.TypeDiskState)
		ping := p.next(wire.TypePing)
		token, err := wire.ParsePing(ping.Body)
		if err != nil {
			t.Fatal(err)
		}
		pendingFor(t, done, 200*time.Millisecond, "acknowledged by the peer, before its pong")
		if !answered {
			p.conn.Close()
			select {
			case err := <-done:
				if !errors.Is(err, syscall.EIO) {
					t.Fatalf("the link ended before the pong: the write returned %v, want EIO", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the write never returned after the link ended")
			}
			continue
		}
		p.conn.Write(wire.AppendPong(nil, token))
		returns(t, done)
	}
}
