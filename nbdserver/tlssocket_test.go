package nbdserver

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"testing"

	"github.com/nbdmirror/nbdmirror/internal/netio"
)

// tcpPair is both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if client, err = net.Dial("tcp", l.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if server, err = l.Accept(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// record is a TLS record of type 23 carrying body.
func record(body []byte) []byte {
	return append([]byte{23, 3, 3, byte(len(body) >> 8), byte(len(body))}, body...)
}

// TestTLSSocketReadsWholeRecords: in the transmission phase each read
// under the TLS layer ends at a record's end, and what the client sent
// beyond it stays visible to buffered.
func TestTLSSocketReadsWholeRecords(t *testing.T) {
	srv, cli := tcpPair(t)
	s := newTLSSocket(srv, netio.NewPollReader(srv, 0))
	recs := [][]byte{record(make([]byte, 100)), record(make([]byte, 3000)), record(nil), record(make([]byte, 1))}
	for _, r := range recs {
		rand.Read(r[5:])
	}
	if _, err := cli.Write(bytes.Join(recs, nil)); err != nil {
		t.Fatal(err)
	}
	// Negotiating, the TLS layer read a header and part of a body.
	big := make([]byte, 64<<10)
	if _, err := io.ReadFull(s, big[:7]); err != nil {
		t.Fatal(err)
	}
	s.bufferReads()
	for i, rec := range recs {
		got := 0
		if i == 0 {
			got = 7
		}
		for got < len(rec) {
			n, err := s.Read(big[got:])
			if err != nil {
				t.Fatal(err)
			}
			got += n
		}
		if got != len(rec) || !bytes.Equal(big[:got], rec) {
			t.Fatalf("record %d: read %d bytes, want %d", i, got, len(rec))
		}
		rest := 0
		for _, r := range recs[i+1:] {
			rest += len(r)
		}
		// The rest came in the same segment, almost always: then all of it
		// waits in the buffer.
		if b := s.buffered(); b > rest || i == 0 && b == 0 && testing.Verbose() {
			t.Logf("after record %d: buffered %d of the %d that follow", i, b, rest)
			if b > rest {
				t.Fail()
			}
		}
	}
}

// passThrough stands for the TLS layer in writeDirect: it writes what it
// is given to the socket unchanged.
type passThrough struct {
	net.Conn
	s *tlsSocket
}

func (p passThrough) Write(b []byte) (int, error) { return p.s.Write(b) }

// TestTLSSocketDirectTail: a direct write the socket cannot take whole
// leaves a tail; the tail goes out before any later write, and the client
// reads every byte in order.
func TestTLSSocketDirectTail(t *testing.T) {
	srv, cli := tcpPair(t)
	s := newTLSSocket(srv, netio.NewPollReader(srv, 0))
	tc := passThrough{srv, s}
	var sent bytes.Buffer
	chunk := make([]byte, 16<<10)
	for i := 0; ; i++ {
		if i > 10000 {
			t.Fatal("the socket never filled")
		}
		rand.Read(chunk)
		sent.Write(chunk)
		done, err := s.writeDirect(tc, net.Buffers{chunk[:16], chunk[16:]})
		if err != nil {
			t.Fatal(err)
		}
		if !done {
			break // the client reads nothing yet: the socket is full
		}
	}
	rand.Read(chunk)
	sent.Write(chunk)
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(cli, int64(sent.Len())))
		got <- b
	}()
	if _, err := s.Write(chunk); err != nil { // flushes the tail first
		t.Fatal(err)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, sent.Bytes()) {
		t.Fatalf("client read %d bytes, not the %d sent in order", len(b), sent.Len())
	}
}
