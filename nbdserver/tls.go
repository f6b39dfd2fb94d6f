package nbdserver

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

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
	tc, how, err := c.tlsHandshake(pollConn{c.raw, c.pr})
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

// pollConn is the socket with reads going through its PollReader.
type pollConn struct {
	net.Conn
	pr *netio.PollReader
}

func (p pollConn) Read(b []byte) (int, error) { return p.pr.Read(b) }
