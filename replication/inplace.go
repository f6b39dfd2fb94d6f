package replication

import (
	"fmt"

	"github.com/nbdmirror/nbdmirror/journal"
)

// Writes of Config.JournalDataMax bytes or more go to the disk in place,
// behind an extent record in the journal (see package journal), on both
// nodes: the Primary journals and applies the record as any other, and
// sends its payload, compressed once; the Secondary's journal makes the same
// choice for the record it receives.

// recoverExtents marks the regions the journal's recovery reported: writes
// in place it found torn (their data on the disk does not match the
// record's CRC), and the extents of the activity set after a power loss.
// This node may hold anything there, so the next connection resyncs them,
// as DRBD resyncs its activity log's extents after a crash. The bitmap is
// saved before the journal's checkpoint may pass them.
func (r *Resource) recoverExtents() error {
	exts := r.journal.RecoveredExtents()
	active := 0
	for _, e := range exts {
		if e.Active {
			active++
		}
		if end := min(e.Offset+e.Len, r.size); end > e.Offset {
			r.oos.mark(e.Offset, end-e.Offset)
		}
	}
	if len(exts) > 0 {
		if err := r.saveBitmap(); err != nil {
			return fmt.Errorf("replication: mark what a crash may have left different: %w", err)
		}
		r.meta.TailFrom = max(r.meta.TailFrom, r.journal.LastSeq()+1)
		if err := r.saveMeta(); err != nil {
			return fmt.Errorf("replication: mark what a crash may have left different: %w", err)
		}
		r.log.Warn("regions a crash may have left different: marked out of sync",
			"torn_writes_in_place", len(exts)-active, "active_extents", active, "out_of_sync_bytes", r.oos.bytes())
	}
	r.journal.ExtentsMarked()
	return nil
}

// tailRecord is rec as a journal-tail resync sends it: an extent record
// becomes a write of what the disk holds there, read once the write is
// applied (readToSend). Those bytes may be newer than rec's (a later write
// over them): until the tail is through, the target then holds no state
// the source ever had.
func (r *Resource) tailRecord(rec journal.Record, cancel <-chan struct{}) (journal.Record, error) {
	if rec.Kind != journal.KindExtent {
		return rec, nil
	}
	if err := r.journal.AwaitApplied(rec.Seq, cancel); err != nil {
		return rec, err
	}
	w, err := r.readToSend(rec.Offset, int64(rec.RawLen))
	if err != nil {
		return rec, fmt.Errorf("replication: read the write in place of seq %d: %w", rec.Seq, err)
	}
	w.Seq = rec.Seq
	return w, nil
}
