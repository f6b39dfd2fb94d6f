package wire

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// ErrUnexpectedFrame reports a well-formed frame that came out of turn.
var ErrUnexpectedFrame = errors.New("wire: unexpected frame")

// handshakeMaxBody bounds every handshake frame (the largest is a Refuse),
// so a header claiming more is refused at once instead of waited on.
const handshakeMaxBody = 1024

// Handshake meets the peer on rw and returns its Hello once both sides have
// proved they hold secret. The dialer and the listener take turns, so the
// exchange also runs over a synchronous pipe:
//
//	dialer                          listener
//	Hello           ------------>   ParseHello, CheckHello
//	ParseHello, CheckHello  <-----  Hello
//	Auth (dialer proof)  -------->  VerifyProof
//	VerifyProof  <----------------  Auth (listener proof)
//	Ready  ---------------------->
//
// At any step a side may send Refuse instead and stop. Handshake then
// returns a *RefusedError saying why and who refused; other failures (end of
// stream, deadline) come wrapped as they are. remote holds what was learned
// of the peer, even on error.
//
// Handshake fills local.Nonce with fresh random bytes; local.Version zero
// means Version. It reads exactly the frames of the handshake and nothing
// past them, so the caller may wrap rw in a bufio.Reader afterwards. It sets
// no deadline: the caller sets one on the connection before and clears it
// after; a refusal sent to a peer that does not read may wait for it too.
// If rw has a Flush method it is called after each write. An empty
// secret authenticates nothing; whether to allow it is the caller's call.
func Handshake(rw io.ReadWriter, local Hello, secret []byte, dialer bool) (remote Hello, err error) {
	local.Version = orVersion(local.Version)
	rand.Read(local.Nonce[:])
	body, err := AppendHello(nil, &local)
	if err != nil {
		return Hello{}, fmt.Errorf("wire: handshake: local hello: %w", err)
	}
	r := NewReader(rw)
	r.maxBody = handshakeMaxBody
	hs := &handshake{rw: rw, r: r, secret: secret, local: local, localFrame: body}
	if dialer {
		hs.side = Dialer
		err = hs.dial()
	} else {
		hs.side = Listener
		err = hs.listen()
	}
	return hs.remote, err
}

// handshake is the state of one Handshake call.
type handshake struct {
	rw     io.ReadWriter
	r      *Reader
	secret []byte
	side   Side

	local      Hello
	localFrame []byte // the local Hello frame as sent
	remote     Hello
	remoteBody []byte // the remote Hello body as received
}

func (hs *handshake) dial() error {
	if err := hs.send(hs.localFrame); err != nil {
		return err
	}
	if err := hs.recvHello(); err != nil {
		return err
	}
	if err := hs.sendProof(); err != nil {
		return err
	}
	if err := hs.recvProof(); err != nil {
		return err
	}
	return hs.send(AppendReady(nil))
}

func (hs *handshake) listen() error {
	if err := hs.recvHello(); err != nil {
		return err
	}
	if err := hs.send(hs.localFrame); err != nil {
		return err
	}
	if err := hs.recvProof(); err != nil {
		return err
	}
	if err := hs.sendProof(); err != nil {
		return err
	}
	_, err := hs.expect(TypeReady)
	return err
}

func (hs *handshake) recvHello() error {
	f, err := hs.expect(TypeHello)
	if err != nil {
		return err
	}
	hs.remote, err = ParseHello(f.Body)
	switch {
	case errors.Is(err, ErrUnknownVersion):
		return hs.refuse(ReasonUnknownVersion, fmt.Sprintf("this node speaks version %d, the peer %d", Version, hs.remote.Version), err)
	case err != nil:
		return hs.refuse(ReasonProtocolError, err.Error(), err)
	}
	hs.remoteBody = append([]byte(nil), f.Body...)
	var re *RefusedError
	if err := CheckHello(hs.local, hs.remote); errors.As(err, &re) {
		return hs.refuse(re.Reason, re.Text, nil)
	}
	return nil
}

func (hs *handshake) transcript() [32]byte {
	localBody := hs.localFrame[HeaderSize:]
	if hs.side == Dialer {
		return Transcript(localBody, hs.remoteBody)
	}
	return Transcript(hs.remoteBody, localBody)
}

func (hs *handshake) sendProof() error {
	p := Proof(hs.secret, hs.side, hs.local.NodeID, hs.remote.Nonce, hs.local.Nonce, hs.transcript())
	return hs.send(AppendAuth(nil, p))
}

func (hs *handshake) recvProof() error {
	f, err := hs.expect(TypeAuth)
	if err != nil {
		return err
	}
	p, err := ParseAuth(f.Body)
	if err != nil {
		return hs.refuse(ReasonProtocolError, err.Error(), err)
	}
	other := Listener
	if hs.side == Listener {
		other = Dialer
	}
	if !VerifyProof(hs.secret, other, hs.remote.NodeID, hs.local.Nonce, hs.remote.Nonce, hs.transcript(), p) {
		return hs.refuse(ReasonWrongSecret, "the proof does not verify: the shared secrets differ", nil)
	}
	return nil
}

// expect reads the next frame and returns it if it has type t. A Refuse
// from the peer becomes a *RefusedError with ByPeer set; a bad or
// unexpected frame is refused.
func (hs *handshake) expect(t Type) (Frame, error) {
	f, err := hs.r.Next()
	if err != nil {
		if isFrameError(err) {
			return f, hs.refuse(ReasonProtocolError, err.Error(), err)
		}
		return f, fmt.Errorf("wire: handshake: %s waiting for %s: %w", hs.side, t, err)
	}
	switch f.Type {
	case t:
		return f, nil
	case TypeRefuse:
		r, err := ParseRefuse(f.Body)
		if err != nil {
			return f, hs.refuse(ReasonProtocolError, err.Error(), err)
		}
		return f, &RefusedError{Reason: r.Reason, Text: r.Text, ByPeer: true}
	}
	err = fmt.Errorf("%w: %s while waiting for %s", ErrUnexpectedFrame, f.Type, t)
	return f, hs.refuse(ReasonProtocolError, err.Error(), err)
}

func isFrameError(err error) bool {
	for _, e := range []error{ErrBadMagic, ErrFrameTooLarge, ErrBadChecksum, ErrUnknownType, ErrMalformed} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// refuse tells the peer why, as best it can, and returns the matching error.
func (hs *handshake) refuse(reason Reason, text string, cause error) error {
	hs.send(AppendRefuse(nil, reason, text))
	return &RefusedError{Reason: reason, Text: text, Err: cause}
}

func (hs *handshake) send(frame []byte) error {
	if _, err := hs.rw.Write(frame); err != nil {
		return fmt.Errorf("wire: handshake: %s sending %s: %w", hs.side, Type(frame[4]), err)
	}
	if f, ok := hs.rw.(interface{ Flush() error }); ok {
		if err := f.Flush(); err != nil {
			return fmt.Errorf("wire: handshake: %s sending %s: %w", hs.side, Type(frame[4]), err)
		}
	}
	return nil
}
