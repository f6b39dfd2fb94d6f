package journal

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// faultyFS is a memory FS whose operations fail while a rule says so.
type faultyFS struct {
	mem  *vfs.MemFS
	fs   vfs.FS
	rule atomic.Pointer[func(vfs.Op, string) error]
}

func newFaultyFS() *faultyFS {
	f := &faultyFS{mem: vfs.NewMem()}
	f.fs = vfs.Inject(f.mem, func(op vfs.Op, path string) error {
		if r := f.rule.Load(); r != nil {
			return (*r)(op, path)
		}
		return nil
	})
	return f
}

// failOn makes op fail with err on paths containing substr; nil clears.
func (f *faultyFS) failOn(op vfs.Op, substr string, err error) {
	if err == nil {
		f.rule.Store(nil)
		return
	}
	r := func(o vfs.Op, path string) error {
		if o == op && strings.Contains(path, substr) {
			return err
		}
		return nil
	}
	f.rule.Store(&r)
}

type failEnv struct {
	t    *testing.T
	ffs  *faultyFS
	disk *MemDisk
	h    *history
	rnd  *rand.Rand
	c    *Compressor
}

func newFailEnv(t *testing.T) *failEnv {
	return &failEnv{t: t, ffs: newFaultyFS(), disk: NewMemDisk(crashDiskSize), h: newHistory(),
		rnd: rand.New(rand.NewPCG(5, 6)), c: NewCompressor(CodecS2)}
}

func (e *failEnv) open(o Options) *Journal {
	e.t.Helper()
	j, err := Open(e.ffs.fs, testDir, e.disk, o)
	if err != nil {
		e.t.Fatal(err)
	}
	return j
}

// write appends one random record and records it in the history; a failed
// one is recorded as nothing (it must never appear).
func (e *failEnv) write(j *Journal, fua bool) error {
	rec, o := randomOp(e.rnd, e.c, crashDiskSize)
	seq, err := j.write(rec, fua)
	if err != nil {
		o = op{}
	}
	e.h.add(seq, o)
	e.h.ack(seq, fua, err)
	return err
}

func TestFailedWriteContinues(t *testing.T) {
	e := newFailEnv(t)
	j := e.open(Options{segmentSize: 8 << 10, CheckpointInterval: -1, Logger: quiet})
	for range 5 {
		if err := e.write(j, false); err != nil {
			t.Fatal(err)
		}
	}
	if j.LostSeq() != 0 {
		t.Fatalf("LostSeq %d before a write failed", j.LostSeq())
	}
	e.ffs.failOn(vfs.OpWrite, ".seg", syscall.ENOSPC)
	for _, fua := range []bool{false, true} {
		if err := e.write(j, fua); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write on a full file system: %v, want ENOSPC", err)
		}
		if j.LostSeq() != j.LastSeq() {
			t.Fatalf("LostSeq %d after seq %d failed", j.LostSeq(), j.LastSeq())
		}
	}
	if err := j.SyncWait(); err != nil {
		t.Fatalf("sync after a failed write: %v", err)
	}
	e.ffs.failOn(0, "", nil)
	lost := j.LostSeq()
	for range 20 { // across new segments too
		if err := e.write(j, e.rnd.IntN(2) == 0); err != nil {
			t.Fatalf("write after space came back: %v", err)
		}
	}
	if j.LostSeq() != lost {
		t.Errorf("LostSeq %d after writes that succeeded, want %d", j.LostSeq(), lost)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = e.open(testOptions())
	defer j.Close()
	checkRecovered(t, j, e.disk, e.h, crashDiskSize, j.LastSeq())
}

func TestFailedRotationContinues(t *testing.T) {
	e := newFailEnv(t)
	j := e.open(Options{segmentSize: 4 << 10, CheckpointInterval: -1, Logger: quiet})
	e.ffs.failOn(vfs.OpCreate, ".seg", syscall.ENOSPC)
	failed := 0
	for range 10 {
		if err := e.write(j, false); errors.Is(err, syscall.ENOSPC) {
			failed++
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if failed == 0 {
		t.Fatal("no write needed a new segment")
	}
	e.ffs.failOn(0, "", nil)
	for range 10 {
		if err := e.write(j, true); err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	j = e.open(testOptions())
	defer j.Close()
	checkRecovered(t, j, e.disk, e.h, crashDiskSize, j.LastSeq())
}

func TestFailedSyncFailsJournal(t *testing.T) {
	e := newFailEnv(t)
	j := e.open(testOptions())
	for range 5 {
		if err := e.write(j, true); err != nil {
			t.Fatal(err)
		}
	}
	durable, _ := e.h.acked()
	e.ffs.failOn(vfs.OpSync, ".seg", syscall.EIO)
	if err := e.write(j, true); !errors.Is(err, syscall.EIO) {
		t.Fatalf("FUA write with a failing fdatasync: %v, want EIO", err)
	}
	if err := j.SyncWait(); err == nil {
		t.Fatal("sync after a failed fdatasync succeeded")
	}
	e.ffs.failOn(0, "", nil)
	// Nothing written after a failed fdatasync can be trusted: the journal
	// stays failed, every later record gets the error, and Close returns.
	if err := e.write(j, false); !errors.Is(err, syscall.EIO) {
		t.Fatalf("write after a failed sync: %v, want the sync's error", err)
	}
	if err := j.Close(); err == nil {
		t.Fatal("Close of a failed journal reported success")
	}
	// Power loss, then reopen: what was durable is there.
	fs := e.ffs.mem.CrashClone(nil)
	disk := e.disk.Crash()
	j, err := Open(fs, testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.LastSeq() < durable {
		t.Fatalf("recovered to %d, seq %d was durable", j.LastSeq(), durable)
	}
	want := e.h.image(t, crashDiskSize, durable)
	if got := disk.Bytes(); string(got) != string(want) {
		t.Fatal("disk after recovery lost durable writes")
	}
}

func TestFailedDiskWriteFailsJournal(t *testing.T) {
	e := newFailEnv(t)
	j := e.open(testOptions())
	for range 5 {
		if err := e.write(j, false); err != nil {
			t.Fatal(err)
		}
	}
	e.disk.mu.Lock()
	e.disk.Fail = func(op string) error { return syscall.EIO }
	e.disk.mu.Unlock()
	rec, o := randomOp(e.rnd, e.c, crashDiskSize)
	seq, err := j.write(rec, false)
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("write to a failing disk: %v, want EIO", err)
	}
	e.h.add(seq, o) // in the journal all the same
	if err := j.checkpoint(); err == nil {
		t.Fatal("checkpoint past a failed disk write succeeded")
	}
	j.Close()
	// The disk is back (replaced): recovery replays the journal onto it,
	// including the record whose apply failed: it is in the journal.
	e.disk = e.disk.Clone()
	e.disk.Fail = nil
	j, err = Open(e.ffs.fs, testDir, e.disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	checkRecovered(t, j, e.disk, e.h, crashDiskSize, seq)
}

func TestFailedCheckpointWriteIsRetried(t *testing.T) {
	e := newFailEnv(t)
	j := e.open(testOptions())
	defer j.Close()
	for range 5 {
		if err := e.write(j, false); err != nil {
			t.Fatal(err)
		}
	}
	e.ffs.failOn(vfs.OpCreate, checkpointTmp, syscall.ENOSPC)
	if err := j.checkpoint(); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("checkpoint on a full file system: %v, want ENOSPC", err)
	}
	e.ffs.failOn(0, "", nil)
	if err := e.write(j, true); err != nil {
		t.Fatalf("write after a failed checkpoint: %v", err)
	}
	if err := j.checkpoint(); err != nil || j.ckptSeq.Load() != 6 {
		t.Fatalf("checkpoint retry: %v, seq %d", err, j.ckptSeq.Load())
	}
}
