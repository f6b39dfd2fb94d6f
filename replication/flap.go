package replication

import "time"

// A link that fails soon after it came up (a peer whose disk fails on its
// first write, a connection reset on every connect) would otherwise be made
// again at once, many times a second, each time with a handshake and the
// start of a resync. Each short-lived link doubles the wait before the
// next one, dialed or accepted; a link that lived for tune.linkStable, or that
// carried a client write to the peer and back (settled), resets it: a
// link reset by the network is made again at once. The numbers are in
// tune.

// nextFlapDelay is how long to wait before the next link, after one that
// lived for lived and settled or not; prev is the wait before that one.
func nextFlapDelay(prev, lived time.Duration, settled bool) time.Duration {
	if settled || lived >= tune.linkStable {
		return 0
	}
	return min(max(2*prev, tune.flapMin), tune.flapMax)
}
