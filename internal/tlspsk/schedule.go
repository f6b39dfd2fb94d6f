package tlspsk

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"hash"
)

// The key schedule of RFC 8446 section 7.1 for the one suite this package
// speaks, TLS_AES_128_GCM_SHA256: SHA-256 throughout, 16-byte keys.
const (
	hashLen = sha256.Size
	keyLen  = 16
	ivLen   = 12
)

// expandLabel is HKDF-Expand-Label(secret, label, context, n).
func expandLabel(secret []byte, label string, context []byte, n int) []byte {
	info := make([]byte, 0, 4+6+len(label)+len(context))
	info = binary.BigEndian.AppendUint16(info, uint16(n))
	info = append(info, byte(6+len(label)))
	info = append(info, "tls13 "...)
	info = append(info, label...)
	info = append(info, byte(len(context)))
	info = append(info, context...)
	out, err := hkdf.Expand(sha256.New, secret, string(info), n)
	if err != nil {
		panic("tlspsk: HKDF-Expand: " + err.Error()) // only for n > 255*32
	}
	return out
}

// extract is HKDF-Extract(salt, ikm); a nil ikm is the zeros the schedule
// feeds where no key enters.
func extract(salt, ikm []byte) []byte {
	if ikm == nil {
		ikm = make([]byte, hashLen)
	}
	out, err := hkdf.Extract(sha256.New, ikm, salt)
	if err != nil {
		panic("tlspsk: HKDF-Extract: " + err.Error())
	}
	return out
}

// deriveSecret is Derive-Secret(secret, label, messages), given the hash of
// the messages.
func deriveSecret(secret []byte, label string, transcript []byte) []byte {
	return expandLabel(secret, label, transcript, hashLen)
}

// emptyHash is the transcript hash of no messages.
var emptyHash = func() []byte { h := sha256.Sum256(nil); return h[:] }()

// earlySecret starts the schedule from an external PSK.
func earlySecret(psk []byte) []byte { return extract(nil, psk) }

// binderKey is the key of the PSK binders (external PSK: "ext binder").
func binderKey(early []byte) []byte { return deriveSecret(early, "ext binder", emptyHash) }

// handshakeSecret mixes the (EC)DHE shared secret into the schedule.
func handshakeSecret(early, shared []byte) []byte {
	return extract(deriveSecret(early, "derived", emptyHash), shared)
}

// masterSecret is the last extract of the schedule.
func masterSecret(hs []byte) []byte {
	return extract(deriveSecret(hs, "derived", emptyHash), nil)
}

// finishedMAC is the verify_data of a Finished message (or a binder) made
// with baseKey over the transcript hash.
func finishedMAC(baseKey, transcript []byte) []byte {
	m := hmac.New(sha256.New, expandLabel(baseKey, "finished", nil, hashLen))
	m.Write(transcript)
	return m.Sum(nil)
}

// nextTrafficSecret is the secret after a KeyUpdate.
func nextTrafficSecret(secret []byte) []byte {
	return expandLabel(secret, "traffic upd", nil, hashLen)
}

// trafficKeys turns a traffic secret into the AEAD and IV of a direction.
func trafficKeys(secret []byte) (cipher.AEAD, [ivLen]byte) {
	var iv [ivLen]byte
	copy(iv[:], expandLabel(secret, "iv", nil, ivLen))
	block, err := aes.NewCipher(expandLabel(secret, "key", nil, keyLen))
	if err != nil {
		panic("tlspsk: " + err.Error())
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic("tlspsk: " + err.Error())
	}
	return aead, iv
}

// transcript is the running hash of the handshake messages.
type transcript struct{ h hash.Hash }

func newTranscript() *transcript { return &transcript{sha256.New()} }

func (t *transcript) add(msgs ...[]byte) {
	for _, m := range msgs {
		t.h.Write(m)
	}
}

func (t *transcript) sum() []byte { return t.h.Sum(nil) }
