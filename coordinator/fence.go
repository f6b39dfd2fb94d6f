package coordinator

import "time"

// Margin is the part of a granted lease a holder does not use: its clock
// may run slower than etcd's, and a new holder needs a moment to be told
// it won. A quarter of the TTL, at least 300ms and at most half of it.
func Margin(ttl time.Duration) time.Duration {
	return min(max(ttl/4, 300*time.Millisecond), ttl/2)
}

// Deadline is the instant up to which a holder may complete writes: the
// time it sent the keep-alive etcd granted (a monotonic reading), plus the
// TTL granted, minus the margin. etcd counts the lease from when it
// received that keep-alive, which is later, so the lease cannot have
// expired for anyone else before Deadline.
func Deadline(sent time.Time, granted, margin time.Duration) time.Time {
	return sent.Add(granted - margin)
}

// GoneAfter is the instant after which a lease is expired on etcd for
// sure, when no renewal came back: the answer to the last granted
// keep-alive arrived after etcd received it, so etcd's expiry is before
// received+granted; the margin covers a clock that runs fast here.
func GoneAfter(received time.Time, granted, margin time.Duration) time.Time {
	return received.Add(granted + margin)
}

// Lease is what a node knows of its session's lease.
type Lease struct {
	Holder   bool      // this node holds the election
	Deadline time.Time // see Deadline; zero while no renewal was granted
	Gone     time.Time // see GoneAfter
	Lost     bool      // etcd said the lease no longer exists
}

// LeaseVerdict is what a node does with its lease at an instant.
type LeaseVerdict int

const (
	// Serve: the node is not the holder, or holds a valid lease.
	Serve LeaseVerdict = iota
	// Hold: the lease may have expired for others; complete no write.
	Hold
	// Resign: the lease is certainly gone; demote and stop writing as Primary.
	Resign
)

var verdictNames = [...]string{"serve", "hold", "resign"}

func (v LeaseVerdict) String() string { return verdictNames[v] }

// Verdict decides, at now, whether a holder serves, holds or resigns.
func Verdict(now time.Time, l Lease) LeaseVerdict {
	switch {
	case !l.Holder:
		return Serve
	case l.Lost || !l.Gone.IsZero() && !now.Before(l.Gone):
		return Resign
	case l.Deadline.IsZero() || !now.Before(l.Deadline):
		return Hold
	}
	return Serve
}

// OnLostLease is what the Primary's writes get while its lease may be expired.
type OnLostLease string

const (
	// Suspend holds replies (and new writes) until the lease is renewed,
	// or fails them once another node holds the election.
	Suspend OnLostLease = "suspend"
	// IOError fails them with EIO at once.
	IOError OnLostLease = "io-error"
)

// GateInput is what decides the fate of a write reply.
type GateInput struct {
	Enabled    bool         // the coordinator is on; without it every reply passes
	Holder     bool         // this node holds the election (or may still: see Lease)
	Primary    bool         // the node is Primary (promoted after the win)
	Verdict    LeaseVerdict // the lease's verdict now
	Mirroring  bool         // the link to the peer is up
	PeerFenced bool         // the peer is recorded outdated in etcd
	OnLost     OnLostLease
}

// GateAction is what happens to a reply or to a new write.
type GateAction int

const (
	Pass GateAction = iota // the reply goes out (the write is submitted)
	Wait                   // held until the input changes
	Fail                   // the client gets EIO
)

var actionNames = [...]string{"pass", "wait", "fail"}

func (a GateAction) String() string { return actionNames[a] }

// Decide is the gate's rule. A holder not yet promoted (or promoted again
// after a renewal) holds writes until it is. A reply the peer may lack (no link) waits
// until the peer is fenced, whatever OnLost says: if etcd cannot be
// written, the peer might be the one promoted next.
func Decide(in GateInput) GateAction {
	switch {
	case !in.Enabled:
		return Pass
	case !in.Holder:
		return Fail
	case in.Verdict != Serve && in.OnLost == IOError:
		return Fail
	case in.Verdict != Serve || !in.Primary:
		return Wait
	case !in.Mirroring && !in.PeerFenced:
		return Wait
	}
	return Pass
}

// Candidate is what a node knows when it decides whether to campaign.
type Candidate struct {
	UpToDate bool // the disk is UpToDate (not syncing, not Inconsistent)
	Outdated bool // etcd records this node as outdated
	Holding  bool // a leader exists in etcd (this node or another)
	MayStart bool // --primary, or not --secondary: may be first Primary
	Patient  bool // a --secondary node has waited its grace for the first Primary
	Paused   bool // a switchover stepped this node down: let the peer go first
}

// Campaign says whether a node enters the election now, and if not, why.
func Campaign(c Candidate) (bool, string) {
	switch {
	case c.Outdated:
		return false, "etcd records this node as outdated"
	case !c.UpToDate:
		return false, "the disk is not UpToDate"
	case c.Paused:
		return false, "switching over to the peer"
	case !c.Holding && !c.MayStart && !c.Patient:
		return false, "waiting for the Primary named at start"
	}
	return true, ""
}

// OutdatedRecord is the value of PREFIX/NAME/outdated.
type OutdatedRecord struct {
	By         string `json:"by"`         // the holder that recorded it
	Generation uint64 `json:"generation"` // its generation when it went on alone
}

// IsOutdated says whether the record outdates the node id.
func IsOutdated(rec *OutdatedRecord, id string) bool { return rec != nil && rec.By != id }

// PeerView is what the holder sees of its peer on the link.
type PeerView struct {
	Mirroring   bool // the link is up
	PeerDisk    string
	Replication string
	OutOfSync   uint64
}

// FenceAction is what the holder does about the outdated record.
type FenceAction int

const (
	KeepRecord FenceAction = iota
	WriteRecord
	ClearRecord
)

// PeerFence decides, on the holder, whether to write or clear the record.
func PeerFence(p PeerView, recorded bool) FenceAction {
	inSync := p.Mirroring && p.PeerDisk == "UpToDate" && p.Replication == "Established" && p.OutOfSync == 0
	switch {
	case !p.Mirroring && !recorded:
		return WriteRecord
	case inSync && recorded:
		return ClearRecord
	}
	return KeepRecord
}
