// Package journal is nbdmirror's write-ahead journal: every change to a
// resource's disk is a framed, checksummed, compressed record in segment
// files before it reaches the disk, so that a daemon crash or a power loss
// never leaves a torn or half-applied state, and so that a peer back from a
// short disconnect can be sent the journal's tail.
//
// # What it owns
//
//   - The record format: Record, its frame in the segment files (below) and
//     its payload's codecs. Replication carries the records in frames of
//     its own.
//   - Compression, once per write, in the caller's goroutine (Compressor):
//     s2 block format by default, zstd or none selectable; a payload that does
//     not shrink is stored raw.
//   - The segment files under the directory it is given (META-DIR/journal),
//     written by one goroutine that takes every queued record, writes them
//     with one pwritev and, when a FUA record or a sync waits, covers them all
//     with one fdatasync (group commit).
//   - Applying records to the Disk, in seq order, by one goroutine: overlapping
//     writes land in one order, and the disk file sees one writer.
//   - Checkpoints (disk synced, seq recorded in the CHECKPOINT file), the
//     activity set (the extents where records may be applied before their
//     journal sync, named in the ACTIVITY file, see activity.go), removal
//     of old segments beyond RetainBytes, back-pressure at MaxBytes, and
//     recovery at Open.
//
// # Goroutines
//
// Open starts: the writer (owns the active segment file: writes, syncs,
// rotates), the applier (owns applying to the Disk, completes records), the
// disk syncer (a checkpoint's Disk.Sync, so applying goes on meanwhile), the
// activity goroutine (writes the ACTIVITY file), the checkpoint loop (every CheckpointInterval, and when the journal fills up)
// and, for a fresh journal, one that prepares spare segment files. The writer
// applies a lone record itself while the applier is idle (applyInline); near
// a segment's end it starts a short-lived goroutine that syncs the segment
// early (presync). Appenders only queue; compression and checksums run in
// their goroutines.
//
// # Record frame (frozen)
//
// Every frame starts at an 8-byte aligned offset of its segment, and its
// length is a multiple of 8, so the first word (checksum and length) never
// straddles a sector and is never torn on its own. Integers are little endian.
//
//	 0       4       8   9  10      12      16              24              32
//	 +-------+-------+---+---+-------+-------+---------------+---------------+
//	 | crc   | len   |knd|cdc| rsvd  | rawlen|      seq      |    offset     |
//	 +-------+-------+---+---+-------+-------+---------------+---------------+
//	 | payload: len bytes, stored form (codec) ...   | zero pad to 8 bytes   |
//	 +-----------------------------------------------+-----------------------+
//
//	crc     uint32  CRC32C (Castagnoli) of the payload followed by header bytes 4..31
//	len     uint32  payload bytes stored; 0 for trim and zero, 8 for an extent
//	knd     uint8   1 write, 2 trim, 3 zero, 4 zero without hole, 5 padding,
//	                6 extent (a write made in place; since format 2, see below)
//	cdc     uint8   0 none, 1 s2 block, 2 zstd frame
//	rsvd    uint16  zero
//	rawlen  uint32  bytes of disk covered: decoded payload length, or trim/zero length
//	seq     uint64  sequence number, strictly increasing through the journal, never 0
//	offset  uint64  disk offset
//
// An extent frame's payload is the CRC32C of the data written in place (u32)
// and 4 zero bytes. Kind 6 came with in-place writes (format 2): a journal
// without extent frames reads as before, and a build older than that
// refuses a journal that has one (bad kind: corruption) rather than replay
// it wrongly.
//
// A header of 32 zero bytes is unwritten (or preallocated) space: the end.
// Segment files are named by the seq of their first record, 16 hex digits and
// ".seg" (0000000000000001.seg); CHECKPOINT holds the checkpoint seq (see
// checkpoint.go for its 32 bytes, also frozen). Retired segments are kept as
// spares (<hex>.free) and recycled: overwriting a file's blocks spares
// fdatasync a metadata commit. In a recycled segment the new frames are
// followed by old data, whose frames have seqs below the segment's first seq
// or do not decode: either is the end of the segment. Writes to a recycled
// segment end with a padding frame (kind 5, zero payload, the seq of the frame
// before it) at a 4096-byte boundary, so that no write covers part of a page
// the kernel would have to read first; readers skip padding.
//
// # Guarantees
//
// A record's completion (the done callback of AppendLater) means: written to the
// segment file and applied to the disk, so it survives a daemon crash; with
// FUA also synced in the journal, so it survives a power loss (a write in
// place: its extent synced in the journal and its data on the disk). Records are
// applied in seq order; completions may run out of order (a FUA record waits
// for its fdatasync, a later record without FUA does not). A sync completes
// once every record appended before it is synced. Recovery (Open) applies every
// record after the checkpoint; a torn tail of the last segment (short frame,
// bad checksum, zeros) is cut off and logged; a bad record followed by a good
// one is corruption, and Open refuses with a *CorruptionError naming the
// segment and offset, changing nothing.
//
// # Writes in place
//
// A write of Options.DataMax bytes or more (256 KiB by default) is not
// copied into the segment: its frame is an extent (kind 6) naming the range,
// the seq and the data's CRC32C, and the applier writes the data to the disk
// in seq order like any record, after the frame is in the segment. A sync
// (FLUSH) or a FUA extent then syncs the disk as well as the journal, once
// per batch, if an extent was applied since the last disk sync. Recovery
// replays the records after the checkpoint except over bytes a later extent
// covers, and reports the extents whose data does not match their CRC
// (RecoveredExtents) for the caller to resync; see inplace.go.
//
// A failed segment write is cut off again and its records complete with the
// error; a failed fdatasync or disk write fails the journal: every later
// record completes with the error until the journal is reopened.
//
// # Waiting
//
// Nothing in the journal sleeps to wait for a state. AwaitApplied(seq,
// cancel) returns once the records up to seq are applied to the disk,
// AwaitWritten(seq, cancel) once they are in a segment (a Reader opened then
// finds them); WaitApplied is AwaitApplied of LastSeq. The writer and the
// applier wake the waiters as they progress; a failure, Close or the cancel
// channel ends the wait with an error. A waiter also wakes the writer, so
// records queued by AppendLater are written even before their appender calls
// WriteQueued.
//
// # Readers
//
// A Reader replays the journal from a retained seq while appends go on. It
// keeps the segment it reads and the later ones until it moves past them or
// is closed, unless the journal fills up past its high-water mark: then the
// reader, too far behind, gets ErrNotRetained rather than stall appends.
//
// # Usage
//
//	j, err := journal.Open(vfs.Default, "/var/lib/nbdmirror/r0/journal", disk, journal.Options{})
//	if err != nil { ... }
//	defer j.Close()
//	c := journal.NewCompressor(journal.CodecS2)
//
//	rec := c.WriteLent(off, data)          // compress once, in this goroutine; data
//	                                       // stays unchanged until done (or use Write)
//	j.AppendLater(rec, fua, nil, func(seq uint64, err error) {
//		reply(err)                         // journaled + applied (+ synced if fua)
//		rec.Release()
//	})
//	j.WriteQueued(true)                    // write it now, here if the writer idles
//	j.SyncLater(func(err error) { reply(err) }) // NBD_CMD_FLUSH
//	j.WriteQueued(false)
//
//	err = j.AwaitApplied(seq, cancel)      // reads of the disk see seq and all before it
//
//	r, err := j.NewReader(peerSeq + 1)     // resync: replay the tail to a peer
//	defer r.Close()
//	for rec, err := r.Next(); err == nil; rec, err = r.Next() { send(rec) }
package journal
