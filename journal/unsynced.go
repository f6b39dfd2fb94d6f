package journal

// A write in place may cover only records the disk already holds durably.
// Recovery replays a record only where no later extent covers it
// (coverMap): there the disk is taken to hold the extent's data, or, where
// the crash tore it, bytes that came before it. That is true of a record
// applied and then synced on the disk before the extent was appended. It is
// not of a record still queued, or applied but not synced: a crash of the
// process before its apply, or a power loss after it, leaves the disk
// without it while the extent's data may never have landed either, and the
// record, acknowledged (a Secondary acknowledges once it is journaled) or
// flushed (a FLUSH syncs the journal, not the disk), would be lost. So a
// large write over such a record is journaled like a small one, and
// replayed in order; unsynced tracks them, by 4 KiB block.

// unsyncedBlockShift is the granularity of unsynced: a large write is
// journaled if it shares a 4 KiB block with a record the disk may lack.
const unsyncedBlockShift = 12

// unsyncedWideBlocks is the size, in blocks, above which a record (a trim
// or zero of a large range) is kept as a span instead of per block.
const unsyncedWideBlocks = 64

// unsynced is the journaled records that may not be on the synced disk
// yet: for each block, the highest seq of a record over it, and the wide
// records as spans. A record with a seq at or below Journal.diskCovered is
// on the synced disk. Guarded by Journal.mu.
type unsynced struct {
	blocks  map[int64]uint64
	wide    []span
	last    uint64 // the highest seq noted: none above covered, none overlaps
	pruneAt int    // prune once blocks holds more entries than this
}

// note records a journaled record over [off, off+n) with seq; covered is
// where the synced disk is, to prune by: the blocks noted are at most those
// written since the last disk sync.
func (u *unsynced) note(off, n int64, seq, covered uint64) {
	if n <= 0 {
		return
	}
	if len(u.blocks) > u.pruneAt || len(u.wide) > u.pruneAt {
		u.prune(covered)
	}
	u.last = max(u.last, seq)
	first, last := off>>unsyncedBlockShift, (off+n-1)>>unsyncedBlockShift
	if last-first+1 > unsyncedWideBlocks {
		u.wide = append(u.wide, span{off: off, end: off + n, seq: seq})
		return
	}
	if u.blocks == nil {
		u.blocks = make(map[int64]uint64)
	}
	for b := first; b <= last; b++ {
		u.blocks[b] = seq // seqs only grow
	}
}

// overlaps reports whether a record above covered (not on the synced disk
// yet) shares a block with [off, off+n). It drops what covered passed:
// everything, once the last record noted is on the synced disk, and the
// rest once the blocks grew past pruneAt.
func (u *unsynced) overlaps(off, n int64, covered uint64) bool {
	if u.last <= covered {
		if len(u.blocks) > 0 || len(u.wide) > 0 {
			clear(u.blocks)
			u.wide = u.wide[:0]
		}
		return false
	}
	if len(u.blocks) > u.pruneAt {
		u.prune(covered)
	}
	first, last := off>>unsyncedBlockShift, (off+n-1)>>unsyncedBlockShift
	for _, s := range u.wide {
		if s.seq > covered && s.off < (last+1)<<unsyncedBlockShift && s.end > first<<unsyncedBlockShift {
			return true
		}
	}
	for b := first; b <= last && len(u.blocks) > 0; b++ {
		if seq, ok := u.blocks[b]; ok && seq > covered {
			return true
		}
	}
	return false
}

// prune drops the records at or below covered.
func (u *unsynced) prune(covered uint64) {
	for b, seq := range u.blocks {
		if seq <= covered {
			delete(u.blocks, b)
		}
	}
	kept := u.wide[:0]
	for _, s := range u.wide {
		if s.seq > covered {
			kept = append(kept, s)
		}
	}
	u.wide = kept
	u.pruneAt = max(1024, 2*len(u.blocks), 2*len(u.wide))
}
