package replication

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// A Diskless Primary takes a disk back while the device stays in use by
// pulling the peer's data onto it (attachPrimary): its writes go on to the
// peer only meanwhile, and its reads are served by the peer.
//
//  1. Every region is read from the peer (readThroughPeer) and written to
//     the new disk. A write the peer acknowledges from then on marks its
//     regions in pull (markPulled): a read sent before that ack may have
//     missed it. A region is cleared before it is read again, and a read
//     holds every write acknowledged before it was sent, so a region whose
//     mark is clear holds the peer's data.
//  2. Passes over the marked regions shrink them.
//  3. Writes are held (order), those in flight waited for, the last marks
//     pulled; the disk is synced and, with a fresh journal and its
//     metadata, put in use: the node is UpToDate, as its peer, which is
//     told so on the link (DiskState UpToDate) and drops its marks.
//
// The old journal is dropped: every byte of the new disk comes from the
// peer, which holds every acknowledged write.

// pullState is a Primary's attach in progress; diskHealth holds it.
type pullState struct {
	marks    atomic.Pointer[bitmap] // set while a disk is being pulled
	inflight sync.WaitGroup         // peer-only writes not yet completed (appendPeerOnly)
}

// pullChunk is the most read from the peer at once.
const pullChunk = 1 << 20

// markPulled notes a write the peer acknowledged while a disk is pulled.
func (p *pullState) markPulled(off, length int64) {
	if b := p.marks.Load(); b != nil {
		b.mark(off, length)
	}
}

// attachPrimary attaches disk to a Diskless Primary (see above).
func (r *Resource) attachPrimary(disk Disk) (err error) {
	if r.currentLink() == nil {
		return fmt.Errorf("%w: a Diskless Primary takes a disk from its peer: it is not connected", ErrRefused)
	}
	if !r.health.phase.CompareAndSwap(uint32(diskDiskless), uint32(diskAttaching)) {
		return fmt.Errorf("%w: the disk is not Diskless", ErrRefused)
	}
	marks := newBitmap(r.size)
	r.health.pull.marks.Store(marks)
	defer func() {
		r.health.pull.marks.Store(nil)
		if err != nil {
			r.health.phase.Store(uint32(diskDiskless))
			err = fmt.Errorf("replication: %s: attach: %w", r.name, err)
		}
	}()
	r.journal.Close() // it failed for good: closing writes nothing
	if err := r.dropJournal(); err != nil {
		return err
	}
	j, err := openJournal(r.cfg, disk, r.health)
	if err != nil {
		return err
	}
	r.log.Info("attaching a disk: pulling the peer's data onto it", "bytes", r.size)
	if err := r.pullAll(disk, marks); err != nil {
		j.Close()
		return err
	}
	if err := r.finishPull(disk, j, marks); err != nil {
		j.Close()
		return err
	}
	r.log.Info("disk attached: UpToDate")
	return nil
}

// pullAll copies the whole disk from the peer, then the regions marked
// meanwhile, a few passes.
func (r *Resource) pullAll(disk Disk, marks *bitmap) error {
	buf := make([]byte, pullChunk)
	for off := int64(0); off < r.size; off += pullChunk {
		if err := r.pullRange(disk, buf[:min(pullChunk, r.size-off)], off); err != nil {
			return err
		}
	}
	for pass := 0; pass < 4 && marks.bytes() > 0; pass++ {
		if err := r.pullMarked(disk, marks, buf); err != nil {
			return err
		}
	}
	return nil
}

// pullMarked copies the marked regions from the peer, clearing each
// before it is read.
func (r *Resource) pullMarked(disk Disk, marks *bitmap, buf []byte) error {
	for reg := marks.next(0); reg >= 0; reg = marks.next(reg) {
		n := marks.run(reg, int64(len(buf))/RegionSize)
		for i := range n {
			marks.clear(reg + i)
		}
		off := reg * RegionSize
		if err := r.pullRange(disk, buf[:min(n*RegionSize, r.size-off)], off); err != nil {
			return err
		}
		reg += n
	}
	return nil
}

// pullRange reads len(p) bytes at off from the peer and writes them to disk.
func (r *Resource) pullRange(disk Disk, p []byte, off int64) error {
	if err := r.readThroughPeer(p, off); err != nil {
		return err
	}
	if _, err := disk.WriteAt(p, off); err != nil {
		return fmt.Errorf("write the new disk at %d: %w", off, err)
	}
	return nil
}

// finishPull holds writes, waits for those in flight, pulls what they
// marked, syncs the disk and puts it in use with journal j.
func (r *Resource) finishPull(disk Disk, j *journal.Journal, marks *bitmap) error {
	r.order.Lock()
	defer r.order.Unlock()
	r.health.pull.inflight.Wait()
	if err := r.pullMarked(disk, marks, make([]byte, pullChunk)); err != nil {
		return err
	}
	if err := disk.Sync(); err != nil {
		return fmt.Errorf("sync the new disk: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.link
	if l == nil {
		return fmt.Errorf("the peer went away before the disk was whole: %w", ErrLinkDown)
	}
	m := r.meta
	m.Disk, m.DiscardMyData = "UpToDate", false
	m.Gen.Bitmap = 0 // the disk holds the peer's data: neither lacks anything
	if err := writeMeta(r.cfg.FS, r.cfg.MetaDir, m); err != nil {
		return err
	}
	r.journal, r.disk, r.meta = j, disk, m
	r.oos.reset()
	l.queue(wire.AppendDiskState(nil, wire.DiskStateMsg{Disk: wire.UpToDate, Gen: m.Gen.Current}))
	r.health.mu.Lock()
	r.health.first = nil
	r.health.mu.Unlock()
	r.health.lacks.Store(false) // the disk holds the peer's data
	r.health.phase.Store(uint32(diskAttached))
	r.setDiskRole(r.role)
	return nil
}
