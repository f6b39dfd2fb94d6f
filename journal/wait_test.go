package journal

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// gateDisk is a MemDisk whose next WriteAt, once held, says so on entered
// and waits for release, then fails with what release carries (nil: it
// writes).
type gateDisk struct {
	*MemDisk
	held    chan struct{} // cap 1: a token means the next WriteAt stops
	entered chan struct{}
	release chan error
}

func newGateDisk() *gateDisk {
	return &gateDisk{MemDisk: NewMemDisk(crashDiskSize), held: make(chan struct{}, 1),
		entered: make(chan struct{}), release: make(chan error)}
}

func (d *gateDisk) hold() { d.held <- struct{}{} }

func (d *gateDisk) WriteAt(p []byte, off int64) (int, error) {
	select {
	case <-d.held:
		d.entered <- struct{}{}
		if err := <-d.release; err != nil {
			return 0, err
		}
	default:
	}
	return d.MemDisk.WriteAt(p, off)
}

// hangLimit bounds a wait that must end: past it the test fails instead of
// hanging.
const hangLimit = 20 * time.Second

func waitResult(t *testing.T, res <-chan error, what string) error {
	t.Helper()
	select {
	case err := <-res:
		return err
	case <-time.After(hangLimit):
		t.Fatalf("%s: still waiting after %v", what, hangLimit)
		return nil
	}
}

func openWith(t *testing.T, fs vfs.FS, disk Disk) *Journal {
	t.Helper()
	j, err := Open(fs, testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	return j
}

func oneBlock(c *Compressor, i int) Record {
	return c.Write(int64(i%16)*4096, make([]byte, 4096))
}

// A waiter is woken by the applier, whichever of the two comes first: the
// waiter is parked when the apply ends, or it finds the record applied.
func TestAwaitAppliedWokenByApply(t *testing.T) {
	disk := newGateDisk()
	j := openWith(t, vfs.NewMem(), disk)
	c := NewCompressor(CodecNone)
	for i := range 50 {
		disk.hold()
		seq := j.appendNow(oneBlock(c, i), false, func(uint64, error) {})
		<-disk.entered // the applier is inside WriteAt: seq is not applied
		res := make(chan error, 1)
		go func() {
			err := j.AwaitApplied(seq, nil)
			if err == nil && j.appliedSeq.Load() < seq {
				err = errors.New("returned before the apply")
			}
			res <- err
		}()
		if i%2 == 0 {
			disk.release <- nil
		} else {
			go func() { disk.release <- nil }()
		}
		if err := waitResult(t, res, "AwaitApplied"); err != nil {
			t.Fatalf("seq %d: %v", seq, err)
		}
	}
}

// The journal's failure wakes every waiter with the failure.
func TestAwaitWokenByFailure(t *testing.T) {
	disk := newGateDisk()
	j := openWith(t, vfs.NewMem(), disk)
	c := NewCompressor(CodecNone)
	disk.hold()
	seq := j.appendNow(oneBlock(c, 0), false, func(uint64, error) {})
	<-disk.entered
	waits := []func() error{
		func() error { return j.AwaitApplied(seq, nil) },
		func() error { return j.AwaitApplied(seq+10, nil) },
		func() error { return j.AwaitWritten(seq+10, nil) },
		j.WaitApplied,
	}
	res := make(chan error, len(waits))
	for _, w := range waits {
		go func() { res <- w() }()
	}
	disk.release <- syscall.EIO
	for range waits {
		if err := waitResult(t, res, "waiter of a failing journal"); !errors.Is(err, syscall.EIO) {
			t.Fatalf("waiter returned %v, want the journal's failure (EIO)", err)
		}
	}
	if err := j.AwaitApplied(seq+20, nil); !errors.Is(err, syscall.EIO) {
		t.Fatalf("wait on a failed journal: %v, want its failure", err)
	}
}

// Cancel ends a wait with ErrCanceled, unless the seq is reached anyway.
func TestAwaitCanceled(t *testing.T) {
	j := openWith(t, vfs.NewMem(), NewMemDisk(crashDiskSize))
	c := NewCompressor(CodecNone)
	seq, err := j.write(oneBlock(c, 0), false)
	if err != nil {
		t.Fatal(err)
	}
	for name, await := range map[string]func(uint64, <-chan struct{}) error{
		"AwaitApplied": j.AwaitApplied, "AwaitWritten": j.AwaitWritten} {
		cancel := make(chan struct{})
		res := make(chan error, 1)
		go func() { res <- await(seq+1, cancel) }()
		close(cancel)
		if err := waitResult(t, res, name); !errors.Is(err, ErrCanceled) {
			t.Fatalf("%s canceled: %v, want ErrCanceled", name, err)
		}
		if err := await(seq, cancel); err != nil {
			t.Fatalf("%s of a reached seq with cancel closed: %v", name, err)
		}
	}
}

// Close wakes the waiters with ErrClosed.
func TestAwaitWokenByClose(t *testing.T) {
	j := openWith(t, vfs.NewMem(), NewMemDisk(crashDiskSize))
	res := make(chan error, 1)
	go func() { res <- j.AwaitApplied(j.LastSeq()+1, nil) }()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := waitResult(t, res, "AwaitApplied over Close"); !errors.Is(err, ErrClosed) {
		t.Fatalf("waiter over Close: %v, want ErrClosed", err)
	}
}

// A record queued with AppendLater, whose appender never calls WriteQueued,
// is written and applied for a waiter: queued before the wait or during it.
func TestAwaitWritesWhatAppendLaterQueued(t *testing.T) {
	j := openWith(t, vfs.NewMem(), NewMemDisk(crashDiskSize))
	c := NewCompressor(CodecNone)
	done := make(chan error, 1)
	seq := j.AppendLater(oneBlock(c, 0), false, nil, func(_ uint64, err error) { done <- err })
	res := make(chan error, 1)
	go func() { res <- j.WaitApplied() }()
	if err := waitResult(t, res, "WaitApplied of a queued record"); err != nil {
		t.Fatal(err)
	}
	if j.appliedSeq.Load() < seq {
		t.Fatalf("WaitApplied returned at applied seq %d, before %d", j.appliedSeq.Load(), seq)
	}
	if err := waitResult(t, done, "done of the queued record"); err != nil {
		t.Fatal(err)
	}
	for i := range 100 { // the waiter first, the append first: either way
		next := j.LastSeq() + 1
		go func() { res <- j.AwaitWritten(next, nil) }()
		if got := j.AppendLater(oneBlock(c, i), false, nil, func(uint64, error) {}); got != next {
			t.Fatalf("appended seq %d, want %d", got, next)
		}
		if err := waitResult(t, res, "AwaitWritten of a record appended later"); err != nil {
			t.Fatal(err)
		}
		if j.writtenSeq.Load() < next {
			t.Fatalf("AwaitWritten returned at written seq %d, before %d", j.writtenSeq.Load(), next)
		}
	}
}

// Records a failed segment write dropped are never applied: a waiter for
// them returns once the records before them are.
func TestAwaitSkipsRecordsAFailedWriteDropped(t *testing.T) {
	ffs := newFaultyFS()
	j := openWith(t, ffs.fs, NewMemDisk(crashDiskSize))
	c := NewCompressor(CodecNone)
	if _, err := j.write(oneBlock(c, 0), false); err != nil {
		t.Fatal(err)
	}
	ffs.failOn(vfs.OpWrite, ".seg", syscall.ENOSPC)
	var lost uint64
	for i := range 3 {
		seq, err := j.write(oneBlock(c, i), i == 1)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("write on a full file system: %v, want ENOSPC", err)
		}
		lost = seq
	}
	res := make(chan error, 2)
	go func() { res <- j.WaitApplied() }()
	go func() { res <- j.AwaitWritten(lost, nil) }()
	for range 2 {
		if err := waitResult(t, res, "wait for dropped records"); err != nil {
			t.Fatal(err)
		}
	}
	ffs.failOn(0, "", nil)
	seq, err := j.write(oneBlock(c, 0), false)
	if err != nil || j.AwaitApplied(seq, nil) != nil {
		t.Fatalf("write after space came back: %v", err)
	}
}
