package tlspsk

import (
	"errors"
	"fmt"
)

// Handshake message types, extension numbers and code points used here.
const (
	typeClientHello   = 1
	typeServerHello   = 2
	typeEncryptedExts = 8
	typeFinished      = 20
	typeKeyUpdate     = 24
	typeMessageHash   = 254

	extSupportedGroups = 10
	extPreSharedKey    = 41
	extEarlyData       = 42
	extSupportedVers   = 43
	extPSKModes        = 45
	extKeyShare        = 51

	versionTLS12 = 0x0303
	versionTLS13 = 0x0304

	suiteAES128GCMSHA256 = 0x1301

	groupP256   = 23
	groupX25519 = 29

	modePSKDHE = 1
)

// clientHello is what the server needs of a ClientHello (RFC 8446 4.1.2).
type clientHello struct {
	raw        []byte // the whole handshake message, header included
	random     []byte
	sessionID  []byte
	suites     []uint16
	versions   []uint16 // supported_versions
	groups     []uint16 // supported_groups
	shares     []keyShare
	pskModes   []byte
	identities []pskIdentity
	binders    [][]byte
	// bindersAt is where the binders list starts in raw: the binders are
	// computed over raw[:bindersAt].
	bindersAt int
	earlyData bool
	// nullCompression: the compression methods are the one TLS 1.3 allows.
	nullCompression bool
}

type keyShare struct {
	group uint16
	key   []byte
}

type pskIdentity struct {
	identity []byte
	age      uint32
}

// errDecode is wrapped by every parse error (alert decode_error).
var errDecode = errors.New("tlspsk: malformed ClientHello")

// reader reads the big-endian fields of a TLS message.
type reader struct {
	b   []byte
	off int // bytes taken from the message so far, for bindersAt
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	r.off += n
	return v
}

func (r *reader) u8() int {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}
func (r *reader) u16() int {
	b := r.take(2)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}
func (r *reader) u32() uint32 {
	b := r.take(4)
	if b == nil {
		return 0
	}
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// vec8 and vec16 read a vector with a 1- or 2-byte length.
func (r *reader) vec8() *reader  { n := r.u8(); return r.sub(n) }
func (r *reader) vec16() *reader { n := r.u16(); return r.sub(n) }

func (r *reader) sub(n int) *reader {
	off := r.off
	b := r.take(n)
	return &reader{b: b, off: off, bad: r.bad}
}

func (r *reader) done() bool { return !r.bad && len(r.b) == 0 }

// parseClientHello parses a ClientHello handshake message (4-byte header
// included). It checks the syntax only; negotiate decides.
func parseClientHello(msg []byte) (*clientHello, error) {
	r := &reader{b: msg}
	if r.u8() != typeClientHello || r.u16()<<8|r.u8() != len(msg)-4 {
		return nil, fmt.Errorf("%w: bad header", errDecode)
	}
	ch := &clientHello{raw: msg}
	r.u16() // legacy_version
	ch.random = r.take(32)
	sid := r.vec8()
	ch.sessionID = sid.take(len(sid.b))
	if len(ch.sessionID) > 32 {
		return nil, fmt.Errorf("%w: session id of %d bytes", errDecode, len(ch.sessionID))
	}
	suites := r.vec16()
	for len(suites.b) >= 2 {
		ch.suites = append(ch.suites, uint16(suites.u16()))
	}
	comp := r.vec8()
	if !suites.done() || len(comp.b) == 0 || r.bad {
		return nil, fmt.Errorf("%w: bad cipher suites or compression methods", errDecode)
	}
	ch.nullCompression = len(comp.b) == 1 && comp.b[0] == 0
	if len(r.b) == 0 {
		return ch, nil // no extensions: a TLS 1.2 client at most
	}
	exts := r.vec16()
	if !r.done() {
		return nil, fmt.Errorf("%w: bytes after the extensions", errDecode)
	}
	if err := ch.parseExtensions(exts); err != nil {
		return nil, err
	}
	return ch, nil
}

// parseExtensions reads the extensions this server looks at and checks
// that none comes twice and that pre_shared_key comes last.
func (ch *clientHello) parseExtensions(exts *reader) error {
	seen := map[int]bool{}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec16()
		if exts.bad {
			return fmt.Errorf("%w: truncated extension", errDecode)
		}
		if seen[typ] {
			return fmt.Errorf("%w: extension %d twice", errDecode, typ)
		}
		seen[typ] = true
		if seen[extPreSharedKey] && typ != extPreSharedKey {
			return fmt.Errorf("%w: pre_shared_key is not the last extension", errDecode)
		}
		if err := ch.parseExtension(typ, data); err != nil {
			return err
		}
	}
	return nil
}

func (ch *clientHello) parseExtension(typ int, d *reader) error {
	switch typ {
	case extSupportedVers:
		l := d.vec8()
		for len(l.b) >= 2 {
			ch.versions = append(ch.versions, uint16(l.u16()))
		}
		return ch.check(typ, d, l)
	case extSupportedGroups:
		l := d.vec16()
		for len(l.b) >= 2 {
			ch.groups = append(ch.groups, uint16(l.u16()))
		}
		return ch.check(typ, d, l)
	case extKeyShare:
		l := d.vec16()
		for len(l.b) > 0 && !l.bad {
			g := l.u16()
			k := l.vec16()
			ch.shares = append(ch.shares, keyShare{uint16(g), k.b})
		}
		return ch.check(typ, d, l)
	case extPSKModes:
		l := d.vec8()
		ch.pskModes = l.take(len(l.b))
		return ch.check(typ, d, l)
	case extEarlyData:
		ch.earlyData = true
		return ch.check(typ, d, &reader{})
	case extPreSharedKey:
		return ch.parsePSK(d)
	}
	return nil
}

// check reports a decode error unless list was read whole and was all of
// the extension's data d.
func (ch *clientHello) check(typ int, d, list *reader) error {
	if !d.done() || !list.done() {
		return fmt.Errorf("%w: extension %d", errDecode, typ)
	}
	return nil
}

// parsePSK reads the pre_shared_key extension: identities, then binders.
func (ch *clientHello) parsePSK(d *reader) error {
	ids := d.vec16()
	for len(ids.b) > 0 && !ids.bad {
		id := ids.vec16()
		age := ids.u32()
		if len(id.b) == 0 {
			ids.bad = true
		}
		ch.identities = append(ch.identities, pskIdentity{id.b, age})
	}
	ch.bindersAt = d.off
	bs := d.vec16()
	for len(bs.b) > 0 && !bs.bad {
		b := bs.vec8()
		if len(b.b) < 32 {
			bs.bad = true
		}
		ch.binders = append(ch.binders, b.b)
	}
	if !ids.done() || !bs.done() || !d.done() || len(ch.identities) == 0 || len(ch.identities) != len(ch.binders) {
		return fmt.Errorf("%w: pre_shared_key", errDecode)
	}
	return nil
}
