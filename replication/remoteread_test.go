package replication

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// heldDisk is a memory disk whose writes touching [off, off+length) block,
// once hold is called, until release: the journal has applied nothing
// there meanwhile. It reports a read of that range while a write waits.
type heldDisk struct {
	memDisk
	off, length int64

	mu      sync.Mutex
	holding bool
	gate    chan struct{} // closed by release
	held    chan struct{} // a write is blocked: closed once
	blocked bool          // a write waits at the gate
	early   []string      // reads of the range while a write waited
}

func newHeldDisk(size, off, length int64) *heldDisk {
	return &heldDisk{memDisk: memDisk{journal.NewMemDisk(size)}, off: off, length: length}
}

func (d *heldDisk) hold() {
	d.mu.Lock()
	d.holding, d.gate, d.held, d.blocked = true, make(chan struct{}), make(chan struct{}), false
	d.mu.Unlock()
}

// release lets the held writes go; once holding, it may be called again.
func (d *heldDisk) release() {
	d.mu.Lock()
	if d.holding {
		d.holding = false
		close(d.gate)
	}
	d.mu.Unlock()
}

func (d *heldDisk) touches(off, n int64) bool { return off < d.off+d.length && d.off < off+n }

func (d *heldDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	if d.holding && d.touches(off, int64(len(p))) {
		gate := d.gate
		if !d.blocked {
			d.blocked = true
			close(d.held)
		}
		d.mu.Unlock()
		<-gate
		d.mu.Lock()
		d.blocked = false
	}
	d.mu.Unlock()
	return d.memDisk.WriteAt(p, off)
}

func (d *heldDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	if d.blocked && d.touches(off, int64(len(p))) {
		d.early = append(d.early, fmt.Sprintf("[%d, +%d)", off, len(p)))
	}
	d.mu.Unlock()
	return d.memDisk.ReadAt(p, off)
}

// smallJournals gives both nodes small journal segments: a memory file
// system's sync costs as much as the segment is large.
func smallJournals(pc, sc *Config) { pc.JournalSize, sc.JournalSize = 16<<20, 16<<20 }

// hookServeRead sets testHookServeRead for the test, and clears it once
// the pairs the test opens after it are closed.
func hookServeRead(t *testing.T, f func(req wire.ReadRequest, after uint64)) {
	testHookServeRead = f
	t.Cleanup(func() { testHookServeRead = nil })
}

// fakePrimary is a Primary that speaks the wire protocol by hand to a real
// Secondary, so a test decides which frames arrive together.
type fakePrimary struct {
	t    *testing.T
	conn net.Conn
	r    *wire.Reader
}

// dialSecondary connects to the Secondary at addr as an in-sync Primary.
func dialSecondary(t *testing.T, addr string, secret []byte) *fakePrimary {
	t.Helper()
	return dialAs(t, addr, secret, wire.Hello{Resource: "r0", Size: testSize, NodeID: 98, Role: wire.Primary,
		Disk: wire.UpToDate, Gen: wire.GenIDs{Current: GenZero}})
}

// dialAs is dialSecondary with a Hello of the test's own.
func dialAs(t *testing.T, addr string, secret []byte, hello wire.Hello) *fakePrimary {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := wire.Handshake(c, hello, secret, true); err != nil {
		t.Fatal(err)
	}
	c.Write(wire.AppendReady(nil))
	if f, err := wire.NewReader(c).Next(); err != nil || f.Type != wire.TypeReady {
		t.Fatalf("agreement: %v %v", f.Type, err)
	}
	return &fakePrimary{t: t, conn: c, r: wire.NewReader(bufio.NewReader(c))}
}

// readReply reads frames until a ReadReply.
func (p *fakePrimary) readReply() wire.ReadReply {
	p.t.Helper()
	for {
		f, err := p.r.Next()
		if err != nil {
			p.t.Fatalf("fake primary: %v", err)
		}
		if f.Type == wire.TypeReadReply {
			rep, err := wire.ParseReadReply(f.Body)
			if err != nil {
				p.t.Fatal(err)
			}
			rep.Data = bytes.Clone(rep.Data)
			return rep
		}
	}
}

// TestServeReadWaitsForApply: a record and a read of its range arrive
// together; the Secondary journals the record and its applier is held
// before the disk write. The read is served after that record (its seq),
// never reads the range before the record is applied, and answers with
// the record's data.
func TestServeReadWaitsForApply(t *testing.T) {
	const off = 64 << 10
	secret := []byte("serve-read-secret")
	sdisk := newHeldDisk(testSize, off, 4096)
	served := make(chan uint64, 1)
	hookServeRead(t, func(_ wire.ReadRequest, after uint64) { served <- after })
	addr := freeAddr(t)
	sec, err := Open(Config{Name: "r0", Disk: sdisk, MetaDir: t.TempDir(), FS: journal.NewMemFS(),
		Role: wire.Secondary, Created: true, PeerListen: addr, Secret: secret, PeerTimeout: 10 * time.Second,
		CheckpointInterval: -1, JournalSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sec.Close() })
	t.Cleanup(sdisk.release) // before the Secondary closes
	p := dialSecondary(t, addr, secret)
	sdisk.hold()
	stamp := bytes.Repeat([]byte{0x22}, 4096)
	rec := journal.NewCompressor(journal.CodecNone).Write(off, stamp)
	rec.Seq = 1
	body := wire.AppendRecord(nil, &rec, 0)
	frames, _ := wire.AppendRecordsHeader(nil, [][]byte{body})
	frames = append(frames, body...)
	frames = wire.AppendReadRequest(frames, wire.ReadRequest{ID: 5, Offset: off, Length: 4096})
	if _, err := p.conn.Write(frames); err != nil {
		t.Fatal(err)
	}
	<-sdisk.held // journaled, and its apply waits
	if after := <-served; after != rec.Seq {
		t.Fatalf("the read is served after seq %d, the record before it is seq %d", after, rec.Seq)
	}
	if got := sec.journal.Stats().AppliedSeq; got >= rec.Seq {
		t.Fatalf("applied seq %d while the apply is held", got)
	}
	sdisk.release()
	rep := p.readReply()
	if rep.ID != 5 || rep.Status != wire.ReadOK || !bytes.Equal(rep.Data, stamp) {
		t.Fatalf("reply %d %v with %d bytes, want the record's data", rep.ID, rep.Status, len(rep.Data))
	}
	if len(sdisk.early) > 0 {
		t.Fatalf("the Secondary read %v while the write there waited to be applied", sdisk.early)
	}
}

// TestServeReadRefusals: a Secondary answers a read off its disk with
// ReadOutOfRange, and one while its disk is not UpToDate with
// ReadNotUpToDate.
func TestServeReadRefusals(t *testing.T) {
	secret := []byte("serve-read-secret")
	addr := freeAddr(t)
	sec, err := Open(Config{Name: "r0", Disk: memDisk{journal.NewMemDisk(testSize)}, MetaDir: t.TempDir(),
		FS: journal.NewMemFS(), Role: wire.Secondary, Created: true, PeerListen: addr, Secret: secret,
		PeerTimeout: 10 * time.Second, CheckpointInterval: -1, JournalSize: 16 << 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sec.Close() })
	p := dialSecondary(t, addr, secret)
	p.conn.Write(wire.AppendReadRequest(nil, wire.ReadRequest{ID: 1, Offset: testSize - 4095, Length: 4096}))
	if rep := p.readReply(); rep.ID != 1 || rep.Status != wire.ReadOutOfRange {
		t.Fatalf("a read off the disk: %d %v", rep.ID, rep.Status)
	}
	sec.mu.Lock()
	sec.meta.Disk = wire.Outdated.String()
	sec.mu.Unlock()
	p.conn.Write(wire.AppendReadRequest(nil, wire.ReadRequest{ID: 2, Offset: 0, Length: 4096}))
	if rep := p.readReply(); rep.ID != 2 || rep.Status != wire.ReadNotUpToDate {
		t.Fatalf("a read of an Outdated disk: %d %v", rep.ID, rep.Status)
	}
}

// slowDisk applies every write after a pause, so a read that does not wait
// for the journal's apply finds old data.
type slowDisk struct{ memDisk }

func (d slowDisk) WriteAt(p []byte, off int64) (int, error) {
	time.Sleep(100 * time.Microsecond)
	return d.memDisk.WriteAt(p, off)
}

// TestReadPeerAfterWriteUnderLoad: 16 writers each stamp their own blocks
// with a rising counter and read every stamp back from the peer as soon
// as its write is acknowledged, against a Secondary whose disk applies
// slowly. No read returns anything but the stamp just written.
func TestReadPeerAfterWriteUnderLoad(t *testing.T) {
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		smallJournals(pc, sc)
		sc.Disk = slowDisk{memDisk{journal.NewMemDisk(testSize)}}
	}, nil)
	p.waitInSync(t)
	const writers, rounds, block = 16, 50, 4096
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- stampAndReadBack(p.primary, w, rounds, block)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// stampAndReadBack writes rounds stamps over writer w's four blocks and
// reads each back from the peer at once.
func stampAndReadBack(r *Resource, w, rounds int, block int64) error {
	buf, got := make([]byte, block), make([]byte, block)
	for i := range rounds {
		off := (int64(w)*4 + int64(i%4)) * block
		binary.LittleEndian.PutUint64(buf, uint64(w)<<32|uint64(i))
		if _, err := r.WriteAt(buf, off); err != nil {
			return err
		}
		if err := r.readPeer(got, off); err != nil {
			return err
		}
		if !bytes.Equal(got, buf) {
			return fmt.Errorf("writer %d round %d: read stamp %#x from the peer at %d, wrote %#x",
				w, i, binary.LittleEndian.Uint64(got), off, binary.LittleEndian.Uint64(buf))
		}
	}
	return nil
}

func TestPeerReadRefusal(t *testing.T) {
	ok := peerReadState{Linked: true, PeerDisk: wire.UpToDate, ServesReads: true}
	for _, tc := range []struct {
		name string
		edit func(*peerReadState)
		want string
	}{
		{"connected, UpToDate", func(*peerReadState) {}, ""},
		{"no link", func(s *peerReadState) { s.Linked, s.ServesReads = false, false }, "not connected"},
		{"resync", func(s *peerReadState) { s.Resync = true }, "a resync is running"},
		{"peer Inconsistent", func(s *peerReadState) { s.PeerDisk = wire.Inconsistent }, "its disk is Inconsistent"},
		{"peer Consistent", func(s *peerReadState) { s.PeerDisk = wire.Consistent }, "its disk is Consistent"},
		{"peer Outdated", func(s *peerReadState) { s.PeerDisk = wire.Outdated }, "its disk is Outdated"},
		{"peer Diskless", func(s *peerReadState) { s.PeerDisk = wire.Diskless }, "its disk is Diskless"},
		{"older peer", func(s *peerReadState) { s.ServesReads = false }, "it does not answer read requests (an older version)"},
		{"range out of sync", func(s *peerReadState) { s.OutOfSync = true }, "the range is marked out of sync"},
	} {
		s := ok
		tc.edit(&s)
		if got := peerReadRefusal(s); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestBitmapAnySet(t *testing.T) {
	b := newBitmap(1 << 20)
	if b.anySet(0, 1<<20) {
		t.Fatal("an empty bitmap has a mark")
	}
	b.mark(5*RegionSize+10, 1)
	for _, tc := range []struct {
		off, length int64
		want        bool
	}{
		{0, 5 * RegionSize, false},
		{0, 5*RegionSize + 1, true},
		{6 * RegionSize, RegionSize, false},
		{6*RegionSize - 1, 1, true},
		{5 * RegionSize, 0, false},
		{0, 1 << 20, true},
	} {
		if got := b.anySet(tc.off, tc.length); got != tc.want {
			t.Errorf("anySet(%d, %d) = %v", tc.off, tc.length, got)
		}
	}
}

// TestReadPeerRefused: without a link readPeer fails at once with
// ErrPeerCannotRead; a range off the disk fails too. Only the read the
// peer served counts in read_remote.
func TestReadPeerRefused(t *testing.T) {
	p := openPairWith(t, testSize, smallJournals, nil)
	p.waitInSync(t)
	buf := make([]byte, 4096)
	if err := p.primary.readPeer(buf, 0); err != nil {
		t.Fatalf("a read of a region in sync: %v", err)
	}
	if err := p.primary.readPeer(buf, testSize-100); err == nil {
		t.Fatal("a read past the end of the disk did not fail")
	}
	if n := p.primary.Status().Stats.ReadRemote; n != 1 {
		t.Fatalf("read_remote %d after one read served by the peer", n)
	}
	p.primary.Disconnect()
	until(t, "the link stayed", func() bool { return p.primary.currentLink() == nil })
	if err := p.primary.readPeer(buf, 0); !errors.Is(err, ErrPeerCannotRead) {
		t.Fatalf("a read without a link: %v", err)
	}
}

// blockServing makes the Secondary's serving of reads wait until the
// returned function is called (and until the test ends): the link itself
// goes on. served is told of each read that waits.
func blockServing(t *testing.T) (served chan struct{}, unblock func()) {
	gate, served := make(chan struct{}), make(chan struct{}, 16)
	var once sync.Once
	unblock = func() { once.Do(func() { close(gate) }) }
	hookServeRead(t, func(wire.ReadRequest, uint64) {
		served <- struct{}{}
		<-gate
	})
	return served, unblock
}

// TestReadPeerLinkDown: a read waiting for the peer fails with ErrLinkDown
// once the link goes down, long before the peer timeout.
func TestReadPeerLinkDown(t *testing.T) {
	served, unblock := blockServing(t)
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		smallJournals(pc, sc)
		pc.PeerTimeout, sc.PeerTimeout = time.Minute, time.Minute
	}, nil)
	t.Cleanup(unblock) // before the pair closes
	p.waitInSync(t)
	done := make(chan error, 1)
	go func() { done <- p.primary.readPeer(make([]byte, 4096), 0) }()
	<-served
	start := time.Now()
	p.primary.currentLink().fail(fmt.Errorf("%w: cut by the test", ErrLinkDown))
	if err := <-done; !errors.Is(err, ErrLinkDown) {
		t.Fatalf("a read when the link fell: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the read failed %v after the link fell", d)
	}
}

// TestReadPeerTimeout: a read the peer does not answer within the peer
// timeout fails with ErrPeerRead; the link stays up, the late answer is
// dropped, and the next read gets its own answer.
func TestReadPeerTimeout(t *testing.T) {
	const timeout = 2 * time.Second
	served, unblock := blockServing(t)
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		smallJournals(pc, sc)
		pc.PeerTimeout, sc.PeerTimeout = timeout, timeout
	}, nil)
	t.Cleanup(unblock) // before the pair closes
	p.waitInSync(t)
	stamp := bytes.Repeat([]byte{0x33}, 4096)
	if _, err := p.primary.WriteAt(stamp, 0); err != nil {
		t.Fatal(err)
	}
	l := p.primary.currentLink()
	start := time.Now()
	err := p.primary.readPeer(make([]byte, 4096), 0)
	if !errors.Is(err, ErrPeerRead) {
		t.Fatalf("a read the peer did not answer: %v", err)
	}
	if d := time.Since(start); d < timeout || d > timeout+2*time.Second {
		t.Fatalf("the read failed after %v, the peer timeout is %v", d, timeout)
	}
	<-served
	unblock()
	got := make([]byte, 4096)
	if err := p.primary.readPeer(got, 0); err != nil || !bytes.Equal(got, stamp) {
		t.Fatalf("the next read: %v, %#x", err, got[0])
	}
	if l.isDown() || p.primary.currentLink() != l {
		t.Fatal("the link went down")
	}
}

// TestReadPeerLong: a read longer than one request's limit is split, and
// reads what the peer's disk holds.
func TestReadPeerLong(t *testing.T) {
	peerReadChunk = 64 << 10
	t.Cleanup(func() { peerReadChunk = wire.MaxReadLength })
	p := openPairWith(t, testSize, smallJournals, nil)
	p.waitInSync(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), testSize/16)
	if _, err := p.primary.WriteAt(data[:8192], testSize-8192); err != nil {
		t.Fatal(err)
	}
	if _, err := p.sdisk.WriteAt(data[:testSize-8192], 0); err != nil { // behind the Secondary's back
		t.Fatal(err)
	}
	got := make([]byte, testSize-4096-100)
	if err := p.primary.readPeer(got, 100); err != nil {
		t.Fatal(err)
	}
	want := append(data[100:testSize-8192], data[:4096]...)
	if !bytes.Equal(got, want) {
		t.Fatal("the long read differs from the peer's disk")
	}
}

// TestReadPeerNotOffered: a peer whose Hello does not offer ServesReads
// (a node without remote reads) is never sent a ReadRequest: readPeer
// refuses at once and the link stays up.
func TestReadPeerNotOffered(t *testing.T) {
	fp := newFakePeer(t)
	r := openPrimary(t, fp, ProtocolC, 5*time.Second)
	until(t, "the fake peer never got UpToDate", func() bool { return r.Status().Peer.Disk == "UpToDate" })
	err := r.readPeer(make([]byte, 4096), 0)
	if !errors.Is(err, ErrPeerCannotRead) || !strings.Contains(err.Error(), "older version") {
		t.Fatalf("a read from a peer that does not offer reads: %v", err)
	}
	if l := r.currentLink(); l == nil || l.isDown() {
		t.Fatal("the link went down")
	}
}
