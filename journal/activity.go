package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"slices"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// The activity set. A checkpoint's disk sync may make durable any record
// applied while it runs, and a record must not be on the disk after a
// power loss without recovery knowing that its region changed: a peer may
// lack it. Records applied during a disk sync are therefore synced in the
// journal first (diskSyncing) — unless their region is in the activity
// set, as DRBD's activity log does it: before the checkpoint queues its
// marker, it writes the extents that records touched since the last set
// (at most Options.activityMax, of Options.activityExtent bytes) to the
// ACTIVITY file, durably, and publishes them. A batch whose records all
// fall in those extents is then applied at once, unsynced, also while the
// applier works its way to the marker. When the disk sync ends the disk
// syncer withdraws the set, and the checkpoint writes the file closed,
// naming the last seq applied unsynced under it. The checkpoint, holding
// ckptMu, is the only writer of the file but for clearActivity, which runs
// only while no set may be published (held).
//
// Recovery reports the file's extents (RecoveredExtents, Active) when the
// set was still open, or when the journal lost records up to that last
// seq: the disk there may hold what the journal does not, and the caller
// marks it out of sync toward a peer. A new set replaces the last one only
// with the last one's extents added, unless the journal is synced past its
// last seq applied unsynced: those records stay reported.
//
// The ACTIVITY file (frozen), little endian:
//
//	0  8  magic "nbdmact1"
//	8  8  from: records from this seq on may have been applied unsynced
//	16 8  upto: with closed, the last seq applied unsynced (0: none)
//	24 8  extent size in bytes
//	32 4  number of extents, n
//	36 4  closed: 1 once the disk sync has ended
//	40    n extent numbers, 8 bytes each, ascending
//	      CRC32C of everything before it (4 bytes), 4 zero bytes
const (
	activityFile   = "ACTIVITY"
	activityTmp    = activityFile + ".tmp" // as vfs.WriteFileAtomic names it
	activityMagic  = "nbdmact1"
	activityHeader = 40

	defaultActivityExtent = 4 << 20 // DRBD's activity log extent
	defaultActivityMax    = 1024    // 4 GiB of hot extents; DRBD's default is 1237
)

// activity is the journal's activity set. Guarded by Journal.mu.
type activity struct {
	touched map[int64]struct{} // extents of the records taken since the set was last written
	hot     map[int64]struct{} // the published set, nil if none
	lastHot uint64             // the last seq taken unsynced under hot
	from    uint64             // the published set's from
	held    bool               // recovery reported extents not marked yet: publish nothing
	// withdrawn is the set the disk syncer withdrew, for the checkpoint to
	// write closed; last is the last set withdrawn and written (or tried),
	// nil if none or once cleared.
	withdrawn, last *activityRecord
}

// activityRecord is the ACTIVITY file's content.
type activityRecord struct {
	from, upto uint64
	extent     int64
	closed     bool
	extents    []int64
}

func (a *activityRecord) encode() []byte {
	b := make([]byte, activityHeader, activityHeader+8*len(a.extents)+8)
	copy(b, activityMagic)
	binary.LittleEndian.PutUint64(b[8:], a.from)
	binary.LittleEndian.PutUint64(b[16:], a.upto)
	binary.LittleEndian.PutUint64(b[24:], uint64(a.extent))
	binary.LittleEndian.PutUint32(b[32:], uint32(len(a.extents)))
	if a.closed {
		b[36] = 1
	}
	for _, e := range a.extents {
		b = binary.LittleEndian.AppendUint64(b, uint64(e))
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return binary.LittleEndian.AppendUint32(b, 0)
}

func decodeActivity(b []byte) (activityRecord, error) {
	bad := errors.New("bad activity file")
	if len(b) < activityHeader+8 || string(b[:8]) != activityMagic {
		return activityRecord{}, bad
	}
	n := int(binary.LittleEndian.Uint32(b[32:]))
	end := activityHeader + 8*n
	if n > len(b)/8 || len(b) != end+8 || binary.LittleEndian.Uint32(b[end:]) != crc32.Checksum(b[:end], castagnoli) {
		return activityRecord{}, bad
	}
	a := activityRecord{
		from:   binary.LittleEndian.Uint64(b[8:]),
		upto:   binary.LittleEndian.Uint64(b[16:]),
		extent: int64(binary.LittleEndian.Uint64(b[24:])),
		closed: b[36] == 1,
	}
	if a.extent <= 0 {
		return activityRecord{}, bad
	}
	for i := range n {
		a.extents = append(a.extents, int64(binary.LittleEndian.Uint64(b[activityHeader+8*i:])))
	}
	return a, nil
}

// exposed says whether the records applied unsynced under a may be on the
// disk without being in a journal whose records reach last.
func (a *activityRecord) exposed(last uint64) bool {
	return len(a.extents) > 0 && (!a.closed || last < a.upto)
}

// regions is a's extents as the Extents recovery reports.
func (a *activityRecord) regions() []Extent {
	out := make([]Extent, len(a.extents))
	for i, e := range a.extents {
		out[i] = Extent{Seq: a.from, Offset: e * a.extent, Len: a.extent, Active: true}
	}
	return out
}

// extentsOf calls fn for every activity extent r covers.
func (o *Options) extentsOf(r *Record, fn func(e int64)) {
	if r.RawLen == 0 {
		return
	}
	for e := r.Offset / o.activityExtent; e <= (r.Offset+int64(r.RawLen)-1)/o.activityExtent; e++ {
		fn(e)
	}
}

// noteActivity notes the extents of the record it, taken by the writer,
// and reports whether it may be applied unsynced during a disk sync: its
// extents are all in the published set. Requires mu.
func (j *Journal) noteActivity(it *item) (hot bool) {
	a := &j.act
	hot = a.hot != nil
	j.opts.extentsOf(&it.rec, func(e int64) {
		if len(a.touched) < j.opts.activityMax {
			a.touched[e] = struct{}{}
		}
		if hot {
			_, hot = a.hot[e]
		}
	})
	if hot {
		a.lastHot = it.rec.Seq
	}
	return hot
}

// publishActivity writes the extents touched since the last set to the
// ACTIVITY file and publishes them, for the checkpoint about to queue its
// marker. Records from the first one not synced in the journal on may be
// applied unsynced under it. Requires ckptMu.
func (j *Journal) publishActivity() {
	j.mu.Lock()
	a := &j.act
	if a.held || len(a.touched) == 0 {
		j.mu.Unlock()
		return
	}
	set := a.touched
	a.touched = make(map[int64]struct{}, len(set))
	from := j.durableSeq.Load() + 1
	if last := a.last; last != nil && from <= last.upto {
		for _, e := range last.extents { // still exposed: see the top of this file
			set[e] = struct{}{}
		}
	}
	j.mu.Unlock()
	lookAhead(set, j.opts.activityMax)
	rec := activityRecord{from: from, extent: j.opts.activityExtent, extents: slices.Sorted(maps.Keys(set))}
	if err := j.writeActivity(&rec); err != nil {
		j.log.Warn("journal: the activity set is not written: every write syncs the journal during this disk sync", "err", err)
		return
	}
	j.mu.Lock()
	a.hot, a.from, a.lastHot = set, from, 0
	j.mu.Unlock()
}

// lookAhead adds to set, after each run of two or more consecutive extents
// in it, as many extents as the run holds, while set holds fewer than max:
// a sequential stream goes on past where it was, as readahead assumes, and
// its writes during the disk sync then need no journal sync, which costs
// most then, behind the disk's write-back. Extents past the end of the
// disk are harmless: the caller marks only what is inside it.
func lookAhead(set map[int64]struct{}, max int) {
	sorted := slices.Sorted(maps.Keys(set))
	for i := 0; i < len(sorted); {
		n := 1
		for i+n < len(sorted) && sorted[i+n] == sorted[i]+int64(n) {
			n++
		}
		for e := sorted[i] + int64(n); n >= 2 && e < sorted[i]+int64(2*n) && len(set) < max; e++ {
			set[e] = struct{}{}
		}
		i += n
	}
}

// withdrawActivity withdraws the published set once the disk sync ended,
// keeping its closed form, which names the last record applied unsynced
// under it, for closeActivity. Runs on the disk syncer.
func (j *Journal) withdrawActivity() {
	j.mu.Lock()
	defer j.mu.Unlock()
	a := &j.act
	if a.hot == nil {
		return
	}
	a.withdrawn = &activityRecord{from: a.from, upto: a.lastHot, extent: j.opts.activityExtent, closed: true,
		extents: slices.Sorted(maps.Keys(a.hot))}
	a.hot = nil
}

// closeActivity writes the closed form of a withdrawn set, once the
// checkpoint's disk sync is done. Until it is written the file is open,
// and recovery reports its extents: safe. Requires ckptMu.
func (j *Journal) closeActivity() {
	j.mu.Lock()
	rec := j.act.withdrawn
	j.act.withdrawn = nil
	j.mu.Unlock()
	if rec == nil {
		return
	}
	if err := j.writeActivity(rec); err != nil {
		j.log.Warn("journal: the activity set is not closed", "err", err)
	}
	j.mu.Lock()
	j.act.last = rec
	j.mu.Unlock()
}

// clearActivity replaces the activity set recovery reported, once the
// caller marked it, by an empty one, so that a later crash does not report
// it again; then a new set may be published.
func (j *Journal) clearActivity() {
	empty := activityRecord{extent: j.opts.activityExtent, closed: true}
	if err := j.writeActivity(&empty); err != nil {
		j.log.Warn("journal: the reported activity set stays: a crash would report it again", "err", err)
	}
	j.mu.Lock()
	j.act.held, j.act.last = false, nil
	j.mu.Unlock()
}

// writeActivity replaces the ACTIVITY file atomically.
func (j *Journal) writeActivity(a *activityRecord) error {
	if err := vfs.WriteFileAtomic(j.fs, j.dir, activityFile, a.encode()); err != nil {
		return fmt.Errorf("journal: write %s: %w", activityFile, err)
	}
	return nil
}

// recoverActivity reads the ACTIVITY file at Open and reports its extents
// (into j.recovered) if the records applied unsynced under it may be on the
// disk without being in the journal, which reaches last.
func (j *Journal) recoverActivity(last uint64) error {
	b, err := vfs.ReadFile(j.fs, j.path(activityFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("journal: read %s: %w", activityFile, err)
	}
	a, err := decodeActivity(b)
	if err != nil {
		return &CorruptionError{Segment: j.path(activityFile), Offset: 0, Err: fmt.Errorf("%w: %v", ErrCorruptRecord, err)}
	}
	if !a.exposed(last) {
		return nil
	}
	j.recovered = append(j.recovered, a.regions()...)
	j.act.held = j.opts.MarkExtents
	j.log.Warn("journal: a crash came while the disk synced: the activity set's extents are reported",
		"extents", len(a.extents), "extent_bytes", a.extent, "from", a.from, "closed", a.closed, "upto", a.upto, "last", last)
	return nil
}
