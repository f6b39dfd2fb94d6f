package sim

import (
	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// heal gives a node whose disk or journal failed its disk back, as an
// operator of DRBD does once the fault is repaired: the node detached it
// (--on-io-error detach) and is Diskless, and takes the same disk back with
// AttachDisk, not fresh. The disk is the old one, repaired: its journal and
// its metadata still describe it, so the journal is recovered onto it and
// the generation ids decide the resync. Fresh would declare its data
// unknown and take the peer's whole: that loses acknowledged writes where
// the old disk holds data the peer lacks (writes a Primary made alone
// before its disk failed), and proves nothing of the resync by bitmap.
// Where the node itself knows the old disk is behind (a write reached the
// peer while the disk was out), AttachDisk takes it as fresh on its own.
//
// The Secondary is healed first: a Diskless Primary fills its disk from a
// connected peer that is UpToDate. A Diskless Primary that its peer does
// not serve (the peer lacks writes that only the old disk holds: the two
// refuse each other) is restarted on that disk instead, whose journal and
// bitmap then decide the resync. A node whose fault met no I/O never
// detached: there is nothing to heal.
func (r *runner) heal() {
	if !r.faulted[0] && !r.faulted[1] {
		return
	}
	// Failed is the moment between the fault and Diskless. A node whose
	// fault met I/O detaches its disk once that I/O returns: an apply the
	// settle's clearing of the faults found in flight fails after it
	// (seed 10552: the heal saw b's disk Inconsistent, a target's, and the
	// apply failed a moment later), so such a node is waited for too.
	detached := func(s [2]replication.Status) bool {
		for i := range s {
			if s[i].Disk == "Failed" || r.faulted[i] && r.nodes[i].failedAt.Load() != 0 && s[i].Disk != wire.Diskless.String() {
				return false
			}
		}
		return true
	}
	r.waitFor(r.opt.Liveness, detached)
	for _, i := range []int{1 - r.primary, r.primary} {
		if !r.faulted[i] || r.stopped {
			continue
		}
		r.faulted[i] = false
		n := r.nodes[i]
		st := n.res.Status()
		switch {
		case st.Disk != wire.Diskless.String():
			r.note("heal %s: its disk is %s: nothing to attach", n.name, st.Disk)
		case st.Role == "Primary":
			r.attachPrimary(i)
		default:
			r.attach(i)
		}
	}
}

// attach puts node i's old disk back in use, or restarts the node on it if
// the attach is refused.
func (r *runner) attach(i int) {
	n := r.nodes[i]
	var err error
	res, disk := n.res, simDisk{n.disk, n}
	if !r.guard("AttachDisk on "+n.name, func() { err = res.AttachDisk(disk, false) }) {
		return
	}
	if err != nil {
		r.violate(InvResync, "attach the disk of %s: %v (%s)", n.name, err, r.describe())
		r.restart(i)
		return
	}
	r.note("%s attached its disk again", n.name)
}

// attachPrimary heals a Diskless Primary: once it is connected to an
// UpToDate peer, it pulls the peer's data onto its old disk. A peer that
// refuses it lacks writes that only that disk holds (see heal): the
// Primary is restarted on it. A link that falls under the pull (a reset
// of the schedule that one side had not yet seen) fails the attach: the
// operator tries again once both see the link.
func (r *runner) attachPrimary(i int) {
	n := r.nodes[i]
	r.connectAll()
	met := func(s [2]replication.Status) bool {
		return s[i].Peer.Connection == "Connected" || s[1-i].StandAlone != ""
	}
	served := func(s [2]replication.Status) bool {
		return s[i].Peer.Connection == "Connected" && s[i].Peer.Disk == wire.UpToDate.String() &&
			s[1-i].Peer.Connection == "Connected"
	}
	for try := 0; try < 3 && !r.stopped; try++ {
		if !r.waitFor(r.opt.Settle, met) || !r.waitFor(r.opt.Liveness, served) {
			r.note("%s is Diskless and its peer does not serve it (%s): it restarts on its old disk", n.name, r.describe())
			r.restart(i)
			return
		}
		var err error
		res, disk := n.res, simDisk{n.disk, n}
		if !r.guard("AttachDisk on "+n.name, func() { err = res.AttachDisk(disk, false) }) {
			return
		}
		if err == nil {
			r.note("%s pulled its disk from its peer", n.name)
			return
		}
		r.note("attach on %s: %v (%s)", n.name, err, r.describe())
	}
	r.violate(InvResync, "%s could not attach its disk: %s", n.name, r.describe())
	r.restart(i)
}
