package tlspsk

import (
	"bufio"
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Record content types and sizes (RFC 8446 5.1, 5.2).
const (
	recordCCS       = 20
	recordAlert     = 21
	recordHandshake = 22
	recordAppData   = 23

	headerLen    = 5
	maxPlaintext = 16384
	maxRecord    = maxPlaintext + 256 // an encrypted record's most
	tagLen       = 16
	// writeBatch bounds the records built before one write to the socket.
	writeBatch = 64 << 10
)

// Alert descriptions sent on failure.
const (
	alertCloseNotify        = 0
	alertUnexpectedMessage  = 10
	alertBadRecordMAC       = 20
	alertRecordOverflow     = 22
	alertHandshakeFailure   = 40
	alertIllegalParameter   = 47
	alertDecodeError        = 50
	alertDecryptError       = 51
	alertProtocolVersion    = 70
	alertInternalError      = 80
	alertMissingExtension   = 109
	alertUnknownPSKIdentity = 115
)

// AlertError is a fatal alert: received from the peer (Remote) or sent to
// it when this side failed the connection.
type AlertError struct {
	Code   uint8
	Remote bool
}

func (e AlertError) Error() string {
	if e.Remote {
		return fmt.Sprintf("tlspsk: the peer sent alert %d", e.Code)
	}
	return fmt.Sprintf("tlspsk: sent alert %d", e.Code)
}

// halfConn is one direction's record protection: nil aead before the
// handshake keys.
type halfConn struct {
	aead   cipher.AEAD
	iv     [ivLen]byte
	seq    uint64
	secret []byte // the traffic secret, for KeyUpdate
}

func (h *halfConn) setSecret(secret []byte) {
	h.aead, h.iv = trafficKeys(secret)
	h.seq, h.secret = 0, secret
}

// nonce is the per-record nonce: the IV xor the sequence number.
func (h *halfConn) nonce() []byte {
	n := h.iv
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], h.seq)
	for i := range s {
		n[ivLen-8+i] ^= s[i]
	}
	h.seq++
	return n[:]
}

// Conn is a TLS 1.3 connection over a net.Conn. Read and Write may run on
// two goroutines at once, as with crypto/tls.
type Conn struct {
	net.Conn // the socket: addresses, deadlines
	cfg      *Config

	hsMu        sync.Mutex // guards the handshake's start and result
	hsDone      bool
	established atomic.Bool // the handshake succeeded
	hsErr       error
	identity    string

	rmu   sync.Mutex // guards the read side: br, in, plain, rerr
	br    *bufio.Reader
	in    halfConn
	plain []byte // decrypted application data not yet read, inside br's buffer
	skip  int    // bytes of br to discard before the next record
	hsBuf []byte // handshake bytes read, not yet a whole message
	rerr  error

	wmu  sync.Mutex // guards the write side: out, wbuf, werr
	out  halfConn
	wbuf []byte
	werr error
}

// readRecord returns the next record's type and its payload (decrypted,
// padding and inner type removed, if keys are set). The payload lives in
// br's buffer until the next call. Called with rmu held.
func (c *Conn) readRecord() (byte, []byte, error) {
	if c.skip > 0 {
		c.br.Discard(c.skip)
		c.skip = 0
	}
	hdr, err := c.br.Peek(headerLen)
	if err != nil {
		if err == io.EOF && len(hdr) == 0 {
			return 0, nil, io.EOF // a clean end, between records
		}
		return 0, nil, fmt.Errorf("tlspsk: reading a record: %w", noEOF(err))
	}
	typ, n := hdr[0], int(binary.BigEndian.Uint16(hdr[3:]))
	if c.in.aead == nil && (typ < recordCCS || typ > recordHandshake) {
		return 0, nil, c.fail(alertUnexpectedMessage, fmt.Errorf("tlspsk: the client does not speak TLS (record type %d)", typ))
	}
	if n > maxRecord || c.in.aead == nil && n > maxPlaintext {
		return 0, nil, c.fail(alertRecordOverflow, fmt.Errorf("tlspsk: record of %d bytes", n))
	}
	rec, err := c.br.Peek(headerLen + n)
	if err != nil {
		return 0, nil, fmt.Errorf("tlspsk: reading a record: %w", noEOF(err))
	}
	c.skip = headerLen + n
	// ChangeCipherSpec is never protected, and a client that could not
	// take the server's flight may send its alert in the clear.
	if c.in.aead == nil || typ == recordCCS || typ == recordAlert && n == 2 {
		return typ, rec[headerLen:], nil
	}
	if typ != recordAppData || n < tagLen+1 {
		return 0, nil, c.fail(alertUnexpectedMessage, fmt.Errorf("tlspsk: clear record of type %d after the keys changed", typ))
	}
	p, err := c.in.aead.Open(rec[headerLen:headerLen], c.in.nonce(), rec[headerLen:], rec[:headerLen])
	if err != nil {
		return 0, nil, c.fail(alertBadRecordMAC, fmt.Errorf("tlspsk: record does not decrypt: %w", err))
	}
	i := len(p) - 1
	for i >= 0 && p[i] == 0 {
		i--
	}
	if i < 0 || len(p) > maxPlaintext+1 {
		return 0, nil, c.fail(alertUnexpectedMessage, errors.New("tlspsk: record with no content type"))
	}
	return p[i], p[:i], nil
}

// noEOF turns io.EOF inside a record into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// writeRecords protects data as records of type typ, up to writeBatch
// bytes a write to the socket. Called with wmu held.
func (c *Conn) writeRecords(typ byte, data []byte) (int, error) {
	written := 0
	for {
		c.wbuf = c.wbuf[:0]
		n := 0
		for {
			m := min(len(data)-n, maxPlaintext)
			c.wbuf = c.appendRecord(c.wbuf, typ, data[n:n+m])
			n += m
			if n == len(data) || len(c.wbuf) >= writeBatch {
				break
			}
		}
		if _, err := c.Conn.Write(c.wbuf); err != nil {
			c.werr = fmt.Errorf("tlspsk: %w", err)
			return written, c.werr
		}
		written += n
		if data = data[n:]; len(data) == 0 {
			return written, nil
		}
	}
}

// appendRecord appends one record holding p to b, protected if keys are set.
func (c *Conn) appendRecord(b []byte, typ byte, p []byte) []byte {
	if c.out.aead == nil {
		b = append(b, typ, 3, 3, byte(len(p)>>8), byte(len(p)))
		return append(b, p...)
	}
	n := len(p) + 1 + tagLen
	start := len(b)
	b = append(b, recordAppData, 3, 3, byte(n>>8), byte(n))
	b = append(b, p...)
	b = append(b, typ)
	hdr := b[start : start+headerLen]
	return c.out.aead.Seal(b[:start+headerLen], c.out.nonce(), b[start+headerLen:], hdr)
}

// fail sends a fatal alert (best effort) and returns err, which the read
// side keeps returning.
func (c *Conn) fail(code uint8, err error) error {
	c.sendAlert(code)
	return err
}

func (c *Conn) sendAlert(code uint8) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return
	}
	level := byte(2)
	if code == alertCloseNotify {
		level = 1
	}
	c.writeRecords(recordAlert, []byte{level, code})
	c.werr = AlertError{Code: code}
}

// Read reads application data.
func (c *Conn) Read(b []byte) (int, error) {
	if err := c.handshakeOnce(); err != nil {
		return 0, err
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.plain) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(b) == 0 {
			return 0, nil
		}
		c.rerr = c.readAppRecord()
	}
	n := copy(b, c.plain)
	c.plain = c.plain[n:]
	return n, nil
}

// readAppRecord reads one record after the handshake into c.plain, or
// handles the alert or post-handshake message it holds.
func (c *Conn) readAppRecord() error {
	typ, p, err := c.readRecord()
	if err != nil {
		return err
	}
	switch typ {
	case recordAppData:
		c.plain = p
		return nil
	case recordAlert:
		return c.readAlert(p)
	case recordHandshake:
		c.hsBuf = append(c.hsBuf, p...)
		return c.postHandshake()
	}
	return c.fail(alertUnexpectedMessage, fmt.Errorf("tlspsk: record of type %d after the handshake", typ))
}

// readAlert turns a received alert into io.EOF (close_notify) or an error.
func (c *Conn) readAlert(p []byte) error {
	if len(p) != 2 {
		return c.fail(alertDecodeError, errors.New("tlspsk: malformed alert"))
	}
	if p[1] == alertCloseNotify {
		return io.EOF
	}
	return AlertError{Code: p[1], Remote: true}
}

// postHandshake handles the whole messages in hsBuf: KeyUpdate is the one
// a client may send.
func (c *Conn) postHandshake() error {
	for len(c.hsBuf) >= 4 {
		n := int(c.hsBuf[1])<<16 | int(c.hsBuf[2])<<8 | int(c.hsBuf[3])
		if len(c.hsBuf) < 4+n {
			return nil
		}
		msg := c.hsBuf[:4+n]
		if msg[0] != typeKeyUpdate || n != 1 || msg[4] > 1 {
			return c.fail(alertUnexpectedMessage, fmt.Errorf("tlspsk: handshake message %d after the handshake", msg[0]))
		}
		requested := msg[4] == 1
		c.hsBuf = c.hsBuf[4+n:]
		if len(c.hsBuf) > 0 {
			return c.fail(alertUnexpectedMessage, errors.New("tlspsk: data after KeyUpdate in its record"))
		}
		c.in.setSecret(nextTrafficSecret(c.in.secret))
		if requested {
			return c.updateWriteKey()
		}
	}
	return nil
}

// updateWriteKey answers a KeyUpdate that asked for ours.
func (c *Conn) updateWriteKey() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return c.werr
	}
	if _, err := c.writeRecords(recordHandshake, []byte{typeKeyUpdate, 0, 0, 1, 0}); err != nil {
		return err
	}
	c.out.setSecret(nextTrafficSecret(c.out.secret))
	return nil
}

// Write writes application data.
func (c *Conn) Write(b []byte) (int, error) {
	if err := c.handshakeOnce(); err != nil {
		return 0, err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	if len(b) == 0 {
		return 0, nil
	}
	return c.writeRecords(recordAppData, b)
}

// handshakeOnce is Handshake with no lock once it succeeded.
func (c *Conn) handshakeOnce() error {
	if c.established.Load() {
		return nil
	}
	return c.Handshake()
}

// Close sends close_notify (waiting at most 5 seconds for the socket to
// take it) and closes the socket.
func (c *Conn) Close() error {
	if c.established.Load() {
		c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
		c.sendAlert(alertCloseNotify)
	}
	return c.Conn.Close()
}

// Identity is the PSK identity the client authenticated with, once the
// handshake succeeded.
func (c *Conn) Identity() string {
	c.hsMu.Lock()
	defer c.hsMu.Unlock()
	return c.identity
}
