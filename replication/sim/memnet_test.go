package sim

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"
)

// pair dials b from a and returns both ends.
func pair(t *testing.T, n *Network) (client, server io.ReadWriteCloser) {
	t.Helper()
	ln, err := n.Host("b").Listen("b")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	c, err := n.Host("a").Dial(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return c, s
}

func TestConnDeliversInOrder(t *testing.T) {
	n := NewNetwork()
	c, s := pair(t, n)
	go func() {
		for i := range 100 {
			if i == 50 {
				n.SetDelay("a", "b", 5*time.Millisecond)
			}
			c.Write([]byte{byte(i)})
		}
		c.Close()
	}()
	got, err := io.ReadAll(s)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 100 {
		t.Fatalf("read %d bytes, want 100", len(got))
	}
	for i, b := range got {
		if b != byte(i) {
			t.Fatalf("byte %d is %d", i, b)
		}
	}
}

func TestConnReadDeadline(t *testing.T) {
	n := NewNetwork()
	c, s := pair(t, n)
	_ = c
	sc := s.(*conn)
	sc.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := sc.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	// A deadline moved into the past wakes a read that waits.
	sc.SetReadDeadline(time.Time{})
	done := make(chan error)
	go func() { _, err := sc.Read(make([]byte, 1)); done <- err }()
	sc.SetReadDeadline(time.Now())
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the deadline moved: %v", err)
	}
}

func TestConnResetAndHole(t *testing.T) {
	n := NewNetwork()
	c, s := pair(t, n)
	n.SetHole("a", "b", true)
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	s.(*conn).SetReadDeadline(time.Now().Add(5 * time.Millisecond))
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a black hole delivered: %v", err)
	}
	s.(*conn).SetReadDeadline(time.Time{})
	done := make(chan error)
	go func() { _, err := s.Read(make([]byte, 1)); done <- err }()
	n.Reset("a", "b")
	if err := <-done; !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read after reset: %v", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write after reset: %v", err)
	}
	n.Cut("a", "b")
	if _, err := n.Host("a").Dial(context.Background(), "b"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial across a cut: %v", err)
	}
}

// TestHoleHoldsThenDelivers: bytes written into a black hole are held, as
// TCP retransmits them, and arrive in order before later ones once it
// closes: a stream never loses bytes from its middle.
func TestHoleHoldsThenDelivers(t *testing.T) {
	n := NewNetwork()
	c, s := pair(t, n)
	c.Write([]byte("ab"))
	n.SetHole("a", "b", true)
	c.Write([]byte("cd"))
	buf := make([]byte, 8)
	k, err := s.Read(buf)
	if err != nil || string(buf[:k]) != "ab" {
		t.Fatalf("before the hole: %q, %v", buf[:k], err)
	}
	n.SetHole("a", "b", false)
	c.Write([]byte("ef"))
	got := ""
	for len(got) < 4 {
		k, err := s.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		got += string(buf[:k])
	}
	if got != "cdef" {
		t.Fatalf("after the hole: %q, want cdef", got)
	}
}

// TestDownHostReachesNobody: a host that went Down (a dead process whose
// goroutines still run until it is closed) dials and listens no more; its
// restart, a new view of the same name, does both.
func TestDownHostReachesNobody(t *testing.T) {
	n := NewNetwork()
	if _, err := n.Host("b").Listen("b"); err != nil {
		t.Fatal(err)
	}
	dead := n.Host("a")
	n.Down("a")
	if _, err := dead.Dial(context.Background(), "b"); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial from a host that went down: %v", err)
	}
	if _, err := dead.Listen("a"); err == nil {
		t.Fatal("a host that went down listens again")
	}
	again := n.Host("a")
	if _, err := again.Listen("a"); err != nil {
		t.Fatalf("listen after a restart: %v", err)
	}
	c, err := again.Dial(context.Background(), "b")
	if err != nil {
		t.Fatalf("dial after a restart: %v", err)
	}
	c.Close()
}
