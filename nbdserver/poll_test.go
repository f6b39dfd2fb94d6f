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

// With nothing in flight the reader polls for the next request: a request
// already waiting in the socket when the reader turns to it is counted as
// polled, and the I/O is right.
func TestPollForNextRequest(t *testing.T) {
	twoProcs(t)
	inlineOverride = 1 // the reader runs the first READ itself
	t.Cleanup(func() { inlineOverride = 0 })
	tb := newTestBackend(1 << 20)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	tb.hold = func(op string, off int64) {
		if op == "read" && off == 0 && first {
			first = false
			close(entered)
			<-release
		}
	}
	s, addr := startServer(t, Options{Backend: tb, Poll: 100 * time.Millisecond})
	c, nc := dialKept(t, addr)
	want := bytes.Repeat([]byte{7}, 4096)
	if _, err := c.WriteAt(want, 4096, 0); err != nil {
		t.Fatal(err)
	}
	read1 := make(chan error, 1)
	go func() { _, err := c.ReadAt(make([]byte, 4096), 0); read1 <- err }()
	<-entered // the reader is busy with the first READ
	got := make([]byte, 4096)
	read2 := make(chan error, 1)
	go func() { _, err := c.ReadAt(got, 4096); read2 <- err }()
	waitDelivered(t, nc)
	before := s.Stats()
	close(release)
	if err := <-read1; err != nil {
		t.Fatal(err)
	}
	if err := <-read2; err != nil {
		t.Fatal(err)
	}
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
	twoProcs(t)
	inlineOverride = -1 // requests run on goroutines of their own
	t.Cleanup(func() { inlineOverride = 0 })
	tb := newTestBackend(1 << 20)
	entered, release := make(chan struct{}), make(chan struct{})
	tb.hold = func(op string, off int64) {
		if op == "write" {
			close(entered)
			<-release
		}
	}
	s, addr := startServer(t, Options{Backend: tb, Poll: 100 * time.Millisecond})
	c, nc := dialKept(t, addr)
	write := make(chan error, 1)
	go func() { _, err := c.WriteAt(make([]byte, 4096), 0, 0); write <- err }()
	<-entered // the WRITE is in flight
	before := s.Stats()
	read := make(chan error, 1)
	go func() { _, err := c.ReadAt(make([]byte, 4096), 8192); read <- err }()
	waitDelivered(t, nc)
	if err := <-read; err != nil { // not held: answered while the WRITE waits
		t.Fatal(err)
	}
	after := s.Stats()
	close(release)
	if err := <-write; err != nil {
		t.Fatal(err)
	}
	if after.PolledReads != before.PolledReads || after.SleptReads != before.SleptReads+1 {
		t.Fatalf("polled %d -> %d, slept %d -> %d; want one more sleep and no poll",
			before.PolledReads, after.PolledReads, before.SleptReads, after.SleptReads)
	}
}

// PollIf false: every read sleeps.
func TestPollIf(t *testing.T) {
	twoProcs(t)
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20), Poll: 100 * time.Millisecond,
		PollIf: func() bool { return false }})
	c := dial(t, addr)
	for i := range 10 {
		if _, err := c.WriteAt(make([]byte, 4096), int64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.PolledReads != 0 || st.SleptReads == 0 {
		t.Fatalf("PollIf false: %+v", st)
	}
}

func TestPollOff(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	c := dial(t, addr)
	for i := range 10 {
		if _, err := c.WriteAt(make([]byte, 4096), int64(i)*4096, 0); err != nil {
			t.Fatal(err)
		}
	}
	if st := s.Stats(); st.PolledReads != 0 || st.SleptReads != 0 {
		t.Fatalf("Poll 0 counted reads: %+v", st)
	}
}

// A client that pipelines gets no polling: requests that came together in
// one read mean the reader sleeps on, so that the next read takes a batch.
func TestNoPollForAPipeliningClient(t *testing.T) {
	twoProcs(t)
	inlineOverride = 1
	t.Cleanup(func() { inlineOverride = 0 })
	tb := newTestBackend(1 << 20)
	entered, release := make(chan struct{}), make(chan struct{})
	first := true
	tb.hold = func(op string, off int64) {
		if op == "read" && first {
			first = false
			close(entered)
			<-release
		}
	}
	s, addr := startServer(t, Options{Backend: tb, Poll: 100 * time.Millisecond})
	c, nc := dialKept(t, addr)
	read := func(off int64) chan error {
		ch := make(chan error, 1)
		go func() { _, err := c.ReadAt(make([]byte, 512), off); ch <- err }()
		return ch
	}
	r0 := read(0)
	<-entered
	r1, r2 := read(4096), read(8192) // both wait in the socket: one read takes them
	waitDelivered(t, nc)
	close(release)
	for _, ch := range []chan error{r0, r1, r2} {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	before := s.Stats()
	if err := <-read(12288); err != nil {
		t.Fatal(err)
	}
	after := s.Stats()
	if after.PolledReads != before.PolledReads || after.SleptReads != before.SleptReads+1 {
		t.Fatalf("polled %d -> %d, slept %d -> %d; want the read after a batch to sleep",
			before.PolledReads, after.PolledReads, before.SleptReads, after.SleptReads)
	}
}
