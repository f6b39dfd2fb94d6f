package sim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// step carries out one step of the schedule.
func (r *runner) step(st Step) {
	peer := func(i int) (string, string) { return nodeName(i), nodeName(1 - i) }
	switch st.Kind {
	case Write, WriteAsync, Trim:
		r.write(st)
	case Flush:
		r.flush()
	case Crash:
		r.crash(st.Node, nil)
	case PowerLoss:
		keep := rand.New(rand.NewPCG(st.Keep, st.Keep>>32))
		if st.Both {
			r.powerLossBoth(keep)
		} else {
			r.crash(st.Node, keep)
		}
	case LinkReset:
		r.net.Reset("a", "b")
	case LinkCut:
		r.net.Cut("a", "b")
	case LinkHeal:
		r.net.Heal("a", "b")
	case LinkDelay:
		from, to := peer(st.Node)
		r.net.SetDelay(from, to, st.Delay)
	case LinkHole:
		from, to := peer(st.Node)
		r.net.SetHole(from, to, true)
	case DiskFail:
		r.epoch.Add(1)
		r.faulted[st.Node] = true
		r.nodes[st.Node].diskFail.Store(true)
	case DiskHeal:
		for _, n := range r.nodes {
			n.diskFail.Store(false)
		}
	case JournalFail:
		r.epoch.Add(1)
		r.faulted[st.Node] = true
		r.nodes[st.Node].fsFail.Store(true)
	case Switchover:
		r.switchover()
	case SplitBrain:
		r.splitBrain()
	case Promote:
		r.promote()
	case Disconnect:
		res := r.nodes[st.Node].res
		r.guard("Disconnect", res.Disconnect)
	case Connect:
		res := r.nodes[st.Node].res
		r.guard("Connect", res.Connect)
	case Discard:
		if r.split || r.maybeSplit {
			r.note("discard skipped: a split brain is settled at the end")
			return
		}
		if r.faulted[r.primary] {
			// The Secondary may hold writes the Primary's disk lacks
			// (made through it): its data is not the operator's to give up.
			r.note("discard skipped: the disk of the Primary failed")
			return
		}
		var err error
		res := r.nodes[1-r.primary].res
		if r.guard("DiscardMyData", func() { err = res.DiscardMyData() }) && err != nil {
			r.note("discard: %v", err)
		}
	case Pause:
		time.Sleep(st.Delay)
	}
}

// setRole is n's SetRole under guard.
func (r *runner) setRole(n *node, role wire.Role, force bool) error {
	var err error
	res := n.res
	if !r.guard(fmt.Sprintf("SetRole(%s) on %s", role, n.name), func() { err = res.SetRole(role, force) }) {
		return errStopped
	}
	return err
}

// guard runs a control call, given at most the liveness bound twice: a
// call that hangs (a deadlock in the Resource) stops the run, and reports
// false.
func (r *runner) guard(what string, f func()) bool {
	if r.stopped {
		return false
	}
	done := make(chan struct{})
	go func() { defer close(done); f() }()
	select {
	case <-done:
		return true
	case <-time.After(2*r.opt.Liveness + time.Second):
		r.violate(InvLiveness, "%s hung; stacks:\n%s", what, r.stacks())
		r.stopped = true
		return false
	}
}

var errStopped = errors.New("sim: the run stopped")

// begin tracks a request to node n.
func (r *runner) begin(what string, n *node, w *mwrite) *op {
	o := &op{what: what, inc: n.inc, start: time.Now(), epoch: r.epoch.Load(), w: w, done: make(chan struct{})}
	r.opsMu.Lock()
	r.inflight[o] = struct{}{}
	r.opsMu.Unlock()
	return o
}

// end records o's outcome: an acknowledgement counts only if the node's
// incarnation was alive to give it.
func (r *runner) end(o *op, err error) (acked bool) {
	acked = err == nil && !o.inc.dead.Load()
	if o.w != nil {
		r.m.complete(o.w, acked)
	}
	if took := time.Since(o.start); took > r.opt.Liveness && !o.inc.dead.Load() && r.epoch.Load() == o.epoch {
		r.violate(InvLiveness, "%s took %v", o.what, took.Round(time.Millisecond))
	}
	r.opsMu.Lock()
	delete(r.inflight, o)
	if len(r.inflight) == 0 {
		close(r.opsIdle)
		r.opsIdle = make(chan struct{})
	}
	r.opsMu.Unlock()
	close(o.done)
	return acked
}

// wait waits for o, at most twice the liveness bound.
func (r *runner) wait(o *op) {
	select {
	case <-o.done:
	case <-time.After(2 * r.opt.Liveness):
	}
}

// write issues a write or trim to the Primary; WriteAsync does not wait.
func (r *runner) write(st Step) {
	n := r.nodes[r.primary]
	w := r.m.issue(r.primary, st.Block, st.N, st.Kind == Trim, st.FUA)
	off, length := int64(st.Block)*BlockSize, int64(st.N)*BlockSize
	o := r.begin(st.String(), n, w)
	res := n.res
	if st.Kind == Trim {
		go func() { r.end(o, res.Trim(off, length)) }()
		r.wait(o)
		return
	}
	buf := make([]byte, length)
	for b := range st.N {
		stamp(buf[b*BlockSize:(b+1)*BlockSize], w.id, st.Block+b)
	}
	// WriteAsync may block before it returns (it takes the Resource's
	// order lock): a goroutine of its own keeps a deadlock there from
	// stopping the run.
	go res.WriteAsync(buf, off, st.FUA, st.Kind == Write, func(err error) { r.end(o, err) })
	if st.Kind == Write {
		r.wait(o)
	}
}

// flush issues a FLUSH to the Primary and waits for it.
func (r *runner) flush() {
	p := r.primary
	n := r.nodes[p]
	issued := r.m.now()
	o := r.begin("flush", n, nil)
	res := n.res
	go func() {
		err := res.Sync()
		end := r.m.now()
		if r.end(o, err) {
			r.m.flushed(p, issued, end)
		}
	}()
	r.wait(o)
}

// checkPrimary checks the Primary's image against the model.
func (r *runner) checkPrimary(why string) {
	n := r.nodes[r.primary]
	img := make([]byte, len(n.disk.Bytes()))
	at := r.m.now()
	if _, err := n.res.ReadAt(img, 0); err != nil {
		r.note("%s: reading %s: %v", why, n.name, err)
		return
	}
	if err := r.m.check(img, at); err != nil {
		r.violate(InvAcked, "%s: on %s: %v", why, n.name, err)
	}
}

// crash kills node i (a power loss with power: keep draws what the disk
// kept of its unsynced blocks) and restarts it. A Primary that was in sync
// with its peer, with no write acknowledged since by either node, fails
// over: the peer is promoted and must hold every acknowledged write.
// Otherwise it restarts in its role. Either node counts: a Primary whose
// disk was out wrote through its peer alone, and a peer promoted later
// (a power loss of both) may be the only holder of those writes; the
// other's old disk lacks them, and when its meta.json failed with it,
// nothing on it says so.
func (r *runner) crash(i int, power *rand.Rand) {
	n := r.nodes[i]
	r.awaitBitmap(n)
	role := r.kill(i)
	r.closing = append(r.closing, n.crash(power))
	if power != nil {
		r.lostPower(i)
	}
	r.mu.Lock()
	lastInSync := r.lastInSync[i] // the watcher moves it (sawInSync)
	r.mu.Unlock()
	if i == r.primary && !r.split && !r.m.ackedSince(anyNode, lastInSync) && r.peerGone(1-i) {
		if err := r.setRole(r.nodes[1-i], wire.Primary, false); err == nil {
			r.primary, role = 1-i, wire.Secondary
			r.checkPrimary("failover to " + r.nodes[1-i].name)
		} else if r.faulted[i] {
			// Its disk failed: what it wrote through its peer since is
			// on the peer only, and its old disk, which it restarts on,
			// lacks it. It must not serve from that disk: it restarts
			// Secondary, and the peer serves once its own disk is back
			// (the settle promotes it).
			r.primary, role = 1-i, wire.Secondary
			r.note("failover to %s refused (%v): it serves once its disk is back", r.nodes[1-i].name, err)
		} else {
			r.note("failover to %s refused: %v", r.nodes[1-i].name, err)
		}
	}
	r.reopen(i, role)
}

// powerLossBoth cuts the power of both nodes at once, each disk keeping
// what keep draws of its unsynced blocks, and restarts both in their
// roles: a machine room losing power. Writes neither node had made
// durable may be gone, but the nodes must still end identical.
func (r *runner) powerLossBoth(keep *rand.Rand) {
	for _, n := range r.nodes {
		r.awaitBitmap(n)
	}
	p := r.primary
	pre, peer := r.nodes[p].res.Status(), r.nodes[1-p].res.Status()
	roles := [2]wire.Role{r.kill(0), r.kill(1)}
	for _, n := range r.nodes {
		n.net.Down(n.name) // neither sends anything after the instant
	}
	for _, n := range r.nodes {
		r.closing = append(r.closing, n.crash(keep))
	}
	r.lostPower(0)
	r.lostPower(1)
	if pre.Role == "Primary" && pre.Disk == wire.Diskless.String() && peer.Gen.Current == pre.Gen.Current {
		// The Primary's disk was out and its peer followed it into its
		// generation: what it wrote since went through the peer, and its
		// old disk lacks it. As an operator who saw that, restart the
		// peer as Primary.
		roles[p], roles[1-p] = wire.Secondary, wire.Primary
		r.primary = 1 - p
		r.note("%s was Diskless, %s followed it: %s restarts as Primary", r.nodes[p].name, r.nodes[1-p].name, r.nodes[1-p].name)
	}
	r.reopen(0, roles[0])
	r.reopen(1, roles[1])
}

// kill ends node i's incarnation's say and returns the role it restarts in.
func (r *runner) kill(i int) wire.Role {
	n := r.nodes[i]
	tick := r.m.now()
	n.inc.dead.Store(true)
	pre := n.res.Status()
	if inSync(pre) {
		r.sawInSync(i, tick)
	}
	if pre.Role == "Primary" {
		return wire.Primary
	}
	return wire.Secondary
}

// lostPower tells the model that node i lost power.
func (r *runner) lostPower(i int) {
	r.mu.Lock()
	inSync := r.lastInSync
	r.mu.Unlock()
	r.m.powerLoss(i, inSync)
}

// reopen opens node i again in role, on the disk the crash left it, its
// faults cleared.
func (r *runner) reopen(i int, role wire.Role) {
	n := r.nodes[i]
	r.mu.Lock()
	if r.faulted[i] && !r.stale[i] {
		r.stale[i], r.staleSince[i] = true, n.failedAt.Load()
	}
	r.mu.Unlock()
	n.failedAt.Store(0)
	r.faulted[i] = false // a restart clears the disk's faults
	n.diskFail.Store(false)
	n.fsFail.Store(false)
	if err := r.open(n, role, false); err != nil {
		r.violate(InvHarness, "restart %s: %v", n.name, err)
		r.stopped = true
	}
}

// awaitBitmap waits, with Options.WaitBitmap, until a node apart from its
// peer has saved its bitmap file. A Diskless node saves none: its disk is
// out.
func (r *runner) awaitBitmap(n *node) {
	if !r.opt.WaitBitmap || n.res.Status().Disk == wire.Diskless.String() {
		return
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := n.res.Status()
		if st.Gen.Bitmap == 0 && st.Stats.OutOfSyncBytes == 0 || n.bitmapSaved() {
			return
		}
		if time.Now().After(deadline) {
			r.note("%s crashed before its bitmap was saved", n.name)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// peerGone waits until node i no longer sees its peer connected, as an
// operator checks before a failover.
func (r *runner) peerGone(i int) bool {
	if r.waitFor(r.opt.Liveness, func(s [2]replication.Status) bool { return s[i].Peer.Connection != "Connected" }) {
		return true
	}
	r.violate(InvLiveness, "%s still sees its crashed peer connected: %s", nodeName(i), r.describe())
	return false
}

// switchover demotes the Primary and promotes its peer, as an operator
// plans it: only when both report they are in sync, and the peer is
// promoted only once it sees the old Primary demoted and still in sync.
func (r *runner) switchover() {
	p, s := r.nodes[r.primary], r.nodes[1-r.primary]
	if st := r.statuses(); r.split || !inSync(st[0]) || !inSync(st[1]) {
		r.note("switchover skipped: not in sync")
		return
	}
	r.epoch.Add(1)
	if err := r.setRole(p, wire.Secondary, false); err != nil {
		r.note("switchover: demote %s: %v", p.name, err)
		return
	}
	handed := func(st [2]replication.Status) bool {
		return inSync(st[1-r.primary]) && st[1-r.primary].Peer.Role == "Secondary"
	}
	if !r.waitFor(r.opt.Liveness, handed) {
		r.note("switchover: %s did not see %s demoted in sync: %s", s.name, p.name, r.describe())
		if err := r.setRole(p, wire.Primary, false); err != nil {
			r.note("switchover: promote %s back: %v", p.name, err)
			r.handOverFromDiskless(p, s)
		}
		return
	}
	if err := r.setRole(s, wire.Primary, false); err != nil {
		r.note("switchover: promote %s: %v", s.name, err)
		// A peer that said yes too late counts s Primary until s's link
		// is made again: the operator waits for that, and tries again.
		r.waitFor(r.opt.Liveness, func(st [2]replication.Status) bool {
			return st[r.primary].Peer.Role != "Primary" || st[r.primary].Peer.Connection != "Connected"
		})
		if err := r.setRole(p, wire.Primary, false); err != nil {
			r.violate(InvHarness, "switchover: promote %s back: %v", p.name, err)
			r.stopped = true
		}
		return
	}
	r.primary = 1 - r.primary
	r.checkPrimary("switchover to " + s.name)
}

// handOverFromDiskless ends a switchover whose old Primary p lost its disk
// while it was demoted: Diskless, it can be promoted back no more, and as
// a Secondary it refuses its peer. Where the peer s followed it into the
// generation it started when its disk failed as a Primary (s's bitmap
// generation set, its current one p's), s holds every write p made: p
// announces its disk gone only with nothing marked, and wrote through s
// from then on. p's old disk may lack those writes, and its meta.json, if
// it failed with it, may not say so. As an operator who sees that,
// promote s. Where p failed as a Secondary, or with regions marked, the
// two share no such generation, and p's old disk may hold writes s lacks.
func (r *runner) handOverFromDiskless(p, s *node) {
	ps, ss := p.res.Status(), s.res.Status()
	followed := ss.Gen.Current == ps.Gen.Current && ss.Gen.Bitmap != 0
	if ps.Disk != wire.Diskless.String() || ss.Disk != wire.UpToDate.String() || !followed {
		return
	}
	if err := r.setRole(s, wire.Primary, false); err != nil {
		r.note("switchover: promote %s, which holds what Diskless %s wrote: %v", s.name, p.name, err)
		return
	}
	r.primary = 1 - r.primary
	r.checkPrimary("switchover to " + s.name + " after " + p.name + " lost its disk")
}

// splitBrain cuts the link, promotes the Secondary and writes on it, then
// demotes the old Primary: the client now writes to the new one, and the
// two hold data apart that must stay apart until DiscardMyData. It is no
// split brain if the old Primary never moved on from the generation the
// new one was promoted from (a crash took its new generation, and it wrote
// nothing apart): the new Primary is then simply ahead.
func (r *runner) splitBrain() {
	if r.split {
		return
	}
	r.net.Cut("a", "b")
	apart := func(s [2]replication.Status) bool {
		return s[0].Peer.Connection != "Connected" && s[1].Peer.Connection != "Connected"
	}
	if !r.waitFor(r.opt.Liveness, apart) {
		r.violate(InvLiveness, "the link did not go down after a cut: %s", r.describe())
		return
	}
	pi, si := r.primary, 1-r.primary
	p, s := r.nodes[pi], r.nodes[si]
	r.epoch.Add(1)
	if err := r.setRole(s, wire.Primary, true); err != nil {
		r.note("split brain: promote %s: %v", s.name, err)
		return
	}
	r.setSplit(true)
	r.primary = si
	w := r.m.issue(si, 0, 1, false, false)
	buf := make([]byte, BlockSize)
	stamp(buf, w.id, 0)
	o := r.begin("split-brain write", s, w)
	_, err := s.res.WriteAt(buf, 0)
	if !r.end(o, err) {
		r.note("split brain: write on %s: %v", s.name, err)
	}
	if err := r.setRole(p, wire.Secondary, false); err != nil {
		r.note("split brain: demote %s: %v", p.name, err)
	}
	if pg, sg := p.res.Status().Gen, s.res.Status().Gen; pg.Current == sg.Bitmap {
		r.setSplit(false)
		r.note("no split brain: %s is still at %x, the generation %s was promoted from", p.name, pg.Current, s.name)
	} else if r.faulted[pi] || r.faulted[si] {
		// A node whose disk failed moved to a generation its disk does
		// not hold (or its new one was never saved), and wrote nothing
		// apart from then on: only the disks, met again, tell.
		r.setSplit(false)
		r.maybeSplit = true
		r.note("maybe a split brain: the disk of %s failed", map[bool]string{true: p.name, false: s.name}[r.faulted[pi]])
	}
}

// promote tries to promote the Secondary while it may be connected to the
// Primary: an operator's mistake that must be refused while connected.
func (r *runner) promote() {
	s := r.nodes[1-r.primary]
	if r.split || s.res.Status().Peer.Connection != "Connected" {
		return
	}
	r.epoch.Add(1)
	if err := r.setRole(s, wire.Primary, false); err == nil {
		// Refused while connected; allowed once the link fell meanwhile,
		// which makes it a split brain the operator settles at the end.
		// The Primary may not have noticed yet that the link fell (a
		// reset reaches it at its next read): the old link it still
		// shows Connected is no merge. The split counts once it sees
		// the link gone, as the split-brain step waits for both apart.
		r.waitFor(r.opt.Liveness, func(st [2]replication.Status) bool {
			return st[r.primary].Peer.Connection != "Connected"
		})
		r.setSplit(true)
		r.note("%s promoted while its peer is Primary (%s)", s.name, brief(s.res.Status()))
	}
}
