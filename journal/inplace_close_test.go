package journal

import (
	"errors"
	"fmt"
	"sync"
	"syscall"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// doneCounter counts the done callbacks of each seq and each record
// appended (by its index, since a record failed before it got a seq has
// none).
type doneCounter struct {
	mu    sync.Mutex
	calls map[int]int
	errs  map[int]error
}

func (c *doneCounter) done(i int) func(uint64, error) {
	return func(_ uint64, err error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.calls[i]++
		c.errs[i] = err
	}
}

// TestInPlaceEndsWhileDataInFlight: the journal is closed, failed, or its
// disk fails, while the data of a write in place is being written; records
// queued behind it (in place or not, with FUA or not, appended with and
// without waking the writer) and records appended once it is closing each
// get their done callback exactly once.
func TestInPlaceEndsWhileDataInFlight(t *testing.T) {
	errDisk := fmt.Errorf("gate: %w", syscall.EIO)
	for _, how := range []string{"close", "fail", "disk fails"} {
		for round := range 20 {
			t.Run(fmt.Sprintf("%s/%d", how, round), func(t *testing.T) {
				disk := newGateDisk()
				disk.MemDisk = NewMemDisk(inPlaceDiskSize)
				j, err := Open(vfs.NewMem(), "/meta/journal", disk, Options{DataMax: 8 << 10,
					CheckpointInterval: -1, Logger: quiet})
				if err != nil {
					t.Fatal(err)
				}
				c := &doneCounter{calls: map[int]int{}, errs: map[int]error{}}
				comp := NewCompressor(CodecNone)
				big := func(i int) Record { return comp.Write(int64(i%8)*(64<<10), make([]byte, 16<<10)) }
				disk.hold()
				j.appendNow(big(0), false, c.done(0))
				<-disk.entered // the write in place of record 0 is in flight
				n := 1
				for ; n < 12; n++ {
					rec := big(n)
					if n%3 == 0 {
						rec = comp.Write(int64(n)*4096, make([]byte, 4096)) // journaled whole
					}
					if n%2 == 0 {
						j.AppendLater(rec, n%4 == 0, nil, c.done(n))
						j.WriteQueued(n%5 == 0)
					} else {
						j.appendNow(rec, n%4 == 1, c.done(n))
					}
				}
				closed := make(chan error, 1)
				switch how {
				case "close":
					go func() { closed <- j.Close() }()
					disk.release <- nil
				case "fail":
					j.Fail(errors.New("test: failed"))
					disk.release <- nil
				case "disk fails":
					disk.release <- errDisk
				}
				if how != "close" {
					go func() { closed <- j.Close() }()
				}
				waitResult(t, closed, "Close")
				j.appendNow(big(n), false, c.done(n)) // after Close: fails at once
				n++
				c.mu.Lock()
				defer c.mu.Unlock()
				for i := range n {
					if c.calls[i] != 1 {
						t.Errorf("record %d: done called %d times, want once", i, c.calls[i])
					}
				}
				if !errors.Is(c.errs[n-1], ErrClosed) {
					t.Errorf("record appended after Close: %v, want ErrClosed", c.errs[n-1])
				}
			})
		}
	}
}
