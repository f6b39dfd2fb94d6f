package replication

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Disk is the backing disk a Resource reads and the journal applies to.
type Disk interface {
	io.ReaderAt
	journal.Disk
	Size() (int64, error)
}

// Config describes a resource to open.
type Config struct {
	Name    string
	Disk    Disk
	MetaDir string // the journal lives in MetaDir/journal
	Codec   journal.Codec
	// JournalSize bounds the journal (journal.Options.MaxBytes); 0 is the default.
	JournalSize int64
	// JournalRetain is kept after a checkpoint for resync; 0 is the default.
	JournalRetain int64
	// JournalDataMax is the size from which writes go to the disk in
	// place (journal.Options.DataMax); 0 is the default, negative never.
	JournalDataMax int64
	// CheckpointInterval is the time between checkpoints; 0 is the default.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// FS holds the journal, meta.json and the bitmap file: all of the
	// node's durable state. Nil is the real file system.
	FS journal.FS

	// Role is the role to start in.
	Role wire.Role
	// Created says the disk was just created empty (all zeros): it starts
	// in generation GenZero, in sync with any other such disk.
	Created bool

	// PeerListen is the replication listener's address ("" for none).
	PeerListen string
	// Peer is the other node's PeerListen address to dial ("" for none).
	Peer string
	// Listen and Dial are the network the link runs on; nil is TCP. A
	// simulation passes an in-memory network of its own.
	Listen func(addr string) (net.Listener, error)
	Dial   func(ctx context.Context, addr string) (net.Conn, error)
	// Secret authenticates both nodes to each other (HMAC-SHA256).
	Secret []byte
	// PeerTLS, if set, runs the link over mutual TLS 1.3 with it (see
	// PeerTLSConfig); the Secret's proof, if any, then runs inside TLS.
	PeerTLS *tls.Config
	// HandshakeLimit bounds the time an accepted peer connection has to
	// start TLS and authenticate; zero is 10s. MaxHandshakes bounds the
	// accepted connections not yet authenticated (more are closed at
	// once); zero is 16.
	HandshakeLimit time.Duration
	MaxHandshakes  int
	// Protocol says when a write is acknowledged; zero is ProtocolC.
	Protocol Protocol
	// PeerTimeout is how long the peer may stay silent or leave a write
	// unacknowledged before the link is given up; zero is 5s.
	PeerTimeout time.Duration
	// PeerPoll is how long the link's reader may poll the connection for
	// the peer's next frame before it sleeps: while a lone write waits for
	// its ack, or while the peer's records come one at a time (see
	// link.wantPoll). Zero never polls.
	PeerPoll time.Duration
	// AfterSplitBrain says how a split brain is settled; zero is Disconnect.
	AfterSplitBrain AfterSplitBrain
	// ResyncRate caps resync traffic in bytes per second; zero is no cap.
	ResyncRate int64
	// ResyncMinRate is the rate a resync slows to, in bytes per second,
	// while the application does I/O (see pace.go); zero never slows.
	ResyncMinRate int64
	// ObserveWrite, if set, is told how long each acknowledged write took.
	ObserveWrite func(time.Duration)
	// OnIOError says what a fault of the disk, the journal or the metadata
	// does (see diskstate.go); zero is OnIOErrorDetach.
	OnIOError OnIOError
	// ReadBalancing says which disk serves reads (see ReadAt); zero is
	// PreferLocal.
	ReadBalancing ReadBalancing
	// ObserveStage, if set, is told how long each stage of a write took
	// (see observe.go). It must not block.
	ObserveStage func(stage string, d time.Duration)
}

// Resource is one replicated device. Its methods are safe for concurrent use.
type Resource struct {
	cfg     Config
	name    string
	disk    Disk
	size    int64
	journal *journal.Journal
	comp    *journal.Compressor
	log     *slog.Logger
	oos     *bitmap // regions the peer may not hold as this node does
	// bitmapFile saves oos (with peerSeq) in MetaDir.
	bitmapFile *bitmapStore

	// order is held from a write's journal append to its queueing on the
	// link, so the peer receives records in journal order. It guards
	// seqFloor: seqs are handed out under it (allocSeq).
	order    sync.Mutex
	seqFloor atomic.Uint64 // written under order

	// mu guards the node's state below. Writers read link under it; the
	// connection goroutines and control commands change it.
	mu         sync.Mutex
	meta       meta       // persisted in MetaDir (saveMeta)
	role       wire.Role  // this node's role
	link       *link      // the connection to the peer, nil when there is none
	peer       wire.Hello // what the peer said in its last handshake
	standAlone string     // why this node will not connect ("" when it will)
	admitting  bool       // a connection is between handshake and attach
	asking     bool       // SetRole asks the peer before a promotion (askPrimary)
	connects   uint64     // the operator's connects and discards (State.Connects)
	resync     resyncState
	linkChange chan struct{} // closed and replaced whenever link changes
	// flapDelay is the wait after the last link before the next one,
	// flapUntil its end (see nextFlapDelay).
	flapDelay time.Duration
	flapUntil time.Time

	refusal wire.Reason // what a dialing peer is told while standAlone (mu)

	stop chan struct{} // closed by Close
	wg   sync.WaitGroup

	writes       atomic.Uint64 // write, trim and zero records acknowledged
	reads        atomic.Uint64 // ReadAt calls: with writes, tells a resync the application is busy
	bytesWritten atomic.Uint64 // raw bytes those records covered
	replRecv     atomic.Uint64 // raw bytes received from the peer
	// linkPolled and linkSlept count the links' reads that polled for
	// their frame and those that slept (Config.PeerPoll).
	linkPolled, linkSlept atomic.Uint64
	// readerSends counts the times a link's polling reader sent records
	// that writers left for it.
	readerSends atomic.Uint64
	replRaw     atomic.Uint64 // raw bytes of links that are gone
	replWire    atomic.Uint64 // bytes written by links that are gone
	resyncWire  atomic.Uint64 // bytes of resync traffic: records, checksums, journal tails
	// resyncRate caps each resync started from now on (Config.ResyncRate,
	// setResyncRate).
	resyncRate atomic.Int64
	// peerSeq is the journal seq up to which the peer holds what this
	// node's journal holds: acknowledged writes of a Primary, records
	// journaled from the peer on a Secondary. Saved with the bitmap.
	peerSeq atomic.Uint64
	// health is the state of the disk, journal and metadata: in use, or
	// out after a fault (diskstate.go, detach.go).
	health *diskHealth
	// bal counts reads for ReadAt's balancing.
	bal balancer
	// aloneSinceOpen: a Primary opened, and has not met its peer since,
	// in the generation it last shared with it; its first write apart
	// starts one of its own (goOnAlone).
	aloneSinceOpen atomic.Bool
}

// Open recovers the resource's journal onto its disk and makes it ready for I/O.
func Open(c Config) (*Resource, error) {
	size, err := c.Disk.Size()
	if err != nil {
		return nil, fmt.Errorf("replication: size of %s: %w", c.Name, err)
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	health := &diskHealth{policy: c.OnIOError}
	j, err := openJournal(c, c.Disk, health)
	cause := err
	if err != nil && health.fault(OpJournal, err) {
		j, err = openDetached(c) // starts Diskless: see detachAtOpen
	}
	if err != nil {
		return nil, fmt.Errorf("replication: open %s: %w", c.Name, err)
	}
	m, err := loadMeta(c.FS, c.MetaDir, c.Created)
	if err == nil && c.Role == wire.Primary && m.DiscardMyData {
		// A Primary never discards its data, as at a promotion: started
		// Primary, the node takes back an earlier resolve that said it
		// would. Kept, the word would make the peer its SyncSource.
		m.DiscardMyData = false
		err = writeMeta(c.FS, c.MetaDir, m)
		c.Logger.Warn("started Primary: the earlier resolve --discard-my-data no longer holds")
	}
	if err == nil && c.Role == wire.Primary && m.Disk == wire.Outdated.String() {
		// Started Primary, the node takes its disk as a promotion with
		// --force does: whole, from here on. Its first write apart moves
		// it to a generation of its own (goOnAlone), so its peer, which
		// took writes this disk lacks, meets it as a split brain.
		m.Disk = wire.UpToDate.String()
		err = writeMeta(c.FS, c.MetaDir, m)
		c.Logger.Warn("started Primary on a disk recorded Outdated (it went out while the peer took writes): taken as role primary --force takes it")
	}
	if err == nil && m.LostFrom == 0 {
		// A power loss may have taken records after the journal's last
		// that the peer holds; seqs from here on may name other writes.
		m.LostFrom = j.LastSeq() + 1
		err = writeMeta(c.FS, c.MetaDir, m)
	}
	if err != nil {
		j.Close()
		return nil, err
	}
	if c.Protocol == 0 {
		c.Protocol = ProtocolC
	}
	if c.PeerTimeout <= 0 {
		c.PeerTimeout = 5 * time.Second
	}
	if c.Role == 0 {
		c.Role = wire.Secondary
	}
	r := &Resource{cfg: c, name: c.Name, disk: c.Disk, size: size, journal: j,
		comp: journal.NewCompressor(c.Codec), log: c.Logger, oos: newBitmap(size),
		meta: m, role: c.Role, linkChange: make(chan struct{}), stop: make(chan struct{}),
		bitmapFile: &bitmapStore{fs: c.FS, dir: c.MetaDir}, health: health}
	health.onDetach = r.detach
	r.resyncRate.Store(c.ResyncRate)
	seq, err := r.loadBitmap()
	if err == nil {
		err = r.recoverMarks(seq)
	}
	if err == nil && health.load() == diskFaulted {
		r.detach(OpJournal, cause)
	}
	if err == nil {
		err = r.recoverExtents()
	}
	r.aloneSinceOpen.Store(c.Role == wire.Primary && !c.Created)
	if err == nil {
		err = r.startPeer()
	}
	if err != nil {
		j.Close()
		return nil, err
	}
	r.setDiskRole(c.Role)
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.bitmapLoop() }()
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.markLoop() }()
	return r, nil
}

// goOnAlone is the first write apart of a Primary that opened without its
// peer: as at a link loss, the link of its last run is gone and the peer
// lacks what it writes now. Its generation moves on (unless its bitmap
// already counts from an older one, as linkLost decides), so that a peer
// promoted meanwhile meets it as a split brain, not as a node behind it
// whose writes a resync may overwrite. One that writes nothing apart
// keeps the generation: a peer that moved on is newer, not split from it.
// r.order held.
func (r *Resource) goOnAlone() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.aloneSinceOpen.Swap(false) && !r.coreState().Linked {
		r.stepLocked(LinkLost{NewID: randomID()}) // a failed save is the health's fault, as at any link loss
	}
}

// setResyncRate caps the resyncs started from now on at rate bytes per
// second; zero is no cap.
func (r *Resource) setResyncRate(rate int64) { r.resyncRate.Store(max(rate, 0)) }

// Size is the device size in bytes.
func (r *Resource) Size() (int64, error) { return r.size, nil }

// WriteAt journals and applies p at off.
func (r *Resource) WriteAt(p []byte, off int64) (int, error) { return r.writeData(p, off, false) }

// WriteAtFUA is WriteAt whose record is durable in the journal before it returns.
func (r *Resource) WriteAtFUA(p []byte, off int64) (int, error) { return r.writeData(p, off, true) }

func (r *Resource) writeData(p []byte, off int64, fua bool) (int, error) {
	done := make(chan error, 1)
	r.WriteAsync(p, off, fua, true, func(err error) { done <- err })
	if err := <-done; err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAsync is WriteAt (WriteAtFUA with fua) that calls done when the
// write is as durable and mirrored as WriteAt's return says. p must stay
// unchanged until then. done runs on a goroutine of the journal or of the
// link, or on the caller's; it must not block. With last (nothing else
// waits for the caller) the caller writes the journal itself when the
// journal's writer idles, sparing a hand-off; WriteAsync returns at once
// otherwise.
func (r *Resource) WriteAsync(p []byte, off int64, fua, last bool, done func(error)) {
	q := newRequest(r, off, int64(len(p)), done)
	q.rec = r.comp.WriteLent(off, p) // p stays ours until the write is done
	r.submit(q, &q.rec, fua, last)
}

// Trim discards a range: a record without payload.
func (r *Resource) Trim(off, length int64) error {
	rec := journal.Trim(off, length)
	return r.append(&rec, false)
}

// Zero writes zeros over a range: a record without payload.
func (r *Resource) Zero(off, length int64, noHole bool) error {
	rec := journal.Zero(off, length, noHole)
	return r.append(&rec, false)
}

// ErrNotPrimary refuses I/O on a node that is not Primary.
// It wraps EPERM, the errno an NBD client gets.
var ErrNotPrimary = fmt.Errorf("replication: not Primary: %w", syscall.EPERM)

// append is appendAsync that waits.
func (r *Resource) append(rec *journal.Record, fua bool) error {
	done := make(chan error, 1)
	r.appendAsync(rec, fua, true, func(err error) { done <- err })
	return <-done
}

// appendAsync journals rec locally and, in parallel, sends it to the peer;
// then runs once the request is complete (see request). Without a link the
// region is marked out of sync first, so no acknowledged write is unknown
// to a later resync. The journal and the link copy what they keep of rec
// before appendAsync returns, except a lent payload (see WriteAsync).
func (r *Resource) appendAsync(rec *journal.Record, fua, here bool, then func(error)) {
	r.submit(newRequest(r, rec.Offset, int64(rec.RawLen), then), rec, fua, here)
}

// submit is appendAsync of the client's write q, whose record is rec.
func (r *Resource) submit(q *request, rec *journal.Record, fua, here bool) {
	q.write, q.start = true, time.Now()
	if rec.Offset < 0 || rec.Offset > r.size || int64(rec.RawLen) > r.size-rec.Offset {
		q.refuse(fmt.Errorf("replication: %s: write [%d, +%d) outside a %d-byte disk: %w",
			r.name, rec.Offset, rec.RawLen, r.size, syscall.EINVAL))
		return
	}
	r.order.Lock()
	if r.Role() != wire.Primary {
		r.order.Unlock()
		q.refuse(ErrNotPrimary)
		return
	}
	if r.health.peerOnly() {
		r.appendPeerOnly(rec, fua, here, q)
		return
	}
	l := r.currentLink()
	if l != nil && l.catchingUp {
		l = nil // the tail loop sends its record; the mark goes once the tail has carried it
	}
	// A disk that is out (failed, being detached) is not marked: the
	// write succeeds only through the peer (see replyOf).
	out := r.health.out()
	if l == nil && r.aloneSinceOpen.Load() {
		r.goOnAlone()
	}
	if l == nil && !out && !plant.On(plant.SkipMarkWhenDown) {
		r.oos.mark(rec.Offset, int64(rec.RawLen))
	}
	rec.Seq = r.allocSeq()
	if l != nil {
		// While this node journals and applies the write, its link's reader
		// need not poll for the peer's ack: the write waits for both.
		l.localBusy.Add(1)
		q.busy = l
	}
	written := q.writtenFn
	if r.cfg.ObserveStage == nil {
		written = nil
	}
	jseq := r.journal.AppendLater(*rec, fua, written, q.localFn)
	q.sentOn, q.jseq = l, jseq
	sent := l != nil && l.sendRecord(rec, fua, q.peerFn)
	if l != nil && !sent && !out && !plant.On(plant.SkipMarkWhenDown) {
		// Marked under order, so before linkDown (which takes it) lets
		// the next link attach: a mark made after that would be missed.
		r.oos.mark(rec.Offset, int64(rec.RawLen))
	}
	r.order.Unlock()
	switch {
	case l == nil:
		q.notOnLink()
	case !sent:
		// The link went down before it took the record. The write may
		// complete without the peer only once the link's teardown saved
		// this node's new generation: acknowledged first, it would be
		// forgotten by a crash in between (the peer, promoted, would then
		// look newer and sync over it).
		<-l.gone
		q.step(evPeerLost, 0, nil)
	case !l.pr.Polling():
		l.send(here) // first: the peer's round trip is the longer way
	default:
		// The link's reader polls: it sends the record between two tries
		// while this goroutine journals and applies it, and is given this
		// core first if it shares it.
		netio.Yield()
	}
	r.journal.WriteQueued(here)
}

// allocSeq hands out the next seq of the pair's common seq space: above this
// journal's last and above everything the peer has seen. Resync records
// take seqs too, without being journaled here. r.order held.
func (r *Resource) allocSeq() uint64 {
	s := max(r.seqFloor.Load(), r.journal.LastSeq()) + 1
	r.seqFloor.Store(s)
	return s
}

// seqGap is how far a node promoted on its own moves its seqs on, so that
// its writes never share a seq with records its old Primary sent into a
// link that was already gone.
const seqGap = 1 << 32

// Sync makes every write acknowledged before it durable on both nodes: one
// journal sync here (group commit) and a barrier on the peer, in parallel.
// The disks themselves are synced at checkpoints.
func (r *Resource) Sync() error {
	if r.health.peerOnly() {
		return r.syncPeerOnly()
	}
	start := time.Now()
	q := newRequest(r, 0, 0, nil)
	q.op = OpFlush
	r.order.Lock()
	l := r.currentLink()
	if l != nil && l.catchingUp {
		l = nil // the peer is catching up: only this journal's writes are promised
	}
	r.journal.SyncLater(func(err error) { q.localResult(0, err) })
	sent := l != nil && l.sendBarrier(q.peerResult)
	r.order.Unlock()
	if !sent {
		q.notOnLink()
	}
	r.journal.WriteQueued(true) // this goroutine waits anyway: it may as well sync
	if err := q.wait(); err != nil {
		return fmt.Errorf("replication: %s: sync: %w", r.name, err)
	}
	r.observeSince(stageFlush, start)
	return nil
}

// Stats counts what the resource has done since it opened.
type Stats struct {
	Writes       uint64
	BytesWritten uint64
	Journal      journal.Stats
}

// Stats returns the resource's counters.
func (r *Resource) Stats() Stats {
	st := Stats{Writes: r.writes.Load(), BytesWritten: r.bytesWritten.Load()}
	if !r.health.out() { // an attach replaces the journal while the disk is out
		st.Journal = r.journal.Stats()
	}
	return st
}

// Close drops the peer, drains the journal, checkpoints (the disk is
// synced) and closes it. The disk itself stays open: it belongs to the caller.
func (r *Resource) Close() error {
	r.stopPeer()
	err := r.journal.Close()
	if r.health.out() {
		err = nil // the journal failed when the disk went out, and said so then
	}
	if serr := r.saveBitmap(); err == nil {
		err = serr
	}
	return err
}
