package netio

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// tcpPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// twoCores gives the test two Ps, so that one reader may poll.
func twoCores(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		old := runtime.GOMAXPROCS(2)
		t.Cleanup(func() { runtime.GOMAXPROCS(old) })
	}
}

func newCounted(c net.Conn, limit time.Duration) (*PollReader, *atomic.Uint64, *atomic.Uint64) {
	r := NewPollReader(c, limit)
	r.Polled, r.Slept = new(atomic.Uint64), new(atomic.Uint64)
	return r, r.Polled, r.Slept
}

// readFull reads len(want) bytes from r and checks them.
func readFull(t *testing.T, r io.Reader, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := io.ReadFull(r, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("read %q, want %q", got, want)
	}
}

// waitBuffered waits until the kernel holds n bytes for c to read, so that
// a Read finds them at once.
func waitBuffered(t *testing.T, c net.Conn, n int) {
	t.Helper()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		var avail int
		raw.Control(func(fd uintptr) { avail = bytesToRead(t, fd) })
		if avail >= n {
			return
		}
	}
	t.Fatalf("%d bytes never arrived", n)
}

// sendLater writes msg on c after d, on a goroutine of its own.
func sendLater(c net.Conn, d time.Duration, msg string) {
	go func() {
		time.Sleep(d)
		c.Write([]byte(msg))
	}()
}

func TestPollReaderFindsWaitingData(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, time.Millisecond)
	client.Write([]byte("request"))
	waitBuffered(t, server, 7)
	readFull(t, r, []byte("request"))
	if polled.Load() != 1 || slept.Load() != 0 {
		t.Fatalf("polled %d, slept %d; want the read polled", polled.Load(), slept.Load())
	}
}

func TestPollReaderSleepsWhenNotWanted(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, time.Millisecond)
	r.Want = func() bool { return false }
	sendLater(client, 20*time.Millisecond, "later")
	readFull(t, r, []byte("later"))
	if polled.Load() != 0 || slept.Load() != 1 {
		t.Fatalf("polled %d, slept %d; want one sleep", polled.Load(), slept.Load())
	}
}

// Data that comes after the poll gave up is read by the sleeping read.
func TestPollReaderSleepsAfterLimit(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, 50*time.Microsecond)
	sendLater(client, 50*time.Millisecond, "late request")
	readFull(t, r, []byte("late request"))
	if polled.Load()+slept.Load() != 1 {
		t.Fatalf("polled %d, slept %d; want one read", polled.Load(), slept.Load())
	}
}

// After waits longer than the limit the reader stops polling, and quick
// waits bring polling back.
func TestPollReaderStopsPollingForSlowClients(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, 100*time.Microsecond)
	for range 16 {
		r.note(time.Second)
	}
	client.Write([]byte("x"))
	waitBuffered(t, server, 1)
	readFull(t, r, []byte("x"))
	if polled.Load() != 0 || slept.Load() != 1 {
		t.Fatalf("after long waits: polled %d, slept %d; want a sleep", polled.Load(), slept.Load())
	}
	for range 32 {
		r.note(time.Microsecond)
	}
	client.Write([]byte("y"))
	waitBuffered(t, server, 1)
	readFull(t, r, []byte("y"))
	if polled.Load() != 1 {
		t.Fatalf("after quick waits: polled %d, want 1", polled.Load())
	}
}

// One reader per core besides one polls at a time.
func TestPollReaderPlaces(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, time.Millisecond)
	taken := int32(runtime.GOMAXPROCS(0) - 1)
	pollers.Add(taken) // every place taken
	client.Write([]byte("busy"))
	waitBuffered(t, server, 4)
	readFull(t, r, []byte("busy"))
	pollers.Add(-taken)
	if polled.Load() != 0 || slept.Load() != 1 {
		t.Fatalf("polled %d, slept %d with no place free; want one sleep", polled.Load(), slept.Load())
	}
	if n := pollers.Load(); n != 0 {
		t.Fatalf("%d places still taken", n)
	}
}

func TestPollReaderEOFAndDeadline(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r := NewPollReader(server, time.Millisecond)
	server.SetReadDeadline(time.Now().Add(-time.Second))
	if _, err := r.Read(make([]byte, 8)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v, want os.ErrDeadlineExceeded", err)
	}
	server.SetReadDeadline(time.Time{})
	client.Write([]byte("end"))
	client.Close()
	readFull(t, r, []byte("end"))
	if n, err := r.Read(make([]byte, 8)); n != 0 || err != io.EOF {
		t.Fatalf("read after close: %d, %v; want 0, io.EOF", n, err)
	}
	server.Close()
	if _, err := r.Read(make([]byte, 8)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read of a closed connection: %v, want net.ErrClosed", err)
	}
}

// Without a descriptor (net.Pipe), or with a limit of 0, reads go straight
// to the connection.
func TestPollReaderOff(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	r, polled, slept := newCounted(b, time.Millisecond)
	go a.Write([]byte("pipe"))
	readFull(t, r, []byte("pipe"))
	client, server := tcpPair(t)
	r0, polled0, slept0 := newCounted(server, 0)
	client.Write([]byte("off"))
	readFull(t, r0, []byte("off"))
	if polled.Load()+slept.Load()+polled0.Load()+slept0.Load() != 0 {
		t.Fatal("a reader that cannot or may not poll counted a read")
	}
}

// bytesToRead is what the kernel holds for fd to read.
func bytesToRead(t *testing.T, fd uintptr) int {
	n, err := unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// asleep waits until a Read of r sleeps in the poller and no Kick is
// pending for it.
func asleep(t *testing.T, r *PollReader) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		r.kmu.Lock()
		s := r.sleeping && !r.kicked
		r.kmu.Unlock()
		if s {
			return
		}
	}
	t.Fatal("the read never went to sleep")
}

// goRead reads up to 64 bytes from r on a goroutine of its own.
func goRead(r io.Reader) <-chan readResult {
	got := make(chan readResult, 1)
	go func() {
		b := make([]byte, 64)
		n, err := r.Read(b)
		got <- readResult{string(b[:n]), err}
	}()
	return got
}

type readResult struct {
	data string
	err  error
}

// A Kick makes a read that slept because Want said no ask again, and poll.
func TestPollReaderKick(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, slept := newCounted(server, time.Minute)
	var want atomic.Bool
	r.Want = want.Load
	got := goRead(r)
	asleep(t, r)
	want.Store(true)
	r.Kick()
	for end := time.Now().Add(5 * time.Second); pollers.Load() == 0; runtime.Gosched() { // the read polls now
		if time.Now().After(end) {
			t.Fatal("the kicked read does not poll")
		}
	}
	client.Write([]byte("ack"))
	if res := <-got; res.data != "ack" || res.err != nil {
		t.Fatalf("read %q, %v; want ack", res.data, res.err)
	}
	if polled.Load() != 1 || slept.Load() != 0 {
		t.Fatalf("polled %d, slept %d; want the kicked read to poll", polled.Load(), slept.Load())
	}
}

// A Kick is no timeout: the caller's deadline is put back and honoured.
func TestPollReaderKickKeepsDeadline(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r := NewPollReader(server, time.Millisecond)
	r.Want = func() bool { return false }
	r.Kick() // no read yet: nothing to do
	r.SetReadDeadline(time.Now().Add(time.Hour))
	got := goRead(r)
	asleep(t, r)
	r.Kick()
	asleep(t, r) // asleep again, not failed
	select {
	case res := <-got:
		t.Fatalf("a Kick ended the read: %q, %v", res.data, res.err)
	default:
	}
	client.Write([]byte("data"))
	if res := <-got; res.data != "data" || res.err != nil {
		t.Fatalf("read %q, %v; want data", res.data, res.err)
	}

	r.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	got = goRead(r)
	asleep(t, r)
	r.Kick()
	if res := <-got; !errors.Is(res.err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline after a Kick: %q, %v; want a timeout", res.data, res.err)
	}
}

// A wait Want said no to does not count in the mean: polling comes back
// at once when Want says yes again.
func TestPollReaderCountsOnlyWantedWaits(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, _ := newCounted(server, 100*time.Microsecond)
	var want atomic.Bool
	r.Want = want.Load
	sendLater(client, 20*time.Millisecond, "slow")
	readFull(t, r, []byte("slow"))
	if r.mean != 0 {
		t.Fatalf("mean %v after a wait Want said no to, want 0", r.mean)
	}
	want.Store(true)
	client.Write([]byte("next"))
	waitBuffered(t, server, 4)
	readFull(t, r, []byte("next"))
	if polled.Load() != 1 {
		t.Fatalf("polled %d after Want said yes again, want 1", polled.Load())
	}
}

// Between two tries a poll yields its core, so that a thread with work on
// it (such as the one about to send the awaited data) runs at once.
func TestPollReaderYieldsBetweenTries(t *testing.T) {
	twoCores(t)
	var yields atomic.Int64
	saved := yield
	yield = func() { yields.Add(1); saved() }
	t.Cleanup(func() { yield = saved })
	client, server := tcpPair(t)
	r, polled, _ := newCounted(server, 20*time.Millisecond)
	sendLater(client, 2*time.Millisecond, "request")
	readFull(t, r, []byte("request"))
	if polled.Load() != 1 {
		t.Fatalf("polled %d reads; want the one read to poll", polled.Load())
	}
	if yields.Load() == 0 {
		t.Fatal("the poll never yielded its core between tries")
	}
}

// A poll runs Between between tries, while Polling says true, and once more
// after Polling turned false: work left for it is never stranded.
func TestPollReaderRunsBetween(t *testing.T) {
	twoCores(t)
	client, server := tcpPair(t)
	r, polled, _ := newCounted(server, time.Second)
	var during, after atomic.Int64
	r.Between = func() {
		if r.Polling() {
			during.Add(1)
		} else {
			after.Add(1)
		}
	}
	sendLater(client, 2*time.Millisecond, "request")
	readFull(t, r, []byte("request"))
	if polled.Load() != 1 {
		t.Fatalf("polled %d reads; want the one read to poll", polled.Load())
	}
	if during.Load() == 0 || after.Load() != 1 || r.Polling() {
		t.Fatalf("Between ran %d times while polling, %d after; Polling %v after the read",
			during.Load(), after.Load(), r.Polling())
	}
}

// Between runs outside the read's hold on the connection: it may write to
// the connection and close it, and the Read then returns the closed
// connection's error instead of waiting for itself.
func TestPollReaderBetweenMayCloseTheConnection(t *testing.T) {
	twoCores(t)
	c, _ := tcpPair(t)
	r := NewPollReader(c, time.Minute)
	var once sync.Once
	r.Between = func() {
		once.Do(func() {
			if _, err := c.Write([]byte("x")); err != nil {
				t.Error(err)
			}
			c.Close()
		})
	}
	done := make(chan error, 1)
	go func() { _, err := r.Read(make([]byte, 8)); done <- err }()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after Between closed the connection: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Read hangs after Between closed the connection")
	}
}
