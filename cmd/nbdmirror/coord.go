package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nbdmirror/nbdmirror/coordinator"
	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// etcdConfig is what the --etcd flags say.
type etcdConfig struct {
	endpoints   []string
	prefix      string
	leaseTTL    time.Duration
	ca          string
	cert        string
	key         string
	onLostLease string
}

// completeEtcd checks the --etcd flags.
func (c *serveConfig) completeEtcd(endpoints string) error {
	e := &c.etcd
	for _, ep := range strings.Split(endpoints, ",") {
		if ep = strings.TrimSpace(ep); ep != "" {
			e.endpoints = append(e.endpoints, ep)
		}
	}
	switch {
	case e.onLostLease != string(coordinator.Suspend) && e.onLostLease != string(coordinator.IOError):
		return usagef("--on-lost-lease %q: want suspend or io-error", e.onLostLease)
	case e.leaseTTL < time.Second || e.leaseTTL%time.Second != 0:
		return usagef("--lease-ttl %v: want whole seconds, at least 1s (etcd counts leases in seconds)", e.leaseTTL)
	case !strings.HasPrefix(e.prefix, "/"):
		return usagef("--etcd-prefix %q: want a path starting with /", e.prefix)
	case (e.cert == "") != (e.key == ""):
		return usagef("--etcd-cert and --etcd-key go together")
	case len(e.endpoints) > 0 && c.peer == "" && c.peerListen == "":
		return usagef("--etcd elects one of two nodes: it needs --peer and --peer-listen")
	}
	return nil
}

// tlsConfig is the TLS of the etcd client, or nil when no flag asks for it.
func (e etcdConfig) tlsConfig() (*tls.Config, error) {
	if e.ca == "" && e.cert == "" {
		return nil, nil
	}
	t := &tls.Config{MinVersion: tls.VersionTLS12}
	if e.ca != "" {
		pem, err := os.ReadFile(e.ca)
		if err != nil {
			return nil, usagef("--etcd-ca: %v", err)
		}
		t.RootCAs = x509.NewCertPool()
		if !t.RootCAs.AppendCertsFromPEM(pem) {
			return nil, usagef("--etcd-ca %s: no PEM certificate in it", e.ca)
		}
	}
	if e.cert != "" {
		pair, err := tls.LoadX509KeyPair(e.cert, e.key)
		if err != nil {
			return nil, usagef("--etcd-cert/--etcd-key: %v", err)
		}
		t.Certificates = []tls.Certificate{pair}
	}
	return t, nil
}

// nodeID names this node in the election: its host and replication address.
func (c *serveConfig) nodeID() string {
	host, _ := os.Hostname()
	return host + "/" + c.peerListen
}

// startCoordinator puts the gate in front of the resource and runs the
// election; with --etcd the node starts Secondary and is promoted only by it.
func (d *daemon) startCoordinator() error {
	tlsc, err := d.cfg.etcd.tlsConfig()
	if err != nil {
		return err
	}
	d.gate = coordinator.NewGate(coordinator.OnLostLease(d.cfg.etcd.onLostLease), d.res.Mirroring)
	d.coord, err = coordinator.New(coordinator.Config{Endpoints: d.cfg.etcd.endpoints, Prefix: d.cfg.etcd.prefix,
		Name: d.cfg.name, ID: d.cfg.nodeID(), TTL: d.cfg.etcd.leaseTTL, TLS: tlsc, Logger: d.log,
		MayStart: d.cfg.primary}, coordNode{d}, d.gate)
	if err != nil {
		return usageError{err}
	}
	return nil
}

// runCoordinator starts the election loop once the daemon is up.
func (d *daemon) runCoordinator() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.coord.Run(ctx); close(done) }()
	d.stopCoord = func() { cancel(); <-done; d.gate.Close() }
}

// coordNode is the daemon as the coordinator drives it.
type coordNode struct{ d *daemon }

func (n coordNode) State() coordinator.NodeState {
	st := n.d.res.Status()
	return coordinator.NodeState{Primary: st.Role == wire.Primary.String(), Disk: st.Disk, Gen: st.Gen.Current,
		Peer: coordinator.PeerView{Mirroring: st.Peer.Connection == "Connected", PeerDisk: st.Peer.Disk,
			Replication: st.Peer.Replication, OutOfSync: st.Stats.OutOfSyncBytes}}
}

func (n coordNode) Promote() error { return n.d.res.SetRole(wire.Primary, false) }
func (n coordNode) Demote() error  { return n.d.res.SetRole(wire.Secondary, false) }

// Depose disconnects the NBD clients (the gate has failed what they
// waited for) and demotes.
func (n coordNode) Depose() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.d.setRoleLocal(ctx, wire.Secondary, true); err != nil {
		n.d.log.Error("demote after losing the election", "err", err)
	}
}

// coordRole is `role` under an election: promotion only on the holder,
// demotion of the holder as a switchover. handled says whether it was one.
func (d *daemon) coordRole(ctx context.Context, role wire.Role, force bool) (handled bool, err error) {
	if d.coord == nil {
		return false, nil
	}
	if role == wire.Primary {
		if err := d.coord.CheckPromote(); err != nil {
			return true, fmt.Errorf("%w: %w", replication.ErrRefused, err)
		}
		return false, nil
	}
	if !d.coord.Holds() {
		return false, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return true, d.coord.Switchover(ctx, func() error { return d.setRoleLocal(ctx, wire.Secondary, true) })
}

// gatedBackend is the resource behind the coordinator's gate: the NBD
// export's backend when --etcd is on.
type gatedBackend struct {
	res  *replication.Resource
	gate *coordinator.Gate
}

func (b gatedBackend) Size() (int64, error) { return b.res.Size() }

func (b gatedBackend) ReadAt(p []byte, off int64) (int, error) {
	if err := b.gate.Await(true); err != nil {
		return 0, err
	}
	return b.res.ReadAt(p, off)
}

// sync runs a write that returns when done, behind the gate both ways.
func (b gatedBackend) sync(f func() error) error {
	if err := b.gate.Await(false); err != nil {
		return err
	}
	if err := f(); err != nil {
		return err
	}
	return b.gate.Await(false)
}

func (b gatedBackend) WriteAt(p []byte, off int64) (int, error) {
	return len(p), b.sync(func() error { _, err := b.res.WriteAt(p, off); return err })
}

func (b gatedBackend) WriteAtFUA(p []byte, off int64) (int, error) {
	return len(p), b.sync(func() error { _, err := b.res.WriteAtFUA(p, off); return err })
}

func (b gatedBackend) Trim(off, length int64) error {
	return b.sync(func() error { return b.res.Trim(off, length) })
}

func (b gatedBackend) Zero(off, length int64, noHole bool) error {
	return b.sync(func() error { return b.res.Zero(off, length, noHole) })
}

func (b gatedBackend) Sync() error { return b.sync(b.res.Sync) }

func (b gatedBackend) WriteAsync(p []byte, off int64, fua, last bool, done func(error)) {
	b.gate.Submit(func() { b.res.WriteAsync(p, off, fua, last, b.gate.Wrap(done)) }, done)
}
