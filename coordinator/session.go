package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
)

// ensureSession grants a lease and opens a session on it when there is
// none, and starts keeping the lease alive.
func (c *Coordinator) ensureSession(ctx context.Context) error {
	c.mu.Lock()
	have := c.sess != nil
	c.mu.Unlock()
	if have {
		return nil
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	sent := time.Now()
	ttl := int64(math.Ceil(c.cfg.TTL.Seconds()))
	lease, err := c.cli.Grant(octx, ttl)
	if err != nil {
		return fmt.Errorf("coordinator: grant a lease: %w", err)
	}
	sess, err := concurrency.NewSession(c.cli, concurrency.WithLease(lease.ID), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("coordinator: session: %w", err)
	}
	granted := time.Duration(lease.TTL) * time.Second
	c.gate.update(func(_ *GateInput, ls *Lease) {
		*ls = Lease{Deadline: Deadline(sent, granted, c.margin), Gone: GoneAfter(time.Now(), granted, c.margin)}
	})
	kctx, kcancel := context.WithCancel(ctx)
	c.mu.Lock()
	c.sess, c.elec = sess, concurrency.NewElection(sess, c.keys.election)
	c.stopKeepAlive = kcancel
	c.mu.Unlock()
	go c.keepAlive(kctx, lease.ID)
	c.log.Info("etcd session opened", "lease", fmt.Sprintf("%x", lease.ID), "ttl", granted.String())
	return nil
}

// keepAlive renews the lease every quarter TTL, and after each renewal
// granted moves the gate's deadline: counted from when that keep-alive
// was sent. A lease etcd no longer knows is lost.
func (c *Coordinator) keepAlive(ctx context.Context, id clientv3.LeaseID) {
	every := c.cfg.TTL / 4
	for {
		sent := time.Now()
		kctx, cancel := context.WithTimeout(ctx, every)
		resp, err := c.cli.KeepAliveOnce(kctx, id)
		cancel()
		recv := time.Now()
		wait := every / 4
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			granted := time.Duration(resp.TTL) * time.Second
			c.gate.update(func(_ *GateInput, ls *Lease) {
				ls.Deadline, ls.Gone = Deadline(sent, granted, c.margin), GoneAfter(recv, granted, c.margin)
			})
			c.Kick()
			wait = every - recv.Sub(sent)
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
			c.lost("etcd no longer knows the lease")
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// lost drops the session after its lease expired: held writes fail, the
// node stops being Primary, and the next step opens a new session.
func (c *Coordinator) lost(why string) {
	c.mu.Lock()
	won, stop := c.won, c.stopKeepAlive
	c.won, c.sess, c.elec, c.stopKeepAlive = false, nil, nil, nil
	if c.camp != nil {
		c.camp()
		c.camp = nil
	}
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	c.gate.update(func(_ *GateInput, ls *Lease) { *ls = Lease{} })
	if won {
		c.log.Warn("lost the election", "why", why)
		c.gate.SetPrimary(false)
		c.node.Depose()
	}
	c.Kick()
}

// campaign enters the election on a goroutine of its own; c.mu held.
func (c *Coordinator) campaign(ctx context.Context) {
	cctx, cancel := context.WithCancel(ctx)
	c.camp = cancel
	c.campN++
	n, elec := c.campN, c.elec
	c.log.Info("campaigning", "id", c.cfg.ID)
	go func() {
		err := elec.Campaign(cctx, c.cfg.ID)
		c.mu.Lock()
		mine := c.campN == n && c.elec == elec
		if mine {
			c.camp = nil
		}
		if err != nil || cctx.Err() != nil || !mine {
			c.mu.Unlock()
			if err == nil { // won as it was called off
				rctx, rcancel := context.WithTimeout(context.Background(), c.cfg.TTL/2)
				elec.Resign(rctx)
				rcancel()
			}
			cancel()
			return
		}
		c.won = true
		c.mu.Unlock()
		c.gate.update(func(_ *GateInput, ls *Lease) { ls.Holder = true })
		c.log.Info("won the election", "id", c.cfg.ID, "key", elec.Key())
		c.Kick()
	}()
}

// resign gives the election up (the node is Secondary already).
func (c *Coordinator) resign(ctx context.Context, why string) {
	c.mu.Lock()
	elec := c.elec
	c.won = false
	c.mu.Unlock()
	c.gate.update(func(_ *GateInput, ls *Lease) { ls.Holder = false })
	if elec != nil {
		octx, cancel := c.opCtx(ctx)
		if err := elec.Resign(octx); err != nil {
			c.log.Warn("resign", "err", err)
		}
		cancel()
	}
	c.log.Info("resigned the election", "why", why)
	c.Kick()
}
