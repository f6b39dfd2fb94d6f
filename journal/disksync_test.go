package journal

import (
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// syncGateDisk is a gateDisk whose Sync, once held, says so on syncEntered
// and waits for syncRelease.
type syncGateDisk struct {
	*gateDisk
	syncHeld    chan struct{}
	syncEntered chan struct{}
	syncRelease chan struct{}
}

func (d *syncGateDisk) Sync() error {
	select {
	case <-d.syncHeld:
		d.syncEntered <- struct{}{}
		<-d.syncRelease
	default:
	}
	return d.gateDisk.Sync()
}

// openGated opens a journal with o on fs over a syncGateDisk. unblock
// releases a held disk sync (once, however often it is called); the test's
// Cleanup calls it before it closes the journal, also when the test fails.
func openGated(t *testing.T, fs vfs.FS, o Options) (j *Journal, disk *syncGateDisk, unblock func()) {
	t.Helper()
	disk = &syncGateDisk{gateDisk: newGateDisk(), syncHeld: make(chan struct{}, 1),
		syncEntered: make(chan struct{}), syncRelease: make(chan struct{})}
	j, err := Open(fs, testDir, disk, o)
	if err != nil {
		t.Fatal(err)
	}
	var release sync.Once
	unblock = func() { release.Do(func() { close(disk.syncRelease) }) }
	t.Cleanup(func() { unblock(); j.Close() })
	return j, disk, unblock
}

// A write queued behind a checkpoint's marker, while the applier is still
// busy with what came before it, is applied and completes while the disk
// sync runs: it is synced in the journal first, instead of waiting for the
// whole disk sync (which stalled every writer for as long as the disk took
// to write back all it held).
func TestWriteBehindACheckpointDoesNotWaitForTheDiskSync(t *testing.T) {
	j, disk, unblock := openGated(t, vfs.NewMem(), testOptions())
	c := NewCompressor(CodecNone)
	// A FUA write is applied by the applier, never inline by the writer:
	// the applier stops inside its WriteAt, the writer goes on.
	disk.hold()
	first := make(chan error, 1)
	j.appendNow(oneBlock(c, 0), true, func(_ uint64, err error) { first <- err })
	<-disk.entered
	disk.syncHeld <- struct{}{}
	ckpt := make(chan error, 1)
	if err := j.queueCheckpoint(func(_ uint64, err error) { ckpt <- err }); err != nil {
		t.Fatal(err)
	}
	// A write of a whole batch's bytes right behind the marker ends the
	// marker's batch, however the writer takes the queue: the next write
	// comes in a batch of its own, which the writer forms and writes while
	// the applier is still held, before any disk sync began.
	j.appendNow(c.Write(32<<10, make([]byte, j.opts.maxBatchBytes())), false, func(uint64, error) {})
	second := make(chan error, 1)
	seq := j.appendNow(oneBlock(c, 1), false, func(_ uint64, err error) { second <- err })
	if err := j.AwaitWritten(seq, nil); err != nil {
		t.Fatal(err)
	}
	disk.release <- nil
	if err := waitResult(t, first, "the first write"); err != nil {
		t.Fatal(err)
	}
	<-disk.syncEntered // the disk sync runs, and stays until released
	if err := waitResult(t, second, "a write behind the checkpoint, while the disk syncs"); err != nil {
		t.Fatal(err)
	}
	unblock()
	if err := waitResult(t, ckpt, "the checkpoint"); err != nil {
		t.Fatal(err)
	}
}

// A frame of more than a quarter of MaxBytes waits until the journal but its
// active segment is at most half full. Frames queued and not yet written
// count in the journal's size and not in the active segment: once the
// writer writes them the waiter may fit, with nothing freed, and must be
// told. It was not, and waited until a checkpoint freed a segment, or for
// ever when none did. Here the checkpoint it kicks holds in its disk sync:
// the waiter must go on meanwhile.
func TestLargeAppendWokenWhenQueuedFramesAreWritten(t *testing.T) {
	o := testOptions()
	o.MaxBytes, o.segmentSize = 64<<10, 16<<10
	j, disk, _ := openGated(t, vfs.NewMem(), o)
	c := NewCompressor(CodecNone)
	for i := range 9 { // about 37 KiB queued: more than half of MaxBytes, not written
		j.AppendLater(c.Write(int64(i%8)*4096, make([]byte, 4096)), false, nil, func(uint64, error) {})
	}
	disk.syncHeld <- struct{}{}
	done := make(chan error, 1)
	go func() { _, err := j.write(c.Write(0, make([]byte, 20<<10)), false); done <- err }()
	<-disk.syncEntered // the checkpoint the waiter kicked wrote the queued frames, and holds
	if err := waitResult(t, done, "a large append, once the queued frames are written"); err != nil {
		t.Fatal(err)
	}
}
