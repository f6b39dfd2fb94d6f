package wire

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"unicode/utf8"
)

const (
	// ProofSize is the size of an Auth body.
	ProofSize = 32
	// MaxRefuseText bounds a Refuse frame's text; longer text is cut.
	MaxRefuseText = 512

	ackSize = 9 // seq + kind
)

// AppendAuth appends an Auth frame carrying proof.
func AppendAuth(dst []byte, proof [ProofSize]byte) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, proof[:]...)
	return endFrame(dst, start, TypeAuth, 0)
}

// ParseAuth parses the body of an Auth frame.
func ParseAuth(body []byte) ([ProofSize]byte, error) {
	var p [ProofSize]byte
	if len(body) != ProofSize {
		return p, malformed(TypeAuth, "%d bytes, want %d", len(body), ProofSize)
	}
	copy(p[:], body)
	return p, nil
}

// Refuse is the body of a Refuse frame: why the sender will not go on.
type Refuse struct {
	Reason Reason
	Text   string // for the log; may be empty
}

// AppendRefuse appends a Refuse frame. Text longer than MaxRefuseText is cut
// at a rune boundary.
func AppendRefuse(dst []byte, reason Reason, text string) []byte {
	if len(text) > MaxRefuseText {
		i := MaxRefuseText
		for i > 0 && !utf8.RuneStart(text[i]) {
			i--
		}
		text = text[:i]
	}
	dst, start := beginFrame(dst)
	dst = binary.BigEndian.AppendUint16(dst, uint16(reason))
	dst = append(dst, text...)
	return endFrame(dst, start, TypeRefuse, 0)
}

// ParseRefuse parses the body of a Refuse frame. Reason codes this version
// does not know are kept as they are.
func ParseRefuse(body []byte) (Refuse, error) {
	if len(body) < 2 || len(body)-2 > MaxRefuseText {
		return Refuse{}, malformed(TypeRefuse, "%d bytes, want 2 to %d", len(body), 2+MaxRefuseText)
	}
	return Refuse{
		Reason: Reason(binary.BigEndian.Uint16(body)),
		Text:   string(body[2:]),
	}, nil
}

// AppendBarrier appends a Barrier frame: the peer makes every record up to
// and including seq durable, then sends Ack{Synced, seq}.
func AppendBarrier(dst []byte, seq uint64) []byte {
	return appendUint64Frame(dst, TypeBarrier, seq)
}

// ParseBarrier parses the body of a Barrier frame.
func ParseBarrier(body []byte) (seq uint64, err error) {
	return parseUint64(TypeBarrier, body)
}

// Ack is the body of an Ack frame. It is cumulative: every record up to and
// including Seq has reached Kind.
type Ack struct {
	Kind AckKind
	Seq  uint64
}

// AppendAck appends an Ack frame.
func AppendAck(dst []byte, a Ack) []byte {
	dst, start := beginFrame(dst)
	dst = binary.BigEndian.AppendUint64(dst, a.Seq)
	dst = append(dst, byte(a.Kind))
	return endFrame(dst, start, TypeAck, 0)
}

// ParseAck parses the body of an Ack frame.
func ParseAck(body []byte) (Ack, error) {
	if len(body) != ackSize {
		return Ack{}, malformed(TypeAck, "%d bytes, want %d", len(body), ackSize)
	}
	a := Ack{Seq: binary.BigEndian.Uint64(body), Kind: AckKind(body[8])}
	if a.Kind < Received || a.Kind > Synced {
		return Ack{}, malformed(TypeAck, "unknown kind %d", uint8(a.Kind))
	}
	return a, nil
}

// AppendPing appends a Ping frame; the peer answers with a Pong of the same token.
func AppendPing(dst []byte, token uint64) []byte {
	return appendUint64Frame(dst, TypePing, token)
}

// AppendPong appends a Pong frame.
func AppendPong(dst []byte, token uint64) []byte {
	return appendUint64Frame(dst, TypePong, token)
}

// ParsePing parses the body of a Ping or a Pong frame.
func ParsePing(body []byte) (token uint64, err error) {
	return parseUint64(TypePing, body)
}

// AppendBye appends a Bye frame.
func AppendBye(dst []byte) []byte {
	dst, start := beginFrame(dst)
	return endFrame(dst, start, TypeBye, 0)
}

// AppendReady appends a Ready frame, the dialer's last word in the handshake.
func AppendReady(dst []byte) []byte {
	dst, start := beginFrame(dst)
	return endFrame(dst, start, TypeReady, 0)
}

func appendUint64Frame(dst []byte, t Type, v uint64) []byte {
	dst, start := beginFrame(dst)
	dst = binary.BigEndian.AppendUint64(dst, v)
	return endFrame(dst, start, t, 0)
}

func parseUint64(t Type, body []byte) (uint64, error) {
	if len(body) != 8 {
		return 0, malformed(t, "%d bytes, want 8", len(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// malformed returns an error wrapping ErrMalformed for a body of type t.
func malformed(t Type, format string, args ...any) error {
	return fmt.Errorf("%w: %s: %s", ErrMalformed, t, fmt.Sprintf(format, args...))
}

// AppendSyncDone appends a SyncDone frame: every record of a resync has
// been sent before it, and gen is the source's current generation id, which
// the target adopts once it has journaled them all.
func AppendSyncDone(dst []byte, gen uint64) []byte {
	return appendUint64Frame(dst, TypeSyncDone, gen)
}

// ParseSyncDone parses the body of a SyncDone frame.
func ParseSyncDone(body []byte) (gen uint64, err error) {
	return parseUint64(TypeSyncDone, body)
}

// AppendRecordsHeader appends the header of a Records frame whose body is
// parts written back to back: records in link form (AppendRecord). The
// caller writes the parts right after the header, e.g. as net.Buffers; they
// are read once for the checksum, never copied.
func AppendRecordsHeader(dst []byte, parts [][]byte) ([]byte, error) {
	return AppendRecordsHeaderSums(dst, parts, nil)
}

// PartSum is the CRC32C of a part of a Records body, when Known.
type PartSum struct {
	Sum   uint32
	Known bool
}

// AppendRecordsHeaderSums is AppendRecordsHeader where the checksums of some
// parts are known (sums[i] is parts[i]'s; sums may be shorter): the frame's
// checksum takes those from their sums (crcCombine), without reading them.
func AppendRecordsHeaderSums(dst []byte, parts [][]byte, sums []PartSum) ([]byte, error) {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	if n > MaxBodySize {
		return dst, fmt.Errorf("%w: records body of %d bytes, max %d", ErrFrameTooLarge, n, MaxBodySize)
	}
	start := len(dst)
	dst = append(dst, make([]byte, HeaderSize)...)
	h := dst[start:]
	putHeader(h, TypeRecords, 0, n)
	crc := crc32.Update(0, castagnoli, h[:crcOffset])
	for i, p := range parts {
		if i < len(sums) && sums[i].Known {
			crc = crcCombine(crc, sums[i].Sum, len(p))
		} else {
			crc = crc32.Update(crc, castagnoli, p)
		}
	}
	binary.BigEndian.PutUint32(h[crcOffset:], crc)
	return dst, nil
}
