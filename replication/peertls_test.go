package replication

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// peerTLS returns the link TLS configuration of a node whose certificate,
// signed by ca, names it mine, and which expects its peer to be peer.
func peerTLS(t testing.TB, ca *tlstest.CA, mine, peer string) *tls.Config {
	t.Helper()
	cert, err := ca.IssuePeer(mine)
	if err != nil {
		t.Fatal(err)
	}
	return PeerTLSConfig(cert, ca.Pool(), peer)
}

func newCA(t testing.TB, name string) *tlstest.CA {
	t.Helper()
	ca, err := tlstest.New(name)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// TestPeerTLSPair: a pair over mutual TLS gets in sync, mirrors writes
// (the link's reader reads the TLS connection without polling it, though
// polling is configured) and resyncs what was written while apart.
func TestPeerTLSPair(t *testing.T) {
	ca := newCA(t, "pair CA")
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		pc.PeerTLS = peerTLS(t, ca, "node-a", "node-b")
		sc.PeerTLS = peerTLS(t, ca, "node-b", "node-a")
		pc.Secret, sc.Secret = nil, nil // TLS alone authenticates
		pc.PeerPoll, sc.PeerPoll = 100*time.Microsecond, 100*time.Microsecond
		pc.JournalSize, sc.JournalSize = 4<<20, 4<<20
	}, nil)
	p.waitInSync(t)
	l := p.primary.currentLink()
	if !isTLS(l.conn) {
		t.Fatalf("the link runs on a %T, not TLS", l.conn)
	}
	for i := range 64 {
		if _, err := p.primary.WriteAt(bytes.Repeat([]byte{byte(i)}, 4096), int64(i)*8192); err != nil {
			t.Fatal(err)
		}
	}
	p.sameImages(t)
	if s := p.secondary.Status().Peer; s.PolledReads != 0 {
		t.Fatalf("the Secondary's reader polled a TLS link %d times", s.PolledReads)
	}

	p.primary.Disconnect()
	until(t, "the link is down", func() bool { return !p.primary.Mirroring() })
	for i := range 16 {
		if _, err := p.primary.WriteAt(bytes.Repeat([]byte{0xA0 + byte(i)}, 4096), int64(i)*65536); err != nil {
			t.Fatal(err)
		}
	}
	p.primary.Connect()
	p.waitInSync(t)
	p.sameImages(t)
}

// meetOver runs secure and the wire handshake on both ends of a loopback
// connection, the dialer with dcfg and the listener with lcfg (nil: no
// TLS), and returns each side's error.
func meetOver(t *testing.T, dcfg, lcfg *tls.Config) (derr, lerr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		done <- handshakeOver(c, lcfg, false, 2)
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	derr = handshakeOver(c, dcfg, true, 1)
	c.Close()
	return derr, <-done
}

// handshakeOver is what meet does on c up to authentication.
func handshakeOver(c net.Conn, cfg *tls.Config, dialer bool, node uint64) error {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	sc, err := secure(c, cfg, dialer)
	if err != nil {
		return err
	}
	h := wire.Hello{Resource: "r0", Size: 1 << 20, NodeID: node, Role: wire.Secondary, Disk: wire.UpToDate}
	_, err = wire.Handshake(sc, h, []byte("secret-0123"), dialer)
	return err
}

func TestPeerTLSRefusals(t *testing.T) {
	ca, other := newCA(t, "pair CA"), newCA(t, "another CA")
	a, b := peerTLS(t, ca, "node-a", "node-b"), peerTLS(t, ca, "node-b", "node-a")
	for _, tc := range []struct {
		name           string
		dialer, listen *tls.Config
		// what each side's error says; "refused:tls" is a
		// *wire.RefusedError of reason ReasonTLS.
		dialerErr, listenErr string
	}{
		{"both TLS", a, b, "", ""},
		{"both plain", nil, nil, "", ""},
		{"dialer without TLS", nil, b, "refused:tls", "refused:tls"},
		{"listener without TLS", a, nil, "refused:tls", "refused:tls"},
		{"dialer from another CA", peerTLS(t, other, "node-a", "node-b"), b, "certificate signed by unknown authority", "tls"},
		{"listener from another CA", a, peerTLS(t, other, "node-b", "node-a"), "certificate signed by unknown authority", "tls"},
		{"listener has another name", a, peerTLS(t, ca, "node-c", "node-a"), "node-b", "tls"},
		{"dialer has another name", peerTLS(t, ca, "node-c", "node-b"), b, "tls", "node-a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			derr, lerr := meetOver(t, tc.dialer, tc.listen)
			checkRefusal(t, "dialer", derr, tc.dialerErr)
			checkRefusal(t, "listener", lerr, tc.listenErr)
		})
	}
}

func checkRefusal(t *testing.T, side string, err error, want string) {
	t.Helper()
	var ref *wire.RefusedError
	switch {
	case want == "" && err != nil:
		t.Errorf("%s: %v", side, err)
	case want == "refused:tls" && (!errors.As(err, &ref) || ref.Reason != wire.ReasonTLS):
		t.Errorf("%s: %v; want a refusal for TLS", side, err)
	case want != "" && want != "refused:tls" && (err == nil || !strings.Contains(err.Error(), want)):
		t.Errorf("%s: %v; want an error saying %q", side, err, want)
	}
}

// TestPeerHandshakeLimit: an accepted peer connection that says nothing is
// closed at the handshake limit, and connections beyond the bound on those
// not yet authenticated are closed at once; a real peer still connects.
func TestPeerHandshakeLimit(t *testing.T) {
	const limit = 300 * time.Millisecond
	p := openPairWith(t, testSize, func(pc, sc *Config) {
		sc.HandshakeLimit, sc.MaxHandshakes = limit, 2
		pc.Peer = "" // the Primary dials later
		pc.JournalSize, sc.JournalSize = 4<<20, 4<<20
	}, nil)
	addr := p.secondary.cfg.PeerListen
	silent := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	start := time.Now()
	first, second := silent(), silent()
	// The listener takes a slot per connection in order: the third finds
	// none (the first two wait out the limit), and is closed at once.
	third := silent()
	if _, err := third.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("a connection beyond the bound: read %v, want EOF", err)
	}
	if d := time.Since(start); d >= limit {
		t.Fatalf("the connection beyond the bound was closed after %v, not at once", d)
	}
	for _, c := range []net.Conn{first, second} {
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("a silent connection: read %v, want EOF", err)
		}
	}
	if d := time.Since(start); d < limit || d > limit+3*time.Second {
		t.Fatalf("the silent connections were closed after %v, want the limit of %v", d, limit)
	}
	p.primary.cfg.Peer = addr
	p.primary.wg.Add(1)
	go func() { defer p.primary.wg.Done(); p.primary.dialLoop() }()
	p.waitInSync(t)
}

// countWrites counts the writes made to its connection.
type countWrites struct {
	net.Conn
	writes atomic.Int64
}

func (c *countWrites) Write(b []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(b)
}

// TestPeerTLSWritesGather: a large write on a TLS link seals 16 KiB
// records but reaches the socket in writes of peerWriteChunk, and arrives
// whole; the TLS layer's own writes (the handshake) still go out at once.
func TestPeerTLSWritesGather(t *testing.T) {
	ca := newCA(t, "pair CA")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		c   net.Conn
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c, err = secure(c, peerTLS(t, ca, "node-b", "node-a"), false)
		}
		accepted <- result{c, err}
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	counted := &countWrites{Conn: raw}
	dialer, err := secure(counted, peerTLS(t, ca, "node-a", "node-b"), true)
	if err != nil {
		t.Fatal(err)
	}
	r := <-accepted
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.c.Close()

	const size = 1 << 20
	want := make([]byte, size)
	rand.Read(want)
	before := counted.writes.Load()
	wrote := make(chan error, 1)
	go func() {
		_, err := dialer.Write(want)
		wrote <- err
	}()
	got := make([]byte, size)
	if _, err := io.ReadFull(r.c, got); err != nil {
		t.Fatal(err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the bytes read differ from those written")
	}
	// 1 MiB is 64 records: one write each without gathering.
	if n, most := counted.writes.Load()-before, int64(size/peerWriteChunk+1); n > most {
		t.Fatalf("1 MiB went out in %d writes, want at most %d", n, most)
	}
}
