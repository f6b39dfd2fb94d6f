package replication

import (
	"errors"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// A link that fails soon after it came up (a peer whose disk fails on its
// first write, a connection reset on every connect) would otherwise be made
// again at once, many times a second, each time with a handshake and the
// start of a resync. Each short-lived link doubles the wait before the
// next one, dialed or accepted; a link that lived for tune.linkStable, or that
// carried a write both ways (settled: the peer acknowledged a client write,
// or this node journaled a record the peer sent), resets it: a link reset
// by the network is made again at once, by either side. The numbers are in
// tune.

// nextFlapDelay is how long to wait before the next link, after one that
// lived for lived and settled or not; prev is the wait before that one.
func nextFlapDelay(prev, lived time.Duration, settled bool) time.Duration {
	if settled || lived >= tune.linkStable {
		return 0
	}
	return min(max(2*prev, tune.flapMin), tune.flapMax)
}

// nextDialBackoff is the dialer's wait before its next dial, after one that
// failed with err and a wait of prev: doubling up to tune.dialMax, except
// after a peer that said it is busy (closing its last link, or waiting
// after a short-lived one). That wait is short and bounded, so the peer is
// asked again soon: a backoff grown by its refusals would keep the link
// down long after the peer is ready. A Diskless peer is asked again only after
// the longest wait.
func nextDialBackoff(prev time.Duration, err error) time.Duration {
	var ref *wire.RefusedError
	if errors.As(err, &ref) && ref.ByPeer && ref.Reason == wire.ReasonBusy {
		return tune.dialMin
	}
	if errors.As(err, &ref) && ref.ByPeer && ref.Reason == wire.ReasonDiskless {
		return tune.dialMax // it takes no records until an operator attaches a disk
	}
	return min(max(2*prev, tune.dialMin), tune.dialMax)
}
