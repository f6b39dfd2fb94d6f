package replication

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// FuzzPeerHandshakeTLS plays a peer against a listener that requires TLS:
// with inside false the fuzzer's bytes are all the peer sends; with inside
// true a peer with a good certificate completes TLS and sends them inside
// it. The listener never authenticates such a peer (it lacks the secret),
// refuses any peer that does not start with TLS with reason ReasonTLS,
// and ends as soon as the peer stops sending, without waiting for its
// deadline.
func FuzzPeerHandshakeTLS(f *testing.F) {
	ca := newCA(f, "fuzz CA")
	server, client := peerTLS(f, ca, "node-b", "node-a"), peerTLS(f, ca, "node-a", "node-b")
	hello, err := wire.AppendHello(nil, &wire.Hello{Resource: "r0", Size: 1 << 20, NodeID: 1,
		Role: wire.Primary, Disk: wire.UpToDate})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(hello, false)
	f.Add(hello, true)
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}, false)
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"), false)
	f.Add(append(hello, wire.AppendAuth(nil, [wire.ProofSize]byte{1})...), true)
	f.Add([]byte{}, true)
	f.Fuzz(func(t *testing.T, data []byte, inside bool) {
		err := fuzzPeer(t, server, client, data, inside)
		var ref *wire.RefusedError
		switch {
		case err == nil:
			t.Fatal("the listener authenticated a peer without the secret")
		case errors.Is(err, os.ErrDeadlineExceeded):
			t.Fatalf("the listener waited for its deadline: %v", err)
		case !inside && (len(data) == 0 || data[0] != tlsHandshakeRecord):
			if len(data) > 0 && (!errors.As(err, &ref) || ref.Reason != wire.ReasonTLS) {
				t.Fatalf("a peer without TLS: %v, want a refusal for TLS", err)
			}
		}
	})
}

// fuzzPeer runs the listener's side of meet (up to authentication) on one
// end of a pipe, and the peer on the other, and returns the listener's
// error.
func fuzzPeer(t *testing.T, server, client *tls.Config, data []byte, inside bool) error {
	c, s := net.Pipe()
	done := make(chan error, 1)
	go func() {
		err := handshakeOver(s, server, false, 2)
		s.Close()
		done <- err
	}()
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var peer io.ReadWriter = c
	if inside {
		tc := tls.Client(c, client)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS with the listener: %v", err)
		}
		peer = tc
	}
	drained := make(chan struct{})
	go func() { io.Copy(io.Discard, peer); close(drained) }()
	peer.Write(data)
	if tc, ok := peer.(*tls.Conn); ok {
		tc.CloseWrite() // the listener reads the end of the stream
	} else {
		c.Close()
	}
	err := <-done
	c.Close()
	<-drained
	return err
}
