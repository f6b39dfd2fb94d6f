package journal

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// writer is the state of the goroutine that owns the active segment file.
// Only that goroutine touches it (and Open and Close, before and after it runs).
type writer struct {
	f        vfs.File
	seg      *segment
	off      int64 // end of the whole frames in f
	dirty    bool  // f has writes not yet synced
	recycled bool  // f is a recycled file: old data may follow off
	started  int64 // f is being written back up to here (startWriteback)
	// lastExtent is the seq of the last extent frame written.
	lastExtent uint64
	presynced  bool     // presync ran for f
	iov        [][]byte // scratch for one pwritev
	padHdr     [headerSize]byte
}

// batch is what the writer took from the queue in one go: written with one
// pwritev, synced with at most one fdatasync, then applied in order.
type batch struct {
	items    []item
	bytes    int64 // frame bytes of the records
	needSync bool  // a FUA record, a sync or a checkpoint is in it
	waited   bool  // a FUA record or a sync is in it: a client waits for its sync
	records  int   // records in it
	ckpt     bool  // a checkpoint marker is in it
	// cold: a record in it touches an extent outside the activity set (see
	// activity.go); the batch is synced in the journal before it is applied.
	cold bool
	// wantsDisk: a sync or a FUA extent is in it, which an extent not yet
	// covered by a disk sync makes a disk sync for (diskSync, set by the
	// writer). Then the applier completes the syncs and FUA records, after
	// the disk sync. deferWritten: the applier runs the written callbacks
	// (see noteWritten).
	wantsDisk, diskSync, deferWritten bool
	// synced is done once a needSync batch is synced: the applier waits for
	// it before a checkpoint and while the disk syncs. In needSync batches
	// without a checkpoint the writer and the applier each count left down
	// once done, and the last completes the FUA records. syncErr is set
	// before either.
	synced  sync.WaitGroup
	left    atomic.Int32
	syncErr error
}

// firstSeq is the seq of the first record in b.
func (b *batch) firstSeq() uint64 {
	for i := range b.items {
		if b.items[i].isRecord() {
			return b.items[i].rec.Seq
		}
	}
	return 0
}

// lastSeq is the seq of the last record in b.
func (b *batch) lastSeq() uint64 {
	for i := len(b.items) - 1; i >= 0; i-- {
		if b.items[i].isRecord() {
			return b.items[i].rec.Seq
		}
	}
	return 0
}

// pad appends to the write a padding frame from end to the next page boundary
// (the one after if the gap is too small for a header), and returns its size.
func (j *Journal) pad(end int64, seq uint64) int64 {
	w := &j.w
	n := alignPage(end) - end
	if n == 0 {
		return 0
	}
	if n < headerSize {
		n += pageSize
	}
	p := Record{Kind: kindPad, Seq: seq, Payload: zeroPadding(n - headerSize)}
	p.putHeader(&w.padHdr)
	w.iov = append(w.iov, w.padHdr[:], p.Payload)
	j.addBytes(n)
	return n
}

// zeroPadding is n zero bytes, n <= 2*pageSize.
func zeroPadding(n int64) []byte { return zeroPages[:n] }

var zeroPages [2 * pageSize]byte

// addBytes adds n (maybe negative) to the journal's size.
func (j *Journal) addBytes(n int64) {
	if n != 0 {
		j.mu.Lock()
		j.bytes += n
		if n < 0 {
			j.space.Broadcast()
		}
		j.mu.Unlock()
	}
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

// recycle empties b and puts it back in the pool.
func (b *batch) recycle() {
	clear(b.items)
	b.items = b.items[:0]
	b.bytes, b.needSync, b.waited, b.records, b.ckpt, b.cold, b.syncErr = 0, false, false, 0, false, false, nil
	b.wantsDisk, b.diskSync, b.deferWritten = false, false, false
	batchPool.Put(b)
}

// writeLoop is the writer goroutine: it takes the queue, writes it to the
// segment, syncs when someone waits for durability and hands it to the
// applier.
func (j *Journal) writeLoop() {
	defer close(j.applyq)
	defer func() { close(j.syncq); <-j.syncerDone }() // before applyq: the applier waits for syncs
	for {
		b, failure, ok := j.nextBatch()
		if !ok {
			return
		}
		if failure != nil {
			j.failBatch(b, failure)
		} else {
			j.writeBatch(b)
		}
		j.releaseWriter()
	}
}

// nextBatch waits for queued items and takes them, at most maxBatchBytes of
// records at a time, making the caller the writer. It returns ok false when
// the journal is stopping and nothing is queued.
func (j *Journal) nextBatch() (b *batch, failure error, ok bool) {
	for {
		j.mu.Lock()
		if len(j.queue) > 0 && !j.writing {
			j.writing = true
			b = batchPool.Get().(*batch)
			j.takeLocked(b)
			failure = j.failure
			j.mu.Unlock()
			return b, failure, true
		}
		stopping := j.stopping && !j.writing
		j.mu.Unlock()
		if stopping {
			return nil, nil, false
		}
		<-j.kick
	}
}

// The writer is a role: whoever holds it (j.writing, under mu) owns j.w, and
// j.ap while the applier idles. The writer goroutine takes it for each
// batch. A caller of WriteQueued takes it when it is free, to write what is
// queued on its own goroutine: a lone write then crosses no goroutine at all.

// WriteQueued has what is queued written. With here, and the writer idle,
// the caller writes it (and applies it, if the applier idles too) before
// WriteQueued returns; otherwise the writer goroutine is woken. A caller
// that queued with AppendLater must call it.
func (j *Journal) WriteQueued(here bool) {
	j.mu.Lock()
	if len(j.queue) == 0 || j.writing {
		j.mu.Unlock() // the writer writes it once done with its batch
		return
	}
	if !here || j.failure != nil || j.stopping {
		j.mu.Unlock()
		j.wakeWriter()
		return
	}
	j.writing = true
	b := batchPool.Get().(*batch)
	j.takeLocked(b)
	j.mu.Unlock()
	j.writeBatch(b)
	j.releaseWriter()
}

// releaseWriter gives the writer role up, and wakes the writer goroutine if
// items were queued meanwhile or the journal is stopping.
func (j *Journal) releaseWriter() {
	j.mu.Lock()
	j.writing = false
	wake := len(j.queue) > 0 || j.stopping
	j.mu.Unlock()
	if wake {
		j.wakeWriter()
	}
}

// takeLocked moves items from the queue into b. Requires mu.
func (j *Journal) takeLocked(b *batch) {
	limit := j.opts.maxBatchBytes()
	n := 0
	for n < len(j.queue) && (b.bytes == 0 || b.bytes < limit) {
		it := &j.queue[n]
		if it.isRecord() {
			b.bytes += it.frameLen()
			b.records++
			if !j.noteActivity(it) {
				b.cold, b.needSync = true, true
			}
		}
		b.wantsDisk = b.wantsDisk || it.syncDone != nil || it.fua && it.inPlace
		b.needSync = b.needSync || it.fua || it.syncDone != nil || it.ckptDone != nil
		b.waited = b.waited || it.fua || it.syncDone != nil
		b.ckpt = b.ckpt || it.ckptDone != nil
		n++
	}
	if n == len(j.queue) {
		b.items, j.queue = j.queue, b.items[:0]
		j.kicked = false
		return
	}
	b.items = append(b.items, j.queue[:n]...)
	clear(j.queue[:n]) // no shifting: the rest moves up as the slice grows anew
	j.queue = j.queue[n:]
}

// writeBatch writes b's records to the segment, hands b to the applier (or
// applies it, see applyInline) and syncs the segment if b needs it.
func (j *Journal) writeBatch(b *batch) {
	if b.records > 0 {
		t := j.clock()
		err := j.writeRecords(b)
		j.observe(StageWrite, t)
		if err != nil {
			j.failBatch(b, err)
			return
		}
		// The active segment grew by frames already counted in bytes: a
		// large append waiting for room (see full) may fit now.
		j.space.Broadcast()
		j.noteWritten(b)
	}
	b.diskSync = j.wantDiskSync(b)
	needSync, toApplier := b.needSync, b.records > 0 || b.ckpt || b.diskSync
	if needSync && toApplier {
		b.synced.Add(1)
		b.left.Store(2)
	}
	if toApplier && j.applyInline(b) {
		return
	}
	if toApplier {
		j.applying.Add(1)
		j.applyq <- b // from here the applier owns b, except what its sync (syncBatch, syncLoop) touches
	}
	switch {
	case needSync && b.waited:
		j.syncBatch(b, toApplier)
	case needSync:
		j.handSync(b, toApplier)
	case !toApplier:
		b.recycle()
	}
}

// writeRecords encodes the headers and writes every record of b with one
// pwritev, after starting a new segment if this one is full.
func (j *Journal) writeRecords(b *batch) error {
	w := &j.w
	// A new segment when this one is full, or early when a spare is ready to
	// replace a fresh file (whose appends make every fdatasync commit metadata).
	full := w.off+b.bytes > j.opts.segmentSize
	if w.off > 0 && (full || !w.recycled && j.nspares.Load() > 0) {
		if err := j.rotate(b.firstSeq()); err != nil {
			return err
		}
	}
	w.iov = w.iov[:0]
	var last uint64
	for i := range b.items {
		it := &b.items[i]
		if !it.isRecord() {
			continue
		}
		last = it.rec.Seq
		if it.inPlace {
			it.rec.putExtentHeader(&it.hdr, &it.ext, it.dataSum)
			w.iov = append(w.iov, it.hdr[:], it.ext[:])
			w.lastExtent = last
			continue
		}
		it.rec.putHeader(&it.hdr)
		w.iov = append(w.iov, it.hdr[:])
		if p := it.rec.Payload; len(p) > 0 {
			w.iov = append(w.iov, p, zeroPad[:align(len(p))-len(p)])
		}
	}
	size := b.bytes
	if w.recycled { // whole pages: no read of the old page under a partial write
		size += j.pad(w.off+size, last)
	}
	n, err := vfs.WriteBuffersAt(w.f, w.iov, w.off)
	clear(w.iov)
	if err == nil && int64(n) != size {
		err = fmt.Errorf("short write: %d of %d bytes", n, size)
	}
	if err != nil {
		j.addBytes(b.bytes - size)
		return j.undoWrite(b, err)
	}
	w.off += size
	w.dirty = true
	j.startWriteback()
	w.seg.publish(w.off, last)
	j.writtenSeq.Store(last)
	j.prog.signal()
	j.st.batches.Add(1)
	return nil
}

// writebackStep is how much of a segment is written before the writer asks
// the kernel to start writing it back, so that the fdatasync at rotation (or
// a FUA write's) finds little left to do.
const writebackStep = 4 << 20

// presyncLead is how far before a segment's end the writer has the segment
// synced early (see presync). The fdatasync at rotation waits for what is
// still in flight, which grows with the bytes written since the last sync:
// under 4 KiB random writes at QD32 (64 MiB segments, two runs each) it took
// a median 18-19.5 ms (p90 38-41 ms) with no early sync, 5.4-6.3 ms with a
// lead of 8 MiB, 9-11.5 ms with 16 MiB and 20-21 ms with 32 MiB; fio's p99.9
// went from 27.6-29.4 ms to 17.1 ms with 8 MiB.
const presyncLead = 8 << 20

// startWriteback asks the kernel to start writing back what the segment
// holds beyond the last such request, once that is writebackStep or more,
// and near the segment's end has it synced early (presync). Both only for
// files that can start write-back: a real file system's.
func (j *Journal) startWriteback() {
	w := &j.w
	ws, ok := w.f.(vfs.WritebackStarter)
	if !ok {
		return
	}
	j.presync()
	if w.off-w.started < writebackStep {
		return
	}
	if err := ws.StartWriteback(w.started, w.off-w.started); err != nil {
		j.log.Debug("journal: start writeback", "segment", w.seg.name, "err", err)
	}
	w.started = w.off
}

// presync syncs the active segment once it is within presyncLead of its end,
// on a goroutine and a descriptor of its own, so that the fdatasync at
// rotation, which every writer waits for, finds most of the segment on the
// device already. The rotation's sync stays the one that counts: an early
// sync only moves work ahead, and its error is only logged. It cannot hide
// one from the writer's descriptor either: Linux reports a write-back error
// to every descriptor of the file open when it happened, and a sync through
// one does not clear it for another.
func (j *Journal) presync() {
	w := &j.w
	if w.presynced || w.off < j.opts.segmentSize-presyncLead {
		return
	}
	w.presynced = true
	path := j.path(w.seg.name)
	j.presyncs.Add(1)
	go func() {
		defer j.presyncs.Done()
		f, err := j.fs.Open(path)
		if err == nil {
			err = f.Sync()
			f.Close()
		}
		if err != nil {
			j.log.Debug("journal: early sync of the active segment", "path", path, "err", err)
			return
		}
		j.st.presyncs.Add(1)
	}()
}

// undoWrite cuts a failed write off the segment so the journal stays whole.
// If even that fails the journal fails.
func (j *Journal) undoWrite(b *batch, err error) error {
	w := &j.w
	err = fmt.Errorf("journal: write segment %s at offset %d: %w", w.seg.name, w.off, err)
	if terr := w.f.Truncate(w.off); terr != nil {
		j.fail(fmt.Errorf("%w (and truncate: %v)", err, terr))
	}
	return err
}

// The syncer. A batch that needs its records durable for the journal's
// own sake (a checkpoint marker, a batch outside the activity set) is
// handed to the syncer goroutine, and the writer goes on writing the next
// ones: under a stream of writes in place, an fdatasync of the segment
// waits behind the disk's write-back (0.3-0.5 s seen at a checkpoint), and
// every write waited with it while the writer synced inline. The syncer
// takes every request queued by then and syncs once for all (group
// commit); a record written after the sync started is not counted as
// durable by it. Once a sync failed, every later request gets that
// failure without syncing: a later fdatasync may succeed on a file whose
// writes were lost. A batch a client waits for (a FUA record, a FLUSH) is
// synced by the writer itself (syncBatch): its client waits for the sync
// either way, and a hand-off would add two goroutine switches to it.

// syncReq asks the syncer to sync the segment f for b.
type syncReq struct {
	b       *batch
	applied bool // b went to the applier too
	f       vfs.File
	name    string // f's segment
	dirty   bool   // the writer wrote to f since it last handed a sync
	upto    uint64 // the last seq written to f when b was handed
}

// handSync hands b to the syncer. A rotation waits for it (see
// waitSyncs): the syncer may still use the segment's file.
func (j *Journal) handSync(b *batch, applied bool) {
	w := &j.w
	req := syncReq{b: b, applied: applied, f: w.f, name: w.seg.name, dirty: w.dirty, upto: j.writtenSeq.Load()}
	w.dirty = false
	j.pendingSyncs.Add(1)
	j.syncq <- req
}

// waitSyncs waits until the syncer has answered every sync handed to it.
// The writer's.
func (j *Journal) waitSyncs() { j.pendingSyncs.Wait() }

// syncLoop is the syncer goroutine.
func (j *Journal) syncLoop() {
	defer close(j.syncerDone)
	var reqs []syncReq
	for req := range j.syncq {
		reqs = append(reqs[:0], req)
		for more := true; more; {
			select {
			case r, ok := <-j.syncq:
				if ok {
					reqs = append(reqs, r)
				} else {
					more = false
				}
			default:
				more = false
			}
		}
		err := j.syncSegment(reqs)
		for _, r := range reqs {
			j.syncAnswered(r.b, r.applied, err)
			j.pendingSyncs.Done()
		}
		clear(reqs)
	}
}

// syncSegment syncs the segment for reqs, all of one file (a rotation waits
// for the syncs of the file it leaves), unless the journal failed, and
// returns the error the requests get.
func (j *Journal) syncSegment(reqs []syncReq) error {
	if err := j.failErr(); err != nil {
		return err
	}
	dirty, upto := false, uint64(0)
	for _, r := range reqs {
		dirty = dirty || r.dirty
		upto = max(upto, r.upto)
	}
	if !dirty {
		return nil // synced by an earlier request, answered before these
	}
	return j.syncFile(reqs[0].f, reqs[0].name, upto)
}

// syncBatch syncs the segment for b on the writer, and answers it.
func (j *Journal) syncBatch(b *batch, applied bool) {
	w := &j.w
	err := j.failErr()                                                        // after a failed sync, nothing written is known durable
	if err == nil && (w.dirty || j.durableSeq.Load() < j.writtenSeq.Load()) { // or a handed sync still runs
		if err = j.syncFile(w.f, w.seg.name, j.writtenSeq.Load()); err == nil {
			w.dirty = false
		}
	}
	j.syncAnswered(b, applied, err)
}

// syncFile fdatasyncs f, the segment name, timed and counted, and once it
// succeeded counts the records up to upto durable. A failure fails the
// journal: after a failed fdatasync nothing written is known durable.
func (j *Journal) syncFile(f vfs.File, name string, upto uint64) error {
	t := j.clock()
	err := f.Sync()
	j.observe(StageSync, t)
	j.st.syncs.Add(1)
	if err != nil {
		err = fmt.Errorf("journal: sync segment %s: %w", name, err)
		j.fail(err)
		return err
	}
	storeMax(&j.durableSeq, upto)
	return nil
}

// syncAnswered answers the syncs queued in b with err and completes its
// FUA records or leaves that to the applier.
func (j *Journal) syncAnswered(b *batch, applied bool, err error) {
	diskSync := b.diskSync // the applier answers the syncs after the disk's
	for i := range b.items {
		if done := b.items[i].syncDone; done != nil && !diskSync {
			done(err)
		}
	}
	b.syncErr = err
	if !applied {
		b.recycle()
		return
	}
	ckpt := b.ckpt
	b.synced.Done() // the applier may recycle a checkpoint or disk sync batch from here on
	if !ckpt && !diskSync && b.finish() {
		b.completeFUA()
		b.recycle()
	}
}

// failBatch completes every item of b with err and gives the records' space
// back: none of them is in the journal or applied.
func (j *Journal) failBatch(b *batch, err error) {
	for i := range b.items {
		it := &b.items[i]
		it.release()
		switch {
		case it.done != nil:
			it.done(it.rec.Seq, err)
		case it.syncDone != nil:
			it.syncDone(err)
		case it.ckptDone != nil:
			it.ckptDone(0, err)
		}
	}
	if b.records > 0 {
		j.mu.Lock()
		j.bytes -= b.bytes
		j.space.Broadcast()
		j.mu.Unlock()
		j.lostSeq.Store(max(j.lostSeq.Load(), b.lastSeq())) // the writer's alone: no race
		j.prog.lose(b.firstSeq(), b.lastSeq(), j.writtenSeq.Load())
	}
	b.recycle()
}
