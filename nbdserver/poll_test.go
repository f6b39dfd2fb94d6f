package nbdserver

import (
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// dialKept connects an nbdclient over a TCP connection the test keeps.
func dialKept(t *testing.T, addr string) (*nbdclient.Client, *net.TCPConn) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nbdclient.NewClient(ctx, nc, "disk")
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, nc.(*net.TCPConn)
}

// waitDelivered waits until the server has received everything sent on nc
// (loopback acknowledges what reaches the peer's receive queue).
func waitDelivered(t *testing.T, nc *net.TCPConn) {
	t.Helper()
	raw, err := nc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		unsent := -1
		raw.Control(func(fd uintptr) { unsent, _ = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) })
		if unsent == 0 {
			return
		}
	}
	t.Fatal("the server never received the request")
}

func twoProcs(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		old := runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	}
}

// holdServer serves a testBackend whose first call of op waits, once it
// has closed entered, until release is closed; with inline for
// inlineOverride (1: the reader runs requests itself, -1: goroutines do)
// and polling on, on two Ps. It returns the server, a client and the
// client's connection.
func holdServer(t *testing.T, inline int, op string) (s *Server, c *nbdclient.Client, nc *net.TCPConn, entered, release chan struct{}) {
	t.Helper()
	twoProcs(t)
	inlineOverride = inline
	t.Cleanup(func() { inlineOverride = 0 })
	tb := newTestBackend(1 << 20)
	entered, release = make(chan struct{}), make(chan struct{})
	first := true // the hook runs on one goroutine at a time until it blocks
	tb.hold = func(o string, off int64) {
		if o == op && first {
			first = false
			close(entered)
			<-release
		}
	}
	s, addr := startServer(t, Options{Backend: tb, Poll: 100 * time.Millisecond})
	c, nc = dialKept(t, addr)
	return s, c, nc, entered, release
}

// goRead reads into p at off on a goroutine of its own.
func goRead(c *nbdclient.Client, p []byte, off int64) chan error {
	ch := make(chan error, 1)
	go func() { _, err := c.ReadAt(p, off); ch <- err }()
	return ch
}

// wait fails the test on the first error the channels return.
func wait(t *testing.T, chs ...chan error) {
	t.Helper()
	for _, ch := range chs {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
}

// With nothing in flight the reader polls for the next request: a request
// already waiting in the socket when the reader turns to it is counted as
// polled, and the I/O is right.
func TestPollForNextRequest(t *testing.T) {
	// The reader runs the first READ itself and is held in it.
	s, c, nc, entered, release := holdServer(t, 1, "read")
	want := bytes.Repeat([]byte{7}, 4096)
	if _, err := c.WriteAt(want, 4096, 0); err != nil {
		t.Fatal(err)
	}
	read1 := goRead(c, make([]byte, 4096), 0)
	<-entered // the reader is busy with the first READ
	got := make([]byte, 4096)
	read2 := goRead(c, got, 4096)
	waitDelivered(t, nc)
	before := s.Stats()
	close(release)
	wait(t, read1, read2)
	after := s.Stats()
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	if after.PolledReads != before.PolledReads+1 {
		t.Fatalf("polled reads %d -> %d, want one more: the waiting request was read by polling",
			before.PolledReads, after.PolledReads)
	}
}

// With a request in flight the reader sleeps instead: the wait is for the
// Backend, which needs the core.
func TestNoPollWhileARequestIsInFlight(t *testing.T) {
	// Requests run on goroutines of their own; the WRITE is held.
	s, c, nc, entered, release := holdServer(t, -1, "write")
	write := make(chan error, 1)
	go func() { _, err := c.WriteAt(make([]byte, 4096), 0, 0); write <- err }()
	<-entered // the WRITE is in flight
	before := s.Stats()
	read := goRead(c, make([]byte, 4096), 8192)
	waitDelivered(t, nc)
	wait(t, read) // not held: answered while the WRITE waits
	after := s.Stats()
	close(release)
	wait(t, write)
	if after.PolledReads != before.PolledReads || after.SleptReads != before.SleptReads+1 {
		t.Fatalf("polled %d -> %d, slept %d -> %d; want one more sleep and no poll",
			before.PolledReads, after.PolledReads, before.SleptReads, after.SleptReads)
	}
}

// writeLone makes n 4 KiB writes, each waiting for its reply.
func writeLone(t *testing.T, c *nbdclient.Client, n int) {
	t.Helper()
	for i := range n {
		if _, err := c.WriteAt(make([]byte, 4096), int64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
	}
}

// PollIf false: every read sleeps.
func TestPollIf(t *testing.T) {
	twoProcs(t)
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20), Poll: 100 * time.Millisecond,
		PollIf: func() bool { return false }})
	writeLone(t, dial(t, addr), 10)
	if st := s.Stats(); st.PolledReads != 0 || st.SleptReads == 0 {
		t.Fatalf("PollIf false: %+v", st)
	}
}

func TestPollOff(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	writeLone(t, dial(t, addr), 10)
	if st := s.Stats(); st.PolledReads != 0 || st.SleptReads != 0 {
		t.Fatalf("Poll 0 counted reads: %+v", st)
	}
}

// A client that pipelines gets no polling: requests that came together in
// one read mean the reader sleeps on, so that the next read takes a batch.
func TestNoPollForAPipeliningClient(t *testing.T) {
	s, c, nc, entered, release := holdServer(t, 1, "read")
	r0 := goRead(c, make([]byte, 512), 0)
	<-entered
	// Both wait in the socket: one read takes them.
	r1, r2 := goRead(c, make([]byte, 512), 4096), goRead(c, make([]byte, 512), 8192)
	waitDelivered(t, nc)
	close(release)
	wait(t, r0, r1, r2)
	before := s.Stats()
	wait(t, goRead(c, make([]byte, 512), 12288))
	after := s.Stats()
	if after.PolledReads != before.PolledReads || after.SleptReads != before.SleptReads+1 {
		t.Fatalf("polled %d -> %d, slept %d -> %d; want the read after a batch to sleep",
			before.PolledReads, after.PolledReads, before.SleptReads, after.SleptReads)
	}
}
