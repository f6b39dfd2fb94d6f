package replication

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// The peer link over TLS. With Config.PeerTLS set, each connection runs
// TLS 1.3 before the handshake of package wire, and both sides present a
// certificate: each checks the other's against the CA and the name it
// expects the peer to have (PeerTLSConfig). The shared secret's proof then
// runs inside TLS, if a secret is set.
//
// The dialer speaks first in both protocols (a TLS ClientHello or a wire
// Hello), so the listener tells them apart by the first byte: a node
// configured for TLS refuses a peer that starts without it, and a node
// without TLS refuses a peer that starts with it, each with a Refuse frame
// in the clear (reason wire.ReasonTLS) that the other side reads as such.
// Both sides log why.

// tlsHandshakeRecord is the first byte of a TLS ClientHello (a handshake
// record); a wire frame starts with 'N' (wire.Magic).
const tlsHandshakeRecord = 0x16

// PeerTLSConfig is the TLS configuration of a peer link: TLS 1.3 only,
// cert presented on both ends, and the other end's certificate verified
// against ca, for peerName (a DNS name or IP address among its subject
// alternative names). Any extended key usage is accepted: a node's one
// certificate serves it as server and as client.
func PeerTLSConfig(cert tls.Certificate, ca *x509.CertPool, peerName string) *tls.Config {
	verify := func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("replication: the peer presented no certificate")
		}
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter,
			DNSName: peerName, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		if err != nil {
			return fmt.Errorf("the peer's certificate: %w", err) // tlsError adds the package
		}
		return nil
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		// Verified by VerifyConnection on both ends, for peerName.
		InsecureSkipVerify: true,
		VerifyConnection:   verify,
	}
	if net.ParseIP(peerName) == nil {
		cfg.ServerName = peerName
	}
	return cfg
}

// secure returns the connection the handshake runs on: c itself without
// TLS (untouched, so the link's reader may poll it), or TLS over it. It
// refuses a peer whose use of TLS differs from this node's, with a
// *wire.RefusedError of reason wire.ReasonTLS.
func secure(c net.Conn, cfg *tls.Config, dialer bool) (net.Conn, error) {
	switch {
	case cfg != nil && dialer:
		sock := newPeerSocket(c)
		tc := tls.Client(sock, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, tlsError(err)
		}
		return peerTLSConn{tc, sock}, nil
	case cfg != nil:
		first, err := readFirst(c)
		if err != nil {
			return nil, fmt.Errorf("replication: waiting for the peer's first byte: %w", err)
		}
		if first != tlsHandshakeRecord {
			return nil, refuseTLS(c, "this node requires TLS on the peer link (--peer-tls-certificates)",
				"the peer offers no TLS on the link, and this node requires it")
		}
		sock := newPeerSocket(&replayConn{Conn: c, first: []byte{first}})
		tc := tls.Server(sock, cfg)
		if err := tc.Handshake(); err != nil {
			return nil, tlsError(err)
		}
		return peerTLSConn{tc, sock}, nil
	case !dialer:
		first, ok, err := peekFirst(c)
		if err != nil {
			return nil, fmt.Errorf("replication: waiting for the peer's first byte: %w", err)
		}
		if ok && first == tlsHandshakeRecord {
			return nil, refuseTLS(c, "this node has no TLS on the peer link (no --peer-tls-certificates)",
				"the peer offers TLS on the link, and this node has none configured")
		}
	}
	return c, nil
}

// secureConn runs secure on a new connection, within the handshake limit
// if it was accepted and the peer timeout if it was dialed. A connection
// refused or failed is closed, and why is logged.
func (r *Resource) secureConn(raw net.Conn, dialer bool) (net.Conn, error) {
	if r.cfg.PeerTLS == nil && dialer {
		return raw, nil
	}
	limit := r.handshakeLimit()
	if dialer {
		limit = r.cfg.PeerTimeout
	}
	raw.SetDeadline(time.Now().Add(limit))
	release := r.onStop(func() { raw.Close() }) // a stop does not wait for a silent peer
	c, err := secure(raw, r.cfg.PeerTLS, dialer)
	release()
	if err != nil {
		raw.Close()
		r.logRefusal(raw, err)
		return nil, err
	}
	raw.SetDeadline(time.Time{}) // meet sets its own
	if tc, ok := c.(peerTLSConn); ok {
		st := tc.ConnectionState()
		r.log.Info("peer TLS established", "addr", raw.RemoteAddr().String(),
			"peer_certificate", st.PeerCertificates[0].Subject.CommonName, "cipher", tls.CipherSuiteName(st.CipherSuite))
	}
	return c, nil
}

// refuseTLS tells the peer, in the clear, why: told; and returns the
// refusal as this node logs it: text.
func refuseTLS(c net.Conn, told, text string) error {
	c.Write(wire.AppendRefuse(nil, wire.ReasonTLS, told))
	return &wire.RefusedError{Reason: wire.ReasonTLS, Text: text}
}

// tlsError names a TLS handshake's failure. A dialer whose peer answered
// its ClientHello with a wire frame (a Refuse: the peer has no TLS) is
// refused by the peer.
func tlsError(err error) error {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) && binary.BigEndian.Uint32(rh.RecordHeader[:4]) == wire.Magic {
		return &wire.RefusedError{Reason: wire.ReasonTLS, ByPeer: true,
			Text: "the peer answered in the clear: it has no TLS on the peer link, and this node requires it"}
	}
	return fmt.Errorf("replication: peer TLS: %w", err)
}

// readFirst reads the connection's first byte.
func readFirst(c net.Conn) (byte, error) {
	var b [1]byte
	_, err := io.ReadFull(c, b[:])
	return b[0], err
}

// peekFirst waits for the connection's first byte and looks at it without
// taking it (MSG_PEEK), if c has a descriptor; ok is false if it has none.
// The wait ends with an error at the connection's read deadline.
func peekFirst(c net.Conn) (first byte, ok bool, err error) {
	sc, isSC := c.(syscall.Conn)
	if !isSC {
		return 0, false, nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, false, nil
	}
	var b [1]byte
	var n int
	var perr error
	err = raw.Read(func(fd uintptr) bool {
		for {
			n, _, perr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK)
			if perr != syscall.EINTR {
				return perr != syscall.EAGAIN
			}
		}
	})
	switch {
	case err != nil:
		return 0, false, err
	case perr != nil:
		return 0, false, perr
	case n == 0:
		return 0, false, io.EOF
	}
	return b[0], true, nil
}

// replayConn is a connection whose first bytes were read already: Read
// returns them first.
type replayConn struct {
	net.Conn
	first []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.first) > 0 {
		n := copy(p, c.first)
		c.first = c.first[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// peerTLSConn is a TLS link connection. Close closes the TCP connection at
// once, without the close_notify alert, which could wait for a peer that
// reads nothing: the link ends in order with its own Bye frame, and its
// frames carry their own lengths and checksums, so a cut stream is never
// mistaken for a whole one.
type peerTLSConn struct {
	*tls.Conn
	sock *peerSocket
}

func (c peerTLSConn) Close() error { return c.sock.Close() }

// Write seals b into records (of up to 16 KiB each, the most TLS allows)
// and sends them with one system call per peerWriteChunk, not one per
// record.
func (c peerTLSConn) Write(b []byte) (int, error) {
	c.sock.gather(true)
	n, err := c.Conn.Write(b)
	if ferr := c.sock.gather(false); err == nil {
		err = ferr
	}
	return n, err
}

// peerWriteChunk is the most a link's TLS socket gathers before it writes,
// as the link's own buffer does in the clear.
const peerWriteChunk = 256 << 10

// peerSocket is the TCP connection under a link's TLS layer. Reads go
// through a buffer of peerWriteChunk, so that one system call brings many
// records, where the TLS layer alone reads about one each. Records sealed
// by peerTLSConn.Write gather in buf and go out together; those the TLS
// layer writes on its own (its handshake, an alert, a key update) go out
// at once, as it writes them.
type peerSocket struct {
	net.Conn
	br *bufio.Reader

	mu        sync.Mutex // guards gathering and buf
	gathering bool
	buf       []byte
}

func newPeerSocket(c net.Conn) *peerSocket {
	return &peerSocket{Conn: c, br: bufio.NewReaderSize(c, peerWriteChunk)}
}

func (s *peerSocket) Read(b []byte) (int, error) { return s.br.Read(b) }

func (s *peerSocket) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.gathering {
		return s.Conn.Write(b)
	}
	s.buf = append(s.buf, b...)
	if len(s.buf) >= peerWriteChunk {
		return len(b), s.flushLocked()
	}
	return len(b), nil
}

// gather turns gathering on or off; off, it writes what was gathered.
func (s *peerSocket) gather(on bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gathering = on
	if on {
		return nil
	}
	return s.flushLocked()
}

func (s *peerSocket) flushLocked() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.Conn.Write(s.buf)
	s.buf = s.buf[:0]
	return err
}

// isTLS reports whether c runs TLS (for the status and logs).
func isTLS(c net.Conn) bool {
	_, ok := c.(peerTLSConn)
	return ok
}
