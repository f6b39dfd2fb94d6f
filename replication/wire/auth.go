package wire

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
)

// authLabel opens every proof, binding it to this protocol and its version.
const authLabel = "nbdmirror-auth-v1"

// Side is a node's part in a handshake: the one that dialed or the one that
// accepted. The two sides' proofs differ, so one cannot be reflected back as
// the other.
type Side uint8

const (
	Dialer   Side = 1
	Listener Side = 2
)

func (s Side) String() string {
	switch s {
	case Dialer:
		return "dialer"
	case Listener:
		return "listener"
	}
	return "side?"
}

// Transcript hashes the two Hello bodies of a handshake, exactly as they went
// over the link, the dialer's first. Both sides compute the same value.
func Transcript(dialerHello, listenerHello []byte) [sha256.Size]byte {
	h := sha256.New()
	var n [4]byte
	for _, b := range [][]byte{dialerHello, listenerHello} {
		binary.BigEndian.PutUint32(n[:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// Proof returns what the node on side from, with node id sender, sends in
// its Auth frame: HMAC-SHA256 under secret of
//
//	"nbdmirror-auth-v1" | side (1 byte) | sender (8 bytes, big endian) |
//	peerNonce | ownNonce | transcript
//
// where peerNonce is the other side's Hello nonce and ownNonce the sender's.
// Fresh nonces on both sides make a recorded proof useless later.
func Proof(secret []byte, from Side, sender uint64, peerNonce, ownNonce [NonceSize]byte, transcript [sha256.Size]byte) [ProofSize]byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(authLabel))
	var b [9]byte
	b[0] = byte(from)
	binary.BigEndian.PutUint64(b[1:], sender)
	m.Write(b[:])
	m.Write(peerNonce[:])
	m.Write(ownNonce[:])
	m.Write(transcript[:])
	var p [ProofSize]byte
	m.Sum(p[:0])
	return p
}

// VerifyProof reports, in constant time, whether proof is what the node on
// side from, with node id sender, must send. The arguments are those of
// Proof as the sender sees them: peerNonce is the verifier's own nonce.
func VerifyProof(secret []byte, from Side, sender uint64, peerNonce, ownNonce [NonceSize]byte, transcript [sha256.Size]byte, proof [ProofSize]byte) bool {
	want := Proof(secret, from, sender, peerNonce, ownNonce, transcript)
	return hmac.Equal(want[:], proof[:])
}
