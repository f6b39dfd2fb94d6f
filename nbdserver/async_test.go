package nbdserver

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// asyncBackend is a testBackend that also implements AsyncWriter: each write
// ends on a goroutine of its own after a random short delay, or before
// WriteAsync returns, in no particular order.
type asyncBackend struct {
	*testBackend
	started, fua atomic.Int64
	inline       atomic.Int64 // writes ended before WriteAsync returned
	pending      sync.WaitGroup
}

func (b *asyncBackend) WriteAsync(p []byte, off int64, fua, last bool, done func(error)) {
	b.started.Add(1)
	if fua {
		b.fua.Add(1)
	}
	end := func() {
		_, err := b.testBackend.WriteAt(p, off)
		done(err)
	}
	if off%3 == 0 {
		b.inline.Add(1)
		end()
		return
	}
	b.pending.Go(func() {
		time.Sleep(time.Duration(rand.IntN(200)) * time.Microsecond)
		end()
	})
}

func TestAsyncWrites(t *testing.T) {
	const workers, per, bs = 32, 60, 4096
	ab := &asyncBackend{testBackend: newTestBackend(workers * per * bs)}
	ab.fail = func(op string, off int64) error {
		if op == "write" && off == 5*bs {
			return fmt.Errorf("disk full: %w", syscall.ENOSPC)
		}
		return nil
	}
	s, addr := startServer(t, Options{Backend: ab})
	c := dial(t, addr)
	parallel(t, workers, func(w int) error {
		for i := range per {
			off := int64((w*per + i) * bs)
			var flags nbdclient.CmdFlags
			if i%4 == 0 {
				flags = nbdclient.FlagFUA
			}
			if off == 5*bs {
				if _, err := c.WriteAt(pattern(bs, uint64(off)), off, flags); !errors.Is(err, syscall.ENOSPC) {
					return fmt.Errorf("failing write: %v, want ENOSPC", err)
				}
				continue
			}
			if err := writeReadBack(c, off, bs, flags); err != nil {
				return err
			}
		}
		return nil
	})
	if n := ab.started.Load(); n != workers*per {
		t.Fatalf("%d writes went through WriteAsync, want %d", n, workers*per)
	}
	if ab.fua.Load() != workers*per/4 || ab.inline.Load() == 0 {
		t.Fatalf("fua %d, ended inline %d", ab.fua.Load(), ab.inline.Load())
	}
	if st := s.Stats(); st.Writes != workers*per-1 || st.Errors != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// A client that disconnects with writes in flight leaves the server whole:
// the writes end, the connection closes, other clients go on.
func TestAsyncWritesOutliveClient(t *testing.T) {
	ab := &asyncBackend{testBackend: newTestBackend(1 << 20)}
	release := newGate()
	ab.hold = func(op string, off int64) {
		if op == "write" {
			release.wait()
		}
	}
	s, addr := startServer(t, Options{Backend: ab})
	c := dial(t, addr)
	for i := range 8 {
		go c.WriteAt(make([]byte, 4096), int64(1+3*i)*4096, 0) // never ends inline (off%3 != 0)
	}
	for deadline := time.Now().Add(5 * time.Second); ab.started.Load() < 8; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of 8 writes started", ab.started.Load())
		}
	}
	time.AfterFunc(20*time.Millisecond, release.open) // the server ends them after DISC
	c.Close()
	ab.pending.Wait()
	c2 := dial(t, addr)
	if _, err := c2.WriteAt([]byte("x"), 4096, 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Writes != 9 {
		t.Fatalf("stats %+v", st)
	}
}
