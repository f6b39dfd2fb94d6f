package wire

import "fmt"

// Reason says why a side refused the other, in a Refuse frame.
type Reason uint16

// Refusal reasons. Numbers are part of the protocol: never reuse one.
const (
	ReasonProtocolError  Reason = 1 // garbage, a bad frame, or a frame out of turn
	ReasonUnknownVersion Reason = 2
	ReasonWrongSecret    Reason = 3
	ReasonOtherResource  Reason = 4
	ReasonOtherSize      Reason = 5
	ReasonSameNode       Reason = 6 // both ends have one node id: a node reached itself
	ReasonSplitBrain     Reason = 7
	ReasonUnrelatedData  Reason = 8
	ReasonBusy           Reason = 9  // already connected to a peer
	ReasonTLS            Reason = 10 // one side runs the link over TLS, the other does not
	ReasonDiskless       Reason = 11 // a Secondary's disk failed: it takes no records until one is attached
)

var reasonNames = map[Reason]string{
	ReasonProtocolError:  "protocol error",
	ReasonUnknownVersion: "unknown version",
	ReasonWrongSecret:    "wrong secret",
	ReasonOtherResource:  "other resource",
	ReasonOtherSize:      "other size",
	ReasonSameNode:       "same node",
	ReasonSplitBrain:     "split brain",
	ReasonUnrelatedData:  "unrelated data",
	ReasonBusy:           "busy",
	ReasonTLS:            "tls",
	ReasonDiskless:       "diskless",
}

func (r Reason) String() string {
	if s, ok := reasonNames[r]; ok {
		return s
	}
	return fmt.Sprintf("reason %d", uint16(r))
}

// RefusedError reports a connection one side would not go on with. ByPeer
// tells who refused: the peer (it sent a Refuse frame) or this node (it
// sent one, as best it could).
type RefusedError struct {
	Reason Reason
	Text   string
	ByPeer bool
	Err    error // what made this node refuse, if an error did
}

func (e *RefusedError) Error() string {
	who := "refused peer"
	if e.ByPeer {
		who = "refused by peer"
	}
	if e.Text == "" {
		return fmt.Sprintf("wire: %s: %s", who, e.Reason)
	}
	return fmt.Sprintf("wire: %s: %s: %s", who, e.Reason, e.Text)
}

func (e *RefusedError) Unwrap() error { return e.Err }
