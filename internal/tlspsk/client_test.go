package tlspsk

import (
	"bufio"
	"bytes"
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
)

// testClient is the client side of this package's handshake, for the
// tests: it offers one identity, shares for the groups in shares (and
// lists supported in supported_groups, for a HelloRetryRequest).
type testClient struct {
	identity  string
	key       []byte
	shares    []uint16
	supported []uint16
	noSID     bool // no legacy session id: no middlebox compatibility mode
}

// clientHello builds a ClientHello with its binder; tr is the transcript
// before it (after a HelloRetryRequest).
func (tc testClient) clientHello(tr []byte, sid []byte, privs map[uint16]*ecdh.PrivateKey) []byte {
	b := binary.BigEndian.AppendUint16(nil, versionTLS12)
	random := make([]byte, 32)
	rand.Read(random)
	b = append(b, random...)
	b = append(append(b, byte(len(sid))), sid...)
	b = append(b, 0, 2, 0x13, 0x01, 1, 0)
	exts := extension(nil, extSupportedVers, []byte{2, 3, 4})
	var groups, shares []byte
	for _, g := range tc.supported {
		groups = binary.BigEndian.AppendUint16(groups, g)
	}
	for _, g := range tc.shares {
		if privs[g] == nil {
			privs[g], _ = curve(g).GenerateKey(rand.Reader)
		}
		pub := privs[g].PublicKey().Bytes()
		shares = binary.BigEndian.AppendUint16(shares, g)
		shares = binary.BigEndian.AppendUint16(shares, uint16(len(pub)))
		shares = append(shares, pub...)
	}
	exts = extension(exts, extSupportedGroups, vec16(groups))
	exts = extension(exts, extKeyShare, vec16(shares))
	exts = extension(exts, extPSKModes, []byte{1, modePSKDHE})
	id := binary.BigEndian.AppendUint16(nil, uint16(len(tc.identity)))
	id = append(append(id, tc.identity...), 0, 0, 0, 0)
	psk := append(vec16(id), 0, 33, 32)
	psk = append(psk, make([]byte, 32)...)
	exts = extension(exts, extPreSharedKey, psk)
	b = append(b, vec16(exts)...)
	msg := handshakeMsg(typeClientHello, b)
	h := sha256.Sum256(append(bytes.Clone(tr), msg[:len(msg)-35]...))
	copy(msg[len(msg)-32:], finishedMAC(binderKey(earlySecret(tc.key)), h[:]))
	return msg
}

func vec16(b []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(b))), b...)
}

// serverHelloFields is what the client takes from a ServerHello.
type serverHelloFields struct {
	random []byte
	group  uint16
	pub    []byte
}

func parseServerHello(msg []byte) (serverHelloFields, error) {
	var f serverHelloFields
	r := &reader{b: msg[4:]}
	r.u16()
	f.random = r.take(32)
	r.vec8()
	if r.u16() != suiteAES128GCMSHA256 || r.u8() != 0 {
		return f, errors.New("test client: bad ServerHello")
	}
	exts := r.vec16()
	for len(exts.b) > 0 && !exts.bad {
		typ, d := exts.u16(), exts.vec16()
		if typ == extKeyShare {
			f.group = uint16(d.u16())
			if len(d.b) > 0 {
				f.pub = d.vec16().b
			}
		}
	}
	if exts.bad || msg[0] != typeServerHello {
		return f, errors.New("test client: malformed ServerHello")
	}
	return f, nil
}

// clientConn runs the client's handshake over nc.
func clientConn(nc net.Conn, tc testClient) (*Conn, error) {
	c := &Conn{Conn: nc, br: bufio.NewReaderSize(nc, headerLen+maxRecord)}
	c.hsDone = true
	c.established.Store(true)
	sid := make([]byte, 32)
	if tc.noSID {
		sid = nil
	}
	privs := map[uint16]*ecdh.PrivateKey{}
	ch := tc.clientHello(nil, sid, privs)
	var tr []byte
	if _, err := nc.Write(c.appendRecord(nil, recordHandshake, ch)); err != nil {
		return nil, err
	}
	sh, f, err := c.readServerHello()
	if err != nil {
		return nil, err
	}
	if bytes.Equal(f.random, helloRetryRandom) {
		h := sha256.Sum256(ch)
		tr = append(append([]byte{typeMessageHash, 0, 0, hashLen}, h[:]...), sh...)
		tc.shares = []uint16{f.group}
		ch = tc.clientHello(tr, sid, privs)
		if _, err := nc.Write(c.appendRecord(nil, recordHandshake, ch)); err != nil {
			return nil, err
		}
		if sh, f, err = c.readServerHello(); err != nil {
			return nil, err
		}
	}
	tr = append(append(tr, ch...), sh...)
	return c, c.clientFinish(tr, f, privs[f.group], tc.key)
}

func (c *Conn) readServerHello() ([]byte, serverHelloFields, error) {
	sh, err := c.readHandshakeMsg()
	if err != nil {
		return nil, serverHelloFields{}, err
	}
	f, err := parseServerHello(sh)
	return sh, f, err
}

// clientFinish reads EncryptedExtensions and Finished, sends Finished and
// sets the application keys.
func (c *Conn) clientFinish(tr []byte, f serverHelloFields, priv *ecdh.PrivateKey, key []byte) error {
	pub, err := priv.Curve().NewPublicKey(f.pub)
	if err != nil {
		return err
	}
	shared, err := priv.ECDH(pub)
	if err != nil {
		return err
	}
	hs := handshakeSecret(earlySecret(key), shared)
	h := sha256.Sum256(tr)
	cHS, sHS := deriveSecret(hs, "c hs traffic", h[:]), deriveSecret(hs, "s hs traffic", h[:])
	c.in.setSecret(sHS)
	for _, want := range []byte{typeEncryptedExts, typeFinished} {
		msg, err := c.readHandshakeMsg()
		if err != nil {
			return err
		}
		if msg[0] != want {
			return fmt.Errorf("test client: message %d, want %d", msg[0], want)
		}
		if want == typeFinished {
			h = sha256.Sum256(tr)
			if !hmac.Equal(msg[4:], finishedMAC(sHS, h[:])) {
				return errors.New("test client: server Finished does not verify")
			}
		}
		tr = append(tr, msg...)
	}
	h = sha256.Sum256(tr)
	master := masterSecret(hs)
	c.out.setSecret(cHS)
	fin := c.appendRecord(nil, recordHandshake, handshakeMsg(typeFinished, finishedMAC(cHS, h[:])))
	if _, err := c.Conn.Write(fin); err != nil {
		return err
	}
	c.in.setSecret(deriveSecret(master, "s ap traffic", h[:]))
	c.out.setSecret(deriveSecret(master, "c ap traffic", h[:]))
	return nil
}
