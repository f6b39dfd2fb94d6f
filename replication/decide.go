package replication

import "github.com/nbdmirror/nbdmirror/replication/wire"

// Outcome is what two nodes' generation ids say should happen when they
// connect.
type Outcome uint8

const (
	InSync     Outcome = iota // same data: replicate new writes only
	SyncSource                // the peer lacks this node's newer writes
	SyncTarget                // this node lacks the peer's newer writes
	SplitBrain                // both wrote apart since a common point
	Unrelated                 // no common history: full sync only on command
	StalePeer                 // a Diskless Primary's peer lacks what its disk holds (disklessOutcome)
)

func (o Outcome) String() string {
	return [...]string{"in sync", "SyncSource", "SyncTarget", "split brain", "unrelated data", "stale peer"}[o]
}

// disklessOutcome is what two nodes decide when one is Diskless (a Diskless
// Secondary refuses before: see admit). A Diskless Primary works through
// its peer with nothing to sync either way (its disk holds nothing it may
// read), if the peer holds what that disk held: the Primary marks no
// region out of sync (a mark is a write the peer lacks, which only the
// disk holds: made while the link was down, or lost with it, or not yet
// resynced, before the disk failed; a resync that ends clears them), and
// the peer's data is of its lineage (its generation is the Primary's
// current, bitmap or history one: generations moved on without a write
// leave no mark), and its disk is UpToDate (a resync's target, Inconsistent
// or Consistent, lacks what the resync had not brought yet, although the
// source cleared those marks as it sent them), and it still holds every
// record it acknowledged to the Primary (peerSeq: a peer that lost the tail
// of its journal in a power loss lacks records the Primary marks only once
// they meet, see meet and sameUpTo; only the Primary knows peerSeq, and its
// refusal tells the peer). Any other peer lacks
// writes that only the detached disk holds, or is another device's: the
// Primary would serve stale data, write over what the disk holds there,
// and a disk attached later would be filled from it. StalePeer: refused,
// until the Primary is restarted on its disk.
func disklessOutcome(local, remote wire.Hello, peerSeq uint64) Decision {
	p, peer, mine := local, remote, true
	if remote.Disk == wire.Diskless {
		p, peer, mine = remote, local, false
	}
	if p.Role != wire.Primary {
		return Decision{Outcome: InSync}
	}
	lineage := peer.Gen.Current == p.Gen.Current || inHistory(p.Gen, peer.Gen.Current)
	lost := mine && peerSeq > sameUpTo(peer)
	if !lineage || p.Flags&wire.HasOutOfSync != 0 || peer.Disk != wire.UpToDate || lost {
		return Decision{Outcome: StalePeer}
	}
	return Decision{Outcome: InSync}
}

// Full says whether the sync must cover the whole disk because no bitmap
// records what differs.
type Decision struct {
	Outcome Outcome
	Full    bool
}

// decide compares the generation ids of this node (l) and its peer (r), as
// DRBD compares its UUIDs:
//   - equal current ids: the same data;
//   - my bitmap id is the peer's current id: I moved on, the peer stayed
//     where my bitmap started, so my bitmap says what to send;
//   - both bitmap ids equal but current ids differ: both moved on apart;
//   - the peer's current id in my history: it is older, but my bitmap no
//     longer covers the difference: a full sync;
//   - a device created empty (GenZero) that never moved on is a new peer
//     that may get a full sync;
//   - anything else shares no history.
func decide(l, r wire.GenIDs) Decision {
	switch {
	case l.Current == r.Current:
		return Decision{Outcome: InSync}
	case l.Bitmap != 0 && l.Bitmap == r.Bitmap:
		return Decision{Outcome: SplitBrain}
	case l.Bitmap != 0 && l.Bitmap == r.Current:
		return Decision{Outcome: SyncSource}
	case r.Bitmap != 0 && r.Bitmap == l.Current:
		return Decision{Outcome: SyncTarget}
	case inHistory(l, r.Current) || r.Current == GenZero && r.Bitmap == 0:
		return Decision{Outcome: SyncSource, Full: true}
	case inHistory(r, l.Current) || l.Current == GenZero && l.Bitmap == 0:
		return Decision{Outcome: SyncTarget, Full: true}
	case sharesHistory(l, r):
		return Decision{Outcome: SplitBrain}
	}
	return Decision{Outcome: Unrelated}
}

// resolve applies an operator's word to a decision the ids alone cannot
// settle: the side that agreed to discard its data (resolve
// --discard-my-data, or a disk attached fresh) becomes the target of a
// full sync, as long as only one side did. It is never the source: the
// ids can say so only by taking a peer that never left GenZero for a new
// device, and a fresh disk's random id never met that peer. Everything
// else stays as decide said.
func resolve(d Decision, localDiscards, remoteDiscards bool) Decision {
	gaveIn := d.Outcome == SplitBrain || d.Outcome == Unrelated ||
		localDiscards && d.Outcome == SyncSource || remoteDiscards && d.Outcome == SyncTarget
	if !gaveIn || localDiscards == remoteDiscards {
		return d
	}
	if localDiscards {
		return Decision{Outcome: SyncTarget, Full: true}
	}
	return Decision{Outcome: SyncSource, Full: true}
}

// giveIn says which sides give in to the operator's word (discard their
// data): each one told to, except that of two told to, a side whose disk is
// Inconsistent gives in alone. It holds nothing whole and is never a
// source; its peer's word may linger from a connection that needed no
// sync, and a fresh disk (which gives in by being attached fresh) would
// otherwise stay StandAlone next to the only data there is.
func giveIn(localDiscards, remoteDiscards bool, local, remote wire.DiskState) (bool, bool) {
	if li, ri := local == wire.Inconsistent, remote == wire.Inconsistent; localDiscards && remoteDiscards && li != ri {
		return li, ri
	}
	return localDiscards, remoteDiscards
}

// wholeSource turns a sync from an Inconsistent disk (a fresh one, a
// resync target not finished) to a whole one (UpToDate, Consistent) the
// other way, full: what the ids say cannot hold there (a peer that never
// left GenZero taken for a new device, both sides told to discard their
// data), and nothing records what differs. An Outdated disk (it went out
// while its peer took writes, see diskFailed) holds whole data as old as
// its ids say, and they decide; but where they say it is in step with a
// whole peer, it takes a resync by bitmap all the same, whose end makes it
// UpToDate (one that finds nothing to send).
func wholeSource(d Decision, local, remote wire.DiskState) Decision {
	whole := func(s wire.DiskState) bool { return s == wire.UpToDate || s == wire.Consistent }
	switch {
	case d.Outcome == SyncSource && local == wire.Inconsistent && whole(remote):
		return Decision{Outcome: SyncTarget, Full: true}
	case d.Outcome == SyncTarget && remote == wire.Inconsistent && whole(local):
		return Decision{Outcome: SyncSource, Full: true}
	case d.Outcome == InSync && local == wire.Outdated && whole(remote):
		return Decision{Outcome: SyncTarget}
	case d.Outcome == InSync && remote == wire.Outdated && whole(local):
		return Decision{Outcome: SyncSource}
	}
	return d
}

func inHistory(g wire.GenIDs, id uint64) bool {
	if id == 0 {
		return false
	}
	if g.Bitmap == id {
		return true
	}
	for _, h := range g.History {
		if h == id {
			return true
		}
	}
	return false
}

func sharesHistory(l, r wire.GenIDs) bool {
	for _, h := range append(l.History[:], l.Bitmap) {
		if inHistory(r, h) {
			return true
		}
	}
	return false
}

// side is what the direction of a sync between nodes of one generation
// depends on.
type side struct {
	primary bool
	dirty   bool // it holds regions the other may lack: its bitmap, or records past the other's last
	wrote   bool // its bitmap marks regions: it wrote while apart
	id      uint64
}

// dirtyDirection settles nodes of the same generation when a bitmap is not
// empty: a Primary that crashed with writes in flight restarts with those
// regions marked. The Primary is the source; else the side with marks;
// else, both having marks, the lower node id. The target's marks join the
// source's, so both sides' regions are synced.
func dirtyDirection(l, r side) Decision {
	switch {
	case !l.dirty && !r.dirty:
		return Decision{Outcome: InSync}
	case l.primary:
		return Decision{Outcome: SyncSource}
	case r.primary:
		return Decision{Outcome: SyncTarget}
	case l.dirty != r.dirty && l.dirty, l.dirty == r.dirty && l.id < r.id:
		return Decision{Outcome: SyncSource}
	}
	return Decision{Outcome: SyncTarget}
}

// AfterSplitBrain is what a node does on its own when it meets a split brain.
type AfterSplitBrain string

const (
	// Disconnect: both go StandAlone until an operator resolves it.
	Disconnect AfterSplitBrain = "disconnect"
	// DiscardZeroChanges: a side that wrote nothing while apart takes the
	// other's data; if both wrote, as Disconnect.
	DiscardZeroChanges AfterSplitBrain = "discard-zero-changes"
)

// discardZeroChanges settles a split brain in which one side wrote nothing
// while apart (its bitmap is empty): it becomes the target, and the other
// side's bitmap holds everything that differs.
func discardZeroChanges(l, r side) Decision {
	switch {
	case l.wrote && !r.wrote:
		return Decision{Outcome: SyncSource}
	case !l.wrote && r.wrote:
		return Decision{Outcome: SyncTarget}
	}
	return Decision{Outcome: SplitBrain}
}
