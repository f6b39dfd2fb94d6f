package coordinator

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
)

// Config says where the election is and who this node is.
type Config struct {
	Endpoints []string
	Prefix    string // keys live under Prefix/Name/
	Name      string // the resource
	ID        string // this node, as the election and the record name it
	TTL       time.Duration
	TLS       *tls.Config
	Logger    *slog.Logger
	// MayStart says this node may be the first Primary when no node holds
	// the election yet (--primary); a node without it waits StartGrace
	// for that one first.
	MayStart   bool
	StartGrace time.Duration // zero is 2 TTL
}

// NodeState is what the coordinator reads of the resource.
type NodeState struct {
	Primary bool
	Disk    string // UpToDate, Inconsistent, Outdated, Consistent
	Gen     uint64 // current generation id
	Peer    PeerView
}

// Node is the resource the coordinator drives.
type Node interface {
	State() NodeState
	// Promote makes the node Primary with the checks of `role primary`.
	Promote() error
	// Demote makes it Secondary; its NBD clients stay, their writes held.
	Demote() error
	// Depose makes it Secondary and disconnects its NBD clients: another
	// node holds the election (the gate has failed what it held).
	Depose()
}

// Status is the `status --json` "coordinator" object: fields may be added,
// never renamed.
type Status struct {
	Endpoints      []string `json:"endpoints"`
	Holder         string   `json:"holder"`
	LeaseTTL       float64  `json:"lease_ttl_seconds"`
	LeaseRemaining float64  `json:"lease_remaining_seconds"`
	// PeerOutdated: this node recorded its peer outdated in etcd.
	PeerOutdated bool `json:"peer_outdated"`
	Suspended    bool `json:"suspended"`
	// Outdated: etcd records this node as outdated; it does not campaign.
	Outdated bool   `json:"outdated"`
	ID       string `json:"id"`
	Etcd     string `json:"etcd"` // "ok", or the last error
}

// ErrRefused is a command the coordinator will not carry out now.
var ErrRefused = errors.New("coordinator: refused")

// Coordinator runs a node's side of the election. Run drives it; the
// other methods are safe for concurrent use.
type Coordinator struct {
	cfg    Config
	cli    *clientv3.Client
	node   Node
	gate   *Gate
	log    *slog.Logger
	margin time.Duration
	keys   keys
	start  time.Time
	kick   chan struct{}

	mu   sync.Mutex // guards the fields below
	sess *concurrency.Session
	elec *concurrency.Election
	// won: this node's campaign won and its lease was not lost since.
	won   bool
	camp  context.CancelFunc // the campaign under way, or nil
	campN int                // counts campaigns, so a stale one knows it
	// stopKeepAlive ends the session's keep-alive loop.
	stopKeepAlive context.CancelFunc
	lastWhy       string          // why this node does not campaign, as last logged
	promoteErr    string          // the last refused promotion, as last logged
	holder        string          // the last value of the election's first key
	record        *OutdatedRecord // the last outdated record read
	etcdErr       error           // the last read's error
	paused        time.Time       // no campaign before (switchover)
	suspended     bool            // last logged suspension, for the log
	sawLeader     bool
	readRev       int64 // the etcd revision holder and record were read at
}

type keys struct{ election, outdated string }

// New connects to etcd (lazily: an unreachable etcd is not an error here).
func New(c Config, node Node, gate *Gate) (*Coordinator, error) {
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.StartGrace == 0 {
		c.StartGrace = 2 * c.TTL
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: c.Endpoints, TLS: c.TLS, DialTimeout: c.TTL,
		DialKeepAliveTime: c.TTL, DialKeepAliveTimeout: c.TTL / 2, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("coordinator: etcd %s: %w", strings.Join(c.Endpoints, ","), err)
	}
	base := strings.TrimSuffix(c.Prefix, "/") + "/" + c.Name + "/"
	co := &Coordinator{cfg: c, cli: cli, node: node, gate: gate, log: c.Logger.With("etcd_prefix", base),
		margin: Margin(c.TTL), keys: keys{election: base + "election", outdated: base + "outdated"},
		start: time.Now(), kick: make(chan struct{}, 1)}
	gate.onHold = co.Kick
	gate.update(func(in *GateInput, _ *Lease) { in.Enabled = true })
	return co, nil
}

// Kick makes Run look at the node again soon (the link changed).
func (c *Coordinator) Kick() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// Run drives the election until ctx ends, then resigns if it holds it.
func (c *Coordinator) Run(ctx context.Context) {
	defer c.cli.Close()
	tick := time.NewTicker(c.cfg.TTL / 20)
	defer tick.Stop()
	for {
		c.step(ctx)
		select {
		case <-ctx.Done():
			c.shutdown()
			return
		case <-tick.C:
		case <-c.kick:
		}
	}
}

// shutdown resigns (a clean stop hands the election over at once) and
// revokes the lease.
func (c *Coordinator) shutdown() {
	c.mu.Lock()
	sess, elec, won := c.sess, c.elec, c.won
	if c.camp != nil {
		c.camp()
	}
	c.mu.Unlock()
	if sess == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.TTL/2)
	defer cancel()
	if won {
		elec.Resign(ctx)
	}
	sess.Close()
}

// opCtx is the context of one etcd call made by the loop.
func (c *Coordinator) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, max(c.cfg.TTL/5, 200*time.Millisecond))
}

// step is one look at etcd and at the node, and what follows.
func (c *Coordinator) step(ctx context.Context) {
	if err := c.ensureSession(ctx); err != nil {
		c.setErr(err)
		return
	}
	c.read(ctx)
	st := c.node.State()
	c.mu.Lock()
	won := c.won
	c.mu.Unlock()
	if won {
		c.lead(ctx, st)
	} else {
		c.follow(ctx, st)
	}
	c.gate.Recheck()
	c.logSuspension()
}

func (c *Coordinator) setErr(err error) {
	c.mu.Lock()
	c.etcdErr = err
	c.mu.Unlock()
}

// read fetches the holder and the outdated record.
func (c *Coordinator) read(ctx context.Context) {
	octx, cancel := c.opCtx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(octx).Then(
		clientv3.OpGet(c.keys.election+"/", clientv3.WithFirstCreate()...),
		clientv3.OpGet(c.keys.outdated)).Commit()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.etcdErr = err
	if err != nil {
		return
	}
	c.holder, c.readRev = "", resp.Header.Revision
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		c.holder, c.sawLeader = string(kvs[0].Value), true
	}
	c.record = nil
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		var rec OutdatedRecord
		if json.Unmarshal(kvs[0].Value, &rec) == nil {
			c.record = &rec
		}
	}
}
