package nbdserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/testtools"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// goRaw negotiates a raw connection into transmission.
func goRaw(t *testing.T, addr string) *raw {
	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle | flagCNoZeroes)
	r.send(optionBytes(optExportName, nil))
	r.recv(10)
	return r
}

func TestGarbageClosesOnlyThatConnection(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	good := dial(t, addr)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ioErr error
	wg.Go(func() {
		p := make([]byte, 4096)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := good.WriteAt(p, int64(i%16)*4096, 0); err != nil {
				ioErr = err
				return
			}
		}
	})
	for _, junk := range [][]byte{
		bytes.Repeat([]byte{0xde, 0xad}, 20),                       // bad magic
		requestBytes(cmdRead, 0, 1, 0, 8, nil)[:20],                // truncated header, then EOF
		append(requestBytes(cmdWrite, 0, 1, 0, 100, nil), 1, 2, 3), // truncated payload
	} {
		r := goRaw(t, addr)
		r.send(junk)
		if len(junk) < requestHeaderSize || junk[0] != 0xde {
			r.Conn.(interface{ CloseWrite() error }).CloseWrite()
		}
		r.expectClosed()
	}
	close(stop)
	wg.Wait()
	if ioErr != nil {
		t.Fatalf("other client's I/O failed: %v", ioErr)
	}
	if _, err := good.ReadAt(make([]byte, 8), 0); err != nil {
		t.Fatal(err)
	}
	if n := s.Connections(); n != 1 {
		t.Fatalf("Connections() = %d after the bad clients left", n)
	}
}

func TestDisconnect(t *testing.T) {
	mem := NewMemBackend(1 << 20)
	_, addr := startServer(t, Options{Backend: mem})
	r := goRaw(t, addr)
	// A write, DISC, then a write that must never happen, all in one segment.
	var b []byte
	b = append(b, requestBytes(cmdWrite, 0, 1, 0, 4, []byte("AAAA"))...)
	b = append(b, requestBytes(cmdDisc, 0, 2, 0, 0, nil)...)
	b = append(b, requestBytes(cmdWrite, 0, 3, 4, 4, []byte("BBBB"))...)
	r.send(b)
	if errno, h := r.readSimpleReply(); errno != 0 || h != 1 {
		t.Fatalf("reply errno %d handle %d", errno, h)
	}
	r.expectClosed()
	got := make([]byte, 8)
	mem.ReadAt(got, 0)
	if string(got) != "AAAA\x00\x00\x00\x00" {
		t.Fatalf("backend holds %q: the write after DISC happened", got)
	}
}

// TestOutOfOrderReplies stalls one large read and expects the requests sent
// after it to be answered first.
func TestOutOfOrderReplies(t *testing.T) {
	tb := newTestBackend(1 << 20)
	g := newGate()
	tb.hold = func(op string, off int64) {
		if op == "read" && off == 0 {
			g.wait()
		}
	}
	_, addr := startServer(t, Options{Backend: tb})
	c := dial(t, addr)
	slow := make(chan error, 1)
	go func() {
		_, err := c.ReadAt(make([]byte, 128<<10), 0) // larger than inlineMax: never inline
		slow <- err
	}()
	for !isRunning(tb) {
		time.Sleep(time.Millisecond)
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			if _, err := c.WriteAt(make([]byte, 4096), int64(256<<10+i*4096), 0); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if g.isOpen() {
		t.Fatal("gate opened early")
	}
	g.open()
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
}

func isRunning(tb *testBackend) bool { return tb.running.Load() > 0 }

// TestBackPressure checks that no more than MaxInFlight requests are taken
// from one connection at once.
func TestBackPressure(t *testing.T) {
	tb := newTestBackend(1 << 20)
	g := newGate()
	tb.hold = func(string, int64) { g.wait() }
	s, addr := startServer(t, Options{Backend: tb, MaxInFlight: 4})
	c := dial(t, addr)
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if _, err := c.WriteAt(make([]byte, 128<<10), int64(i%8)*(128<<10), 0); err != nil {
				t.Error(err)
			}
		})
	}
	deadline := time.Now().Add(2 * time.Second)
	for tb.running.Load() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // give a fifth request the chance to slip in
	if n := tb.running.Load(); n != 4 {
		t.Errorf("%d requests running with MaxInFlight 4", n)
	}
	g.open()
	wg.Wait()
	if m := tb.maxRun.Load(); m > 4 {
		t.Errorf("up to %d requests ran at once with MaxInFlight 4", m)
	}
	if st := s.Stats(); st.Writes != 20 {
		t.Errorf("Writes = %d", st.Writes)
	}
}

// TestShutdownDrains stalls requests, shuts down, and expects Shutdown to
// wait for them and their replies to arrive.
func TestShutdownDrains(t *testing.T) {
	tb := newTestBackend(1 << 20)
	g := newGate()
	tb.hold = func(op string, off int64) {
		if op == "write" {
			g.wait()
		}
	}
	s := New(Options{Name: "disk", Backend: tb, Logger: testLogger(t)})
	addr, served := serveLoopback(t, s)
	c := dial(t, addr)
	const n = 8
	results := make(chan error, n)
	for i := range n {
		go func() {
			_, err := c.WriteAt(bytes.Repeat([]byte{byte(i + 1)}, 128<<10), int64(i)*(128<<10), 0)
			results <- err
		}()
	}
	for tb.running.Load() < n {
		time.Sleep(time.Millisecond)
	}
	shut := make(chan error, 1)
	go func() { shut <- s.Shutdown(context.Background()) }()
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v with requests in flight", err)
	case <-time.After(50 * time.Millisecond):
	}
	g.open()
	for range n {
		if err := <-results; err != nil {
			t.Errorf("in-flight write: %v", err)
		}
	}
	if err := <-shut; err != nil {
		t.Fatal(err)
	}
	if err := <-served; !errors.Is(err, net_ErrClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("request after Shutdown succeeded")
	}
	b := make([]byte, 1)
	tb.MemBackend.ReadAt(b, 7*(128<<10))
	if b[0] != 8 {
		t.Fatal("drained write not applied")
	}
}

func TestShutdownTimeout(t *testing.T) {
	tb := newTestBackend(1 << 20)
	g := newGate()
	defer g.open()
	tb.hold = func(op string, _ int64) {
		if op == "sync" {
			g.wait()
		}
	}
	s := New(Options{Name: "disk", Backend: tb, Logger: testLogger(t)})
	addr, _ := serveLoopback(t, s)
	c := dial(t, addr)
	go c.Flush()
	for tb.running.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v, want deadline exceeded", err)
	}
}

func TestCloseClients(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	c1, c2 := dial(t, addr), dial(t, addr)
	r := dialRaw(t, addr) // still negotiating
	r.greet(flagCFixedNewstyle)
	if _, err := c1.WriteAt([]byte("x"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.CloseClients(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*nbdclient.Client{c1, c2} {
		if _, err := c.ReadAt(make([]byte, 1), 0); err == nil {
			t.Fatal("request succeeded after CloseClients")
		}
	}
	r.expectClosed()
	if n := s.Connections(); n != 0 {
		t.Fatalf("Connections() = %d", n)
	}
	c3 := dial(t, addr) // still listening
	if _, err := c3.ReadAt(make([]byte, 1), 0); err != nil {
		t.Fatal(err)
	}
}

func TestNbdinfo(t *testing.T) {
	testtools.Need(t, "nbdinfo")
	nbdinfo, err := exec.LookPath("nbdinfo")
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, Options{Backend: NewMemBackend(3 << 20)})
	out, err := exec.Command(nbdinfo, "--json", "nbd://"+addr).Output()
	if err != nil {
		t.Fatalf("nbdinfo: %v", err)
	}
	var info struct {
		Exports []map[string]any `json:"exports"`
	}
	if err := json.Unmarshal(out, &info); err != nil || len(info.Exports) != 1 {
		t.Fatalf("nbdinfo output %s: %v", out, err)
	}
	e := info.Exports[0]
	for _, k := range []string{"can_flush", "can_fua", "can_trim", "can_zero", "can_multi_conn"} {
		if e[k] != true {
			t.Errorf("%s = %v", k, e[k])
		}
	}
	for _, k := range []string{"is_read_only", "is_rotational", "can_df"} {
		if e[k] != false {
			t.Errorf("%s = %v", k, e[k])
		}
	}
	if e["export-size"] != float64(3<<20) {
		t.Errorf("export-size = %v", e["export-size"])
	}
}

func TestHandshakeTimeout(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(4096), HandshakeTimeout: 50 * time.Millisecond})
	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle)
	start := time.Now()
	r.expectClosed() // no option sent
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("closed after %v", d)
	}
	goRaw(t, addr).checkTransmission() // the timeout ends with negotiation
}

// TestOneInFlight runs concurrent requests with MaxInFlight 1, inline and
// not: the reader must never wait on a slot that only its own held replies
// would free.
func TestOneInFlight(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20), MaxInFlight: 1})
	c := dial(t, addr)
	var wg sync.WaitGroup
	for i := range 16 {
		wg.Go(func() {
			for j := range 20 {
				n := 512 << (j % 10) // inline and not
				if _, err := c.WriteAt(make([]byte, n), int64(i)*4096, 0); err != nil {
					t.Error(err)
					return
				}
				if err := c.Flush(); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
