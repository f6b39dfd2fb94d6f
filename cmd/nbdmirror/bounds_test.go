package main

import (
	"context"
	be "encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

// procKiB reads a field of /proc/PID/status, such as VmRSS or VmHWM (the
// peak of VmRSS), in KiB.
func procKiB(t *testing.T, pid int, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

// hostileRequests writes count requests of typ for 32 MiB each (with a
// payload for WRITE) on nc and never reads a reply.
func hostileRequests(nc net.Conn, typ uint16, count int, diskSize int64) error {
	const size = 32 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i*7 + i>>12)
	}
	for i := range count {
		var h [28]byte
		be.BigEndian.PutUint32(h[0:], 0x25609513)
		be.BigEndian.PutUint16(h[6:], typ)
		be.BigEndian.PutUint64(h[8:], uint64(i))
		be.BigEndian.PutUint64(h[16:], uint64(diskSize/2+int64(i)*size%(diskSize/2))) // the other client stays below
		be.BigEndian.PutUint32(h[24:], size)
		if _, err := nc.Write(h[:]); err != nil {
			return err
		}
		if typ == 1 {
			if _, err := nc.Write(payload); err != nil {
				return err
			}
		}
	}
	return nil
}

// TestHostileClientBounded: a client sends 128 writes of 32 MiB, then 128
// reads of 32 MiB, and never reads a reply. The daemon's peak RSS stays
// within --max-inflight-bytes of where it started (plus the Go runtime's
// slack), another client is served all along, and the hostile connection is
// closed once its replies have made no progress for --nbd-reply-timeout.
func TestHostileClientBounded(t *testing.T) {
	const bound = 128 << 20
	n := newNode(t, "512M", "--primary", "--max-inflight-bytes", "128M", "--nbd-reply-timeout", "2s")
	n.start()
	pid := n.cmd.Process.Pid
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	other, err := nbdclient.Dial(ctx, n.nbd, "r0")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if err := writeRead(other, 0); err != nil { // the daemon warmed up
		t.Fatal(err)
	}
	start := procKiB(t, pid, "VmRSS") << 10

	nc, err := net.Dial("tcp", n.nbd)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.(*net.TCPConn).SetReadBuffer(64 << 10)
	if _, _, err := nbdclient.Negotiate(ctx, nc, "r0"); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() {
		err := hostileRequests(nc, 1, 128, 512<<20)
		if err == nil {
			err = hostileRequests(nc, 0, 128, 512<<20)
		}
		sent <- err
	}()

	// Another client keeps being served while the hostile one pushes.
	served, slowest := 0, time.Duration(0)
	closed := false
	for deadline := time.Now().Add(2 * time.Minute); !closed; served++ {
		if time.Now().After(deadline) {
			t.Fatalf("the hostile connection still open after 2 minutes\n%s", n.logs())
		}
		t0 := time.Now()
		if err := writeRead(other, int64(served%64)<<20); err != nil {
			t.Fatalf("the other client, request %d: %v", served, err)
		}
		slowest = max(slowest, time.Since(t0))
		closed = strings.Contains(n.logs(), "took no reply")
	}
	if slowest > 5*time.Second {
		t.Errorf("the other client waited %v for one write and read", slowest)
	}
	if err := <-sent; err == nil {
		t.Log("the hostile client sent everything before its connection was closed")
	}
	peak := procKiB(t, pid, "VmHWM") << 10
	t.Logf("RSS %d MiB before, peak %d MiB (bound %d MiB); the other client was served %d times, slowest %v",
		start>>20, peak>>20, bound>>20, served, slowest)
	if peak > start+bound+64<<20 {
		t.Fatalf("peak RSS %d MiB is more than %d MiB over the %d MiB at the start", peak>>20, (bound+64<<20)>>20, start>>20)
	}
	if _, err := io.Copy(io.Discard, nc); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Logf("hostile connection ended with %v", err)
	}
}

// writeRead writes 64 KiB at off and reads it back.
func writeRead(c *nbdclient.Client, off int64) error {
	want := make([]byte, 64<<10)
	for i := range want {
		want[i] = byte(off>>16) + byte(i)
	}
	if _, err := c.WriteAt(want, off, 0); err != nil {
		return err
	}
	got := make([]byte, len(want))
	if _, err := c.ReadAt(got, off); err != nil {
		return err
	}
	if string(got) != string(want) {
		return fmt.Errorf("data at %d differs", off)
	}
	return nil
}

// TestIdleConnectionsClosedAtHandshakeLimit: 1000 connections that open
// and send nothing are closed at --handshake-limit, four times over. Each
// time the daemon's open files come back to what they were, and its memory
// is reused, not kept: after the 4000 its RSS is within 24 MiB of the
// figure before (the Go runtime frees a closed connection's memory at its
// next collection and keeps it for reuse, so RSS does not drop back at
// once; a connection that leaked its goroutine and buffer, about 14 KiB,
// would leave 56 MiB).
func TestIdleConnectionsClosedAtHandshakeLimit(t *testing.T) {
	const limit = time.Second
	n := newNode(t, "16M", "--primary", "--handshake-limit", limit.String(), "--max-connections", "2000")
	n.start()
	pid := n.cmd.Process.Pid
	before, fds := procKiB(t, pid, "VmRSS"), openFiles(t, pid)
	var after int64
	for round := range 4 {
		r := idleConnections(t, n.nbd, pid, 1000)
		after = procKiB(t, pid, "VmRSS")
		t.Logf("round %d: closed %v to %v after connecting; RSS %d KiB before, %d KiB with 1000 idle connections, %d KiB after",
			round, r.first, r.last, before, r.during, after)
		if r.first < limit || r.last > limit+5*time.Second {
			t.Fatalf("closed between %v and %v after connecting, want at %v", r.first, r.last, limit)
		}
		if now := openFiles(t, pid); now > fds {
			t.Fatalf("%d open files after the connections closed, %d before", now, fds)
		}
	}
	if after > before+24<<10 {
		t.Fatalf("RSS %d KiB after 4000 idle connections, %d KiB before", after, before)
	}
}

// openFiles counts the open file descriptors of process pid.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	return len(fds)
}

// idleRound is what idleConnections saw.
type idleRound struct {
	first, last time.Duration // the earliest and latest close after connecting
	during      int64         // the daemon's RSS with all open, KiB
}

// idleConnections opens count connections to addr that read the greeting
// and send nothing, and waits until the server (process pid) has closed all
// of them.
func idleConnections(t *testing.T, addr string, pid, count int) idleRound {
	t.Helper()
	conns := make([]net.Conn, count)
	dialed := make([]time.Time, count)
	for i := range conns {
		dialed[i] = time.Now()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		defer c.Close()
		conns[i] = c
	}
	var greeted sync.WaitGroup
	errs := make(chan error, count)
	closedAt := make([]time.Time, count)
	for i, c := range conns {
		greeted.Add(1)
		go func() {
			c.SetReadDeadline(time.Now().Add(30 * time.Second))
			var hello [18]byte
			_, err := io.ReadFull(c, hello[:])
			greeted.Done()
			if err != nil {
				errs <- fmt.Errorf("connection %d: greeting: %w", i, err)
				return
			}
			if _, err := c.Read(hello[:]); err != io.EOF {
				errs <- fmt.Errorf("connection %d: want EOF at the handshake limit, got %v", i, err)
				return
			}
			closedAt[i] = time.Now()
			errs <- nil
		}()
	}
	greeted.Wait()
	r := idleRound{first: time.Hour}
	r.during = procKiB(t, pid, "VmRSS")
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for i, at := range closedAt {
		r.first, r.last = min(r.first, at.Sub(dialed[i])), max(r.last, at.Sub(dialed[i]))
	}
	return r
}
