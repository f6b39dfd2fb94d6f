package journal

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"slices"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// The activity set, as DRBD's activity log. The kernel writes a file's
// dirty pages back when it likes, so a record applied to the disk before it
// is durable in the journal may reach the disk anyway, and a power loss then
// leaves bytes there that no record in the journal explains, where a peer
// may hold others. So a record is applied before its journal sync only if
// every activity extent (Options.activityExtent bytes) it touches is in the
// published set, named durably in the ACTIVITY file. The writer syncs any
// other batch (cold) in the journal before the applier applies it, and asks
// the activity goroutine to publish a set that holds its extents.
//
// nextActivitySet decides each new set: grown by the extents records
// touched, or, after each checkpoint, shrunk to the extents touched since
// the last shrink; at most Options.activityMax, the most recently touched
// first, with lookAhead's guess at where a stream goes next. A set that
// drops an extent is written only once the journal is synced: every record
// applied under the old set is durable then. While a set is written only
// the extents in both count as published. The activity goroutine is the
// only writer of the file but for clearActivity, which runs only while no
// set may be published (held), and Close, once it has stopped.
//
// The file names the boot it was written in (vfs.BootID). Recovery reports
// its extents (RecoveredExtents, Active) when that boot has ended: a power
// loss may have kept disk writes of records the journal lost. After a crash
// of the process alone the kernel kept both, and replay writes every record
// the disk may hold again. A clean Close leaves the set empty.
//
// The ACTIVITY file (frozen), little endian:
//
//	0  8  magic "nbdmact2"
//	8  8  from: records from this seq on may have been applied unsynced
//	16 8  extent size in bytes
//	24 4  number of extents, n
//	28 4  zero
//	32 40 the boot it was written in, zero padded
//	72    n extent numbers, 8 bytes each, ascending
//	      CRC32C of everything before it (4 bytes), 4 zero bytes
//
// A file of the first version ("nbdmact1": from, upto, extent size, n,
// closed, 4 bytes each but for n and closed, then the extents at 40) named
// a set published during a checkpoint's disk sync only; recovery reports it
// as it did then: when it is open, or when the journal lost records up to
// its upto.
const (
	activityFile = "ACTIVITY"
	activityTmp  = activityFile + ".tmp" // as vfs.WriteFileAtomic names it

	activityMagic    = "nbdmact2"
	activityHeader   = 72
	activityBootLen  = 40
	activityMagicV1  = "nbdmact1"
	activityHeaderV1 = 40

	defaultActivityExtent = 4 << 20 // DRBD's activity log extent
	defaultActivityMax    = 1024    // 4 GiB of hot extents; DRBD's default is 1237
)

// activity is the journal's activity set. Guarded by Journal.mu but for
// kick.
type activity struct {
	hot     map[int64]struct{} // the published set
	from    uint64             // the published set's from
	touched map[int64]uint64   // extent -> the last seq taken there, since the last shrink
	want    bool               // a cold record was taken since the last publish
	shrink  bool               // a checkpoint asked for a shrink
	held    bool               // recovery reported extents not marked yet: publish nothing
	kick    chan struct{}      // cap 1: wakes activityLoop
}

// activityRecord is the ACTIVITY file's content.
type activityRecord struct {
	from    uint64
	extent  int64
	boot    string
	extents []int64
	// v1: a file of the first version, closed once its disk sync ended,
	// upto the last seq applied unsynced under it.
	v1     bool
	closed bool
	upto   uint64
}

func (a *activityRecord) encode() []byte {
	b := make([]byte, activityHeader, activityHeader+8*len(a.extents)+8)
	copy(b, activityMagic)
	binary.LittleEndian.PutUint64(b[8:], a.from)
	binary.LittleEndian.PutUint64(b[16:], uint64(a.extent))
	binary.LittleEndian.PutUint32(b[24:], uint32(len(a.extents)))
	copy(b[32:32+activityBootLen], a.boot)
	for _, e := range a.extents {
		b = binary.LittleEndian.AppendUint64(b, uint64(e))
	}
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return binary.LittleEndian.AppendUint32(b, 0)
}

func decodeActivity(b []byte) (activityRecord, error) {
	bad := errors.New("bad activity file")
	if len(b) < activityHeaderV1+8 {
		return activityRecord{}, bad
	}
	var a activityRecord
	var n, header int
	switch string(b[:8]) {
	case activityMagic:
		if len(b) < activityHeader+8 {
			return activityRecord{}, bad
		}
		n, header = int(binary.LittleEndian.Uint32(b[24:])), activityHeader
		a.from = binary.LittleEndian.Uint64(b[8:])
		a.extent = int64(binary.LittleEndian.Uint64(b[16:]))
		boot := b[32 : 32+activityBootLen]
		if i := slices.Index(boot, 0); i >= 0 {
			boot = boot[:i]
		}
		a.boot = string(boot)
	case activityMagicV1:
		n, header = int(binary.LittleEndian.Uint32(b[32:])), activityHeaderV1
		a.v1 = true
		a.from = binary.LittleEndian.Uint64(b[8:])
		a.upto = binary.LittleEndian.Uint64(b[16:])
		a.extent = int64(binary.LittleEndian.Uint64(b[24:]))
		a.closed = b[36] == 1
	default:
		return activityRecord{}, bad
	}
	end := header + 8*n
	if n > len(b)/8 || len(b) != end+8 || binary.LittleEndian.Uint32(b[end:]) != crc32.Checksum(b[:end], castagnoli) {
		return activityRecord{}, bad
	}
	if a.extent <= 0 {
		return activityRecord{}, bad
	}
	for i := range n {
		a.extents = append(a.extents, int64(binary.LittleEndian.Uint64(b[header+8*i:])))
	}
	return a, nil
}

// exposed says whether records applied unsynced under a may be on the disk
// without being in the journal, which reaches last, in boot.
func (a *activityRecord) exposed(last uint64, boot string) bool {
	switch {
	case len(a.extents) == 0:
		return false
	case a.v1:
		return !a.closed || last < a.upto
	}
	return a.boot == "" || boot == "" || a.boot != boot
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
// and reports whether it may be applied before its journal sync: its
// extents are all in the published set. If not, it asks for a set that
// holds them. Requires mu.
func (j *Journal) noteActivity(it *item) (hot bool) {
	a := &j.act
	hot = true
	last := int64(-1)
	j.opts.extentsOf(&it.rec, func(e int64) {
		a.touched[e] = it.rec.Seq
		if _, ok := a.hot[e]; !ok {
			hot = false
		}
		last = e
	})
	ask := !hot
	if _, ok := a.hot[last+1]; hot && last >= 0 && !ok {
		// At the end of a run of the set: a stream gets past it next, and
		// each write there would wait for a journal sync, behind the
		// disk's write-back. The extent ahead counts as touched, and
		// lookAhead extends the run before the stream gets there.
		a.touched[last+1] = it.rec.Seq
		ask = true
	}
	if ask && !a.want {
		a.want = true
		j.kickActivity()
	}
	return hot
}

// kickActivity wakes the activity goroutine.
func (j *Journal) kickActivity() {
	select {
	case j.act.kick <- struct{}{}:
	default:
	}
}

// shrinkActivity asks for a set of only the extents touched since the last
// shrink; the checkpoint loop asks after each checkpoint.
func (j *Journal) shrinkActivity() {
	j.mu.Lock()
	j.act.shrink = true
	j.mu.Unlock()
	j.kickActivity()
}

// activityLoop is the activity goroutine: it publishes the sets asked for.
func (j *Journal) activityLoop() {
	for {
		select {
		case <-j.stop:
			return
		case <-j.act.kick:
		}
		j.publishActivity()
	}
}

// nextActivitySet is the set to publish after hot: hot and the extents
// touched since the last shrink, or with shrink these alone. Past max
// extents it keeps the three quarters most recently touched (extents of
// hot not touched since the last shrink first out) and lets lookAhead fill
// the rest. drops says whether an extent of hot is not in it: then the
// journal must be synced before it is written.
func nextActivitySet(hot map[int64]struct{}, touched map[int64]uint64, limit int, shrink bool) (set map[int64]struct{}, drops bool) {
	cand := maps.Clone(touched)
	if cand == nil {
		cand = map[int64]uint64{}
	}
	if !shrink {
		for e := range hot {
			if _, ok := cand[e]; !ok {
				cand[e] = 0
			}
		}
	}
	keys := slices.Collect(maps.Keys(cand))
	if len(keys) > limit {
		slices.SortFunc(keys, func(x, y int64) int {
			if c := cmp.Compare(cand[y], cand[x]); c != 0 {
				return c
			}
			return cmp.Compare(x, y)
		})
		keys = keys[:max(1, limit*3/4)]
	}
	set = make(map[int64]struct{}, len(keys))
	for _, e := range keys {
		set[e] = struct{}{}
	}
	lookAhead(set, limit)
	for e := range hot {
		if _, ok := set[e]; !ok {
			return set, true
		}
	}
	return set, false
}

// publishActivity writes the set asked for to the ACTIVITY file and
// publishes it. Runs on the activity goroutine.
func (j *Journal) publishActivity() {
	j.mu.Lock()
	a := &j.act
	if a.held || !a.want && !a.shrink {
		j.mu.Unlock()
		return
	}
	set, drops := nextActivitySet(a.hot, a.touched, j.opts.activityMax, a.shrink)
	if a.shrink {
		a.touched = make(map[int64]uint64, len(a.touched))
	}
	a.want, a.shrink = false, false
	if maps.Equal(set, a.hot) {
		j.mu.Unlock()
		return
	}
	from := a.from
	if drops || len(a.hot) == 0 {
		// Records up to lastSeq are durable once the sync below is done;
		// before the first set, those up to durableSeq are.
		from = j.durableSeq.Load() + 1
		if drops {
			from = j.lastSeq.Load() + 1
		}
	}
	for e := range a.hot { // until the file is written, both name these
		if _, ok := set[e]; !ok {
			delete(a.hot, e)
		}
	}
	j.mu.Unlock()
	if drops {
		if err := j.SyncWait(); err != nil {
			j.log.Debug("journal: the activity set is not replaced: the journal did not sync", "err", err)
			return
		}
	}
	rec := activityRecord{from: from, extent: j.opts.activityExtent, boot: j.boot, extents: slices.Sorted(maps.Keys(set))}
	if err := j.writeActivity(&rec); err != nil {
		j.log.Warn("journal: the activity set is not written: writes outside it sync the journal before they are applied", "err", err)
		return
	}
	j.mu.Lock()
	a.hot, a.from = set, from
	j.mu.Unlock()
}

// lookAhead adds to set, after each run of two or more consecutive extents
// in it, as many extents as the run holds, and at least lookAheadMin,
// while set holds fewer than limit: a sequential stream goes on past where
// it was, as readahead assumes, and its next writes then need no journal
// sync before they are applied. Extents past the end of the disk are
// harmless: the caller marks only what is inside it.
func lookAhead(set map[int64]struct{}, limit int) {
	sorted := slices.Sorted(maps.Keys(set))
	for i := 0; i < len(sorted); {
		n := 1
		for i+n < len(sorted) && sorted[i+n] == sorted[i]+int64(n) {
			n++
		}
		if n >= 2 {
			end := sorted[i] + int64(n+max(n, lookAheadMin))
			for e := sorted[i] + int64(n); e < end && len(set) < limit; e++ {
				set[e] = struct{}{}
			}
		}
		i += n
	}
}

// lookAheadMin is the least lookAhead adds after a run. A set is published
// with an fdatasync, and under a stream of large writes that waits behind
// the disk's write-back (0.3 s and more seen); a stream at 400 MiB/s
// crosses 30 extents meanwhile, each write there synced in the journal
// before it is applied. 64 extents (256 MiB) stay ahead of that; a power
// loss resyncs them at most, as DRBD resyncs its activity log.
const lookAheadMin = 64

// clearActivity replaces the activity set recovery reported, once the
// caller marked it, by an empty one, so that a later crash does not report
// it again; then a new set may be published.
func (j *Journal) clearActivity() {
	empty := activityRecord{extent: j.opts.activityExtent, boot: j.boot}
	if err := j.writeActivity(&empty); err != nil {
		j.log.Warn("journal: the reported activity set stays: a crash would report it again", "err", err)
	}
	j.mu.Lock()
	j.act.held = false
	want := j.act.want
	j.mu.Unlock()
	if want {
		j.kickActivity()
	}
}

// emptyActivity writes the set empty at a clean Close, once the final
// checkpoint put every record on the synced disk and the activity
// goroutine stopped: the next boot has nothing to report.
func (j *Journal) emptyActivity() {
	j.mu.Lock()
	skip := j.act.held || j.ckptSeq.Load() < j.lastSeq.Load()
	j.mu.Unlock()
	if skip {
		return
	}
	empty := activityRecord{from: j.lastSeq.Load() + 1, extent: j.opts.activityExtent, boot: j.boot}
	if err := j.writeActivity(&empty); err != nil {
		j.log.Warn("journal: the activity set is not emptied: a power loss would report it", "err", err)
	}
}

// writeActivity replaces the ACTIVITY file atomically.
func (j *Journal) writeActivity(a *activityRecord) error {
	if err := vfs.WriteFileAtomic(j.fs, j.dir, activityFile, a.encode()); err != nil {
		return fmt.Errorf("journal: write %s: %w", activityFile, err)
	}
	return nil
}

// recoverActivity reads the ACTIVITY file at Open and reports its extents
// (into j.recovered) if records applied unsynced under it may be on the
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
	if !a.exposed(last, j.boot) {
		return nil
	}
	j.recovered = append(j.recovered, a.regions()...)
	j.act.held = j.opts.MarkExtents
	j.log.Warn("journal: the machine restarted since the activity set was written: its extents are reported",
		"extents", len(a.extents), "extent_bytes", a.extent, "from", a.from, "boot", a.boot, "this_boot", j.boot)
	return nil
}
