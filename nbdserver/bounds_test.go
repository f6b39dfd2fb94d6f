package nbdserver

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"
)

// heldWrites is a backend whose writes below limit wait for release, each
// announcing itself on entered first.
func heldWrites(size int, limit int64) (*testBackend, chan int64, *gate) {
	b := newTestBackend(size)
	entered := make(chan int64, 64)
	release := newGate()
	b.hold = func(op string, off int64) {
		if op == "write" && off < limit {
			entered <- off
			release.wait()
		}
	}
	return b, entered, release
}

// TestConnectionByteBound: a client that pipelines more write payload than
// its share is not read past the share while the Backend holds its writes,
// and another client is served meanwhile.
func TestConnectionByteBound(t *testing.T) {
	const piece = 256 << 10
	b, entered, release := heldWrites(64<<20, 32<<20)
	defer release.open()
	_, addr := startServer(t, Options{Backend: b, MaxInFlightBytes: 4 << 20, MaxConnInFlightBytes: 1 << 20})
	hog := dial(t, addr)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			if _, err := hog.WriteAt(make([]byte, piece), int64(i)*piece, 0); err != nil {
				t.Error(err)
			}
		})
	}
	for range 4 { // 4 x 256 KiB fill the 1 MiB share
		<-entered
	}
	other := dial(t, addr)
	if err := writeReadBack(other, 40<<20, 64<<10, 0); err != nil {
		t.Fatalf("another client while the first is at its bound: %v", err)
	}
	if n := len(entered); n != 0 {
		t.Fatalf("%d more writes of the hog reached the Backend past its share", n)
	}
	release.open()
	wg.Wait()
	if got := b.maxRun.Load(); got > 5 { // 4 of the hog, 1 of the other client
		t.Fatalf("%d calls ran at once", got)
	}
}

// TestTotalByteBound: two clients together hold no more than the total.
func TestTotalByteBound(t *testing.T) {
	const piece = 256 << 10
	b, entered, release := heldWrites(64<<20, 32<<20)
	defer release.open()
	_, addr := startServer(t, Options{Backend: b, MaxInFlightBytes: 1 << 20, MaxConnInFlightBytes: 1 << 20})
	var wg sync.WaitGroup
	for c := range 2 {
		cl := dial(t, addr)
		for i := range 8 {
			wg.Go(func() {
				if _, err := cl.WriteAt(make([]byte, piece), int64(c*8+i)*piece, 0); err != nil {
					t.Error(err)
				}
			})
		}
	}
	for range 4 {
		<-entered
	}
	other := dial(t, addr)
	// The other client's read must wait for room too: it is served once
	// the held writes finish.
	done := make(chan error, 1)
	go func() { done <- writeReadBack(other, 40<<20, 4096, 0) }()
	select {
	case err := <-done:
		t.Fatalf("a request went past the total bound: %v", err)
	case off := <-entered:
		t.Fatalf("a fifth write (at %d) went past the total bound", off)
	default:
	}
	release.open()
	wg.Wait()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := b.maxRun.Load(); got > 4 {
		t.Fatalf("%d calls ran at once under a total of 4 x 256 KiB", got)
	}
}

// TestOversizeRequestAlone: a request larger than the bounds still runs.
func TestOversizeRequestAlone(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(64 << 20), MaxInFlightBytes: 1 << 20})
	if err := writeReadBack(dial(t, addr), 0, 8<<20, 0); err != nil {
		t.Fatal(err)
	}
}

// TestReplyTimeoutClosesStalledClient: a client that asks for reads and
// never takes the replies is closed once they make no progress for
// ReplyTimeout; until then the server holds no more than its share.
func TestReplyTimeoutClosesStalledClient(t *testing.T) {
	logged := make(chan struct{})
	log := slog.New(slog.NewTextHandler(&signalWriter{match: []byte("took no reply"), ch: logged}, nil))
	s, addr := startServer(t, Options{Backend: NewMemBackend(64 << 20), Logger: log,
		ReplyTimeout: 200 * time.Millisecond, MaxConnInFlightBytes: 8 << 20})
	r := dialRaw(t, addr)
	r.Conn.(*net.TCPConn).SetReadBuffer(64 << 10)
	r.greet(flagCFixedNewstyle)
	r.send(optionBytes(optGo, infoData("disk")))
	for range 3 {
		r.readReply()
	}
	var reqs []byte
	for i := range 64 {
		reqs = append(reqs, requestBytes(cmdRead, 0, uint64(i), uint64(i)<<20, 1<<20, nil)...)
	}
	go r.Write(reqs) // blocks once the server stops reading
	select {
	case <-logged:
	case <-time.After(10 * time.Second):
		buf := make([]byte, 1<<20)
		t.Fatalf("a client that takes no replies was not closed\n%s", buf[:runtime.Stack(buf, true)])
	}
	n, _ := io.Copy(io.Discard, r.Conn) // ends at the server's close
	if n >= 64<<20 {
		t.Fatalf("all %d bytes of replies came", n)
	}
	s.CloseClients(t.Context())
}

// signalWriter closes ch the first time a write contains match.
type signalWriter struct {
	match []byte
	ch    chan struct{}
	once  sync.Once
}

func (w *signalWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, w.match) {
		w.once.Do(func() { close(w.ch) })
	}
	return len(p), nil
}

// TestMaxConnections: one connection past the bound is closed at once.
func TestMaxConnections(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(testSize), MaxConnections: 2})
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.recv(18) // the greeting comes once the connection counts
	b.recv(18)
	if n := s.Open(); n != 2 {
		t.Fatalf("Open() = %d, want 2", n)
	}
	dialRaw(t, addr).expectClosed()
	if n := s.Stats().RefusedConnections; n != 1 {
		t.Fatalf("RefusedConnections = %d, want 1", n)
	}
	a.Close()
	// b still works; so does a new connection once a has gone (the server
	// notices a's close when it reads).
	b.send(binary32(flagCFixedNewstyle))
	b.send(optionBytes(optGo, infoData("disk")))
	for range 3 {
		b.readReply()
	}
	b.checkTransmission()
}

// TestHandshakeLimit: a client that connects and sends nothing is closed
// after HandshakeTimeout.
func TestHandshakeLimit(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(testSize), HandshakeTimeout: 100 * time.Millisecond})
	conns := make([]*raw, 50)
	for i := range conns {
		conns[i] = dialRaw(t, addr)
	}
	start := time.Now()
	for _, r := range conns {
		r.recv(18)
		r.expectClosed()
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("idle connections closed after %v", d)
	}
}

func binary32(v uint32) []byte { return []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
