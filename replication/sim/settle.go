package sim

import (
	"bytes"
	"fmt"
	"strings"
	"time"

	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// settle ends a schedule: faults healed, every request answered, a split
// brain resolved by the operator's word, the pair reconnected and in sync;
// then the Primary must hold every acknowledged write, both images must be
// identical once closed, and nothing may outlive Close.
func (r *runner) settle(base int) {
	if r.isHung() {
		r.stopped = true
		return
	}
	r.net.Heal("a", "b")
	for _, n := range r.nodes {
		n.diskFail.Store(false)
		n.fsFail.Store(false)
	}
	if !r.drain() {
		return
	}
	r.heal()
	if r.stopped {
		return
	}
	r.meetMaybeSplit()
	r.resolveSplit()
	r.setRoles()
	r.connectAll()
	if r.stopped || r.isHung() {
		return
	}
	r.promoteSynced()
	together := func(s [2]replication.Status) bool {
		return inSync(s[0]) && inSync(s[1]) && s[r.primary].Role == "Primary"
	}
	refused := func(s [2]replication.Status) bool { return together(s) || s[1-r.primary].StandAlone != "" }
	if r.waitFor(r.opt.Settle, refused) && !together(r.statuses()) {
		// As an operator does, look at both before the word: the
		// Primary takes the Secondary's refusal a moment later, and a
		// connect told before that is lost on it.
		r.waitFor(r.opt.Liveness, func(s [2]replication.Status) bool { return s[r.primary].StandAlone != "" })
		if secondaryNewer(r.statuses()) {
			r.syncFromSecondary()
		} else if r.discardSecondary() {
			r.connectAll()
		}
	}
	if !r.waitFor(r.opt.Settle, together) {
		r.violate(InvResync, "no reconnect and resync within %v: %s", r.opt.Settle, r.describe())
		r.setRoles() // a Primary refused while resyncing may be promoted now
	}
	if r.stopped || r.isHung() {
		return
	}
	r.observe()
	r.checkPrimary("after resync")
	r.closeAll(base)
}

// drain waits for every request to the live nodes to end.
func (r *runner) drain() bool {
	deadline := time.NewTimer(r.opt.Liveness + time.Second)
	defer deadline.Stop()
	live := r.awaitOps(func(o *op) bool { return !o.inc.dead.Load() }, deadline.C)
	if len(live) == 0 {
		return true
	}
	var what []string
	for _, o := range live {
		what = append(what, fmt.Sprintf("%s (%v)", o.what, time.Since(o.start).Round(time.Millisecond)))
	}
	r.violate(InvLiveness, "requests never answered: %s; %s; stacks:\n%s", strings.Join(what, ", "),
		r.describe(), r.stacks())
	r.stopped = true
	return false
}

// awaitOps waits until no request that counts is in flight, or until
// deadline, and returns those still in flight then.
func (r *runner) awaitOps(counts func(*op) bool, deadline <-chan time.Time) []*op {
	for {
		r.opsMu.Lock()
		var left []*op
		for o := range r.inflight {
			if counts(o) {
				left = append(left, o)
			}
		}
		idle := r.opsIdle
		r.opsMu.Unlock()
		if len(left) == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-left[0].done:
		case <-deadline:
			return left
		}
	}
}

// restart crashes node i's process and starts it again in its role, on
// the disk it detached (see heal). Back on a disk that had failed, it is
// stale as after a reopen (see runner.stale): seed 81325 restarted a
// Diskless Primary on its old disk while its peer, promoted, held what it
// had written through it, and the split brain's word, drawn from the seed,
// gave up the peer's data.
func (r *runner) restart(i int) {
	n := r.nodes[i]
	role := wire.Secondary
	if n.res.Role() == wire.Primary {
		role = wire.Primary
	}
	r.mu.Lock()
	if !r.stale[i] {
		r.stale[i], r.staleSince[i] = true, n.failedAt.Load()
	}
	r.mu.Unlock()
	n.failedAt.Store(0)
	r.awaitBitmap(n)
	r.closing = append(r.closing, n.crash(nil))
	if err := r.open(n, role, false); err != nil {
		r.violate(InvHarness, "restart %s: %v", n.name, err)
		r.stopped = true
	}
}

// resolveSplit settles a split brain as an operator does, once the two
// have met and stayed apart: the node that loses (drawn from the seed) is
// demoted and discards its data; what it acknowledged since it was last in
// sync is gone.
func (r *runner) resolveSplit() {
	if !r.split {
		return
	}
	// Healed and told to connect, the two must stay apart until the word:
	// both StandAlone, each told why by the other. A node still reading
	// its peer's refusal is not yet StandAlone, and a connect told before
	// it is would be lost on it.
	r.connectAll()
	r.waitFor(r.opt.Liveness, func(s [2]replication.Status) bool {
		return s[0].StandAlone != "" && s[1].StandAlone != ""
	})
	r.observe()
	// The operator's word: a node back on a disk that had failed lacks
	// what it wrote through its peer, which holds it: it gives in. Of two,
	// the one whose disk failed first: its peer took every write since,
	// until its own failed, and none completed after that. Otherwise
	// either may.
	loser := int(r.res.Schedule.Seed % 2)
	r.mu.Lock()
	if r.stale[1-loser] && (!r.stale[loser] || failedFirst(r.staleSince[1-loser], r.staleSince[loser])) {
		loser = 1 - loser
	}
	r.mu.Unlock()
	n := r.nodes[loser]
	if err := r.setRole(n, wire.Secondary, false); err != nil {
		r.violate(InvHarness, "split brain: demote %s: %v", n.name, err)
	}
	var err error
	res := n.res
	if r.guard("DiscardMyData", func() { err = res.DiscardMyData() }) && err != nil {
		r.violate(InvHarness, "split brain: discard on %s: %v", n.name, err)
	}
	r.m.discard(loser, r.lastInSync[loser])
	r.primary = 1 - loser
	r.setSplit(false)
}

// failedFirst says whether the failure numbered a came before b (0: none).
func failedFirst(a, b uint64) bool { return a != 0 && (b == 0 || a < b) }

// secondaryNewer says whether the nodes refused each other because the
// Secondary holds newer data than the Primary: it wrote through the link
// for a Diskless Primary, which then restarted on its old disk (a crash).
// Either node may say it; the other repeats it as the peer's word.
func secondaryNewer(s [2]replication.Status) bool {
	for _, st := range s {
		if strings.Contains(st.StandAlone, "newer data than the Primary peer") ||
			strings.Contains(st.StandAlone, "newer data than this Primary") {
			return true
		}
	}
	return false
}

// syncFromSecondary answers a Secondary that holds newer data than its
// Primary as an operator does: the newer data wins, never the older. The
// Primary is demoted, both connect, the old Primary syncs from its peer
// as SyncTarget, and is promoted again once the two are in sync.
func (r *runner) syncFromSecondary() {
	p := r.nodes[r.primary]
	r.note("%s holds older data than its Secondary (%s): it is demoted to sync from it", p.name, r.describe())
	if err := r.setRole(p, wire.Secondary, false); err != nil {
		r.violate(InvHarness, "demote %s: %v", p.name, err)
		return
	}
	r.connectAll()
	synced := func(s [2]replication.Status) bool { return inSync(s[0]) && inSync(s[1]) }
	if !r.waitFor(r.opt.Settle, synced) {
		r.violate(InvResync, "%s did not sync from its newer Secondary within %v: %s", p.name, r.opt.Settle, r.describe())
	}
	if err := r.setRole(p, wire.Primary, false); err != nil {
		r.note("promote %s again: %v", p.name, err)
	}
}

// meetMaybeSplit connects the nodes of a split brain whose disks failed
// (see splitBrain) and takes it as a split brain if they refuse each
// other for one.
func (r *runner) meetMaybeSplit() {
	if !r.maybeSplit || r.split {
		return
	}
	r.maybeSplit = false
	r.connectAll()
	met := func(s [2]replication.Status) bool {
		return s[0].StandAlone != "" && s[1].StandAlone != "" ||
			s[0].Peer.Connection == "Connected" && s[1].Peer.Connection == "Connected"
	}
	r.waitFor(r.opt.Settle, met)
	if s := r.statuses(); strings.HasPrefix(s[0].StandAlone, "split brain") || strings.HasPrefix(s[1].StandAlone, "split brain") {
		r.note("the nodes refuse each other after a split brain: %s", r.describe())
		r.setSplit(true)
	}
}

// discardSecondary answers a Secondary that will not connect (it moved on
// apart: the old Primary of a failover that had lost its link first) as an
// operator does, with DiscardMyData, if it acknowledged nothing that still
// counts since it was last in sync. It reports whether it did.
func (r *runner) discardSecondary() bool {
	si := 1 - r.primary
	n := r.nodes[si]
	why := n.res.Status().StandAlone
	if r.m.ackedSince(si, r.lastInSync[si]) {
		r.note("%s stays StandAlone (%s): it acknowledged writes since it was last in sync", n.name, why)
		return false
	}
	r.note("%s is StandAlone (%s): it discards its data", n.name, why)
	var err error
	res := n.res
	if !r.guard("DiscardMyData", func() { err = res.DiscardMyData() }) {
		return false
	}
	if err != nil {
		r.violate(InvHarness, "discard on %s: %v", n.name, err)
		return false
	}
	return true
}

// promoteSynced promotes the client's Primary once the pair is in sync,
// if setRoles could not: its disk, attached again, takes a full sync from
// its peer first (it lacked writes made through the peer, see AttachDisk),
// and is Inconsistent until then.
func (r *runner) promoteSynced() {
	if r.nodes[r.primary].res.Role() == wire.Primary {
		return
	}
	r.waitFor(r.opt.Settle, func(s [2]replication.Status) bool { return inSync(s[0]) && inSync(s[1]) })
	r.setRoles()
}

// connectAll tells both nodes to leave StandAlone.
func (r *runner) connectAll() {
	for _, n := range r.nodes {
		r.guard("Connect on "+n.name, n.res.Connect)
	}
}

// setRoles makes the client's Primary the only Primary.
func (r *runner) setRoles() {
	s := r.nodes[1-r.primary]
	if s.res.Role() == wire.Primary {
		if err := r.setRole(s, wire.Secondary, false); err != nil {
			r.note("demote %s: %v", s.name, err)
		}
	}
	p := r.nodes[r.primary]
	if p.res.Role() != wire.Primary {
		if err := r.setRole(p, wire.Primary, false); err != nil {
			r.note("promote %s: %v", p.name, err)
		}
	}
}

// closeAll closes both nodes and the incarnations that crashed, compares
// the images and counts what is left running.
func (r *runner) closeAll(base int) {
	for _, n := range r.nodes {
		done := make(chan error, 1)
		res := n.res
		go func() { done <- res.Close() }()
		r.closing = append(r.closing, done)
	}
	for _, c := range r.closing {
		select {
		case <-c:
		case <-time.After(5 * time.Second):
			r.violate(InvLiveness, "Close hung; stacks:\n%s", r.stacks())
			r.stopped = true
			return
		}
	}
	a, b := r.nodes[0].disk.Bytes(), r.nodes[1].disk.Bytes()
	if !bytes.Equal(a, b) {
		r.violate(InvIdentical, "images differ in blocks %v", diffBlocks(a, b))
	}
	deadline := time.Now().Add(leakGrace)
	if left := r.unanswered(deadline); len(left) > 0 {
		r.violate(InvLeak, "%d requests not answered %v after Close: %s; stacks:\n%s", len(left),
			leakGrace, strings.Join(left, ", "), r.stacks())
	}
	seed := r.res.Schedule.Seed
	for countGoroutines(seed) > base {
		if time.Now().After(deadline) {
			r.violate(InvLeak, "%d goroutines left after Close (%d before):\n%s",
				countGoroutines(seed), base, seedStacks(seed))
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// leakGrace is how long after Close the requests still in flight have to
// be answered, and the run's goroutines to end, before either is a leak.
const leakGrace = 2 * time.Second

// unanswered waits until every request has been answered, or until
// deadline, and names those left. A request to a crashed incarnation may
// be answered after its Close returned, as a dead process's client thread
// may still be inside a call: WriteAsync, Trim and Sync run on goroutines
// of their own, which the scheduler may run only then (the call fails at
// once on the closed Resource), or which wait on the old Resource (for the
// teardown of the link that lost their record) and complete the request
// when they run again. Neither outlives Close; a request never answered
// does.
func (r *runner) unanswered(deadline time.Time) []string {
	timeout := time.NewTimer(time.Until(deadline))
	defer timeout.Stop()
	var left []string
	for _, o := range r.awaitOps(func(*op) bool { return true }, timeout.C) {
		left = append(left, fmt.Sprintf("%s (dead incarnation %v)", o.what, o.inc.dead.Load()))
	}
	return left
}

// diffBlocks lists the blocks where a and b differ, with the write each
// holds.
func diffBlocks(a, b []byte) []string {
	var d []string
	for i := 0; i < len(a) && i < len(b); i += BlockSize {
		if !bytes.Equal(a[i:i+BlockSize], b[i:i+BlockSize]) {
			blk := i / BlockSize
			ia, _ := readStamp(a[i:i+BlockSize], blk)
			ib, _ := readStamp(b[i:i+BlockSize], blk)
			d = append(d, fmt.Sprintf("%d (a %d, b %d)", blk, ia, ib))
		}
	}
	return d
}

// stacks is the stacks of the run's own goroutines, for a hang's report.
func (r *runner) stacks() string { return seedStacks(r.res.Schedule.Seed) }
