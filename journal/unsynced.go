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
// replayed in order; unsynced tracks them.

// unsyncedChunk is the granularity of unsynced: a large write is journaled
// if it shares a 64 KiB chunk with a record the disk may lack.
const unsyncedChunkShift = 16

// unsyncedWideChunks is the size, in chunks, above which a record (a
// trim or zero of a large range) is kept as a span instead of per chunk.
const unsyncedWideChunks = 16

// unsynced is the journaled records that may not be on the synced disk
// yet: for each chunk, the highest seq of a record over it, and the wide
// records as spans. A record with a seq at or below Journal.diskCovered is
// on the synced disk. Guarded by Journal.mu.
type unsynced struct {
	chunks  map[int64]uint64
	wide    []span
	pruneAt int // prune once chunks holds more entries than this
}

// note records a journaled record over [off, off+n) with seq.
func (u *unsynced) note(off, n int64, seq uint64) {
	if n <= 0 {
		return
	}
	first, last := off>>unsyncedChunkShift, (off+n-1)>>unsyncedChunkShift
	if last-first+1 > unsyncedWideChunks {
		u.wide = append(u.wide, span{off: off, end: off + n, seq: seq})
		return
	}
	if u.chunks == nil {
		u.chunks = make(map[int64]uint64)
	}
	for c := first; c <= last; c++ {
		u.chunks[c] = seq // seqs only grow
	}
}

// overlaps reports whether a record above covered (not on the synced disk
// yet) shares a chunk with [off, off+n). It prunes what covered passed
// once the chunks grew past pruneAt.
func (u *unsynced) overlaps(off, n int64, covered uint64) bool {
	if len(u.chunks) > u.pruneAt {
		u.prune(covered)
	}
	first, last := off>>unsyncedChunkShift, (off+n-1)>>unsyncedChunkShift
	for _, s := range u.wide {
		if s.seq > covered && s.off < (last+1)<<unsyncedChunkShift && s.end > first<<unsyncedChunkShift {
			return true
		}
	}
	for c := first; c <= last && len(u.chunks) > 0; c++ {
		if seq, ok := u.chunks[c]; ok && seq > covered {
			return true
		}
	}
	return false
}

// prune drops the records at or below covered.
func (u *unsynced) prune(covered uint64) {
	for c, seq := range u.chunks {
		if seq <= covered {
			delete(u.chunks, c)
		}
	}
	kept := u.wide[:0]
	for _, s := range u.wide {
		if s.seq > covered {
			kept = append(kept, s)
		}
	}
	u.wide = kept
	u.pruneAt = max(1024, 2*len(u.chunks))
}
