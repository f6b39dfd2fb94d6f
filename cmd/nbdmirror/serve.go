package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"github.com/nbdmirror/nbdmirror/coordinator"
	"github.com/nbdmirror/nbdmirror/internal/filedisk"
	"github.com/nbdmirror/nbdmirror/internal/tlsdir"
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/nbdserver"
	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

var errHelp = pflag.ErrHelp

// serveConfig is what serve's flags say.
type serveConfig struct {
	name      string
	disk      string
	size      int64
	nbdListen string
	nbdPoll   time.Duration // --nbd-poll
	peerPoll  time.Duration // --peer-poll
	control   string
	metaDir   string
	primary   bool
	secondary bool

	codec         journal.Codec
	journalSize   int64
	journalRetain int64
	dataMax       int64 // --journal-data-max: writes of it or more go in place; negative never

	peerListen    string
	peer          string
	secretFile    string
	secret        []byte
	peerTLSDir    string      // --peer-tls-certificates
	peerName      string      // --peer-name: the name the peer's certificate must carry
	peerTLS       *tls.Config // from both, or nil
	pprof         bool
	controlGroup  string
	protocol      replication.Protocol
	peerTimeout   time.Duration
	metricsListen string
	resyncRate    int64
	resyncMinRate int64
	afterSB       string
	onIOError     replication.OnIOError
	readBalancing replication.ReadBalancing // --read-balancing
	nbdSec        nbdSecurity               // --tls*, --max-inflight-bytes, --max-connections, --handshake-limit
	etcd          etcdConfig
}

var validName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

func parseServeFlags(args []string, stdout io.Writer) (serveConfig, error) {
	var c serveConfig
	var size, codec, journalSize, journalRetain, dataMax, protocol, resyncRate, resyncMinRate, etcd, config, onIOError, readBalancing string
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&c.name, "name", "r0", "resource name; the NBD export answers to it and to the empty name")
	fs.StringVar(&c.disk, "disk", "", "backing file or block device (required)")
	fs.StringVar(&size, "size", "", "size of the device (1G, 512M, 10GiB...); creates a sparse file when --disk does not exist")
	fs.StringVar(&c.nbdListen, "nbd-listen", "127.0.0.1:10809", "address the NBD export listens on")
	fs.StringVar(&c.control, "control", "", "Unix socket of the control API (default /run/nbdmirror/NAME.sock)")
	fs.StringVar(&c.metaDir, "meta-dir", "", "directory of the resource's metadata (default DISK.meta)")
	fs.BoolVar(&c.primary, "primary", false, "start as Primary: export the device (the default without a peer)")
	fs.BoolVar(&c.secondary, "secondary", false, "start as Secondary: no NBD I/O (the default with a peer)")
	fs.StringVar(&codec, "compress", "s2", "codec of journal records and replication: s2, zstd or none")
	fs.StringVar(&journalSize, "journal-size", "1G", "bound of the journal; near it a checkpoint is forced and writers wait")
	fs.StringVar(&journalRetain, "journal-retain", "256M", "journal kept after a checkpoint, for resync by replay")
	fs.StringVar(&dataMax, "journal-data-max", "256K", "writes of this size or more go to the disk in place, behind a record of their extent, instead of through the journal; 0 journals every write whole")
	fs.StringVar(&c.peerListen, "peer-listen", "", "address of the replication listener")
	fs.StringVar(&c.peer, "peer", "", "the other node's --peer-listen address")
	fs.StringVar(&c.secretFile, "secret-file", "", "file holding the secret both nodes share, mode 0600 (--peer needs it or --peer-tls-certificates, or both)")
	fs.StringVar(&c.peerTLSDir, "peer-tls-certificates", "", "directory of ca-cert.pem, server-cert.pem and server-key.pem (mode 0600): the peer link runs over mutual TLS 1.3")
	fs.StringVar(&c.peerName, "peer-name", "", "with --peer-tls-certificates: the name (DNS or IP subject alternative name) the peer's certificate must carry (default: the host of --peer)")
	fs.BoolVar(&c.pprof, "pprof", false, "serve Go's profiles on --metrics-listen at /debug/pprof/")
	fs.StringVar(&c.controlGroup, "control-group", "", "group allowed to use the control socket (mode 0660); without it only the owner may (0600)")
	fs.StringVar(&protocol, "protocol", "C", "when a write is acknowledged: C (peer journaled it), B (peer received it), A (sent)")
	fs.DurationVar(&c.peerTimeout, "peer-timeout", 5*time.Second, "how long the peer may stay silent before the primary goes on alone")
	fs.StringVar(&c.metricsListen, "metrics-listen", "", "address to serve Prometheus metrics on (/metrics)")
	fs.StringVar(&c.afterSB, "after-split-brain", "disconnect", "on a split brain: disconnect (wait for resolve) or discard-zero-changes")
	fs.StringVar(&onIOError, "on-io-error", "detach", "on an I/O error of the disk, journal or metadata: detach (go Diskless, a Primary serves through its peer) or pass-on (the client gets the error)")
	fs.DurationVar(&c.nbdPoll, "nbd-poll", 150*time.Microsecond, "how long a connection may poll for the client's next request before it sleeps, while its requests come that fast; 0 never polls")
	fs.DurationVar(&c.peerPoll, "peer-poll", 150*time.Microsecond, "how long the replication link may poll for the peer's next frame before it sleeps, while writes come one at a time (on the Primary the polling reader also sends their records) or the peer's writes come one at a time; 0 never polls")
	fs.StringVar(&readBalancing, "read-balancing", "prefer-local", "which disk serves reads while the peer is Connected and UpToDate: prefer-local, prefer-remote, round-robin, least-pending or when-congested-remote (the local disk unless 8 reads wait on it)")
	fs.StringVar(&resyncRate, "resync-rate", "0", "cap on resync traffic per second (e.g. 100M); 0 is as fast as the link allows")
	fs.StringVar(&resyncMinRate, "resync-min-rate", "32M", "resync rate per second while the application does I/O (DRBD's c-min-rate); 0 never slows for it")
	c.nbdSec.addFlags(fs)
	fs.StringVar(&config, "config", "", "TOML file of these flags, keys named like the long flags (flags on the command line win)")
	fs.StringVar(&etcd, "etcd", "", "etcd endpoints (URL[,URL...]): the election there decides which node is Primary")
	fs.StringVar(&c.etcd.prefix, "etcd-prefix", "/nbdmirror", "etcd key prefix; the election lives under PREFIX/NAME/")
	fs.DurationVar(&c.etcd.leaseTTL, "lease-ttl", 5*time.Second, "TTL of the etcd lease a Primary holds (whole seconds)")
	fs.StringVar(&c.etcd.ca, "etcd-ca", "", "CA certificate (PEM) that signs etcd's certificate")
	fs.StringVar(&c.etcd.cert, "etcd-cert", "", "client certificate (PEM) for etcd")
	fs.StringVar(&c.etcd.key, "etcd-key", "", "key (PEM) of --etcd-cert")
	fs.StringVar(&c.etcd.onLostLease, "on-lost-lease", "suspend", "what a Primary's writes get while its lease may be expired: suspend (replies wait) or io-error")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fmt.Fprintf(stdout, "usage: nbdmirror serve --disk PATH [flags]\n\n%s", fs.FlagUsages())
			return c, errHelp
		}
		return c, usageError{err}
	}
	if fs.NArg() > 0 {
		return c, usagef("unexpected argument %q", fs.Arg(0))
	}
	if config != "" {
		if err := applyConfig(fs, config); err != nil {
			return c, err
		}
	}
	if err := c.complete(size); err != nil {
		return c, err
	}
	if err := c.completeJournal(codec, journalSize, journalRetain); err != nil {
		return c, err
	}
	if err := c.completeDataMax(dataMax); err != nil {
		return c, err
	}
	if err := c.completePeer(protocol); err != nil {
		return c, err
	}
	if err := c.nbdSec.complete(); err != nil {
		return c, err
	}
	if err := c.completeEtcd(etcd); err != nil {
		return c, err
	}
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"--nbd-poll", c.nbdPoll}, {"--peer-poll", c.peerPoll}} {
		if p.d < 0 || p.d > 10*time.Millisecond {
			return c, usagef("%s %v: want 0 (never) up to 10ms", p.name, p.d)
		}
	}
	rate, err := parseSize(resyncRate)
	if err != nil {
		return c, usagef("--resync-rate: %v", err)
	}
	c.resyncRate = rate
	if c.readBalancing, err = replication.ParseReadBalancing(readBalancing); err != nil {
		return c, usagef("--read-balancing %q: want prefer-local, prefer-remote, round-robin, least-pending or when-congested-remote", readBalancing)
	}
	if c.resyncMinRate, err = parseSize(resyncMinRate); err != nil {
		return c, usagef("--resync-min-rate: %v", err)
	}
	if c.afterSB != string(replication.Disconnect) && c.afterSB != string(replication.DiscardZeroChanges) {
		return c, usagef("--after-split-brain %q: want disconnect or discard-zero-changes", c.afterSB)
	}
	if c.onIOError, err = replication.ParseOnIOError(onIOError); err != nil {
		return c, usageError{err}
	}
	return c, nil
}

func (c *serveConfig) completePeer(protocol string) error {
	var err error
	if c.protocol, err = replication.ParseProtocol(protocol); err != nil {
		return usagef("--protocol %q: want A, B or C", protocol)
	}
	if c.peerTimeout < 100*time.Millisecond {
		return usagef("--peer-timeout %v: at least 100ms", c.peerTimeout)
	}
	for flag, addr := range map[string]string{"--peer": c.peer, "--peer-listen": c.peerListen, "--metrics-listen": c.metricsListen} {
		if _, _, err := net.SplitHostPort(addr); addr != "" && err != nil {
			return usagef("%s %q: %v", flag, addr, err)
		}
	}
	if (c.peer != "" || c.peerListen != "") && c.secretFile == "" && c.peerTLSDir == "" {
		return usagef("--peer and --peer-listen need --secret-file or --peer-tls-certificates (or both)")
	}
	if c.secretFile != "" {
		if err := tlsdir.CheckPrivate(c.secretFile); err != nil {
			return usagef("--secret-file: %v", err)
		}
		secret, err := os.ReadFile(c.secretFile)
		if err != nil {
			return usagef("--secret-file: %v", err)
		}
		if c.secret = bytes.TrimSpace(secret); len(c.secret) < 8 {
			return usagef("--secret-file %s: the secret needs at least 8 bytes", c.secretFile)
		}
	}
	return c.completePeerTLS()
}

// completePeerTLS loads --peer-tls-certificates. The name the peer's
// certificate must carry is --peer-name, or the host of --peer.
func (c *serveConfig) completePeerTLS() error {
	if c.peerTLSDir == "" {
		if c.peerName != "" {
			return usagef("--peer-name goes with --peer-tls-certificates")
		}
		return nil
	}
	if c.peerName == "" && c.peer != "" {
		c.peerName, _, _ = net.SplitHostPort(c.peer)
	}
	if c.peerName == "" {
		return usagef("--peer-tls-certificates needs --peer-name (the name in the peer's certificate) without --peer")
	}
	// The peer's certificate is checked as a server's client certificate
	// would be: against ca-cert.pem (and, by PeerTLSConfig, for peerName).
	d, err := tlsdir.Server(c.peerTLSDir, true)
	if err != nil {
		return usagef("--peer-tls-certificates: %v", err)
	}
	c.peerTLS = replication.PeerTLSConfig(d.Certificates[0], d.ClientCAs, c.peerName)
	return nil
}

// initialRole is --primary or --secondary; without either, a node with no
// peer is Primary and one with a peer is Secondary. With --etcd every node
// starts Secondary: only the election promotes.
func (c *serveConfig) initialRole() wire.Role {
	if len(c.etcd.endpoints) > 0 {
		return wire.Secondary
	}
	if c.primary || !c.secondary && c.peer == "" && c.peerListen == "" {
		return wire.Primary
	}
	return wire.Secondary
}

func (c *serveConfig) completeJournal(codec, size, retain string) error {
	var err error
	if c.codec, err = journal.ParseCodec(codec); err != nil {
		return usagef("--compress: %v", err)
	}
	if c.journalSize, err = parseSize(size); err != nil || c.journalSize < 4<<20 {
		return usagef("--journal-size %q: want a size of at least 4M", size)
	}
	if c.journalRetain, err = parseSize(retain); err != nil {
		return usagef("--journal-retain: %v", err)
	}
	if c.journalRetain > c.journalSize/2 {
		return usagef("--journal-retain %s: at most half of --journal-size", retain)
	}
	return nil
}

// completeDataMax parses --journal-data-max: 0 turns writes in place off.
func (c *serveConfig) completeDataMax(s string) error {
	n, err := parseSize(s)
	switch {
	case err != nil:
		return usagef("--journal-data-max: %v", err)
	case n == 0:
		c.dataMax = -1
	case n < 4<<10 || n > journal.MaxRawLen:
		return usagef("--journal-data-max %q: want 0 or 4K to 128M", s)
	default:
		c.dataMax = n
	}
	return nil
}

// complete checks the flags against each other and fills in defaults.
func (c *serveConfig) complete(size string) error {
	if !validName.MatchString(c.name) {
		return usagef("--name %q: use 1-64 letters, digits, '.', '_' or '-'", c.name)
	}
	if c.disk == "" {
		return usagef("--disk is required")
	}
	if c.primary && c.secondary {
		return usagef("--primary and --secondary exclude each other")
	}
	if size != "" {
		n, err := parseSize(size)
		if err != nil {
			return usagef("--size: %v", err)
		}
		if n == 0 {
			return usagef("--size must be more than 0")
		}
		c.size = n
	}
	if c.control == "" {
		c.control = filepath.Join("/run/nbdmirror", c.name+".sock")
	}
	if c.metaDir == "" {
		c.metaDir = c.disk + ".meta"
	}
	return nil
}

// checkFiles verifies the disk and metadata paths without creating anything.
func (c *serveConfig) checkFiles() error {
	exists, have, err := filedisk.Stat(c.disk)
	switch {
	case err != nil:
		return usageError{err}
	case !exists && c.size == 0:
		return usagef("--disk %s does not exist; give --size to create it", c.disk)
	case exists && c.size != 0 && have != c.size:
		return usagef("--disk %s is %d bytes, not the %d of --size; it is never resized", c.disk, have, c.size)
	case exists && have == 0:
		return usagef("--disk %s is empty", c.disk)
	}
	if fi, err := os.Stat(c.metaDir); err == nil && !fi.IsDir() {
		return usagef("--meta-dir %s is not a directory", c.metaDir)
	}
	return nil
}

func runServe(args []string, stdout io.Writer) error {
	c, err := parseServeFlags(args, stdout)
	if err != nil {
		return err
	}
	if err := c.checkFiles(); err != nil {
		return err
	}
	// Signals are caught before anything is published: a SIGTERM sent the
	// moment the control socket appears (or during start-up) stops the
	// daemon cleanly once it is up, instead of killing it half-way.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	log := slog.New(slog.NewTextHandler(os.Stderr, nil)).With("resource", c.name)
	d, err := startDaemon(c, log)
	if err != nil {
		return err
	}
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("telling the service manager we are ready", "err", err)
	}
	s := <-sig
	log.Info("stopping", "signal", s.String())
	sdNotify("STOPPING=1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return d.stop(ctx)
}

// daemon is one running resource: its disk, NBD export and control socket.
type daemon struct {
	cfg  serveConfig
	log  *slog.Logger
	disk *filedisk.Disk // replaced by disk attach, under diskMu
	// diskMu serialises disk attach and detach, and guards disk and cfg.disk.
	diskMu  sync.Mutex
	res     *replication.Resource
	nbd     *nbdserver.Server
	nbdLn   net.Listener
	metrics *metrics
	metLn   net.Listener // --metrics-listen, or nil
	control *controlServer
	served  chan error // the NBD accept loop's result
	// demoting refuses new NBD clients while a demotion waits for the
	// connected ones to finish.
	demoting atomic.Bool
	// With --etcd: the election, the gate in front of the resource, and
	// what stops them.
	coord     *coordinator.Coordinator
	gate      *coordinator.Gate
	stopCoord func()
}

// startDaemon brings a resource up. Listeners are opened before any file is
// created, so a port in use or a bad control path leaves nothing behind. The
// control socket appears at its path last: once it exists the daemon is ready.
func startDaemon(c serveConfig, log *slog.Logger) (*daemon, error) {
	d := &daemon{cfg: c, log: log, served: make(chan error, 1)}
	var err error
	if d.nbdLn, err = net.Listen("tcp", c.nbdListen); err != nil {
		return nil, usagef("--nbd-listen: %v", err)
	}
	if c.metricsListen != "" {
		if d.metLn, err = net.Listen("tcp", c.metricsListen); err != nil {
			d.nbdLn.Close()
			return nil, usagef("--metrics-listen: %v", err)
		}
	}
	if d.control, err = listenControl(c.control, c.controlGroup, d); err != nil {
		d.closeListeners()
		return nil, usagef("--control: %v", err)
	}
	d.metrics = newMetrics(c.name)
	if err := d.openStorage(); err != nil {
		d.control.abort()
		d.closeListeners()
		return nil, err
	}
	var backend nbdserver.Backend = d.res
	if len(c.etcd.endpoints) > 0 {
		if err := d.startCoordinator(); err != nil {
			d.res.Close()
			d.disk.Close()
			d.control.abort()
			d.closeListeners()
			return nil, err
		}
		backend = gatedBackend{res: d.res, gate: d.gate}
	}
	opts := nbdserver.Options{
		Name:    c.name,
		Backend: backend,
		Logger:  log,
		Admit:   d.admit,
		Poll:    c.nbdPoll,
		// A Primary that mirrors waits for its peer on every write: polling
		// would save little of that round trip and take the core the peer's
		// side of it may need (on the same host in tests and benchmarks,
		// where a pair's write and flush lost 10-15% to it).
		PollIf: func() bool { return !d.res.Mirroring() },
	}
	c.nbdSec.apply(&opts)
	d.nbd = nbdserver.New(opts)
	go func() { d.served <- d.nbd.Serve(d.nbdLn) }()
	if d.metLn != nil {
		d.metrics.serve(d.metLn, d)
	}
	if d.coord != nil {
		d.runCoordinator()
	}
	if err := d.control.publish(); err != nil {
		d.stop(context.Background())
		return nil, err
	}
	log.Info("ready", "role", d.res.Role().String(), "nbd", d.nbdLn.Addr().String(), "tls", c.nbdSec.mode.String(), "control", c.control,
		"disk", c.disk, "size", d.size())
	return d, nil
}

func (d *daemon) openStorage() (err error) {
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	created := false
	if _, serr := os.Stat(d.cfg.disk); errors.Is(serr, os.ErrNotExist) {
		created = true
		undo = append(undo, func() { os.Remove(d.cfg.disk) })
	}
	if _, serr := os.Stat(d.cfg.metaDir); errors.Is(serr, os.ErrNotExist) {
		undo = append(undo, func() { os.RemoveAll(d.cfg.metaDir) })
	}
	disk, err := filedisk.Open(d.cfg.disk, d.cfg.size)
	if err != nil {
		return usageError{err}
	}
	undo = append(undo, func() { disk.Close() })
	if err := os.MkdirAll(d.cfg.metaDir, 0o700); err != nil {
		return usagef("--meta-dir: %v", err)
	}
	res, err := replication.Open(replication.Config{
		Name: d.cfg.name, Disk: disk, MetaDir: d.cfg.metaDir, Codec: d.cfg.codec,
		JournalSize: d.cfg.journalSize, JournalRetain: d.cfg.journalRetain, JournalDataMax: d.cfg.dataMax,
		Logger: d.log,
		Role:   d.cfg.initialRole(), Created: created, PeerListen: d.cfg.peerListen, Peer: d.cfg.peer,
		Secret: d.cfg.secret, Protocol: d.cfg.protocol, PeerTimeout: d.cfg.peerTimeout,
		// --handshake-limit bounds the peer listener too; its 0 (no bound
		// for NBD) is replication's default there: a peer listener without
		// a bound would let MaxHandshakes silent connections lock the peer out.
		PeerTLS: d.cfg.peerTLS, HandshakeLimit: d.cfg.nbdSec.handshake,
		PeerPoll:     d.cfg.peerPoll,
		ObserveWrite: d.metrics.observe, ResyncRate: d.cfg.resyncRate,
		ResyncMinRate: d.cfg.resyncMinRate, ObserveStage: d.stageObserver(),
		AfterSplitBrain: replication.AfterSplitBrain(d.cfg.afterSB),
		OnIOError:       d.cfg.onIOError,
		ReadBalancing:   d.cfg.readBalancing,
	})
	if err != nil {
		return usageError{err}
	}
	d.disk, d.res = disk, res
	return nil
}

func (d *daemon) closeListeners() {
	d.nbdLn.Close()
	if d.metLn != nil {
		d.metLn.Close()
	}
}

// admit is asked before a client may start transmission.
func (d *daemon) admit() error {
	if d.res.Role() != wire.Primary || d.demoting.Load() {
		return fmt.Errorf("resource %s is Secondary: no NBD I/O", d.cfg.name)
	}
	return nil
}

func (d *daemon) size() int64 {
	n, _ := d.res.Size()
	return n
}

// stop shuts the daemon down: no new clients or control requests, in-flight
// NBD requests finish and get their replies, then a last checkpoint syncs
// the disk.
func (d *daemon) stop(ctx context.Context) error {
	d.control.close()
	d.metrics.close()
	if d.stopCoord != nil {
		d.stopCoord() // resigns: held writes fail, the peer may win at once
	}
	err := d.nbd.Shutdown(ctx)
	if serr := <-d.served; serr != nil && !errors.Is(serr, net.ErrClosed) && err == nil {
		err = serr
	}
	if cerr := d.res.Close(); err == nil {
		err = cerr
	}
	d.diskMu.Lock()
	if cerr := d.disk.Close(); err == nil {
		err = cerr
	}
	d.diskMu.Unlock()
	if err != nil {
		d.log.Error("stopped with an error", "err", err)
		return err
	}
	d.log.Info("stopped")
	return nil
}
