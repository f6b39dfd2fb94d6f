package tlspsk

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
)

// Config is a server's keys.
type Config struct {
	Keys Keys
	Rand io.Reader // nil: crypto/rand
}

// Server returns the server side of a TLS connection over conn. The
// handshake runs on the first Read or Write, or on Handshake.
func Server(conn net.Conn, cfg *Config) *Conn {
	return &Conn{Conn: conn, cfg: cfg, br: bufio.NewReaderSize(conn, headerLen+maxRecord)}
}

// ErrWrongKey is wrapped by the handshake's error when the client named a
// known identity but proved a different key.
var ErrWrongKey = errors.New("the client's key is not the one in the PSK file")

// Handshake runs the handshake if it has not run yet, and returns its
// outcome. The deadlines of the socket bound it.
func (c *Conn) Handshake() error {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	if !c.hsDone {
		c.rmu.Lock()
		c.hsErr = c.serverHandshake()
		if c.hsErr != nil {
			c.rerr = c.hsErr
		}
		c.rmu.Unlock()
		c.hsDone = true
		c.established.Store(c.hsErr == nil)
	}
	return c.hsErr
}

// hsError is a failed negotiation: the alert to send and why.
type hsError struct {
	alert uint8
	err   error
}

func (e *hsError) Error() string { return e.err.Error() }
func (e *hsError) Unwrap() error { return e.err }

func refuse(alert uint8, format string, args ...any) *hsError {
	return &hsError{alert, fmt.Errorf("tlspsk: "+format, args...)}
}

// choice is what negotiate settles: the identity and the client's key
// share to use, or a group to ask for in a HelloRetryRequest.
type choice struct {
	identity int
	share    keyShare
	retry    uint16 // non-zero: no usable share, ask for this group
}

// negotiate decides whether and how to go on with a ClientHello; retried
// says it answers a HelloRetryRequest. It does not check binders.
func negotiate(ch *clientHello, keys Keys, retried bool) (choice, *hsError) {
	switch {
	case !slices.Contains(ch.versions, versionTLS13):
		return choice{}, refuse(alertProtocolVersion, "the client does not offer TLS 1.3, which PSK needs here")
	case !ch.nullCompression:
		return choice{}, refuse(alertIllegalParameter, "the client offers compression, which TLS 1.3 forbids")
	case !slices.Contains(ch.suites, suiteAES128GCMSHA256):
		return choice{}, refuse(alertHandshakeFailure, "the client does not offer TLS_AES_128_GCM_SHA256")
	case len(ch.identities) == 0:
		return choice{}, refuse(alertMissingExtension, "the client offers no PSK (does it have a PSK file and a username?)")
	case !slices.Contains(ch.pskModes, modePSKDHE):
		return choice{}, refuse(alertHandshakeFailure, "the client offers PSK only without (EC)DHE (psk_dhe_ke)")
	case ch.earlyData:
		return choice{}, refuse(alertIllegalParameter, "the client sends 0-RTT data, which this server does not take")
	}
	id := slices.IndexFunc(ch.identities, func(p pskIdentity) bool { _, ok := keys[string(p.identity)]; return ok })
	if id < 0 {
		return choice{}, refuse(alertUnknownPSKIdentity, "no PSK identity the client offers is in the PSK file (first offered: %q)",
			ch.identities[0].identity)
	}
	for _, s := range ch.shares {
		if s.group == groupX25519 || s.group == groupP256 {
			return choice{identity: id, share: s}, nil
		}
	}
	for _, g := range []uint16{groupX25519, groupP256} {
		if !retried && slices.Contains(ch.groups, g) {
			return choice{identity: id, retry: g}, nil
		}
	}
	return choice{}, refuse(alertHandshakeFailure, "the client offers neither X25519 nor P-256")
}

// serverHandshake runs the handshake. Called with rmu held.
func (c *Conn) serverHandshake() error {
	err := c.handshakeFlights()
	var he *hsError
	if errors.As(err, &he) {
		c.sendAlert(he.alert)
	}
	return err
}

func (c *Conn) handshakeFlights() error {
	ch, tr, ch0, err := c.readClientHellos()
	if err != nil {
		return err
	}
	cho, herr := negotiate(ch, c.cfg.Keys, ch0 != nil)
	if herr != nil {
		return herr
	}
	name := string(ch.identities[cho.identity].identity)
	early := earlySecret(c.cfg.Keys[name])
	binderTr := sha256.Sum256(append(tr, ch.raw[:ch.bindersAt]...))
	if !hmac.Equal(finishedMAC(binderKey(early), binderTr[:]), ch.binders[cho.identity]) {
		return &hsError{alertDecryptError, fmt.Errorf("tlspsk: user %q: PSK binder does not verify: %w", name, ErrWrongKey)}
	}
	tr = append(tr, ch.raw...)
	cHS, cAP, err := c.sendServerFlight(ch, cho, early, &tr, ch0 == nil)
	if err != nil {
		return err
	}
	c.in.setSecret(cHS)
	if err := c.readClientFinished(cHS, tr); err != nil {
		return err
	}
	c.in.setSecret(cAP)
	c.identity = name
	return nil
}

// readClientHellos reads the ClientHello, and if the first one has no key
// share this server can use, sends a HelloRetryRequest and reads the
// second. It returns the ClientHello to answer, the transcript before it,
// and the first ClientHello if there was a retry.
func (c *Conn) readClientHellos() (ch *clientHello, tr []byte, ch0 *clientHello, err error) {
	if ch, err = c.readClientHello(); err != nil {
		return nil, nil, nil, err
	}
	cho, herr := negotiate(ch, c.cfg.Keys, false)
	if herr != nil || cho.retry == 0 {
		return ch, nil, nil, nil // a refusal comes out of negotiate again
	}
	hash := sha256.Sum256(ch.raw)
	tr = append([]byte{typeMessageHash, 0, 0, hashLen}, hash[:]...)
	hrr := serverHello(helloRetryRandom, ch.sessionID, helloRetryExts(cho.retry))
	tr = append(tr, hrr...)
	c.wmu.Lock()
	c.wbuf = c.appendRecord(c.wbuf[:0], recordHandshake, hrr)
	if len(ch.sessionID) > 0 {
		c.wbuf = c.appendRecord(c.wbuf, recordCCS, []byte{1})
	}
	_, err = c.Conn.Write(c.wbuf)
	c.wmu.Unlock()
	if err != nil {
		return nil, nil, nil, fmt.Errorf("tlspsk: %w", err)
	}
	ch1, err := c.readClientHello()
	if err != nil {
		return nil, nil, nil, err
	}
	if !bytes.Equal(ch1.sessionID, ch.sessionID) || !slices.ContainsFunc(ch1.shares, func(s keyShare) bool { return s.group == cho.retry }) {
		return nil, nil, nil, refuse(alertIllegalParameter, "the second ClientHello does not follow the HelloRetryRequest")
	}
	return ch1, tr, ch, nil
}

// readClientHello reads and parses one ClientHello.
func (c *Conn) readClientHello() (*clientHello, error) {
	msg, err := c.readHandshakeMsg()
	if err != nil {
		return nil, err
	}
	if len(c.hsBuf) > 0 {
		return nil, refuse(alertUnexpectedMessage, "data after the ClientHello in its flight")
	}
	ch, err := parseClientHello(msg)
	if err != nil {
		return nil, &hsError{alertDecodeError, err}
	}
	return ch, nil
}

// readHandshakeMsg returns the next handshake message, skipping the
// ChangeCipherSpec records of the middlebox compatibility mode.
func (c *Conn) readHandshakeMsg() ([]byte, error) {
	for {
		if len(c.hsBuf) >= 4 {
			n := int(c.hsBuf[1])<<16 | int(c.hsBuf[2])<<8 | int(c.hsBuf[3])
			if n > 1<<16 {
				return nil, refuse(alertDecodeError, "handshake message of %d bytes", n)
			}
			if len(c.hsBuf) >= 4+n {
				msg := bytes.Clone(c.hsBuf[:4+n])
				c.hsBuf = c.hsBuf[4+n:]
				return msg, nil
			}
		}
		typ, p, err := c.readRecord()
		if err == io.EOF {
			return nil, fmt.Errorf("tlspsk: the client closed the connection in the handshake: %w", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return nil, err
		}
		switch {
		case typ == recordHandshake && len(p) > 0:
			c.hsBuf = append(c.hsBuf, p...)
		case typ == recordCCS && len(p) == 1 && p[0] == 1:
		case typ == recordAlert:
			return nil, c.readAlert(p)
		default:
			return nil, refuse(alertUnexpectedMessage, "record of type %d in the handshake", typ)
		}
	}
}
