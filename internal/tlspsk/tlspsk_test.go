package tlspsk

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

var (
	aliceKey = bytes.Repeat([]byte{0xa1}, 32)
	testKeys = Keys{"alice": aliceKey, "bob": bytes.Repeat([]byte{0xb0}, 16)}
)

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if b, err = net.Dial("tcp", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if a, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// pipe runs a server handshake and a test client's over loopback TCP and
// returns both ends' outcome.
func pipe(t *testing.T, tc testClient) (srv, cli *Conn, srvErr, cliErr error) {
	t.Helper()
	a, b := tcpPair(t)
	srv = Server(a, &Config{Keys: testKeys})
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			a.Close() // as a server does: the client's read ends
		}
		done <- err
	}()
	cli, cliErr = clientConn(b, tc)
	if cliErr != nil {
		b.Close()
	}
	return srv, cli, <-done, cliErr
}

func TestHandshake(t *testing.T) {
	for _, tc := range []struct {
		name   string
		client testClient
		alert  uint8 // 0: the handshake succeeds
	}{
		{"x25519", testClient{identity: "alice", key: aliceKey, shares: []uint16{groupX25519}, supported: []uint16{groupX25519}}, 0},
		{"p256", testClient{identity: "bob", key: testKeys["bob"], shares: []uint16{groupP256}, supported: []uint16{groupP256}}, 0},
		{"no session id", testClient{identity: "alice", key: aliceKey, shares: []uint16{groupX25519}, noSID: true}, 0},
		{"hello retry", testClient{identity: "alice", key: aliceKey, supported: []uint16{24, groupP256}}, 0},
		{"wrong key", testClient{identity: "alice", key: testKeys["bob"], shares: []uint16{groupX25519}}, alertDecryptError},
		{"unknown user", testClient{identity: "mallory", key: aliceKey, shares: []uint16{groupX25519}}, alertUnknownPSKIdentity},
		{"no group", testClient{identity: "alice", key: aliceKey, supported: []uint16{24}}, alertHandshakeFailure},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, cli, srvErr, cliErr := pipe(t, tc.client)
			if tc.alert == 0 {
				if srvErr != nil || cliErr != nil {
					t.Fatalf("server: %v, client: %v", srvErr, cliErr)
				}
				if srv.Identity() != tc.client.identity {
					t.Errorf("Identity() = %q, want %q", srv.Identity(), tc.client.identity)
				}
				echo(t, srv, cli, 100<<10)
				return
			}
			var ae AlertError
			if srvErr == nil || !errors.As(cliErr, &ae) || ae.Code != tc.alert || !ae.Remote {
				t.Fatalf("server: %v; client: %v, want alert %d", srvErr, cliErr, tc.alert)
			}
			if tc.alert == alertDecryptError && !errors.Is(srvErr, ErrWrongKey) {
				t.Errorf("server error %v does not say the key is wrong", srvErr)
			}
			t.Logf("refused: %v", srvErr)
		})
	}
}

// echo sends n random bytes each way at once and checks they arrive.
func echo(t *testing.T, srv, cli *Conn, n int) {
	t.Helper()
	want := make([]byte, n)
	rand.Read(want)
	errc := make(chan error, 2)
	go func() { _, err := cli.Write(want); errc <- err }()
	go func() { _, err := srv.Write(want); errc <- err }()
	for _, c := range []*Conn{srv, cli} {
		got := make([]byte, n)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatal("data differs")
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
}

// TestKeyUpdateAndClose: a client's KeyUpdate asking for the server's
// changes both directions' keys; close_notify reads as io.EOF.
func TestKeyUpdateAndClose(t *testing.T) {
	srv, cli, srvErr, cliErr := pipe(t, testClient{identity: "alice", key: aliceKey, shares: []uint16{groupX25519}})
	if srvErr != nil || cliErr != nil {
		t.Fatalf("server: %v, client: %v", srvErr, cliErr)
	}
	go func() {
		cli.wmu.Lock()
		cli.writeRecords(recordHandshake, []byte{typeKeyUpdate, 0, 0, 1, 1})
		cli.out.setSecret(nextTrafficSecret(cli.out.secret))
		cli.wmu.Unlock()
		cli.Write([]byte("after update"))
	}()
	got := make([]byte, 12)
	if _, err := io.ReadFull(srv, got); err != nil || string(got) != "after update" {
		t.Fatalf("server read %q, %v", got, err)
	}
	go srv.Write([]byte("x"))
	// The server's KeyUpdate comes first; the test client does not take
	// it, so apply it by hand before reading.
	cli.rmu.Lock()
	typ, p, err := cli.readRecord()
	if err != nil || typ != recordHandshake || !bytes.Equal(p, []byte{typeKeyUpdate, 0, 0, 1, 0}) {
		t.Fatalf("want the server's KeyUpdate, got type %d %x %v", typ, p, err)
	}
	cli.in.setSecret(nextTrafficSecret(cli.in.secret))
	cli.rmu.Unlock()
	if _, err := io.ReadFull(cli, got[:1]); err != nil || got[0] != 'x' {
		t.Fatalf("client read after KeyUpdate: %q %v", got[:1], err)
	}
	go srv.Close()
	if _, err := cli.Read(got); err != io.EOF {
		t.Fatalf("read after close_notify: %v, want io.EOF", err)
	}
}

// TestGarbage: a client that speaks no TLS, or plain TLS 1.2, is refused
// with an error and not a hang.
func TestGarbage(t *testing.T) {
	for name, in := range map[string][]byte{
		"http":       []byte("GET / HTTP/1.0\r\n\r\n"),
		"huge":       {22, 3, 1, 0xff, 0xff},
		"not hello":  {22, 3, 1, 0, 4, 2, 0, 0, 0},
		"app data":   {23, 3, 3, 0, 1, 0},
		"short":      {22, 3, 1, 0, 2, 1, 0},
		"truncated":  {22, 3, 1},
		"tls12 only": tls12Hello(),
	} {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				b.Write(in)
				b.Close()
			}()
			go io.Copy(io.Discard, b)
			err := Server(a, &Config{Keys: testKeys}).Handshake()
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			t.Log(err)
		})
	}
}

func tls12Hello() []byte {
	body := []byte{3, 3}
	body = append(body, make([]byte, 32)...)
	body = append(body, 0, 0, 2, 0xc0, 0x2f, 1, 0)
	msg := handshakeMsg(typeClientHello, body)
	return append([]byte{22, 3, 1, 0, byte(len(msg))}, msg...)
}

func TestParseKeys(t *testing.T) {
	for _, tc := range []struct{ in, err string }{
		{"alice:0123abcd\nbob:ff\n", ""},
		{"# keys\n\nalice:0123abcd\r\n", ""},
		{"alice 0123", "want username:hexkey"},
		{"alice:xyz", "not a hex string"},
		{"alice:", "not a hex string"},
		{"alice:00\nalice:01", "twice"},
		{"", "no username"},
	} {
		keys, err := ParseKeys(strings.NewReader(tc.in))
		switch {
		case tc.err == "" && (err != nil || !bytes.Equal(keys["alice"], []byte{1, 0x23, 0xab, 0xcd})):
			t.Errorf("%q: %v %x", tc.in, err, keys)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
		}
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(testClient{identity: "alice", key: aliceKey, shares: []uint16{groupX25519}, supported: []uint16{groupX25519}}.clientHello(nil, make([]byte, 32), map[uint16]*ecdh.PrivateKey{}))
	f.Add(tls12Hello()[5:])
	f.Fuzz(func(t *testing.T, msg []byte) {
		ch, err := parseClientHello(msg)
		if err != nil {
			return
		}
		if ch.bindersAt > len(msg) || len(ch.identities) != len(ch.binders) {
			t.Fatalf("bindersAt %d of %d, %d identities, %d binders", ch.bindersAt, len(msg), len(ch.identities), len(ch.binders))
		}
		negotiate(ch, testKeys, false)
	})
}

// scriptConn is a net.Conn that reads a fixed input and discards writes.
type scriptConn struct {
	net.Conn
	r io.Reader
}

func (s scriptConn) Read(b []byte) (int, error)  { return s.r.Read(b) }
func (s scriptConn) Write(b []byte) (int, error) { return len(b), nil }

// FuzzHandshake feeds the server's handshake arbitrary records (the seed:
// a real ClientHello record): it must end with an error or succeed,
// never panic or hang.
func FuzzHandshake(f *testing.F) {
	ch := testClient{identity: "alice", key: aliceKey, shares: []uint16{groupX25519}}.clientHello(nil, make([]byte, 32), map[uint16]*ecdh.PrivateKey{})
	rec := (&Conn{}).appendRecord(nil, recordHandshake, ch)
	f.Add(rec)
	f.Add(append(rec, recordCCS, 3, 3, 0, 1, 1))
	f.Add(tls12Hello())
	f.Fuzz(func(t *testing.T, in []byte) {
		Server(scriptConn{r: bytes.NewReader(in)}, &Config{Keys: testKeys}).Handshake()
	})
}
