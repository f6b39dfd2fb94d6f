package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlstest"
)

// system is one NBD server setup under test. Adding one is an entry in
// systems and, usually, a start function of a few lines. Every process the
// start function spawns is stopped after the turn, last started first, and
// its CPU time (with its descendants') is charged to the system.
type system struct {
	name      string
	images    int      // disk images it serves, all created the same way
	needs     []string // executables it runs (the nbdmirror binary is built instead)
	baselines []string // systems it is compared with in the ratio rows
	nbdmirror bool     // it runs the nbdmirror binary
	tls       bool     // it serves TLS with client certificates (fio runs as nobody, see tlsLaunch)
	rev       string   // it runs nbdmirror built from this git revision (--against)
	start     func(l *launch) (uri string, err error)
}

// withRevision adds, for every nbdmirror system selected, the same system
// running nbdmirror built from rev, named NAME@rev and run in turn with the
// others; the current one gets it as a baseline, so the ratio rows show
// before and after side by side.
func withRevision(sys []system, rev string) []system {
	var out []system
	for _, s := range sys {
		if !s.nbdmirror {
			out = append(out, s)
			continue
		}
		old := s
		old.name, old.rev, old.baselines = s.name+"@"+rev, rev, nil
		s.baselines = append([]string{old.name}, s.baselines...)
		out = append(out, s, old)
	}
	return out
}

// systems lists every system the harness knows, in the order they run.
var systems = []system{
	{name: "nbdmirror", nbdmirror: true, images: 1, baselines: []string{"nbdkit"}, start: startNbdmirror},
	{name: "pair-C", nbdmirror: true, images: 2, baselines: []string{"nbdmirror", "qemu-quorum"}, start: startPair("C", false)},
	{name: "pair-A", nbdmirror: true, images: 2, baselines: []string{"nbdmirror", "qemu-quorum"}, start: startPair("A", false)},
	{name: "pair-C-TLS", nbdmirror: true, images: 2, baselines: []string{"pair-C"}, start: startPair("C", true)},
	// pair-C with each --read-balancing policy but prefer-local (pair-C's),
	// for randread-4k-qd32 side by side with it.
	{name: "pair-C-prefer-remote", nbdmirror: true, images: 2, baselines: []string{"pair-C"},
		start: startPair("C", false, "--read-balancing", "prefer-remote")},
	{name: "pair-C-round-robin", nbdmirror: true, images: 2, baselines: []string{"pair-C"},
		start: startPair("C", false, "--read-balancing", "round-robin")},
	{name: "pair-C-least-pending", nbdmirror: true, images: 2, baselines: []string{"pair-C"},
		start: startPair("C", false, "--read-balancing", "least-pending")},
	{name: "pair-C-when-congested-remote", nbdmirror: true, images: 2, baselines: []string{"pair-C"},
		start: startPair("C", false, "--read-balancing", "when-congested-remote")},
	{name: "nbdkit", images: 1, needs: []string{"nbdkit"}, start: startNbdkit},
	{name: "qemu-nbd", images: 1, needs: []string{"qemu-nbd"}, start: startQemuNBD},
	{name: "qemu-quorum", images: 2, needs: []string{"nbdkit", "qemu-storage-daemon"},
		start: startQemuQuorum},
	{name: "nbdmirror-tls", nbdmirror: true, tls: true, images: 1, needs: []string{"setpriv"},
		baselines: []string{"nbdkit-tls", "nbdmirror"}, start: startNbdmirrorTLS},
	{name: "nbdkit-tls", tls: true, images: 1, needs: []string{"nbdkit", "setpriv"}, start: startNbdkitTLS},
}

// defaultSystems is what runs without --systems.
const defaultSystems = "nbdmirror,nbdkit,pair-C,pair-A,qemu-quorum"

// lookupSystems returns the named systems in the order given.
func lookupSystems(names []string) ([]system, error) {
	var out []system
	for _, n := range names {
		found := false
		for _, s := range systems {
			if s.name == n {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, fmt.Errorf("bench: unknown system %q (known: %s)", n, systemNames())
		}
	}
	return out, nil
}

func systemNames() string {
	var names []string
	for _, s := range systems {
		names = append(names, s.name)
	}
	return strings.Join(names, ", ")
}

// launch is one start of a system: its images, a scratch directory for
// sockets and logs, and the processes started, stopped in reverse order.
type launch struct {
	ctx    context.Context
	dir    string
	images []string
	bin    string // the nbdmirror binary, when it was built
	procs  []*proc
	// fioHome, for a TLS system, is the home directory fio runs with:
	// its .pki/libnbd holds the client certificate.
	fioHome string
}

// readyTimeout bounds how long a server may take to accept connections.
const readyTimeout = 30 * time.Second

// spawn starts a process of the system; its output goes to dir/name.log.
func (l *launch) spawn(name string, argv ...string) (*proc, error) {
	p, err := startProc(name, filepath.Join(l.dir, name+".log"), argv...)
	if err != nil {
		return nil, err
	}
	l.procs = append(l.procs, p)
	return p, nil
}

// serve spawns a server and waits until it accepts on addr and every
// file in files exists.
func (l *launch) serve(name, addr string, files []string, argv ...string) error {
	p, err := l.spawn(name, argv...)
	if err != nil {
		return err
	}
	checks := []func() bool{}
	for _, f := range files {
		checks = append(checks, exists(f))
	}
	checks = append(checks, accepts(addr))
	return waitReady(l.ctx, p, readyTimeout, checks...)
}

// pids returns the processes whose CPU time is charged to the system.
func (l *launch) pids() []int {
	var pids []int
	for _, p := range l.procs {
		pids = append(pids, p.pid())
	}
	return pids
}

// stop stops the processes, last started first, and returns the first error.
func (l *launch) stop() error {
	var first error
	for i := len(l.procs) - 1; i >= 0; i-- {
		if err := l.procs[i].stop(10 * time.Second); err != nil && first == nil {
			first = err
		}
	}
	l.procs = nil
	if l.fioHome != "" {
		os.RemoveAll(l.fioHome)
		l.fioHome = ""
	}
	return first
}

func startNbdmirror(l *launch) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	return "nbd://" + addr + "/r0", serveNbdmirror(l, addr)
}

func serveNbdmirror(l *launch, addr string, extra ...string) error {
	sock := filepath.Join(l.dir, "r0.sock")
	os.Remove(sock) // left by an earlier run; readiness waits for a new one
	return l.serve("nbdmirror", addr, []string{sock}, append([]string{l.bin, "serve", "--name", "r0",
		"--disk", l.images[0], "--nbd-listen", addr, "--control", sock, "--primary"}, extra...)...)
}

// startNbdmirrorTLS is nbdmirror with --tls require and client
// certificates, as startNbdkitTLS runs nbdkit.
func startNbdmirrorTLS(l *launch) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	certs, err := tlsLaunch(l)
	if err != nil {
		return "", err
	}
	err = serveNbdmirror(l, addr, "--tls", "require", "--tls-certificates", certs, "--tls-verify-peer")
	return "nbds://" + addr + "/r0", err
}

func startNbdkitTLS(l *launch) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	certs, err := tlsLaunch(l)
	if err != nil {
		return "", err
	}
	err = l.serve("nbdkit", addr, nil, "nbdkit", "-f", "-i", "127.0.0.1", "-p", port(addr),
		"--threads", "16", "--tls=require", "--tls-certificates="+certs, "--tls-verify-peer",
		"file", "file="+l.images[0])
	return "nbds://" + addr + "/", err
}

// tlsLaunch makes a CA, a server certificate directory in the launch's
// directory, whose path it returns, and a home for fio whose .pki/libnbd
// holds a client certificate. fio's nbd engine does not let its URI name a
// certificate directory (libnbd wants nbd_set_uri_allow_local_file for
// that), and libnbd run by root reads only /etc/pki/libnbd: fio runs as
// nobody with that home instead (fioRun.home), leaving /etc alone.
func tlsLaunch(l *launch) (string, error) {
	ca, err := tlstest.New("nbdmirror bench CA")
	if err != nil {
		return "", err
	}
	certs := filepath.Join(l.dir, "tls")
	if err := os.MkdirAll(certs, 0o700); err != nil {
		return "", err
	}
	if err := ca.WriteDir(certs); err != nil {
		return "", err
	}
	if l.fioHome, err = os.MkdirTemp("", "nbdmirror-bench-fio"); err != nil {
		return "", err
	}
	pki := filepath.Join(l.fioHome, ".pki", "libnbd")
	out := filepath.Join(l.fioHome, "out")
	for _, d := range []string{pki, out} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	for _, d := range []string{l.fioHome, filepath.Dir(pki), pki} {
		os.Chmod(d, 0o755)
	}
	os.Chmod(out, 0o777)
	return certs, ca.WriteClientDir(pki, nil, 0o644) // a throwaway key that nobody must read
}

// startPair runs two nbdmirror daemons mirroring with protocol proto, the
// peer link over mutual TLS if withTLS, and waits until they are
// connected, so that no write goes out degraded; primary are more flags
// of the Primary.
func startPair(proto string, withTLS bool, primary ...string) func(l *launch) (string, error) {
	return func(l *launch) (string, error) {
		secret := filepath.Join(l.dir, "secret")
		if err := os.WriteFile(secret, []byte("bench-pair-secret-0123456789"), 0o600); err != nil {
			return "", err
		}
		var extra [2][]string
		if withTLS {
			var err error
			if extra, err = peerTLSFlags(l.dir); err != nil {
				return "", err
			}
		}
		extra[0] = append(extra[0], primary...)
		var addrs [6]string
		for i := range addrs {
			a, err := freeAddr()
			if err != nil {
				return "", err
			}
			addrs[i] = a
		}
		nbd, peer, metrics := addrs[0:2], addrs[2:4], addrs[4:6]
		for i, role := range []string{"--primary", "--secondary"} {
			name := fmt.Sprintf("nbdmirror-%d", i)
			sock := filepath.Join(l.dir, name+".sock")
			os.Remove(sock)
			args := append([]string{l.bin, "serve", "--name", "r0",
				"--disk", l.images[i], "--nbd-listen", nbd[i], "--control", sock, role,
				"--peer-listen", peer[i], "--peer", peer[1-i], "--secret-file", secret,
				"--protocol", proto, "--metrics-listen", metrics[i]}, extra[i]...)
			if err := l.serve(name, nbd[i], []string{sock}, args...); err != nil {
				return "", err
			}
		}
		// The images were written before, as for every system: the nodes
		// cannot know they hold the same bytes, so the secondary gives in
		// and takes a full sync first.
		sec := filepath.Join(l.dir, "nbdmirror-1.sock")
		if out, err := exec.Command(l.bin, "resolve", "--discard-my-data", "--control", sec).CombinedOutput(); err != nil {
			return "", fmt.Errorf("bench: resolve: %v: %s", err, out)
		}
		if out, err := exec.Command(l.bin, "connect", "--control", filepath.Join(l.dir, "nbdmirror-0.sock")).CombinedOutput(); err != nil {
			return "", fmt.Errorf("bench: connect: %v: %s", err, out)
		}
		err := waitReady(l.ctx, l.procs[0], 5*readyTimeout, connected(metrics[0]))
		return "nbd://" + nbd[0] + "/r0", err
	}
}

// peerTLSFlags makes a CA and, for each node of a pair, a directory of
// --peer-tls-certificates under dir (tlstest's server certificate names
// 127.0.0.1, the host of the other node's --peer), and returns each
// node's flags.
func peerTLSFlags(dir string) (flags [2][]string, err error) {
	ca, err := tlstest.New("nbdmirror bench peer CA")
	if err != nil {
		return flags, err
	}
	for i := range flags {
		d := filepath.Join(dir, fmt.Sprintf("peer-tls-%d", i))
		if err := os.MkdirAll(d, 0o700); err != nil {
			return flags, err
		}
		if err := ca.WriteDir(d); err != nil {
			return flags, err
		}
		flags[i] = []string{"--peer-tls-certificates", d}
	}
	return flags, nil
}

// connected reports whether the node serving metrics on addr has its peer.
func connected(addr string) func() bool {
	return func() bool {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `nbdmirror_peer_connected{resource="r0"} 1`) &&
			strings.Contains(string(body), `nbdmirror_out_of_sync_bytes{resource="r0"} 0`)
	}
}

func startNbdkit(l *launch) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	err = l.serve("nbdkit", addr, nil, "nbdkit", "-f", "-i", "127.0.0.1", "-p", port(addr),
		"--threads", "16", "file", "file="+l.images[0])
	return "nbd://" + addr + "/", err
}

func startQemuNBD(l *launch) (string, error) {
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	err = l.serve("qemu-nbd", addr, nil, "qemu-nbd", "-f", "raw", "--cache=writeback",
		"--aio=threads", "-b", "127.0.0.1", "-p", port(addr), "-x", "disk",
		"--persistent", "--shared=8", l.images[0])
	return "nbd://" + addr + "/disk", err
}

// startQemuQuorum runs the synchronous mirror a qemu user would build:
// qemu-storage-daemon exporting a quorum of a local file and an NBD client
// of an nbdkit peer holding the second image.
func startQemuQuorum(l *launch) (string, error) {
	peer, err := freeAddr()
	if err != nil {
		return "", err
	}
	if err := l.serve("nbdkit-peer", peer, nil, "nbdkit", "-f", "-i", "127.0.0.1",
		"-p", port(peer), "file", "file="+l.images[1]); err != nil {
		return "", err
	}
	addr, err := freeAddr()
	if err != nil {
		return "", err
	}
	err = l.serve("qemu-storage-daemon", addr, nil, "qemu-storage-daemon",
		"--blockdev", "driver=file,node-name=lfile,filename="+l.images[0]+",aio=threads,cache.direct=off",
		"--blockdev", "driver=raw,node-name=local,file=lfile",
		"--blockdev", "driver=nbd,node-name=remote,server.type=inet,server.host=127.0.0.1,server.port="+port(peer),
		"--blockdev", "driver=quorum,node-name=mirror,vote-threshold=2,read-pattern=fifo,children.0=local,children.1=remote",
		"--nbd-server", "addr.type=inet,addr.host=127.0.0.1,addr.port="+port(addr),
		"--export", "type=nbd,id=exp0,node-name=mirror,name=disk,writable=on")
	return "nbd://" + addr + "/disk", err
}

// port returns the port of a host:port address.
func port(addr string) string {
	return addr[strings.LastIndexByte(addr, ':')+1:]
}
