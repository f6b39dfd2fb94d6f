package journal

import (
	"fmt"
	"hash/crc32"
	"io"
	"slices"
	"sync/atomic"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
)

// In-place writes. A write of Options.DataMax bytes or more is not copied
// into the segment: the writer appends an extent frame (offset, length,
// seq, CRC32C of the data) and the applier, in seq order as for every
// record, writes the data to the disk. So the extent is in the segment
// before the disk write starts, and overlapping records land in seq order.
//
// Recovery replays the records after the checkpoint but never over bytes a
// later extent covers (see coverMap): the data there is whatever the disk
// kept. An extent whose bytes on the disk do not match its CRC after the
// replay is torn; RecoveredExtents reports it, for the caller to mark it
// out of sync toward a peer.
//
// A FLUSH (a sync) or a FUA extent syncs the disk too when an extent was
// applied since the last disk sync, once for every sync and FUA record of
// a batch: the applier does it after the batch's journal sync.

// Extent is a write made in place.
type Extent struct {
	Seq    uint64
	Offset int64
	Len    int64
	Sum    uint32 // CRC32C of the data
	// Active: not a write in place but an extent of the activity set of a
	// boot that ended (see activity.go); Seq is the first seq that may
	// have been applied there unsynced, Sum is zero.
	Active bool
}

// prepareInPlace readies r to be written in place, in the caller's
// goroutine: its raw data (lent, stored raw, or decoded into a buffer of the
// journal's) is attached and its CRC32C taken. A payload stored raw holds
// the same bytes as the data, so its checksum, taken when the record was
// made, is the data's: a 1 MiB write is not checksummed twice.
func (it *item) prepareInPlace(r *Record) error {
	if r.Codec == CodecNone {
		if r.raw == nil {
			r.raw = r.Payload
		}
		it.inPlace, it.dataSum = true, r.payloadSum()
		return nil
	}
	data := r.raw
	if data == nil {
		bp := bufpool.Get(int(r.RawLen))
		out, err := r.Raw((*bp)[:0])
		if err != nil {
			bufpool.Put(bp)
			return err
		}
		*bp = out
		it.own, data = bp, out
	}
	r.raw = data
	it.inPlace, it.dataSum = true, crc32.Checksum(data, castagnoli)
	return nil
}

// release gives back the buffer the item's data was decoded into.
func (it *item) release() {
	if it.own != nil {
		bufpool.Put(it.own)
		it.own = nil
	}
}

// LastExtentSeq is the seq of the last write made in place (appended since
// Open, or found after the checkpoint by recovery); 0 if none. A journal
// tail from seq s holds an extent if LastExtentSeq() >= s: its data must be
// read from the disk, which may hold newer bytes by then.
func (j *Journal) LastExtentSeq() uint64 { return j.extentSeq.Load() }

// RecoveredExtents is the writes made in place after the checkpoint whose
// data on the disk did not match their CRC at Open (torn by the crash, or
// overwritten since by a later record), and the extents of the activity set
// of a boot that ended (Active, see activity.go): the regions to mark out
// of sync toward a peer. An extent may reach past the end of the disk.
// With Options.MarkExtents the caller calls ExtentsMarked once they are
// marked durably.
func (j *Journal) RecoveredExtents() []Extent { return slices.Clone(j.recovered) }

// ExtentsMarked lets checkpoints pass the extents RecoveredExtents reported,
// and no new activity set replaces the reported one before that.
func (j *Journal) ExtentsMarked() {
	j.ckptHold.Store(0)
	j.mu.Lock()
	held := j.act.held
	j.mu.Unlock()
	if held {
		j.clearActivity()
	}
}

// capCheckpoint is seq, or the seq before the first recovered extent not
// marked yet.
func (j *Journal) capCheckpoint(seq uint64) uint64 {
	if h := j.ckptHold.Load(); h != 0 && seq >= h {
		return h - 1
	}
	return seq
}

// noteWritten runs once b's records are in the segment: the written
// callbacks run now, unless b holds a write in place or an earlier batch's
// callbacks are left to the applier still. Then the applier runs them after
// applying each record (applied): a write in place is where recovery finds
// it only once its data is on the disk, and callbacks keep seq order.
func (j *Journal) noteWritten(b *batch) {
	inPlace := false
	for i := range b.items {
		inPlace = inPlace || b.items[i].inPlace
	}
	if inPlace || j.deferredBatches.Load() > 0 {
		b.deferWritten = true
		j.deferredBatches.Add(1)
		return
	}
	for i := range b.items {
		if w := b.items[i].written; w != nil {
			w()
		}
	}
}

// applied finishes the items of run after their apply (err): deferred
// written callbacks, the buffers of in-place items.
func (j *Journal) applied(b *batch, run []item, err error) {
	for k := range run {
		it := &run[k]
		if b.deferWritten && err == nil && it.written != nil {
			it.written()
		}
		it.release()
	}
}

// wantDiskSync says whether b, once synced in the journal, needs a disk
// sync: it holds a sync or a FUA extent, and an extent written up to it may
// not be covered by a disk sync yet. Called by the writer after writing b.
func (j *Journal) wantDiskSync(b *batch) bool {
	return b.needSync && b.wantsDisk && j.w.lastExtent > j.diskCovered.Load()
}

// syncDiskNow syncs the disk for a batch that needs it (wantDiskSync):
// every record applied so far, all of them synced in the journal.
func (j *Journal) syncDiskNow(a *applier) error {
	if a.failed != nil {
		return a.failed
	}
	seq := j.appliedSeq.Load()
	err := j.disk.Sync()
	j.st.diskSyncs.Add(1)
	if err != nil {
		err = fmt.Errorf("journal: sync disk: %w", err)
		j.fail(err)
		return err
	}
	storeMax(&j.diskCovered, seq)
	return nil
}

// span is a range of the disk and the seq of the last extent covering it.
type span struct {
	off, end int64
	seq      uint64
}

// coverMap is the disk ranges that extents cover, disjoint, sorted by
// offset, each with the highest seq of the extents over it.
type coverMap []span

// newCoverMap builds the map of exts.
func newCoverMap(exts []Extent) coverMap {
	sorted := slices.Clone(exts)
	slices.SortFunc(sorted, func(a, b Extent) int {
		if a.Seq > b.Seq {
			return -1
		}
		return 1
	})
	var m coverMap
	for _, e := range sorted { // highest seq first: it keeps what it covers
		m = m.add(e.Offset, e.Offset+e.Len, e.Seq)
	}
	return m
}

// add covers the parts of [off, end) not covered yet with seq.
func (m coverMap) add(off, end int64, seq uint64) coverMap {
	i, _ := slices.BinarySearchFunc(m, off, func(s span, off int64) int {
		if s.end <= off {
			return -1
		}
		return 1
	})
	for off < end {
		if i < len(m) && m[i].off <= off {
			off = max(off, m[i].end)
			i++
			continue
		}
		gapEnd := end
		if i < len(m) {
			gapEnd = min(end, m[i].off)
		}
		m = slices.Insert(m, i, span{off, gapEnd, seq})
		i++
		off = gapEnd
	}
	return m
}

// uncovered is the parts of [off, end) that no extent after seq covers.
func (m coverMap) uncovered(off, end int64, seq uint64) [][2]int64 {
	i, _ := slices.BinarySearchFunc(m, off, func(s span, off int64) int {
		if s.end <= off {
			return -1
		}
		return 1
	})
	var out [][2]int64
	for ; i < len(m) && m[i].off < end && off < end; i++ {
		if m[i].seq <= seq {
			continue
		}
		if m[i].off > off {
			out = append(out, [2]int64{off, m[i].off})
		}
		off = max(off, m[i].end)
	}
	if off < end {
		out = append(out, [2]int64{off, end})
	}
	return out
}

// replayRecord applies r, found after the checkpoint, except over bytes a
// later extent covers. Extents themselves are on the disk already, as far
// as the crash let them.
func replayRecord(disk Disk, r *Record, cover coverMap, scratch *[]byte) error {
	if r.Kind == KindExtent {
		return nil
	}
	parts := cover.uncovered(r.Offset, r.Offset+int64(r.RawLen), r.Seq)
	if len(parts) == 1 && parts[0] == [2]int64{r.Offset, r.Offset + int64(r.RawLen)} {
		return applyRecord(disk, r, scratch)
	}
	var data []byte
	if r.Kind == KindWrite && len(parts) > 0 {
		var err error
		if data, err = r.rawData(*scratch); err != nil {
			return err
		}
		if r.Codec != CodecNone {
			*scratch = data
		}
	}
	for _, p := range parts {
		var err error
		switch r.Kind {
		case KindWrite:
			_, err = disk.WriteAt(data[p[0]-r.Offset:p[1]-r.Offset], p[0])
		case KindTrim:
			err = disk.Trim(p[0], p[1]-p[0])
		default:
			err = disk.Zero(p[0], p[1]-p[0], r.Kind == KindZeroNoHole)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// tornExtents is the extents of exts whose data on disk does not match
// their CRC. A disk that cannot be read makes every one of them torn.
func tornExtents(disk Disk, exts []Extent) ([]Extent, error) {
	rd, ok := disk.(io.ReaderAt)
	if !ok {
		return exts, nil
	}
	var torn []Extent
	var buf []byte
	for _, e := range exts {
		buf = slices.Grow(buf[:0], int(e.Len))[:e.Len]
		if n, err := rd.ReadAt(buf, e.Offset); n < len(buf) {
			return nil, fmt.Errorf("journal: read extent of seq %d: %w", e.Seq, err)
		}
		if crc32.Checksum(buf, castagnoli) != e.Sum {
			torn = append(torn, e)
		}
	}
	return torn, nil
}

// storeMax raises a to v if v is above it.
func storeMax(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
