// Package plant holds the bugs the simulation (replication/sim) plants to
// show that each of its invariants catches one. Built with the simbugs tag
// they can be switched on (Set); in every other build On is a constant
// false and the compiler drops the planted code.
package plant

// Bug is one planted bug.
type Bug uint32

const (
	// AckBeforePeer completes a write once its record is sent, not when
	// the peer has journaled it (protocol C).
	AckBeforePeer Bug = 1 << iota
	// SkipMarkWhenDown writes without a link without marking the region
	// out of sync.
	SkipMarkWhenDown
	// ApplyOutOfOrder makes a Secondary journal the first two records of
	// a Records frame in swapped order.
	ApplyOutOfOrder
	// PeerAlwaysUpToDate makes Status report the peer's disk UpToDate
	// whatever it knows.
	PeerAlwaysUpToDate
	// MergeSplitBrain lets a split brain connect and go on.
	MergeSplitBrain
	// PromoteOverPrimary promotes a node connected to a Primary peer.
	PromoteOverPrimary
	// LeakLinkGoroutine leaves a goroutine behind for every link.
	LeakLinkGoroutine
	// ForgetWaiters drops the writes that waited on a link that fell,
	// without completing them.
	ForgetWaiters
)
