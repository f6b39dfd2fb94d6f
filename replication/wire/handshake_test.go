package wire

import (
	"bufio"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// pipe returns both ends of a synchronous in-memory connection; a deadline
// keeps a broken test from hanging.
func pipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	a, b := net.Pipe()
	deadline := time.Now().Add(10 * time.Second)
	a.SetDeadline(deadline)
	b.SetDeadline(deadline)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

type outcome struct {
	remote Hello
	err    error
}

// handshakePair runs a dialer and a listener against each other.
func handshakePair(t *testing.T, dh, lh Hello, dsecret, lsecret []byte) (d, l outcome) {
	t.Helper()
	dc, lc := pipe(t)
	done := make(chan outcome)
	go func() {
		r, err := Handshake(lc, lh, lsecret, false)
		done <- outcome{r, err}
	}()
	r, err := Handshake(dc, dh, dsecret, true)
	d = outcome{r, err}
	if err != nil {
		dc.Close() // the listener may wait for a frame that will not come
	}
	return d, <-done
}

func TestHandshakeSucceeds(t *testing.T) {
	dh, lh := testHello(1), testHello(2)
	lh.Role = Primary
	dc, lc := pipe(t)
	done := make(chan outcome)
	go func() {
		r, err := Handshake(lc, lh, []byte("secret"), false)
		done <- outcome{r, err}
	}()
	dRemote, err := Handshake(dc, dh, []byte("secret"), true)
	if err != nil {
		t.Fatalf("dialer: %v", err)
	}
	l := <-done
	if l.err != nil {
		t.Fatalf("listener: %v", l.err)
	}
	if dRemote.NodeID != 2 || dRemote.Role != Primary || dRemote.Gen != lh.Gen || dRemote.LastSeq != lh.LastSeq {
		t.Errorf("dialer learned %+v", dRemote)
	}
	if l.remote.NodeID != 1 || l.remote.Flags != DiscardMyData || l.remote.Resource != "r0" {
		t.Errorf("listener learned %+v", l.remote)
	}
	if dRemote.Nonce == lh.Nonce || l.remote.Nonce == dh.Nonce {
		t.Error("handshake kept the caller's nonce instead of a fresh one")
	}

	// The handshake read nothing past its frames: the link goes on.
	go dc.Write(AppendPing(nil, 42))
	f, err := NewReader(bufio.NewReader(lc)).Next()
	if err != nil || f.Type != TypePing {
		t.Fatalf("after handshake: %v %v", f.Type, err)
	}
}

// wantRefused checks that err is a refusal for reason by the given side.
func wantRefused(t *testing.T, who string, err error, reason Reason, byPeer bool) {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("%s: got %v, want a refusal for %v", who, err, reason)
	}
	if re.Reason != reason || re.ByPeer != byPeer {
		t.Fatalf("%s: got %v (by peer %v), want %v by peer %v", who, err, re.ByPeer, reason, byPeer)
	}
	t.Logf("%s: %v", who, err)
}

func TestHandshakeRefusals(t *testing.T) {
	for _, tc := range []struct {
		name     string
		edit     func(d, l *Hello)
		dsec     string
		reason   Reason
		byDialer bool // the dialer refuses, not the listener
	}{
		{"wrong secret", func(d, l *Hello) {}, "other", ReasonWrongSecret, false},
		{"other resource", func(d, l *Hello) { l.Resource = "r1" }, "", ReasonOtherResource, false},
		{"other size", func(d, l *Hello) { d.Size = 1 << 20 }, "", ReasonOtherSize, false},
		{"newer dialer", func(d, l *Hello) { d.Version = Version + 1 }, "", ReasonUnknownVersion, false},
		{"newer listener", func(d, l *Hello) { l.Version = Version + 1 }, "", ReasonUnknownVersion, false},
		{"talking to itself", func(d, l *Hello) { l.NodeID = d.NodeID }, "", ReasonSameNode, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dh, lh := testHello(1), testHello(2)
			tc.edit(&dh, &lh)
			dsec := "secret"
			if tc.dsec != "" {
				dsec = tc.dsec
			}
			d, l := handshakePair(t, dh, lh, []byte(dsec), []byte("secret"))
			wantRefused(t, "dialer", d.err, tc.reason, !tc.byDialer)
			wantRefused(t, "listener", l.err, tc.reason, tc.byDialer)
		})
	}
}

// fakePeer plays the other side with fn over one end of a pipe and drains
// whatever comes after; it returns the other end.
func fakePeer(t *testing.T, fn func(c net.Conn, r *Reader)) net.Conn {
	t.Helper()
	ours, theirs := pipe(t)
	go func() {
		fn(theirs, NewReader(theirs))
		io.Copy(io.Discard, theirs)
	}()
	return ours
}

func TestHandshakeDialerRefusesBadListenerProof(t *testing.T) {
	lh := testHello(2)
	conn := fakePeer(t, func(c net.Conn, r *Reader) {
		r.Next()
		b, _ := AppendHello(nil, &lh)
		c.Write(b)
		r.Next()
		var forged [ProofSize]byte
		rand.Read(forged[:])
		c.Write(AppendAuth(nil, forged))
	})
	_, err := Handshake(conn, testHello(1), []byte("secret"), true)
	wantRefused(t, "dialer", err, ReasonWrongSecret, false)
}

func TestHandshakePeerRefusesBusy(t *testing.T) {
	conn := fakePeer(t, func(c net.Conn, r *Reader) {
		r.Next()
		c.Write(AppendRefuse(nil, ReasonBusy, "already connected to node 3"))
	})
	_, err := Handshake(conn, testHello(1), []byte("secret"), true)
	wantRefused(t, "dialer", err, ReasonBusy, true)
	if re := err.(*RefusedError); re.Text != "already connected to node 3" {
		t.Fatalf("text %q", re.Text)
	}
}

// Garbage ends the handshake at once with an error, never a panic or a
// large allocation.
func TestHandshakeGarbage(t *testing.T) {
	hello := func() []byte { h := testHello(9); b, _ := AppendHello(nil, &h); return b }
	random := make([]byte, 4096)
	rand.Read(random)
	huge := make([]byte, HeaderSize)
	putHeader(huge, TypeHello, 0, MaxBodySize)
	for _, tc := range []struct {
		name   string
		dialer bool
		in     []byte
		want   error
	}{
		{"http request", false, []byte("GET / HTTP/1.1\r\nHost: peer\r\n\r\n"), ErrBadMagic},
		{"http response", true, []byte("HTTP/1.1 400 Bad Request\r\n\r\n"), ErrBadMagic},
		{"random bytes", false, random, ErrBadMagic},
		{"huge length", false, huge, ErrFrameTooLarge},
		{"truncated hello", false, hello()[:40], io.ErrUnexpectedEOF},
		{"hello cut in header", true, hello()[:7], io.ErrUnexpectedEOF},
		{"nothing", false, nil, io.EOF},
		{"ping instead of hello", false, AppendPing(nil, 1), ErrUnexpectedFrame},
		{"empty refuse", true, mustFrame(appendFrame(nil, TypeRefuse, 0, nil)), ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conn := fakePeer(t, func(c net.Conn, r *Reader) {
				if tc.dialer {
					r.Next()
				}
				// Write alongside the drain: a pipe write waits for the
				// reader, and the handshake stops reading at the first
				// bad header.
				go func() { c.Write(tc.in); c.Close() }()
			})
			start := time.Now()
			_, err := Handshake(conn, testHello(1), []byte("secret"), tc.dialer)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if time.Since(start) > 2*time.Second {
				t.Fatalf("took %v", time.Since(start))
			}
			t.Log(err)
		})
	}
}

func mustFrame(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// A refusal for garbage reaches the peer when it listens.
func TestHandshakeGarbageIsRefused(t *testing.T) {
	got := make(chan error, 1)
	conn := fakePeer(t, func(c net.Conn, r *Reader) {
		go c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
		f, err := r.Next()
		if err == nil {
			var rf Refuse
			rf, err = ParseRefuse(f.Body)
			if err == nil && rf.Reason != ReasonProtocolError {
				err = errors.New(rf.Reason.String())
			}
		}
		got <- err
	})
	_, err := Handshake(conn, testHello(1), []byte("secret"), false)
	wantRefused(t, "listener", err, ReasonProtocolError, false)
	if err := <-got; err != nil {
		t.Fatalf("peer did not read a protocol-error refusal: %v", err)
	}
}

// recordingConn keeps a copy of everything written through it.
type recordingConn struct {
	net.Conn
	sent []byte
}

func (c *recordingConn) Write(p []byte) (int, error) {
	c.sent = append(c.sent, p...)
	return c.Conn.Write(p)
}

// A dialer's frames recorded in one session do not open another: the
// listener's fresh nonce makes the old proof fail.
func TestHandshakeReplayRefused(t *testing.T) {
	dh, lh := testHello(1), testHello(2)
	dc, lc := pipe(t)
	rec := &recordingConn{Conn: dc}
	done := make(chan error)
	go func() {
		_, err := Handshake(lc, lh, []byte("secret"), false)
		done <- err
	}()
	if _, err := Handshake(rec, dh, []byte("secret"), true); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	frames := readAll(t, rec.sent) // Hello, Auth, Ready
	if len(frames) != 3 {
		t.Fatalf("recorded %d frames", len(frames))
	}

	conn := fakePeer(t, func(c net.Conn, r *Reader) {
		c.Write(mustFrame(appendFrame(nil, TypeHello, 0, frames[0].Body)))
		r.Next()
		c.Write(mustFrame(appendFrame(nil, TypeAuth, 0, frames[1].Body)))
	})
	_, err := Handshake(conn, lh, []byte("secret"), false)
	wantRefused(t, "listener", err, ReasonWrongSecret, false)
}
