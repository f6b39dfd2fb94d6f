package journal

import (
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// TestSlowSyncHoldsNoWrite: while a checkpoint marker's journal sync hangs
// (as one does behind the disk's write-back), a write that waits for no
// sync is journaled, applied and completed; a FLUSH behind it waits for a
// sync of its own; the checkpoint completes once the sync is let go.
func TestSlowSyncHoldsNoWrite(t *testing.T) {
	var armed atomic.Bool
	hung, release := make(chan struct{}, 1), make(chan struct{})
	var once, let sync.Once
	letGo := func() { let.Do(func() { close(release) }) }
	fs, written, _ := watchedActivity(vfs.Inject(vfs.NewMem(), func(op vfs.Op, path string) error {
		if op == vfs.OpSync && strings.HasSuffix(path, ".seg") && armed.Load() {
			once.Do(func() { hung <- struct{}{}; <-release })
		}
		return nil
	}))
	o := testOptions()
	o.activityExtent = crashDiskSize // one extent: hot once published
	j, err := Open(fs, testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	defer letGo() // before Close, also when the test fails
	c := NewCompressor(CodecNone)
	if _, err := j.write(c.Write(0, make([]byte, 4096)), false); err != nil {
		t.Fatal(err)
	}
	<-written // the set holds the disk's one extent: no write is cold from here on

	armed.Store(true)
	if _, err := j.write(c.Write(4096, make([]byte, 4096)), false); err != nil { // the segment is dirty again
		t.Fatal(err)
	}
	ckpt := make(chan error, 1)
	if err := j.queueCheckpoint(func(_ uint64, err error) { ckpt <- err }); err != nil {
		t.Fatal(err)
	}
	<-hung // the marker's sync hangs
	done := make(chan error, 1)
	go func() {
		_, err := j.write(c.Write(8192, make([]byte, 4096)), false)
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write waited for a checkpoint's journal sync")
	}
	flushed := make(chan error, 1)
	go func() { flushed <- j.SyncWait() }()
	letGo()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	if err := <-ckpt; err != nil {
		t.Fatal(err)
	}
	if j.durableSeq.Load() < j.writtenSeq.Load() {
		t.Fatalf("after a FLUSH the journal is durable to %d of %d written", j.durableSeq.Load(), j.writtenSeq.Load())
	}
}
