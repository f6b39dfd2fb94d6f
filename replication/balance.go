package replication

import (
	"fmt"
	"sync/atomic"
)

// ReadBalancing says which disk serves a read while the peer could serve
// it too (DRBD's read-balancing, same names and meanings). A Primary's
// own disk holds every write it acknowledged, so it may always serve; the
// peer serves only while readPeer may (connected, UpToDate, the range in
// sync), and a read the peer fails is served here after all.
type ReadBalancing string

const (
	// PreferLocal: this node's disk (default).
	PreferLocal ReadBalancing = "prefer-local"
	// PreferRemote: the peer's disk.
	PreferRemote ReadBalancing = "prefer-remote"
	// RoundRobin: the two disks in turn.
	RoundRobin ReadBalancing = "round-robin"
	// LeastPending: the disk with fewer reads in flight; this one on a tie.
	LeastPending ReadBalancing = "least-pending"
	// WhenCongestedRemote: this node's disk, unless it is congested.
	WhenCongestedRemote ReadBalancing = "when-congested-remote"
)

// ParseReadBalancing reads a policy's name.
func ParseReadBalancing(s string) (ReadBalancing, error) {
	switch b := ReadBalancing(s); b {
	case PreferLocal, PreferRemote, RoundRobin, LeastPending, WhenCongestedRemote:
		return b, nil
	}
	return "", fmt.Errorf("replication: read balancing %q: want prefer-local, prefer-remote, round-robin, least-pending or when-congested-remote", s)
}

// congestedReads is how many reads in flight on this node's disk make it
// congested for WhenCongestedRemote.
const congestedReads = 8

// readInputs are what decides where a read goes.
type readInputs struct {
	Policy        ReadBalancing
	LocalPending  int64  // reads in flight on this node's disk
	RemotePending int64  // reads in flight on the peer's
	PeerUsable    bool   // the peer may serve the read (see peerReadRefusal)
	Congested     bool   // this node's disk is congested
	Turn          uint64 // a counter that moves with every read (RoundRobin)
}

// readRemote decides whether a read goes to the peer.
func readRemote(in readInputs) bool {
	if !in.PeerUsable {
		return false
	}
	switch in.Policy {
	case PreferRemote:
		return true
	case RoundRobin:
		return in.Turn%2 == 1
	case LeastPending:
		return in.RemotePending < in.LocalPending
	case WhenCongestedRemote:
		return in.Congested
	}
	return false
}

// balancer counts the reads in flight on each disk and the reads the peer
// served (readPeer counts those).
type balancer struct {
	localPending, remotePending atomic.Int64
	turn                        atomic.Uint64
	remoteDone                  atomic.Uint64 // reads the peer served
}

// ReadAt reads from this node's disk, or from the peer's as
// Config.ReadBalancing says; a write is applied to the disk here, and
// received by the peer, before it is acknowledged.
func (r *Resource) ReadAt(p []byte, off int64) (int, error) {
	r.reads.Add(1) // application I/O: a resync yields to it
	if r.cfg.ReadBalancing != PreferLocal && r.cfg.ReadBalancing != "" && r.readFromPeer(p, off) {
		return len(p), nil
	}
	b := &r.bal
	b.localPending.Add(1)
	defer b.localPending.Add(-1)
	return r.readAt(p, off) // the disk, or the peer when the disk is out (detach.go)
}

// readFromPeer serves a read from the peer if the policy sends it there
// and the peer answers; false leaves it to this node's disk.
func (r *Resource) readFromPeer(p []byte, off int64) bool {
	b := &r.bal
	local := b.localPending.Load()
	in := readInputs{Policy: r.cfg.ReadBalancing, LocalPending: local, RemotePending: b.remotePending.Load(),
		Congested: local >= congestedReads, PeerUsable: true}
	if in.Policy == RoundRobin {
		in.Turn = b.turn.Add(1)
	}
	// The policy first, as if the peer could serve: asking whether it can
	// takes the resource's lock, which a read kept here need not.
	if !readRemote(in) {
		return false
	}
	if _, err := r.peerForRead(off, int64(len(p))); err != nil {
		return false
	}
	b.remotePending.Add(1)
	err := r.readPeer(p, off)
	b.remotePending.Add(-1)
	if err != nil {
		r.log.Debug("read from the peer failed; reading the local disk", "off", off, "len", len(p), "err", err)
		return false
	}
	return true
}
