package nbdserver

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"syscall"

	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/internal/tlspsk"
)

// TLSMode is how a Server offers TLS (NBD_OPT_STARTTLS), with nbdkit's
// names for the three modes of the NBD protocol.
type TLSMode int

const (
	// TLSOff refuses STARTTLS with NBD_REP_ERR_POLICY (the spec's NOTLS).
	TLSOff TLSMode = iota
	// TLSOn lets the client upgrade with STARTTLS or go on in the clear
	// (the spec's SELECTIVETLS, with no TLS-only export).
	TLSOn
	// TLSRequire refuses every option but STARTTLS and ABORT with
	// NBD_REP_ERR_TLS_REQD until TLS is up, and closes the connection on
	// NBD_OPT_EXPORT_NAME before it (the spec's FORCEDTLS).
	TLSRequire
)

// ParseTLSMode reads "off", "on" or "require".
func ParseTLSMode(s string) (TLSMode, error) {
	switch s {
	case "off":
		return TLSOff, nil
	case "on":
		return TLSOn, nil
	case "require":
		return TLSRequire, nil
	}
	return TLSOff, fmt.Errorf("nbdserver: TLS mode %q: want off, on or require", s)
}

func (m TLSMode) String() string {
	switch m {
	case TLSOn:
		return "on"
	case TLSRequire:
		return "require"
	}
	return "off"
}

// errDataAfterStartTLS ends a connection whose client sent bytes after
// NBD_OPT_STARTTLS before the TLS handshake: they would otherwise be taken
// as if they came over TLS (the STARTTLS injection of CVE-2021-3716).
var errDataAfterStartTLS = errors.New("nbdserver: client sent data after NBD_OPT_STARTTLS before the TLS handshake")

// tlsRequired tells whether opt must be refused with NBD_REP_ERR_TLS_REQD.
func (c *conn) tlsRequired(opt uint32) bool {
	return c.srv.opts.TLSMode == TLSRequire && !c.tlsUp && opt != optStartTLS && opt != optAbort
}

// startTLS answers NBD_OPT_STARTTLS. It returns an error, ending the
// connection, when the handshake fails after the server agreed to it.
func (c *conn) startTLS(data []byte) error {
	switch {
	case c.srv.opts.TLSMode == TLSOff:
		c.optionReply(optStartTLS, repErrPolicy, []byte("TLS is not enabled on this server"))
		return nil
	case c.tlsUp:
		c.optionReply(optStartTLS, repErrInvalid, []byte("TLS is already up"))
		return nil
	case len(data) != 0:
		c.optionReply(optStartTLS, repErrInvalid, []byte("NBD_OPT_STARTTLS takes no data"))
		return nil
	}
	c.optionReply(optStartTLS, repAck, nil)
	if err := c.sendOptionReplies(); err != nil {
		return err
	}
	if c.br.Buffered() > 0 {
		return errDataAfterStartTLS
	}
	// The TLS layer reads through the poll reader, as the clear text
	// did; the handshake deadline set on the socket bounds its handshake.
	c.tlsSock = newTLSSocket(c.raw, c.pr)
	tc, how, err := c.tlsHandshake(c.tlsSock)
	if err != nil {
		return fmt.Errorf("nbdserver: TLS handshake: %w", err)
	}
	c.nc, c.tlsUp = tc, true
	c.srv.stats.tlsConnections.Add(1)
	c.br = bufio.NewReaderSize(tc, handshakeBufferSize)
	c.log.Debug("nbdserver: TLS up", "auth", how)
	return nil
}

// tlsHandshake runs the server side of the TLS handshake over nc: with the
// pre-shared keys if the server has them, else with crypto/tls. how says
// which, for the log.
func (c *conn) tlsHandshake(nc net.Conn) (tc net.Conn, how string, err error) {
	if keys := c.srv.opts.TLSPSK; len(keys) > 0 {
		pc := tlspsk.Server(nc, &tlspsk.Config{Keys: keys})
		if err := pc.Handshake(); err != nil {
			return nil, "", err
		}
		return pc, "PSK user " + pc.Identity() + ", TLS 1.3", nil
	}
	xc := tls.Server(nc, c.srv.opts.TLS)
	if err := xc.Handshake(); err != nil {
		return nil, "", err
	}
	return xc, "X.509, " + tls.VersionName(xc.ConnectionState().Version), nil
}

// tlsSocket is the socket as the TLS layer sees it. Reads go through its
// PollReader, unbuffered while negotiating (a TLS layer reads a record's
// header, then its body), and in the transmission phase through a buffer
// of readBufferSize (bufferReads), so one system call brings many records.
// Each read then stops at the end of a record's header or body: the TLS
// layer takes one record at a time and the rest stays in the buffer, where
// buffered sees it. Writes go to the socket, except while writeDirect
// captures them.
type tlsSocket struct {
	net.Conn
	pr  *netio.PollReader
	br  *bufio.Reader   // nil while negotiating
	rec recordEnds      // reader's
	raw syscall.RawConn // for the non-blocking write of writeDirect
	wv  *netio.Writev   // raw's, writeDirect's

	mu      sync.Mutex // guards capture, buf and tail
	capture bool       // Write appends to buf instead of writing
	buf     []byte
	// tail is what the socket did not take of a direct write: it goes out
	// before any later write (flush, or the next Write).
	tail []byte
}

func newTLSSocket(nc net.Conn, pr *netio.PollReader) *tlsSocket {
	s := &tlsSocket{Conn: nc, pr: pr}
	if sc, ok := nc.(syscall.Conn); ok {
		s.raw, _ = sc.SyscallConn()
	}
	if s.raw != nil {
		s.wv = netio.NewWritev(s.raw)
	}
	return s
}

func (s *tlsSocket) Read(b []byte) (int, error) {
	var n int
	var err error
	if s.br == nil {
		n, err = s.pr.Read(b)
	} else {
		n, err = s.br.Read(b[:min(len(b), s.rec.room())])
	}
	s.rec.advance(b[:n])
	return n, err
}

// recordEnds follows the TLS records of a stream as it is read, to tell
// where the current header or body ends.
type recordEnds struct {
	hdr  [5]byte // a record's header: type, version, length
	hdrN int     // bytes of hdr read
	left int     // bytes of the current record's body not yet read
}

// room is how many bytes may be read before the end of the current
// record's header or body.
func (r *recordEnds) room() int {
	if r.left > 0 {
		return r.left
	}
	return len(r.hdr) - r.hdrN
}

func (r *recordEnds) advance(p []byte) {
	for len(p) > 0 {
		if r.left > 0 {
			k := min(len(p), r.left)
			r.left, p = r.left-k, p[k:]
			continue
		}
		k := copy(r.hdr[r.hdrN:], p)
		r.hdrN, p = r.hdrN+k, p[k:]
		if r.hdrN == len(r.hdr) {
			r.left, r.hdrN = int(binary.BigEndian.Uint16(r.hdr[3:])), 0
		}
	}
}

// bufferReads puts the transmission phase's buffer under the TLS layer.
// The PollReader holds no bytes of its own, so none are skipped.
func (s *tlsSocket) bufferReads() {
	s.br = bufio.NewReaderSize(s.pr, readBufferSize)
}

// buffered is how many bytes the client sent that wait in the buffer under
// the TLS layer. Reader goroutine only.
func (s *tlsSocket) buffered() int {
	if s.br == nil {
		return 0
	}
	return s.br.Buffered()
}

func (s *tlsSocket) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.capture {
		s.buf = append(s.buf, b...)
		return len(b), nil
	}
	if err := s.flushLocked(); err != nil {
		return 0, err
	}
	return s.Conn.Write(b)
}

// flush writes the tail of a direct write, blocking.
func (s *tlsSocket) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.flushLocked()
}

func (s *tlsSocket) flushLocked() error {
	for len(s.tail) > 0 {
		n, err := s.Conn.Write(s.tail)
		s.tail = s.tail[n:]
		if err != nil {
			return err
		}
	}
	return nil
}

// writeDirect sends v through the TLS connection tc without blocking: the
// records tc makes are captured, then written with one non-blocking
// writev; what the socket does not take stays in the tail, and done is
// false. The caller holds the reply writer's claim: no other write runs.
func (s *tlsSocket) writeDirect(tc net.Conn, v net.Buffers) (done bool, err error) {
	s.mu.Lock()
	s.capture, s.buf = true, s.buf[:0]
	s.mu.Unlock()
	if len(v) > 1 && len(v[0]) < copyMax {
		// A small header and its payload: one record, not two.
		v = net.Buffers{slices.Concat(v...)}
	}
	_, err = v.WriteTo(tc)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.capture = false
	if err != nil {
		return false, err
	}
	n, err := s.wv.Try([][]byte{s.buf})
	done = err == nil && n == len(s.buf)
	if n < len(s.buf) {
		s.tail = append(s.tail[:0], s.buf[n:]...)
	}
	if cap(s.buf) > 4*writeChunk {
		s.buf = nil // one large burst does not stay with the connection
	}
	return done, err
}
