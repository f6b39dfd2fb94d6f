package nbdserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// testBackend wraps a MemBackend, counts the calls that matter for
// durability, and can fail or stall chosen requests. Set the hooks before
// the server starts.
type testBackend struct {
	*MemBackend
	syncs   atomic.Int64
	running atomic.Int64 // calls in progress
	maxRun  atomic.Int64 // most calls in progress at once

	// fail, if set, returns the error for an op ("read", "write", "trim",
	// "zero", "sync") at off.
	fail func(op string, off int64) error
	// hold, if set, is called at the start of every op and may block.
	hold func(op string, off int64)
}

func newTestBackend(size int) *testBackend {
	return &testBackend{MemBackend: NewMemBackend(size)}
}

func (b *testBackend) enter(op string, off int64) error {
	n := b.running.Add(1)
	for {
		m := b.maxRun.Load()
		if n <= m || b.maxRun.CompareAndSwap(m, n) {
			break
		}
	}
	if b.hold != nil {
		b.hold(op, off)
	}
	if b.fail != nil {
		return b.fail(op, off)
	}
	return nil
}

func (b *testBackend) leave() { b.running.Add(-1) }

func (b *testBackend) ReadAt(p []byte, off int64) (int, error) {
	defer b.leave()
	if err := b.enter("read", off); err != nil {
		return 0, err
	}
	return b.MemBackend.ReadAt(p, off)
}

func (b *testBackend) WriteAt(p []byte, off int64) (int, error) {
	defer b.leave()
	if err := b.enter("write", off); err != nil {
		return 0, err
	}
	return b.MemBackend.WriteAt(p, off)
}

func (b *testBackend) Trim(off, length int64) error {
	defer b.leave()
	if err := b.enter("trim", off); err != nil {
		return err
	}
	return b.MemBackend.Trim(off, length)
}

func (b *testBackend) Zero(off, length int64, noHole bool) error {
	defer b.leave()
	if err := b.enter("zero", off); err != nil {
		return err
	}
	return b.MemBackend.Zero(off, length, noHole)
}

func (b *testBackend) Sync() error {
	defer b.leave()
	b.syncs.Add(1)
	return b.enter("sync", 0)
}

// fuaBackend is a testBackend that also implements FUAWriter.
type fuaBackend struct {
	*testBackend
	fuaWrites atomic.Int64
}

func (b *fuaBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	b.fuaWrites.Add(1)
	return b.testBackend.WriteAt(p, off)
}

// gate blocks callers of wait until open is called.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate  { return &gate{ch: make(chan struct{})} }
func (g *gate) wait() { <-g.ch }
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }
func (g *gate) isOpen() bool {
	select {
	case <-g.ch:
		return true
	default:
		return false
	}
}

func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", p)
	return len(p), nil
}

// startServer serves o on a loopback port until the test ends and returns
// the server and its address.
func startServer(t testing.TB, o Options) (*Server, string) {
	t.Helper()
	if o.Name == "" {
		o.Name = "disk"
	}
	if o.Logger == nil {
		o.Logger = testLogger(t)
	}
	s := New(o)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v, want net.ErrClosed", err)
		}
	})
	return s, l.Addr().String()
}

// dial connects an nbdclient to addr, closed when the test ends.
func dial(t testing.TB, addr string) *nbdclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAll reads from c until EOF or error and returns what came.
func readAll(c net.Conn) []byte {
	b, _ := io.ReadAll(c)
	return b
}

var net_ErrClosed = net.ErrClosed

// serveLoopback serves s on a loopback port; the test shuts it down itself.
func serveLoopback(t testing.TB, s *Server) (string, <-chan error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return l.Addr().String(), served
}

// writeReadBack writes n bytes of a pattern at off with flags, reads them
// back and compares.
func writeReadBack(c *nbdclient.Client, off int64, n int, flags nbdclient.CmdFlags) error {
	want := pattern(n, uint64(off))
	if _, err := c.WriteAt(want, off, flags); err != nil {
		return err
	}
	got := make([]byte, n)
	if _, err := c.ReadAt(got, off); err != nil {
		return err
	}
	if !bytes.Equal(got, want) {
		return fmt.Errorf("data at %d differs", off)
	}
	return nil
}

// parallel runs f(0) .. f(n-1) at once and fails t with their errors.
func parallel(t testing.TB, n int, f func(w int) error) {
	t.Helper()
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() { errs <- f(w) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
