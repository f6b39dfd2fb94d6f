package sim

import (
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// PeerTimeout is the nodes' default peer timeout: short, so that a
// schedule's faults are noticed and healed quickly.
const PeerTimeout = 200 * time.Millisecond

// node is one of the pair: its memory file system and disk, its metadata
// directory (meta.json and the bitmap are still written to the real file
// system), and the Resource of its current incarnation.
type node struct {
	idx  int
	name string
	net  *Network
	dir  string // a fresh temp directory per incarnation holds its MetaDir
	fs   *vfs.MemFS
	disk *journal.MemDisk
	res  *replication.Resource
	inc  *incarnation
	logs *ring

	diskFail atomic.Bool // the disk fails writes and syncs
	fsFail   atomic.Bool // the journal's file system fails writes
	// failedAt orders the first I/O that failed since the faults were
	// armed among every node's (failures), 0 if none did.
	failedAt atomic.Uint64
}

// failures numbers the first failed I/O of each fault, across nodes.
var failures atomic.Uint64

// failed notes a failed I/O of n.
func (n *node) failed() {
	if n.failedAt.Load() == 0 {
		n.failedAt.CompareAndSwap(0, failures.Add(1))
	}
}

// incarnation is one run of a node's process. Once dead, nothing it does
// reaches the client: its acknowledgements arrive too late to count.
type incarnation struct{ dead atomic.Bool }

// simDisk is a MemDisk with a size and reads that can fail.
type simDisk struct {
	*journal.MemDisk
	n *node
}

func (d simDisk) Size() (int64, error) { return int64(len(d.MemDisk.Bytes())), nil }

func (d simDisk) ReadAt(p []byte, off int64) (int, error) {
	if d.n.diskFail.Load() {
		d.n.failed()
		return 0, fmt.Errorf("sim: disk of %s: %w", d.n.name, syscall.EIO)
	}
	return d.MemDisk.ReadAt(p, off)
}

func newNode(idx int, n *Network, blocks int, tmp string) *node {
	nd := &node{idx: idx, name: nodeName(idx), net: n, fs: vfs.NewMem(),
		disk: journal.NewMemDisk(int64(blocks) * BlockSize), logs: newRing(200), dir: tmp}
	return nd
}

func (n *node) metaDir() string { return filepath.Join(n.dir, n.name) }

// open starts an incarnation in role.
func (n *node) open(role wire.Role, created bool, timeout time.Duration) error {
	n.disk.Fail = func(op string) error {
		if n.diskFail.Load() && (op == "write" || op == "sync") {
			n.failed()
			return fmt.Errorf("sim: disk of %s: %w", n.name, syscall.EIO)
		}
		return nil
	}
	fs := vfs.Inject(n.fs, func(op vfs.Op, _ string) error {
		if n.fsFail.Load() && op == vfs.OpWrite {
			n.failed()
			return syscall.EIO
		}
		return nil
	})
	if err := os.MkdirAll(n.metaDir(), 0o755); err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	h := n.net.Host(n.name)
	log := slog.New(slog.NewTextHandler(n.logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	res, err := replication.Open(replication.Config{
		Name: "r0", Disk: simDisk{n.disk, n}, MetaDir: n.metaDir(), FS: fs, Logger: log,
		Role: role, Created: created, PeerListen: n.name, Peer: nodeName(1 - n.idx),
		Listen: h.Listen, Dial: h.Dial, Secret: []byte("sim"), PeerTimeout: timeout,
		CheckpointInterval: 50 * time.Millisecond, JournalSize: 1 << 20, JournalRetain: 128 << 10,
		JournalDataMax: 2 * BlockSize, // writes of 2 to 4 blocks go in place, single blocks through the journal
	})
	if err != nil {
		return fmt.Errorf("sim: open %s: %w", n.name, err)
	}
	n.res, n.inc = res, &incarnation{}
	return nil
}

// crash ends the incarnation: its acknowledgements stop counting, it is
// taken off the network (so it sends nothing after its death), and its file
// system (journal, meta.json, bitmap, all under the same META-DIR) and disk
// are copied as the crash leaves them. A power loss (power not nil) keeps
// what was synced and, of the disk's unsynced blocks, those power draws: the
// kernel's own write-back may have put any of them there. Between the two
// it may still notice its link fell, as a process that dies a moment after
// its link does. The old Resource is then closed in the background on the
// old copies, unseen; closed reports when that is done.
func (n *node) crash(power *rand.Rand) (closed chan error) {
	n.inc.dead.Store(true)
	n.net.Down(n.name)
	var fs *vfs.MemFS
	var disk *journal.MemDisk
	if power != nil {
		keep := func() bool { return power.IntN(2) == 0 }
		disk = n.disk.CrashWriteback(keep, func() { fs = n.fs.CrashClone(nil) })
	} else {
		// Both at one instant, as the kernel holds them when the process
		// dies: copied one after the other, the disk could hold a write
		// in place whose extent record the file system copied lacks,
		// which no recovery marks (a state no real crash leaves: the
		// record is written before the data).
		disk = n.disk.CloneWith(func() { fs = n.fs.Clone() })
	}
	old := n.res
	n.fs, n.disk = fs, disk
	closed = make(chan error, 1)
	go func() { closed <- old.Close() }()
	return closed
}

// bitmapSaved reports whether the node's bitmap file exists.
func (n *node) bitmapSaved() bool {
	_, err := n.fs.Stat(filepath.Join(n.metaDir(), "bitmap"))
	return err == nil
}

// ring keeps the last lines a node logged, for a failure's report.
type ring struct {
	mu    sync.Mutex
	lines []string
	next  int
	full  bool
}

func newRing(n int) *ring { return &ring{lines: make([]string, n)} }

func (r *ring) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines[r.next] = strings.TrimRight(string(p), "\n")
	r.next = (r.next + 1) % len(r.lines)
	r.full = r.full || r.next == 0
	return len(p), nil
}

// tail returns the last n lines.
func (r *ring) tail(n int) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var all []string
	if r.full {
		all = append(all, r.lines[r.next:]...)
	}
	all = append(all, r.lines[:r.next]...)
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return all
}
