package coordinator

import (
	"context"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Holds says whether this node holds the election.
func (c *Coordinator) Holds() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.won
}

// inSync says the peer has every write: Connected, UpToDate, nothing to resync.
func inSync(p PeerView) bool {
	return p.Mirroring && p.PeerDisk == "UpToDate" && p.Replication == "Established" && p.OutOfSync == 0
}

// Switchover hands the election to the peer: once the peer is Connected,
// UpToDate and in the election, stepDown demotes this node (its NBD
// clients are refused from then on), and it resigns; the peer wins and
// promotes. This node campaigns again only behind the new holder.
func (c *Coordinator) Switchover(ctx context.Context, stepDown func() error) error {
	if !c.Holds() {
		return fmt.Errorf("%w: this node does not hold the election", ErrRefused)
	}
	for {
		ready, why := c.peerReady(ctx)
		if ready {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: switchover: %s", ErrRefused, why)
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.mu.Lock()
	c.paused = time.Now().Add(3 * c.cfg.TTL)
	c.mu.Unlock()
	c.log.Info("switching over: demoting, then resigning the election")
	if err := stepDown(); err != nil {
		c.mu.Lock()
		c.paused = time.Time{}
		c.mu.Unlock()
		return err
	}
	c.gate.SetPrimary(false)
	c.resign(ctx, "switchover")
	return nil
}

// peerReady says whether the peer can take the election over now.
func (c *Coordinator) peerReady(ctx context.Context) (bool, string) {
	if p := c.node.State().Peer; !inSync(p) {
		return false, fmt.Sprintf("the peer is not Connected and UpToDate (disk %s, replication %s)",
			p.PeerDisk, p.Replication)
	}
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	resp, err := c.cli.Get(octx, c.keys.election+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Sprintf("etcd: %v", err)
	}
	if resp.Count < 2 {
		return false, "the peer is not campaigning"
	}
	return true, ""
}
