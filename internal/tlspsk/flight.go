package tlspsk

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"
)

// helloRetryRandom is the Random that marks a ServerHello as a
// HelloRetryRequest (RFC 8446 4.1.3).
var helloRetryRandom = []byte{
	0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
	0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
}

// handshakeMsg frames a handshake message body.
func handshakeMsg(typ byte, body []byte) []byte {
	n := len(body)
	return append([]byte{typ, byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// extension appends one extension.
func extension(b []byte, typ uint16, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

// serverHello builds a ServerHello (or, with helloRetryRandom, a
// HelloRetryRequest) with the one suite this server speaks.
func serverHello(random, sessionID, exts []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, versionTLS12)
	b = append(b, random...)
	b = append(b, byte(len(sessionID)))
	b = append(b, sessionID...)
	b = binary.BigEndian.AppendUint16(b, suiteAES128GCMSHA256)
	b = append(b, 0) // no compression
	b = binary.BigEndian.AppendUint16(b, uint16(len(exts)))
	return handshakeMsg(typeServerHello, append(b, exts...))
}

var tls13 = []byte{0x03, 0x04}

func helloRetryExts(group uint16) []byte {
	b := extension(nil, extSupportedVers, tls13)
	return extension(b, extKeyShare, binary.BigEndian.AppendUint16(nil, group))
}

func serverHelloExts(group uint16, pub []byte, identity int) []byte {
	b := extension(nil, extSupportedVers, tls13)
	share := binary.BigEndian.AppendUint16(nil, group)
	share = binary.BigEndian.AppendUint16(share, uint16(len(pub)))
	b = extension(b, extKeyShare, append(share, pub...))
	return extension(b, extPreSharedKey, binary.BigEndian.AppendUint16(nil, uint16(identity)))
}

// curve is the ecdh curve of a group this server takes.
func curve(group uint16) ecdh.Curve {
	if group == groupP256 {
		return ecdh.P256()
	}
	return ecdh.X25519()
}

// keyExchange makes this side's key share for the client's and their
// shared secret.
func keyExchange(share keyShare, rnd io.Reader) (pub, shared []byte, err error) {
	c := curve(share.group)
	peer, err := c.NewPublicKey(share.key)
	if err != nil {
		return nil, nil, refuse(alertIllegalParameter, "bad key share: %v", err)
	}
	priv, err := c.GenerateKey(rnd)
	if err != nil {
		return nil, nil, refuse(alertInternalError, "key share: %v", err)
	}
	shared, err = priv.ECDH(peer)
	if err != nil {
		return nil, nil, refuse(alertIllegalParameter, "bad key share: %v", err)
	}
	return priv.PublicKey().Bytes(), shared, nil
}

// sendServerFlight sends ServerHello, (ChangeCipherSpec,) EncryptedExtensions
// and Finished in one write, appending them to the transcript tr, and sets
// the application key for writing. It returns the client's handshake and
// application traffic secrets.
func (c *Conn) sendServerFlight(ch *clientHello, cho choice, early []byte, tr *[]byte, firstCCS bool) (cHS, cAP []byte, err error) {
	rnd := c.cfg.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	pub, shared, err := keyExchange(cho.share, rnd)
	if err != nil {
		return nil, nil, err
	}
	random := make([]byte, 32)
	if _, err := io.ReadFull(rnd, random); err != nil {
		return nil, nil, refuse(alertInternalError, "random: %v", err)
	}
	sh := serverHello(random, ch.sessionID, serverHelloExts(cho.share.group, pub, cho.identity))
	*tr = append(*tr, sh...)
	hs := handshakeSecret(early, shared)
	h := sha256.Sum256(*tr)
	cHS, sHS := deriveSecret(hs, "c hs traffic", h[:]), deriveSecret(hs, "s hs traffic", h[:])
	ee := handshakeMsg(typeEncryptedExts, []byte{0, 0})
	*tr = append(*tr, ee...)
	h = sha256.Sum256(*tr)
	fin := handshakeMsg(typeFinished, finishedMAC(sHS, h[:]))
	*tr = append(*tr, fin...)
	h = sha256.Sum256(*tr)
	master := masterSecret(hs)
	cAP, sAP := deriveSecret(master, "c ap traffic", h[:]), deriveSecret(master, "s ap traffic", h[:])

	c.wmu.Lock()
	defer c.wmu.Unlock()
	b := c.appendRecord(c.wbuf[:0], recordHandshake, sh)
	if firstCCS && len(ch.sessionID) > 0 {
		b = c.appendRecord(b, recordCCS, []byte{1})
	}
	c.out.setSecret(sHS)
	b = c.appendRecord(b, recordHandshake, append(ee, fin...))
	c.wbuf = b
	if _, err := c.Conn.Write(b); err != nil {
		c.werr = fmt.Errorf("tlspsk: %w", err)
		return nil, nil, c.werr
	}
	c.out.setSecret(sAP)
	return cHS, cAP, nil
}

// readClientFinished reads the client's Finished and checks it against the
// transcript tr.
func (c *Conn) readClientFinished(cHS, tr []byte) error {
	msg, err := c.readHandshakeMsg()
	if err != nil {
		return err
	}
	if msg[0] != typeFinished || len(c.hsBuf) > 0 {
		return refuse(alertUnexpectedMessage, "handshake message %d where the client's Finished belongs", msg[0])
	}
	h := sha256.Sum256(tr)
	if !hmac.Equal(msg[4:], finishedMAC(cHS, h[:])) {
		return refuse(alertDecryptError, "the client's Finished does not verify")
	}
	return nil
}
