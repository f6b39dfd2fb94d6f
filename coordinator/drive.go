package coordinator

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// follow is a step of a node that does not hold the election: it never
// stays Primary, and it campaigns while Campaign allows.
func (c *Coordinator) follow(ctx context.Context, st NodeState) {
	if st.Primary {
		c.log.Warn("Primary without the election: demoting")
		c.gate.SetPrimary(false)
		c.node.Depose()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.etcdErr != nil || c.elec == nil {
		return // nothing fresh to decide on; a campaign under way stays
	}
	ok, why := Campaign(Candidate{
		UpToDate: st.Disk == "UpToDate" && st.Peer.Replication != "SyncTarget",
		Outdated: IsOutdated(c.record, c.cfg.ID),
		Holding:  c.holder != "",
		MayStart: c.cfg.MayStart,
		Patient:  c.sawLeader || time.Since(c.start) >= c.cfg.StartGrace,
		Paused:   time.Now().Before(c.paused) && (c.holder == "" || c.holder == c.cfg.ID),
	})
	switch {
	case ok && c.camp == nil:
		c.campaign(ctx)
	case !ok && c.camp != nil:
		c.camp()
		c.camp = nil
		c.log.Info("left the election", "why", why)
	}
	if !ok && why != c.lastWhy {
		c.log.Info("not campaigning", "why", why, "holder", c.holder)
	}
	c.lastWhy = why
}

// lead is a step of the holder: promote while the lease serves, demote
// once it is gone, keep the peer's outdated record true.
func (c *Coordinator) lead(ctx context.Context, st NodeState) {
	c.mu.Lock()
	// A read from before the win says nothing of it.
	fresh := c.etcdErr == nil && c.elec != nil && c.readRev >= c.elec.Rev()
	holder, rec := c.holder, c.record
	c.mu.Unlock()
	if fresh && holder != c.cfg.ID {
		c.lost(fmt.Sprintf("the election names %q", holder))
		return
	}
	v := c.verdict()
	switch {
	case v == Resign && st.Primary:
		c.log.Warn("lease not renewed in time: demoting; writes wait for a renewal or for another holder")
		c.gate.SetPrimary(false)
		if err := c.node.Demote(); err != nil {
			c.log.Error("demote", "err", err)
		}
		return
	case v != Serve:
		return
	case !st.Primary:
		c.promote(ctx, st, fresh, rec)
		return
	}
	c.gate.SetPrimary(true) // also after a `role primary` of its own
	recorded := rec != nil && rec.By == c.cfg.ID
	switch PeerFence(st.Peer, recorded) {
	case WriteRecord:
		if fresh && c.putRecord(ctx, &OutdatedRecord{By: c.cfg.ID, Generation: st.Gen}) {
			recorded = true
			c.log.Warn("peer recorded outdated", "generation", fmt.Sprintf("%016x", st.Gen))
		}
	case ClearRecord:
		if fresh && c.putRecord(ctx, nil) {
			recorded = false
			c.log.Info("peer outdated record cleared: the peer is UpToDate")
		}
	}
	c.gate.update(func(in *GateInput, _ *Lease) { in.PeerFenced = recorded })
}

// promote makes the holder Primary, unless etcd outdates it or its disk
// is not whole: then it resigns.
func (c *Coordinator) promote(ctx context.Context, st NodeState, fresh bool, rec *OutdatedRecord) {
	switch {
	case !fresh:
		return // the record must be read after the win
	case IsOutdated(rec, c.cfg.ID):
		c.resign(ctx, "etcd records this node as outdated")
		return
	case st.Disk != "UpToDate":
		c.resign(ctx, "the disk is "+st.Disk)
		return
	}
	err := c.node.Promote()
	c.mu.Lock()
	last := c.promoteErr
	c.promoteErr = ""
	if err != nil {
		c.promoteErr = err.Error()
	}
	c.mu.Unlock()
	if err != nil {
		if err.Error() != last {
			c.log.Warn("holding the election, not yet Primary", "err", err)
		}
		return
	}
	c.gate.SetPrimary(true)
	c.log.Info("promoted: this node holds the election", "id", c.cfg.ID)
}

func (c *Coordinator) verdict() LeaseVerdict {
	c.gate.mu.Lock()
	defer c.gate.mu.Unlock()
	return Verdict(c.gate.now(), c.gate.ls)
}

// putRecord writes rec as the outdated record (nil deletes it), only while
// this node's election key is still the one that won.
func (c *Coordinator) putRecord(ctx context.Context, rec *OutdatedRecord) bool {
	c.mu.Lock()
	elec := c.elec
	c.mu.Unlock()
	if elec == nil {
		return false
	}
	op := clientv3.OpDelete(c.keys.outdated)
	if rec != nil {
		b, _ := json.Marshal(rec)
		op = clientv3.OpPut(c.keys.outdated, string(b))
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(octx).If(clientv3.Compare(clientv3.CreateRevision(elec.Key()), "=", elec.Rev())).
		Then(op).Commit()
	if err != nil {
		c.setErr(err)
		return false
	}
	if !resp.Succeeded {
		c.lost("the election key is gone")
		return false
	}
	c.mu.Lock()
	c.record = rec
	c.mu.Unlock()
	return true
}

// logSuspension logs each change of the gate's suspension.
func (c *Coordinator) logSuspension() {
	s := c.gate.Suspended()
	c.mu.Lock()
	was := c.suspended
	c.suspended = s
	c.mu.Unlock()
	switch {
	case s && !was:
		c.log.Warn("writes suspended", "held", c.gate.Held(), "lease", c.verdict().String())
	case !s && was:
		c.log.Info("writes resumed")
	}
}

// Status reports the election as this node sees it.
func (c *Coordinator) Status() Status {
	c.gate.mu.Lock()
	ls, now := c.gate.ls, c.gate.now()
	c.gate.mu.Unlock()
	suspended := ls.Holder && c.gate.Suspended()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := Status{Endpoints: c.cfg.Endpoints, Holder: c.holder, LeaseTTL: c.cfg.TTL.Seconds(), ID: c.cfg.ID,
		PeerOutdated: c.record != nil && c.record.By == c.cfg.ID, Suspended: suspended,
		Outdated: IsOutdated(c.record, c.cfg.ID), Etcd: "ok"}
	if c.etcdErr != nil {
		s.Etcd = c.etcdErr.Error()
	}
	if ls.Holder && ls.Deadline.After(now) {
		s.LeaseRemaining = ls.Deadline.Sub(now).Seconds()
	}
	return s
}

// CheckPromote refuses `role primary` on a node that does not hold the
// election, naming the holder.
func (c *Coordinator) CheckPromote() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.won:
		return nil
	case c.holder != "":
		return fmt.Errorf("%w: %s holds the election for %s; run `role secondary` there to switch over",
			ErrRefused, c.holder, c.cfg.Name)
	}
	return fmt.Errorf("%w: no node holds the election for %s yet; this node promotes itself once it wins",
		ErrRefused, c.cfg.Name)
}
