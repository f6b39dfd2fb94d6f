package nbdserver

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestWaitingBackendOverlaps checks that small writes to a Backend that
// waits (as a mirrored write waits for its peer) run side by side rather
// than one after another on the reader.
func TestWaitingBackendOverlaps(t *testing.T) {
	const n, wait = 64, 2 * time.Millisecond
	tb := newTestBackend(1 << 20)
	tb.hold = func(op string, _ int64) {
		if op == "write" {
			time.Sleep(wait)
		}
	}
	_, addr := startServer(t, Options{Backend: tb})
	c := dial(t, addr)
	var wg sync.WaitGroup
	for round := range 3 { // the first round teaches the server that writes wait
		start := time.Now()
		for i := range n {
			wg.Go(func() {
				if _, err := c.WriteAt(make([]byte, 4096), int64(i)*4096, 0); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if d := time.Since(start); round > 0 && d > n*wait/4 {
			t.Fatalf("round %d: %d writes of %v took %v: they did not overlap (most ran at once: %d)",
				round, n, wait, d, tb.maxRun.Load())
		}
	}
}

// TestClientNotReading sends many reads without reading the replies, so the
// socket fills and replies are left half-written, then checks every reply
// arrives whole and in one piece.
func TestClientNotReading(t *testing.T) {
	// Run every read inline, so replies leave from the reader: the path
	// under test. Restored after the servers stop.
	inlineOverride = 1
	t.Cleanup(func() { inlineOverride = 0 })
	// Payloads up to copyMax are copied next to their header, larger
	// ones are referenced.
	for _, size := range []int{16 << 10, 64 << 10} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { clientNotReading(t, size) })
	}
}

func clientNotReading(t *testing.T, size int) {
	const n = 400
	mem := NewMemBackend(8 << 20)
	mem.WriteAt(pattern(8<<20, 9), 0)
	_, addr := startServer(t, Options{Backend: mem})
	r := goRaw(t, addr)
	var reqs []byte
	for i := range n {
		reqs = append(reqs, requestBytes(cmdRead, 0, uint64(i), uint64(i%128*size), uint32(size), nil)...)
	}
	sent := make(chan error, 1)
	go func() { _, err := r.Write(reqs); sent <- err }()
	time.Sleep(100 * time.Millisecond) // let the server fill the socket
	seen := make(map[uint64]bool)
	want := make([]byte, size)
	for range n {
		errno, h := r.readSimpleReply()
		got := r.recv(size)
		mem.ReadAt(want, int64(h%128)*int64(size))
		if errno != 0 || seen[h] || h >= n || !bytes.Equal(got, want) {
			t.Fatalf("reply handle %d errno %d (seen before %v) data ok %v", h, errno, seen[h], bytes.Equal(got, want))
		}
		seen[h] = true
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	r.checkTransmission()
}
