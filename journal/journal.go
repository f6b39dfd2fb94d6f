package journal

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// Errors of AppendLater.
var (
	// ErrClosed is returned for work handed to a closed journal.
	ErrClosed = errors.New("journal: closed")
	// ErrSeqOrder is returned for a record whose given seq is not above LastSeq.
	ErrSeqOrder = errors.New("journal: seq out of order")
)

// Journal is an open journal directory. Its methods are safe for concurrent use.
type Journal struct {
	fs   FS
	dir  string
	disk Disk
	opts Options
	log  *slog.Logger

	// mu guards the append queue and the journal's size. AppendLater,
	// SyncLater and checkpoints (any goroutine) add to queue; the writer
	// goroutine (or a caller of WriteQueued) takes it.
	mu       sync.Mutex
	queue    []item
	nextSeq  uint64     // seq the next append assigns
	bytes    int64      // segment files plus queued frames
	closing  bool       // Close has begun: appends and syncs fail
	stopping bool       // the final checkpoint is queued: the writer exits when idle
	writing  bool       // someone holds the writer role (see WriteQueued)
	kicked   bool       // the writer was woken for what is queued
	failure  error      // sticky: a failed sync or apply; every later record fails
	space    *sync.Cond // on mu; broadcast when bytes drops or closing/failure is set

	// segMu guards segs and spares. The writer appends to segs (rotation)
	// and takes spares, checkpoints remove from the front of segs and add
	// spares, readers look. Taken after mu when both are held.
	segMu  sync.Mutex
	segs   []*segment // oldest first; the last is being written
	spares []string   // file names of retired segments kept for reuse

	nspares atomic.Int32 // len(spares), for the writer to glance at

	w writer // owned by the writer goroutine
	// ap is owned by the applier goroutine while batches are handed to it
	// (applying > 0), and by the writer while none is: the writer applies a
	// batch itself when the applier is idle (see writeBatch).
	ap       applier
	applying atomic.Int32 // batches sent on applyq and not yet applied

	ckptMu sync.Mutex // serialises checkpoints: superblock writes and segment removal

	kick   chan struct{} // cap 1: the queue became non-empty
	applyq chan *batch   // writer to applier, in seq order
	diskq  chan diskSync // applier to disk syncer
	syncq  chan syncReq  // writer to syncer, in seq order (see handSync)
	// pendingSyncs counts the syncs handed and not answered yet; syncerDone
	// is closed when the syncer has stopped.
	pendingSyncs sync.WaitGroup
	syncerDone   chan struct{}
	ckptKick     chan struct{} // cap 1: the journal passed its high-water mark
	stop         chan struct{} // closed by Close: the checkpoint loop and spare preparation stop
	wg           sync.WaitGroup
	presyncs     sync.WaitGroup // early syncs of the active segment (presync)

	lastSeq    atomic.Uint64 // last seq assigned
	writtenSeq atomic.Uint64 // last seq written to a segment
	durableSeq atomic.Uint64 // last seq synced in the journal
	appliedSeq atomic.Uint64 // last seq applied to the disk
	lostSeq    atomic.Uint64 // last seq a failed segment write dropped (see LostSeq)
	ckptSeq    atomic.Uint64 // last checkpoint: seqs <= it are on the synced disk
	st         counters

	// In-place writes (see inplace.go).
	extentSeq       atomic.Uint64 // seq of the last extent appended or recovered
	deferredBatches atomic.Int32  // batches whose written callbacks the applier has still to run
	diskCovered     atomic.Uint64 // records up to it were applied before a disk sync that succeeded
	ckptHold        atomic.Uint64 // if not 0, checkpoints stay below it (Options.MarkExtents)
	unsynced        unsynced      // journaled records the synced disk may lack (unsynced.go); guarded by mu
	recovered       []Extent      // torn extents recovery found; set before the goroutines start

	act  activity // the activity set (see activity.go); guarded by mu
	boot string   // the boot the journal runs in (vfs.BootID)

	prog progress // wakes AwaitApplied and AwaitWritten

	closeOnce sync.Once
	closeErr  error
}

// item is one entry of the append queue: a record, or a marker that asks the
// writer for a sync (syncDone) or a checkpoint (ckptDone).
type item struct {
	rec       Record
	hdr       [headerSize]byte // encoded by the writer
	fua       bool
	completed bool // done has run (set by the applier)
	// inPlace: rec is written to the disk directly; the segment gets an
	// extent frame (ext, the payload) naming it and dataSum, the CRC32C of
	// its data. own is a buffer the data was decoded into, the journal's.
	inPlace  bool
	dataSum  uint32
	ext      [extentPayload]byte
	own      *[]byte
	done     func(seq uint64, err error)
	written  func() // optional: called once the record is in the segment file
	syncDone func(err error)
	ckptDone func(seq uint64, err error)
}

func (it *item) isRecord() bool { return it.done != nil }

// frameLen is the length of the item's frame in the segment.
func (it *item) frameLen() int64 {
	if it.inPlace {
		return headerSize + extentPayload
	}
	return int64(it.rec.encodedLen())
}

// Open opens (creating if needed) the journal in dir, recovers it onto disk
// (every record after the checkpoint is applied, a torn tail is cut off) and
// starts the goroutines that own the segment file and the disk.
func Open(fs FS, dir string, disk Disk, o Options) (*Journal, error) {
	o = o.withDefaults()
	j := &Journal{
		fs: fs, dir: dir, disk: disk, opts: o, log: o.Logger,
		kick:       make(chan struct{}, 1),
		applyq:     make(chan *batch, 8),
		diskq:      make(chan diskSync),
		syncq:      make(chan syncReq, 64),
		syncerDone: make(chan struct{}),
		ckptKick:   make(chan struct{}, 1),
		stop:       make(chan struct{}),
	}
	j.space = sync.NewCond(&j.mu)
	j.boot = vfs.BootID(fs)
	j.act.touched, j.act.kick = make(map[int64]uint64), make(chan struct{}, 1)
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("journal: create %s: %w", dir, err)
	}
	if err := j.recover(); err != nil {
		return nil, err
	}
	if len(j.spares) == 0 && o.spares > 0 {
		j.wg.Add(1)
		go func() { defer j.wg.Done(); j.prepareSpares(o.spares) }()
	}
	j.wg.Add(6)
	go func() { defer j.wg.Done(); j.diskSyncLoop() }()
	go func() { defer j.wg.Done(); j.syncLoop() }()
	go func() { defer j.wg.Done(); j.activityLoop() }()
	go func() { defer j.wg.Done(); j.writeLoop() }()
	go func() { defer j.wg.Done(); j.applyLoop() }()
	go func() { defer j.wg.Done(); j.checkpointLoop() }()
	return j, nil
}

// AppendLater assigns r the next seq, queues it and returns the seq at once.
// The writer is left asleep: the caller calls WriteQueued after it, maybe
// after more appends (or a waiter wakes it, see AwaitApplied).
//
// written, if not nil, runs from the writer's goroutine as soon as the record
// is in the segment file: before it is applied or synced, but where recovery
// finds it after a crash of this process. For a write in place that is once
// its data is on the disk, and written callbacks keep seq order: those of
// records after a write in place not yet applied run from the applier. done runs, from a journal
// goroutine, once the record is in the journal file and applied to the disk
// and, with fua, synced. written runs before done, never after a failure;
// neither may block nor call the journal's waiting methods (SyncWait, the
// Await methods, Close). AppendLater blocks only while the journal is full.
// A record is appended once; r's payload must stay unchanged until done.
//
// A record that already has a seq (a replica journaling what its primary
// sent) keeps it: it must be above LastSeq, and seqs may skip. Failures that
// AppendLater sees itself (a closed journal, ErrSeqOrder) run done before it
// returns.
func (j *Journal) AppendLater(r Record, fua bool, written func(), done func(seq uint64, err error)) uint64 {
	return j.append(r, fua, written, done, false)
}

func (j *Journal) append(r Record, fua bool, written func(), done func(seq uint64, err error), wake bool) uint64 {
	it := item{fua: fua, done: done, written: written}
	lent := r.raw
	if j.opts.inPlace(r.Kind, r.RawLen) {
		if err := it.prepareInPlace(&r); err != nil {
			done(r.Seq, err)
			return r.Seq
		}
	} else {
		r.payloadSum() // in the caller's goroutine
	}
	j.mu.Lock()
	n := j.frameLocked(&it, &r, lent)
	if j.full(n) {
		j.st.stalls.Add(1)
		t := j.clock()
		for j.full(n) {
			j.kickCheckpoint()
			j.space.Wait()
			n = j.frameLocked(&it, &r, lent) // records appended meanwhile count
		}
		j.observe(StageStall, t)
	}
	if err := j.seqFor(&r); err != nil {
		j.mu.Unlock()
		it.release()
		done(r.Seq, err)
		return r.Seq
	}
	seq := r.Seq
	j.bytes += n
	if j.bytes > j.opts.highWater() {
		j.kickCheckpoint()
	}
	it.rec = r
	if it.inPlace {
		j.extentSeq.Store(seq)
	} else if r.Kind != KindExtent && j.opts.DataMax > 0 {
		j.unsynced.note(r.Offset, int64(r.RawLen), seq, j.diskCovered.Load())
	}
	j.enqueueLocked(it, wake)
	j.mu.Unlock()
	j.st.appends.Add(1)
	j.st.bytesRaw.Add(uint64(r.rawBytes()))
	if it.inPlace {
		j.st.inPlace.Add(1)
		j.st.bytesInPlace.Add(uint64(r.RawLen))
	} else {
		j.st.bytesStored.Add(uint64(len(r.Payload)))
	}
	return seq
}

// frameLocked is the size of r's frame in the segment. A write to be made
// in place that overlaps a record the synced disk may lack is journaled
// instead (see unsynced.go): its buffer goes back and lent, the raw data
// its caller lent, is its own again. Requires mu.
func (j *Journal) frameLocked(it *item, r *Record, lent []byte) int64 {
	if it.inPlace && j.unsynced.overlaps(r.Offset, int64(r.RawLen), j.diskCovered.Load()) {
		it.release()
		it.inPlace, r.raw = false, lent
		r.payloadSum()
		j.st.overlapJournaled.Add(1)
	}
	if it.inPlace {
		return headerSize + extentPayload
	}
	return int64(r.encodedLen())
}

// seqFor gives r its seq: the next one, or its own if it has one above
// LastSeq. Requires mu.
func (j *Journal) seqFor(r *Record) error {
	switch {
	case j.closing:
		return ErrClosed
	case r.Seq == 0:
		r.Seq = j.nextSeq
	case r.Seq < j.nextSeq:
		return fmt.Errorf("%w: seq %d, last is %d", ErrSeqOrder, r.Seq, j.nextSeq-1)
	}
	j.nextSeq = r.Seq + 1
	j.lastSeq.Store(r.Seq)
	return nil
}

// full reports whether a frame of n bytes must wait for space. Room is kept
// for the padding the writer may add to the write in progress. A frame of
// more than a quarter of MaxBytes waits only until the journal but its active
// segment is at most half full, which a checkpoint always achieves. Requires
// mu.
func (j *Journal) full(n int64) bool {
	max := j.opts.MaxBytes
	if j.closing || j.failure != nil || j.bytes == 0 {
		return false
	}
	if n > max/4 {
		j.segMu.Lock() // lock order: mu, then segMu
		active := j.segs[len(j.segs)-1].size.Load()
		j.segMu.Unlock()
		return j.bytes-active > max/2
	}
	return j.bytes+n > max-2*pageSize
}

// enqueueLocked queues it and, with wake, wakes the writer unless that is
// done for what is queued already (items queued without wake do not count).
// Without wake the caller calls WriteQueued, unless someone awaits a seq not
// appended yet: then the writer is woken anyway, so that the waiter is not
// left waiting for a caller of WriteQueued (it may be the one that caller
// waits for). seqFor stored lastSeq before this looks at prog.ahead, which a
// waiter counts itself in before it looks at lastSeq: one of the two sees
// the other. Requires mu.
func (j *Journal) enqueueLocked(it item, wake bool) {
	j.queue = append(j.queue, it)
	if (wake || j.prog.ahead.Load() > 0) && !j.kicked {
		j.kicked = true
		j.wakeWriter()
	}
}

// wakeWriter wakes the writer goroutine if it sleeps.
func (j *Journal) wakeWriter() {
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// kickCheckpoint asks the checkpoint loop for a checkpoint now.
func (j *Journal) kickCheckpoint() {
	select {
	case j.ckptKick <- struct{}{}:
	default:
	}
}

// SyncLater calls done once every record appended before the call is durable
// in the journal: one fdatasync covers all the records and syncs queued with
// it. done runs from a journal goroutine and must not block. As AppendLater
// does, it leaves the writer asleep: the caller calls WriteQueued after it.
func (j *Journal) SyncLater(done func(err error)) { j.sync(done, false) }

func (j *Journal) sync(done func(err error), wake bool) {
	j.mu.Lock()
	if j.closing {
		j.mu.Unlock()
		done(ErrClosed)
		return
	}
	j.enqueueLocked(item{syncDone: done}, wake)
	j.mu.Unlock()
}

// SyncWait waits until every record appended before the call is durable in
// the journal.
func (j *Journal) SyncWait() error {
	ch := make(chan error, 1)
	j.sync(func(err error) { ch <- err }, true)
	return <-ch
}

// LastSeq is the last seq assigned by AppendLater (or recovered).
func (j *Journal) LastSeq() uint64 { return j.lastSeq.Load() }

// LostSeq is the highest seq that a failed segment write dropped (its
// appender got the error; the record is never written nor applied), or 0.
// A replica may hold such a record: it was sent before the local write
// failed, and the disk lacks it. It moves before AwaitApplied returns for
// that seq.
func (j *Journal) LostSeq() uint64 { return j.lostSeq.Load() }

// OldestRetainedSeq is the oldest seq NewReader accepts.
func (j *Journal) OldestRetainedSeq() uint64 {
	j.segMu.Lock()
	defer j.segMu.Unlock()
	return j.segs[0].firstSeq
}

// Close waits for every queued record, takes a final checkpoint, stops the
// journal's goroutines and closes its files. It is idempotent.
func (j *Journal) Close() error {
	j.closeOnce.Do(func() { j.closeErr = j.close() })
	return j.closeErr
}

func (j *Journal) close() error {
	j.mu.Lock()
	j.closing = true
	j.space.Broadcast()
	j.mu.Unlock()
	j.prog.signal()
	close(j.stop)
	j.mu.Lock()
	err := j.failure
	j.mu.Unlock()
	if err == nil {
		err = j.checkpoint()
	}
	j.mu.Lock()
	j.stopping = true
	j.enqueueLocked(item{syncDone: func(error) {}}, true) // wakes the writer
	j.mu.Unlock()
	j.wg.Wait()
	j.presyncs.Wait()
	if err == nil {
		err = j.closeSegment()
	}
	if err == nil {
		j.emptyActivity()
	}
	if cerr := j.w.f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("journal: close segment: %w", cerr)
	}
	return err
}

// closeSegment cuts the old data off a recycled active segment, so that a
// clean restart finds no tail to cut, and syncs it.
func (j *Journal) closeSegment() error {
	if err := j.trimRecycled(); err != nil || !j.w.dirty {
		return err
	}
	if err := j.w.f.Sync(); err != nil {
		return fmt.Errorf("journal: sync segment %s: %w", j.w.seg.name, err)
	}
	return nil
}

// checkpointLoop takes the periodic checkpoints and those forced by a full
// journal.
func (j *Journal) checkpointLoop() {
	var tick <-chan time.Time
	if j.opts.CheckpointInterval > 0 {
		t := time.NewTicker(j.opts.CheckpointInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-j.stop:
			return
		case <-tick:
		case <-j.ckptKick:
		}
		if err := j.checkpoint(); err != nil {
			if j.failed() {
				return // failed for good: said once, never checkpoints again
			}
			j.log.Warn("journal: checkpoint failed", "dir", j.dir, "err", err)
			if f := j.opts.OnFailure; f != nil && !errors.Is(err, ErrClosed) {
				f(err)
			}
		}
	}
}

// failLocked makes err the journal's sticky failure. Requires mu.
func (j *Journal) failLocked(err error) {
	if j.failure == nil {
		j.failure = err
		j.log.Error("journal: failed; every later write fails until reopened", "dir", j.dir, "err", err)
		j.space.Broadcast()
		j.prog.signal()
		if f := j.opts.OnFailure; f != nil && !errors.Is(err, ErrClosed) {
			f(err)
		}
	}
}

// failed says the journal failed for good.
func (j *Journal) failed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failure != nil
}

// failErr is the journal's failure, nil if none.
func (j *Journal) failErr() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failure
}

// Fail makes err the journal's failure for good: every queued and later
// record and sync fails with it, appenders waiting for space are woken,
// and nothing more is written to the segments or the disk, not even by
// Close. A resource that detaches its disk calls it.
func (j *Journal) Fail(err error) { j.fail(err) }

func (j *Journal) fail(err error) {
	j.mu.Lock()
	j.failLocked(err)
	j.mu.Unlock()
}

func (j *Journal) path(name string) string { return j.dir + "/" + name }
