package journal

import (
	"flag"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

var (
	numSchedules = flag.Int("journal.schedules", 0, "random crash schedules to run (0: a default sized for the build)")
	firstSeed    = flag.Uint64("journal.seed", 0, "seed of the first schedule (0: from the clock)")
	// writeback: a power loss keeps part of the disk's unsynced blocks too,
	// as the kernel's own write-back may; the activity set covers them.
	writeback = flag.Bool("journal.writeback", true, "power losses also keep random unsynced disk blocks")
)

const crashDiskSize = 64 << 10

// TestCrashSchedules runs random schedules of appends, syncs, checkpoints and
// crashes (power losses, some while appends are in flight, and process
// crashes) on the memory FS, and after each crash checks recovery against the
// model: the disk is the image of a prefix of the appended records, and the
// prefix holds every record acknowledged durable before the crash.
func TestCrashSchedules(t *testing.T) {
	n := *numSchedules
	if n == 0 {
		n = 1500
		if raceEnabled || testing.Short() {
			n = 200
		}
	}
	seed := *firstSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	for i := range n {
		runSchedule(t, seed+uint64(i))
	}
	t.Logf("%d schedules: %d recoveries found extents written in place, %d of them torn extents; %d an open activity set",
		n, seen.extents.Load(), seen.torn.Load(), seen.active.Load())
	if n >= 100 && (seen.extents.Load() == 0 || seen.torn.Load() == 0 || seen.active.Load() == 0) {
		t.Errorf("no recovery met an extent written in place, or none a torn one, or none an open activity set: the schedules miss them")
	}
}

// seen counts what recoveries met, so the test knows it reaches them.
var seen struct{ extents, torn, active atomic.Int64 }

// schedule is one run: a journal, its FS and disk, and the model.
type schedule struct {
	t    *testing.T
	rnd  *rand.Rand
	fs   *vfs.MemFS
	disk *MemDisk
	opts Options
	h    *history
	c    *Compressor
}

func runSchedule(t *testing.T, seed uint64) {
	defer func() {
		if t.Failed() {
			t.Logf("rerun with -run TestCrashSchedules -journal.seed=%d -journal.schedules=1", seed)
		}
	}()
	rnd := rand.New(rand.NewPCG(seed, seed>>32))
	s := &schedule{
		t: t, rnd: rnd, fs: vfs.NewMem(), disk: NewMemDisk(crashDiskSize), h: newHistory(),
		c: NewCompressor([]Codec{CodecNone, CodecS2, CodecZstd}[rnd.IntN(3)]),
		opts: Options{
			segmentSize:        []int64{1 << 10, 4 << 10, 16 << 10, 256 << 10}[rnd.IntN(4)],
			RetainBytes:        []int64{-1, 8 << 10, 1 << 20}[rnd.IntN(3)],
			MaxBytes:           []int64{64 << 10, 256 << 10, 1 << 30}[rnd.IntN(3)],
			CheckpointInterval: -1,
			Logger:             quiet,
			DataMax:            []int64{-1, 2 << 10, 4 << 10, 8 << 10}[rnd.IntN(4)],
			MarkExtents:        rnd.IntN(2) == 0,
			activityExtent:     []int64{512, 4 << 10, 16 << 10, 1 << 20}[rnd.IntN(4)],
			activityMax:        []int{1, 4, 1024}[rnd.IntN(3)],
		},
	}
	s.h.dataMax = s.opts.DataMax
	var mustHave uint64
	for range 1 + rnd.IntN(3) {
		s.disk.syncDelay = slowSync
		j, err := Open(s.fs, "/meta/journal", s.disk, s.opts)
		if err != nil {
			t.Fatalf("seed %d: open after crash: %v", seed, err)
		}
		checkRecovered(t, j, s.disk, s.h, crashDiskSize, mustHave)
		if s.opts.MaxBytes < 1<<30 || rnd.IntN(2) == 0 {
			// Else the checkpoint stays before them, to be found again: only
			// where it cannot fill the journal (a held checkpoint frees nothing).
			j.ExtentsMarked()
		}
		mustHave = s.run(j)
	}
	j, err := Open(s.fs, "/meta/journal", s.disk, s.opts)
	if err != nil {
		t.Fatalf("seed %d: final open: %v", seed, err)
	}
	checkRecovered(t, j, s.disk, s.h, crashDiskSize, mustHave)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
}

// run drives j with random steps, then crashes. It returns the seq recovery
// must reach at least, and leaves s.fs and s.disk as the crash left them.
func (s *schedule) run(j *Journal) uint64 {
	var inflight sync.WaitGroup
	steps := s.rnd.IntN(40)
	for range steps {
		switch x := s.rnd.IntN(20); {
		case x < 10:
			s.append(j, s.rnd.IntN(3) == 0)
		case x < 13:
			s.burst(j, &inflight)
		case x < 15:
			last := j.LastSeq()
			var err error
			if s.rnd.IntN(2) == 0 {
				err = j.SyncWait()
			} else { // the same, on this goroutine when the writer idles
				ch := make(chan error, 1)
				j.SyncLater(func(err error) { ch <- err })
				j.WriteQueued(true)
				err = <-ch
			}
			if err != nil {
				s.t.Fatal(err)
			}
			s.h.ack(last, true, nil)
			s.h.flush(last)
		case x < 17:
			last := j.LastSeq()
			if err := j.checkpoint(); err != nil {
				s.t.Fatal(err)
			}
			s.h.ack(last, true, nil)
			s.h.flush(last)
		default:
			s.write(j)
		}
	}
	if s.rnd.IntN(3) == 0 {
		s.burst(j, &inflight) // crash while these are in flight
		for range s.rnd.IntN(50) {
			runtime.Gosched()
		}
	}
	mustHave := s.crash()
	inflight.Wait()
	j.Close() // the old journal, on the old FS: its result does not matter
	s.h.mu.Lock()
	defer s.h.mu.Unlock()
	if len(s.h.errs) > 0 {
		s.t.Fatalf("a record failed without any injected fault: %v", s.h.errs[0])
	}
	return mustHave
}

func (s *schedule) append(j *Journal, fua bool) {
	rec, o := randomMixedOp(s.rnd, s.c, crashDiskSize)
	seq := appendSome(j, s.rnd, rec, fua, func(seq uint64, err error) { s.h.ack(seq, fua, err) })
	s.h.add(seq, o) // a completion may come first: ack needs no op
}

// appendSome appends rec one of the three ways: Append; AppendLater and
// WriteQueued on this goroutine when the writer is idle; AppendLater and a
// wake of the writer.
func appendSome(j *Journal, rnd *rand.Rand, rec Record, fua bool, done func(uint64, error)) uint64 {
	switch rnd.IntN(3) {
	case 0:
		return j.appendNow(rec, fua, done)
	case 1:
		seq := j.AppendLater(rec, fua, nil, done)
		j.WriteQueued(true)
		return seq
	}
	seq := j.AppendLater(rec, fua, nil, done)
	j.WriteQueued(false)
	return seq
}

func (s *schedule) write(j *Journal) {
	rec, o := randomMixedOp(s.rnd, s.c, crashDiskSize)
	fua := s.rnd.IntN(2) == 0
	seq, err := j.write(rec, fua)
	s.h.add(seq, o)
	s.h.ack(seq, fua, err)
}

// burst starts a few goroutines appending at once.
func (s *schedule) burst(j *Journal, wg *sync.WaitGroup) {
	for g := range 1 + s.rnd.IntN(4) {
		rnd := rand.New(rand.NewPCG(s.rnd.Uint64(), uint64(g)))
		count := 1 + rnd.IntN(8)
		stream := rnd.IntN(3) == 0 // consecutive writes, which the applier coalesces
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := rnd.Int64N(crashDiskSize/512) * 512
			for range count {
				rec, o := randomMixedOp(rnd, s.c, crashDiskSize)
				if stream {
					rec, o, next = streamOp(rnd, s.c, next)
				}
				fua := rnd.IntN(3) == 0
				seq := appendSome(j, rnd, rec, fua, func(seq uint64, err error) { s.h.ack(seq, fua, err) })
				s.h.add(seq, o)
			}
		}()
	}
}

// crash replaces s.fs and s.disk by what a power loss or a process crash
// leaves, and returns the seq recovery must reach at least.
func (s *schedule) crash() uint64 {
	durable, completed := s.h.acked() // acknowledged before the crash
	s.h.crashed()
	defer func() { dumpFS("after crash", s.fs) }()
	dumpFS("before crash", s.fs)
	if s.rnd.IntN(4) == 0 {
		// Process crash: the kernel keeps everything written.
		var fs *vfs.MemFS
		s.disk = s.disk.CloneWith(func() { fs = s.fs.Clone() })
		s.fs = fs
		return max(durable, completed)
	}
	var fs *vfs.MemFS
	rnd := s.rnd
	if s.rnd.IntN(4) == 0 {
		rnd = nil // drop everything unsynced
	}
	var keep func() bool
	if *writeback && rnd != nil {
		keep = func() bool { return rnd.IntN(2) == 0 }
	}
	s.disk = s.disk.CrashWriteback(keep, func() { fs = s.fs.CrashClone(rnd) })
	s.fs = fs
	return durable
}

// streamOp is a write at off, of 512 to 4096 bytes, wrapping at the end of
// the disk; it returns where the next one goes.
func streamOp(rnd *rand.Rand, c *Compressor, off int64) (Record, op, int64) {
	n := int64(512 * (1 + rnd.IntN(8)))
	if off+n > crashDiskSize {
		off = 0
	}
	data := randomBytes(rnd, int(n))
	if rnd.IntN(2) == 0 {
		data = compressible(rnd, int(n))
	}
	return c.Write(off, data), op{kind: KindWrite, off: off, n: n, data: data}, off + n
}

// slowSync makes a disk sync last a little, so that the journal goes on
// applying meanwhile.
func slowSync() {
	for range rand.IntN(20) {
		runtime.Gosched()
	}
}
