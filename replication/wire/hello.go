package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	// Version is the protocol version this package speaks. A Hello of any
	// other version is refused. Version 2: the target of a resync answers
	// the source's SyncDone with its own.
	Version uint16 = 2
	// HelloMagic opens a Hello body: "NBMH".
	HelloMagic uint32 = 0x4E424D48
	// MaxResourceName bounds a resource name in bytes.
	MaxResourceName = 64
	// HistoryLen is the number of history generation ids a Hello carries.
	HistoryLen = 4
	// NonceSize is the size of a Hello nonce.
	NonceSize = 32

	helloFixed = 120 // Hello body bytes before the resource name
)

// ErrUnknownVersion reports a Hello of a protocol version this package
// does not speak.
var ErrUnknownVersion = errors.New("wire: unknown protocol version")

// HelloFlags are a Hello's flag bits.
type HelloFlags uint16

const (
	// DiscardMyData: this node gives up its changes if the generation ids
	// show a split brain (`resolve --discard-my-data`).
	DiscardMyData HelloFlags = 1 << 0
	// 1 << 1 was WantsFullSync, never sent; never reuse.
	// Dials: this node dials its peer too. When both do, only the
	// connection dialed by the lower node id is kept.
	Dials HelloFlags = 1 << 2
	// HasOutOfSync: this node's bitmap marks regions its peer may lack.
	HasOutOfSync HelloFlags = 1 << 3
	// ServesReads: this node answers ReadRequest frames. A node sends
	// them only to a peer that says so, so nodes of the same Version
	// without it still connect and never see one.
	ServesReads HelloFlags = 1 << 4
)

// GenIDs are a node's generation ids. The wire carries them; deciding what
// they mean is up to the caller. Zero means none.
type GenIDs struct {
	Current uint64
	Bitmap  uint64
	History [HistoryLen]uint64
}

// Hello is the first frame each side sends.
type Hello struct {
	Version  uint16 // zero is sent as Version
	Flags    HelloFlags
	Resource string // 1 to MaxResourceName bytes
	Size     uint64 // device size in bytes
	NodeID   uint64 // random per node, persisted; never zero
	Role     Role
	Disk     DiskState
	Gen      GenIDs
	LastSeq  uint64 // last journal seq this node holds
	Nonce    [NonceSize]byte
}

// AppendHello appends a Hello frame.
func AppendHello(dst []byte, h *Hello) ([]byte, error) {
	if err := h.validate(); err != nil {
		return dst, err
	}
	dst, start := beginFrame(dst)
	dst = appendHelloBody(dst, h)
	return endFrame(dst, start, TypeHello, 0), nil
}

func appendHelloBody(dst []byte, h *Hello) []byte {
	v := h.Version
	if v == 0 {
		v = Version
	}
	be := binary.BigEndian
	dst = be.AppendUint32(dst, HelloMagic)
	dst = be.AppendUint16(dst, v)
	dst = be.AppendUint16(dst, uint16(h.Flags))
	dst = be.AppendUint64(dst, h.NodeID)
	dst = be.AppendUint64(dst, h.Size)
	dst = append(dst, byte(h.Role), byte(h.Disk), byte(len(h.Resource)), 0, 0, 0, 0, 0)
	dst = be.AppendUint64(dst, h.Gen.Current)
	dst = be.AppendUint64(dst, h.Gen.Bitmap)
	for _, g := range h.Gen.History {
		dst = be.AppendUint64(dst, g)
	}
	dst = be.AppendUint64(dst, h.LastSeq)
	dst = append(dst, h.Nonce[:]...)
	return append(dst, h.Resource...)
}

// ParseHello parses the body of a Hello frame. For a Hello of another
// protocol version it returns a Hello holding only that Version and an
// error wrapping ErrUnknownVersion, so the refusal can name the version.
func ParseHello(body []byte) (Hello, error) {
	be := binary.BigEndian
	if len(body) < 6 || be.Uint32(body) != HelloMagic {
		return Hello{}, malformed(TypeHello, "no hello magic")
	}
	if v := be.Uint16(body[4:]); v != Version {
		return Hello{Version: v}, fmt.Errorf("%w %d (this node speaks %d)", ErrUnknownVersion, v, Version)
	}
	if len(body) < helloFixed || len(body) != helloFixed+int(body[26]) {
		return Hello{}, malformed(TypeHello, "%d bytes", len(body))
	}
	h := Hello{
		Version:  Version,
		Flags:    HelloFlags(be.Uint16(body[6:])),
		NodeID:   be.Uint64(body[8:]),
		Size:     be.Uint64(body[16:]),
		Role:     Role(body[24]),
		Disk:     DiskState(body[25]),
		Resource: string(body[helloFixed:]),
	}
	h.Gen.Current = be.Uint64(body[32:])
	h.Gen.Bitmap = be.Uint64(body[40:])
	for i := range h.Gen.History {
		h.Gen.History[i] = be.Uint64(body[48+8*i:])
	}
	h.LastSeq = be.Uint64(body[80:])
	copy(h.Nonce[:], body[88:])
	if err := h.validate(); err != nil {
		return Hello{}, err
	}
	return h, nil
}

// validate checks what a Hello must hold whatever the peer's.
func (h *Hello) validate() error {
	switch {
	case len(h.Resource) == 0 || len(h.Resource) > MaxResourceName:
		return malformed(TypeHello, "resource name of %d bytes, want 1 to %d", len(h.Resource), MaxResourceName)
	case h.NodeID == 0:
		return malformed(TypeHello, "node id zero")
	case h.Role != Primary && h.Role != Secondary:
		return malformed(TypeHello, "unknown role %d", uint8(h.Role))
	case h.Disk < UpToDate || h.Disk > Consistent:
		return malformed(TypeHello, "unknown disk state %d", uint8(h.Disk))
	}
	return nil
}

// CheckHello decides whether local may go on with the peer that sent remote.
// It refuses another protocol version, another resource name, another device
// size, and the node's own id (a node that reached itself). Generation ids
// are carried, not judged here. The error is a *RefusedError.
func CheckHello(local, remote Hello) error {
	lv, rv := orVersion(local.Version), orVersion(remote.Version)
	switch {
	case lv != rv:
		return &RefusedError{Reason: ReasonUnknownVersion,
			Text: fmt.Sprintf("protocol versions differ: %d and %d", lv, rv)}
	case local.Resource != remote.Resource:
		return &RefusedError{Reason: ReasonOtherResource,
			Text: fmt.Sprintf("resource names differ: %q and %q", local.Resource, remote.Resource)}
	case local.Size != remote.Size:
		return &RefusedError{Reason: ReasonOtherSize,
			Text: fmt.Sprintf("device sizes differ: %d and %d bytes", local.Size, remote.Size)}
	case local.NodeID == remote.NodeID:
		return &RefusedError{Reason: ReasonSameNode,
			Text: fmt.Sprintf("both ends are node %016x", local.NodeID)}
	}
	return nil
}

func orVersion(v uint16) uint16 {
	if v == 0 {
		return Version
	}
	return v
}
