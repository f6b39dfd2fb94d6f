package wire

import (
	"crypto/rand"
	"testing"
)

func nonce() [NonceSize]byte {
	var n [NonceSize]byte
	rand.Read(n[:])
	return n
}

func TestProof(t *testing.T) {
	secret := []byte("s3cret")
	dn, ln := nonce(), nonce()
	tr := Transcript([]byte("dialer hello"), []byte("listener hello"))
	const dID, lID = 10, 20
	dProof := Proof(secret, Dialer, dID, ln, dn, tr)

	if !VerifyProof(secret, Dialer, dID, ln, dn, tr, dProof) {
		t.Fatal("a good proof does not verify")
	}
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"wrong secret", VerifyProof([]byte("other"), Dialer, dID, ln, dn, tr, dProof)},
		// Reflection: the dialer's proof sent back as if the listener's.
		{"reflected as listener", VerifyProof(secret, Listener, dID, ln, dn, tr, dProof)},
		{"reflected with swapped nonces", VerifyProof(secret, Listener, lID, dn, ln, tr, dProof)},
		// Replay: a proof recorded in an earlier handshake, against a fresh nonce.
		{"replayed, fresh verifier nonce", VerifyProof(secret, Dialer, dID, nonce(), dn, tr, dProof)},
		{"other sender", VerifyProof(secret, Dialer, lID, ln, dn, tr, dProof)},
		{"other transcript", VerifyProof(secret, Dialer, dID, ln, dn, Transcript([]byte("x"), nil), dProof)},
	} {
		if tc.ok {
			t.Errorf("%s: verifies", tc.name)
		}
	}
	if Proof(secret, Listener, lID, dn, ln, tr) == dProof {
		t.Fatal("dialer and listener proofs are equal")
	}
}

// Moving bytes from one Hello to the other changes the transcript.
func TestTranscriptUnambiguous(t *testing.T) {
	if Transcript([]byte("ab"), []byte("c")) == Transcript([]byte("a"), []byte("bc")) {
		t.Fatal("transcript does not separate the two hellos")
	}
	if Transcript([]byte("a"), []byte("b")) == Transcript([]byte("b"), []byte("a")) {
		t.Fatal("transcript ignores the order")
	}
}
