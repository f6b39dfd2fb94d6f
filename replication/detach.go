package replication

import (
	"fmt"
	"path/filepath"

	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Detaching and attaching the disk (see diskstate.go for when).
//
// A node whose disk is out (Failed, then Diskless) writes nothing more to
// it, its journal or its metadata: the journal fails every record from
// then on (journal.Fail), meta.json and the bitmap are not saved. A
// Diskless Primary sends each write to its peer only and replies once the
// peer acknowledged it as its protocol asks (appendPeerOnly), flushes the
// peer, and reads through the peer; without a peer its I/O fails with EIO.
// A Diskless Secondary goes StandAlone and refuses its Primary with
// wire.ReasonDiskless, so the Primary goes on alone, marking what it
// writes, and dials again at its slowest pace. AttachDisk brings a disk
// back to a Secondary: the same one (its generation ids decide the resync,
// by bitmap) or a new one (Inconsistent, a full sync from the peer that
// compares checksums first); to a Primary, by pulling the peer's data
// onto it while the device stays in use (pull.go).

// DiskFailed: this node's disk is out after a fault (Text says which).
// NewID is a fresh generation id. Marks: regions are marked out of sync.
type DiskFailed struct {
	Text  string
	NewID uint64
	Marks bool
}

// PeerDiskState: the Primary said on the link that its disk went out
// (Diskless; Gen is the generation it moved to) or came back (UpToDate;
// Gen is its current generation, and its disk holds this node's data).
// Left is the generation the Diskless Primary's detached disk holds, when
// this node does not share it (met on a new link, see attached); 0 on the
// link, where the two share it: this node's current one.
type PeerDiskState struct {
	Disk wire.DiskState
	Gen  uint64
	Left uint64
}

func (DiskFailed) event()    {}
func (PeerDiskState) event() {}

type (
	// AnnounceDiskless: tell the peer on the link (PeerDiskState).
	AnnounceDiskless struct{}
	// MarkAll: mark the whole disk out of sync.
	MarkAll struct{}
	// RecordOutdated: the peer goes on taking writes that the disk
	// lacks; save the metadata the disk had, Outdated, so that a restart
	// on it does not take it for UpToDate (see recordOutdated).
	RecordOutdated struct{}
)

func (AnnounceDiskless) action() {}
func (MarkAll) action()          {}
func (RecordOutdated) action()   {}

// diskFailed: the disk is Diskless. A Secondary drops its link and stays
// apart until a disk is attached. A Primary moves to a new generation,
// which its old disk does not hold. It keeps its link, through which it now
// does all its I/O, and tells its peer, which moves with it and marks
// everything out of sync, so that the old disk, met again (a restart on
// it), is known to be behind; unless it marks regions out of sync, or its
// peer is its resync's target: the peer lacks writes that only the old
// disk holds (a resync clears a region's mark as it sends it, before the
// target has it), and the next handshake refuses it (disklessOutcome), so
// it drops the link. Where the peer goes on taking writes (behind a
// Secondary, or through a Primary that keeps its link) the old disk is
// recorded Outdated first: the peer may not be there to say so when a
// restart meets the disk again, and promoted then, it would serve data
// without those writes.
func diskFailed(s State, e DiskFailed) (State, []Action) {
	s.Disk = wire.Diskless
	source := s.Source
	s.Source, s.Target = false, false
	if source {
		// The resync did not end: the target is not whole, whatever its
		// Hello said. Until the link closes, neither status (Established,
		// peer UpToDate, nothing marked: the resync cleared each mark as
		// it sent it) nor a read through the peer may take it for whole.
		s.Peer.Disk = wire.Inconsistent
	}
	if s.Role == wire.Primary {
		s.Gen = newGeneration(s.Gen, e.NewID)
		if e.Marks || source {
			return s, []Action{CloseLink{}, Wake{}}
		}
		return s, []Action{RecordOutdated{}, AnnounceDiskless{}}
	}
	s.StandAlone, s.Refusal = e.Text, wire.ReasonDiskless
	return s, []Action{RecordOutdated{}, GoStandAlone{wire.ReasonDiskless, e.Text}, CloseLink{}, Wake{}}
}

// peerDiskState: a Secondary follows its Primary's disk. Diskless: into
// the Primary's new generation, everything marked (none of it is on the
// Primary's old disk); from then on this node holds the only copy of what
// the Primary writes, and an earlier word to discard its data (resolve
// --discard-my-data, lingering from a connection that needed no sync) no
// longer holds. Its bitmap counts from the generation the old disk holds,
// which it holds all of (it was admitted so, see disklessOutcome): the
// old disk, met again (a restart on it), is then behind this node, not
// beside it. Counted from an older one, which the old disk moved on from
// too (a promotion made while this node was away), the two would look
// like a split brain, and the operator's word could give up this node's
// copy of what the Primary wrote through it. UpToDate in this node's
// generation: the Primary's new disk holds this node's data, nothing is
// out of sync.
func peerDiskState(s State, e PeerDiskState) (State, []Action) {
	if !s.Linked || s.Role != wire.Secondary || s.Disk == wire.Diskless {
		return s, nil
	}
	switch {
	case e.Disk == wire.Diskless:
		s.Peer.Disk = wire.Diskless
		if s.Gen.Current != e.Gen {
			s.Gen = newGeneration(s.Gen, e.Gen)
			if e.Left != 0 {
				s.Gen.Bitmap = e.Left
			}
		}
		s.DiscardMyData = false
		return s, []Action{MarkAll{}, SaveMeta{}}
	case e.Disk == wire.UpToDate && e.Gen == s.Gen.Current:
		s.Peer.Disk = wire.UpToDate
		s.Gen.Bitmap = 0
		return s, []Action{ClearMarks{}, SaveMeta{}}
	}
	return s, nil
}

// detach takes the disk out after the fault err met in op. It runs once,
// on a goroutine of its own, after diskHealth.fault moved the phase to
// failed.
func (r *Resource) detach(op string, err error) {
	r.log.Error("disk failed: detaching it; nothing more is written to the disk, the journal or the metadata",
		"op", op, "err", err)
	r.journal.Fail(errDetached)
	r.mu.Lock()
	acts, _ := r.stepLocked(DiskFailed{Text: fmt.Sprintf("the disk failed (%s): %v", op, err), NewID: randomID(),
		Marks: r.oos.bytes() > 0})
	r.health.phase.Store(uint32(diskDiskless))
	l, role, gen := r.link, r.role, r.meta.Gen.Current
	r.mu.Unlock()
	if _, ok := has[RecordOutdated](acts); ok {
		r.recordOutdated() // before the peer is told: a write through it waits for that (followGate)
	}
	if _, ok := has[CloseLink](acts); ok && l != nil {
		l.close()
	}
	r.announceDiskless(acts, l, gen)
	if role == wire.Primary && l == nil {
		r.log.Error("Diskless and no peer connected: every I/O fails until the peer is back or a disk is attached")
	} else {
		r.log.Warn("Diskless", "role", role.String())
	}
}

// recordOutdated saves the metadata the disk has on record (meta.json:
// what was saved while it was in use, as its data stands), the disk
// Outdated, unless it is Inconsistent: the one write to the metadata after
// the disk went out. It may fail where the metadata shares the failing
// device; the node then says so, and a restart on that disk takes it for
// what meta.json says.
func (r *Resource) recordOutdated() {
	m, err := loadMeta(r.cfg.FS, r.cfg.MetaDir, false)
	if err == nil && m.Disk == wire.Inconsistent.String() {
		return
	}
	if err == nil {
		m.Disk = wire.Outdated.String()
		err = writeMeta(r.cfg.FS, r.cfg.MetaDir, m)
	}
	if err != nil {
		r.log.Error("could not record the detached disk Outdated: a restart on it takes it for what meta.json says", "err", err)
	}
}

// announceDiskless tells the peer on l that this Primary's disk is out and
// the generation it moved to, if acts say so, with a ping behind it whose
// pong says the peer followed (followGate).
func (r *Resource) announceDiskless(acts []Action, l *link, gen uint64) {
	follow := &r.health.follow
	if _, ok := has[AnnounceDiskless](acts); !ok || l == nil {
		follow.set(followUnknown)
		return
	}
	l.queue(wire.AppendDiskState(nil, wire.DiskStateMsg{Disk: wire.Diskless, Gen: gen}))
	asked := l.askFollow(func(ok bool) {
		if ok {
			follow.set(followed)
		} else {
			follow.set(followUnknown)
		}
	})
	if !asked {
		follow.set(followUnknown)
	}
}

// DetachDisk takes the disk out on command (disk detach): as a fault
// would, but without one. It fails on a disk already out.
func (r *Resource) DetachDisk() error {
	if !r.health.phase.CompareAndSwap(uint32(diskAttached), uint32(diskFaulted)) {
		return fmt.Errorf("%w: the disk is not attached", ErrRefused)
	}
	r.health.follow.set(followPending)
	r.detach("command", errDetachedByCommand)
	return nil
}

var errDetachedByCommand = fmt.Errorf("detached by command")

// appendPeerOnly is appendAsync on a Diskless Primary: the record goes to
// the peer only, and the request completes on its ack (localNone), or
// fails when no link takes it. r.order held; appendPeerOnly releases it.
func (r *Resource) appendPeerOnly(rec *journal.Record, fua, here bool, q *request) {
	q.local = localNone // q is not yet shared
	l := r.currentLink()
	if l != nil && l.catchingUp {
		l = nil // the tail loop sends journaled records, and there is no journal here
	}
	rec.Seq = r.allocSeq()
	pull := &r.health.pull
	pull.inflight.Add(1) // under order: finishPull waits for these
	then, off, length := q.then, rec.Offset, int64(rec.RawLen)
	q.then = func(err error) { pull.inflight.Done(); then(err) }
	sent := l != nil && l.sendRecord(rec, fua, func(acked bool, kind wire.AckKind) {
		if acked {
			l.settle()
			pull.markPulled(off, length)
		}
		q.peerResult(acked, kind)
	})
	r.order.Unlock()
	switch {
	case !sent:
		q.notOnLink()
	case !l.pr.Polling():
		l.send(here)
	default:
		netio.Yield()
	}
}

// syncPeerOnly is Sync on a Diskless Primary: a barrier on the peer.
func (r *Resource) syncPeerOnly() error {
	q := newRequest(r, 0, 0, nil)
	q.op, q.local = OpFlush, localNone
	r.order.Lock()
	l := r.currentLink()
	sent := l != nil && !l.catchingUp && l.sendBarrier(q.peerResult)
	r.order.Unlock()
	if !sent {
		q.notOnLink()
	} else {
		l.send(true)
	}
	if err := q.wait(); err != nil {
		return fmt.Errorf("replication: %s: sync: %w", r.name, err)
	}
	return nil
}

// readAt reads the disk, or the peer when the disk is out or fails under
// the read (and is then detached).
func (r *Resource) readAt(p []byte, off int64) (int, error) {
	if !r.health.out() {
		n, err := r.disk.ReadAt(p, off)
		if err == nil || !r.health.fault(OpRead, err) {
			return n, err
		}
	}
	if err := r.readThroughPeer(p, off); err != nil {
		return 0, fmt.Errorf("replication: %s: read [%d, +%d): %w", r.name, off, len(p), err)
	}
	return len(p), nil
}

// readThroughPeer serves a read of a node whose disk is out from its
// UpToDate peer (readPeer), or fails with EIO.
func (r *Resource) readThroughPeer(p []byte, off int64) error {
	if err := r.readPeer(p, off); err != nil {
		return fmt.Errorf("%w (%v)", errNoPeer, err)
	}
	return nil
}

// AttachDisk puts disk in use again on a Diskless Secondary: the disk that
// was detached (its journal is recovered onto it and its generation ids
// decide the resync: by bitmap when they fit) or, with fresh, a new or
// unknown one: its journal is dropped, it is Inconsistent in a generation
// of its own and takes a full sync from the peer, which compares checksums
// before it sends a block. The disk that was detached is taken as unknown
// too if a write of this node reached its peer since the disk went out (it
// was Primary then): the disk may lack that write, its generation ids
// would not say so (the peer may never have heard that the disk failed:
// the word is lost with a link that fails, and a node demoted or a peer
// promoted meanwhile never meets it as a Diskless Primary), and no mark
// says where; unless the node marks regions out of sync: the disk holds
// writes the peer lacks as well, which a full sync from the peer would
// throw away, and the generation ids decide (a split brain waits for the
// operator's word). The node then connects again. A Diskless
// Primary fills the disk, new or not, from its peer while the device stays
// in use (attachPrimary, pull.go). The caller owns disk, and the one it
// replaces once AttachDisk succeeded.
func (r *Resource) AttachDisk(disk Disk, fresh bool) (err error) {
	if size, err := disk.Size(); err != nil || size < r.size {
		return fmt.Errorf("%w: the disk holds %d bytes, the device %d (%v)", ErrRefused, size, r.size, err)
	}
	if r.Role() == wire.Primary {
		return r.attachPrimary(disk)
	}
	if !r.health.phase.CompareAndSwap(uint32(diskDiskless), uint32(diskAttaching)) {
		return fmt.Errorf("%w: the disk is not Diskless", ErrRefused)
	}
	defer func() {
		if err != nil {
			r.health.phase.Store(uint32(diskDiskless))
		}
	}()
	// The records the failed journal holds past what it applied (writes
	// whose apply failed, or that the fault came before) reach the disk
	// in the reopened journal's replay. They failed here, unmarked (the
	// disk was out), and the peer may hold other data there: marked, the
	// next resync makes the two equal.
	applied := r.journal.Stats().AppliedSeq
	r.journal.Close() // it failed for good: closing writes nothing
	if !fresh && r.health.lacks.Load() {
		if r.oos.bytes() == 0 {
			r.log.Warn("attach: the peer took writes since the disk failed, which it may lack: it takes a full sync from the peer, as a new disk would")
			fresh = true
		} else {
			r.log.Warn("attach: the peer took writes since the disk failed, which it may lack, and the disk holds writes the peer lacks: the generation ids decide",
				"out_of_sync_bytes", r.oos.bytes())
		}
	}
	if fresh {
		if err := r.dropJournal(); err != nil {
			return err
		}
	}
	j, err := openJournal(r.cfg, disk, r.health)
	if err != nil {
		return fmt.Errorf("replication: %s: attach: %w", r.name, err)
	}
	if !fresh {
		if err := r.markRange(j, applied, j.LastSeq()); err != nil {
			j.Close()
			return err
		}
	}
	m, err := r.attachMeta(fresh)
	if err != nil {
		j.Close()
		return err
	}
	r.mu.Lock()
	r.journal, r.disk, r.meta = j, disk, m
	if fresh {
		r.oos.reset()
	}
	r.health.mu.Lock()
	r.health.first = nil
	r.health.mu.Unlock()
	r.health.lacks.Store(false)
	r.health.phase.Store(uint32(diskAttached))
	r.setDiskRole(r.role)
	r.stepLocked(CmdConnect{}) // saves nothing
	r.mu.Unlock()
	r.health.follow.set(followed) // a disk is in: no reply waits on the peer's follow
	r.log.Info("disk attached", "fresh", fresh, "disk", m.Disk, "gen", fmt.Sprintf("%+v", m.Gen))
	return nil
}

// attachMeta is the metadata of a disk being attached: what meta.json says
// of the one detached, or for a fresh one, Inconsistent data of no known
// generation that gives way to the peer's (discard-my-data).
func (r *Resource) attachMeta(fresh bool) (meta, error) {
	m, err := loadMeta(r.cfg.FS, r.cfg.MetaDir, false)
	if err != nil || !fresh {
		return m, err
	}
	m.Disk, m.Created, m.DiscardMyData = wire.Inconsistent.String(), false, true
	m.Gen = wire.GenIDs{Current: randomID()}
	if err := writeMeta(r.cfg.FS, r.cfg.MetaDir, m); err != nil {
		return meta{}, fmt.Errorf("replication: %s: attach: %w", r.name, err)
	}
	return m, nil
}

// dropJournal removes the journal of a disk that is replaced: its records
// belong to the old disk.
func (r *Resource) dropJournal() error {
	dir := filepath.Join(r.cfg.MetaDir, "journal")
	names, err := r.cfg.FS.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("replication: %s: attach: %w", r.name, err)
	}
	for _, n := range names {
		if err := r.cfg.FS.Remove(filepath.Join(dir, n)); err != nil {
			return fmt.Errorf("replication: %s: attach: %w", r.name, err)
		}
	}
	return nil
}

// openDetached is the journal of a node whose own journal could not be
// opened for a disk fault (a full file system, a failing disk), under
// --on-io-error detach: an empty one in memory, failed at once, so the
// node starts Diskless (Open then detaches it) and can take a disk back
// by AttachDisk once the fault is cured, where it would otherwise not
// start at all.
func openDetached(c Config) (*journal.Journal, error) {
	j, err := journal.Open(vfs.NewMem(), "/journal", c.Disk, journal.Options{
		MaxBytes: 64 << 10, CheckpointInterval: -1, Logger: c.Logger})
	if err != nil {
		return nil, err
	}
	j.Fail(errDetached)
	return j, nil
}

// peerDiskStateFrame takes the Primary's DiskState frame on link l.
func (r *Resource) peerDiskStateFrame(l *link, body []byte) error {
	m, err := wire.ParseDiskState(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.link != l {
		return nil
	}
	if _, err := r.stepLocked(PeerDiskState{Disk: m.Disk, Gen: m.Gen}); err != nil {
		r.log.Error("saving metadata", "err", err)
	}
	r.log.Warn("the peer's disk", "disk", m.Disk.String(), "gen", fmt.Sprintf("%+v", r.meta.Gen),
		"out_of_sync_bytes", r.oos.bytes())
	return nil
}
