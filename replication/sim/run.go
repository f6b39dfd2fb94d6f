package sim

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdmirror/nbdmirror/replication"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Invariant names, as a Violation reports them.
const (
	InvAcked        = "acked"         // an acknowledged write is missing on the Primary
	InvIdentical    = "identical"     // the images differ after resync
	InvTwoPrimaries = "two-primaries" // both Primary while connected
	InvSplitBrain   = "split-brain"   // a split brain connected without DiscardMyData
	InvLeak         = "leak"          // a goroutine or a pending write outlived Close
	InvLiveness     = "liveness"      // a request waited too long, or never ended
	InvHonesty      = "honesty"       // the peer reported UpToDate while it was not
	InvResync       = "resync"        // the pair did not come back together
	InvHarness      = "harness"       // the simulation itself could not go on
)

// Options tune a run.
type Options struct {
	// Skip lists step kinds never drawn (known open bugs; see KnownBugs).
	Skip map[Kind]bool
	// PeerTimeout is the nodes' Config.PeerTimeout; zero is PeerTimeout.
	PeerTimeout time.Duration
	// Liveness bounds how long a client request may wait; zero is the
	// peer timeout plus a second.
	Liveness time.Duration
	// WaitBitmap: a node apart from its peer is crashed only once its
	// bitmap file exists (see KnownBugs).
	WaitBitmap bool
	// Settle bounds the time the pair has to reconnect and resync at the
	// end; zero is 5s.
	Settle time.Duration
}

// Violation is an invariant a run broke.
type Violation struct {
	Invariant string
	Detail    string
}

func (v Violation) String() string { return v.Invariant + ": " + v.Detail }

// Result is what a run found.
type Result struct {
	Schedule   Schedule
	Violations []Violation
	Notes      []string    // steps skipped or changed at run time
	Logs       [2][]string // each node's last log lines
}

// Failed reports whether an invariant broke.
func (r *Result) Failed() bool { return len(r.Violations) > 0 }

// Has reports whether invariant inv broke.
func (r *Result) Has(inv string) bool {
	for _, v := range r.Violations {
		if v.Invariant == inv {
			return true
		}
	}
	return false
}

// Summary names the invariants broken and the step kinds the schedule
// holds, on one line.
func (r *Result) Summary() string {
	invs, kinds := map[string]bool{}, map[Kind]bool{}
	var is, ks []string
	for _, v := range r.Violations {
		if !invs[v.Invariant] {
			invs[v.Invariant] = true
			is = append(is, v.Invariant)
		}
	}
	for _, st := range r.Schedule.Steps {
		if !kinds[st.Kind] && st.Kind > Trim {
			kinds[st.Kind] = true
			ks = append(ks, st.Kind.String())
		}
	}
	sort.Strings(ks)
	return fmt.Sprintf("%s [%s]", strings.Join(is, ","), strings.Join(ks, " "))
}

// runner executes a schedule.
type runner struct {
	opt     Options
	net     *Network
	nodes   [2]*node
	primary int // the node the client writes to
	m       *model
	tmp     string
	res     *Result
	resMu   sync.Mutex

	opsMu    sync.Mutex
	inflight map[*op]struct{}
	opsIdle  chan struct{} // closed and replaced when inflight empties

	epoch   atomic.Uint64 // moves on every local fault: requests across it are excused
	closing []chan error  // old incarnations closing
	// faulted: the node's disk or journal failed; the settle heals it.
	faulted [2]bool
	// mu guards split, lastInSync and the nodes' res for the watcher;
	// the step goroutine, the only writer of split and res, reads them
	// without it.
	mu sync.Mutex
	// lastInSync is the tick at which each node was last seen in sync
	// with its peer (Connected, Established, nothing out of sync): the
	// watcher moves it too, so the steps read it under mu while it runs.
	lastInSync [2]uint64
	// stale: the node restarted on a disk that had failed, which lacks
	// what it wrote through its peer since; until it is seen in sync
	// again, a split brain is resolved by discarding its data.
	stale [2]bool
	// staleSince orders, for a stale node, the failure of its disk (see
	// node.failedAt; 0: its fault met no I/O).
	staleSince [2]uint64
	split      bool
	// maybeSplit: a split brain whose nodes' disks failed; the settle
	// takes it as one if the nodes refuse each other for it.
	maybeSplit bool
	stopped    bool // a hang: the resources are abandoned (step goroutine)
	// hung: Status hung on a watcher or step call; the step goroutine
	// turns it into stopped.
	stopMu sync.Mutex
	hung   bool
}

// op is a client request in flight.
type op struct {
	what  string
	inc   *incarnation
	start time.Time
	epoch uint64
	w     *mwrite
	done  chan struct{}
}

// Run runs the schedule of seed and checks the invariants. Runs of
// different seeds may go on at once.
func Run(seed uint64, opt Options) (res Result) {
	labelled(seed, func() { res = run(seed, opt) })
	return res
}

func run(seed uint64, opt Options) (res Result) {
	if opt.PeerTimeout == 0 {
		opt.PeerTimeout = PeerTimeout
	}
	if opt.Liveness == 0 {
		opt.Liveness = opt.PeerTimeout + time.Second
	}
	if opt.Settle == 0 {
		opt.Settle = 5 * time.Second
	}
	sch := Generate(seed, opt.Skip)
	res.Schedule = sch
	tmp, err := os.MkdirTemp(metaRoot(), "nbdmirror-sim-")
	if err != nil {
		res.Violations = append(res.Violations, Violation{InvHarness, err.Error()})
		return res
	}
	defer os.RemoveAll(tmp)
	base := countGoroutines(seed) // this one
	r := &runner{opt: opt, net: NewNetwork(), m: newModel(sch.Blocks), tmp: tmp, res: &res,
		inflight: map[*op]struct{}{}, opsIdle: make(chan struct{})}
	for i := range r.nodes {
		r.nodes[i] = newNode(i, r.net, sch.Blocks, r.newDir())
	}
	defer func() {
		for i, n := range r.nodes {
			res.Logs[i] = n.logs.tail(60)
		}
	}()
	if !r.start() {
		return res
	}
	stopWatch := r.watch()
	for i, st := range sch.Steps {
		r.note("%s step %d: %s", time.Now().Format("15:04:05.000"), i, st)
		r.step(st)
		r.observe()
		if r.isHung() {
			r.stopped = true
		}
		if r.stopped {
			stopWatch()
			r.note("stopped after step %d (%s)", i, st)
			return res
		}
	}
	stopWatch()
	r.note("%s settle: %s", time.Now().Format("15:04:05.000"), r.describe())
	r.settle(base)
	return res
}

func (r *runner) newDir() string {
	d, err := os.MkdirTemp(r.tmp, "node-")
	if err != nil {
		panic(err) // the temp directory was just made
	}
	return d
}

func (r *runner) violate(inv, format string, args ...any) {
	r.resMu.Lock()
	defer r.resMu.Unlock()
	r.res.Violations = append(r.res.Violations, Violation{inv, fmt.Sprintf(format, args...)})
}

func (r *runner) note(format string, args ...any) {
	r.resMu.Lock()
	defer r.resMu.Unlock()
	r.res.Notes = append(r.res.Notes, fmt.Sprintf(format, args...))
}

// start opens both nodes, a Primary, b Secondary, and waits for them to
// connect.
func (r *runner) start() bool {
	for i, n := range r.nodes {
		role := wire.Secondary
		if i == r.primary {
			role = wire.Primary
		}
		if err := r.open(n, role, true); err != nil {
			r.violate(InvHarness, "%v", err)
			return false
		}
	}
	if !r.waitFor(r.opt.Settle, func(s [2]replication.Status) bool { return inSync(s[0]) && inSync(s[1]) }) {
		r.violate(InvResync, "the new pair did not connect: %s", r.describe())
		r.stopped = true
		return false
	}
	return true
}

// inSync says a node sees its peer Connected, Established and UpToDate
// with nothing out of sync. (A bitmap generation may linger after a
// resync: seed 15 ends with the Primary's Gen.Bitmap still set.)
func inSync(s replication.Status) bool {
	return s.Peer.Connection == "Connected" && s.Peer.Replication == "Established" &&
		s.Peer.Disk == wire.UpToDate.String() && s.Stats.OutOfSyncBytes == 0
}

// statuses reads both nodes' status.
func (r *runner) statuses() [2]replication.Status {
	r.mu.Lock()
	a, b := r.nodes[0].res, r.nodes[1].res
	r.mu.Unlock()
	got := make(chan [2]replication.Status, 1)
	go func() { got <- [2]replication.Status{a.Status(), b.Status()} }()
	select {
	case s := <-got:
		return s
	case <-time.After(2*r.opt.Liveness + time.Second):
		// Status waits for the Resource's lock: held for good, it is a
		// deadlock. The run stops; the caller sees no peer.
		r.violate(InvLiveness, "Status hung; stacks:\n%s", r.stacks())
		r.stopMu.Lock()
		r.hung = true
		r.stopMu.Unlock()
		return [2]replication.Status{}
	}
}

// isHung reports whether a Status call hung.
func (r *runner) isHung() bool {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	return r.hung
}

// open starts node n's next incarnation.
func (r *runner) open(n *node, role wire.Role, created bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return n.open(role, created, r.opt.PeerTimeout)
}

// setSplit records whether the nodes are split (both were Primary apart).
func (r *runner) setSplit(v bool) {
	r.mu.Lock()
	r.split = v
	r.mu.Unlock()
}

// isSplit says whether the nodes are split now.
func (r *runner) isSplit() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.split
}

// sawInSync records that node i was in sync at tick.
func (r *runner) sawInSync(i int, tick uint64) {
	r.mu.Lock()
	if !r.split {
		r.lastInSync[i] = max(r.lastInSync[i], tick)
		r.stale[i] = false
	}
	r.mu.Unlock()
}

// waitFor polls the nodes' status until ok or the timeout. The simulation
// watches the pair from outside, as an operator's tooling does.
func (r *runner) waitFor(timeout time.Duration, ok func([2]replication.Status) bool) bool {
	deadline := time.Now().Add(timeout)
	for tick := time.Millisecond; ; tick = min(tick*2, 20*time.Millisecond) {
		if s := r.statuses(); r.isHung() {
			return false
		} else if ok(s) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(tick)
	}
}

func (r *runner) describe() string {
	s := r.statuses()
	return fmt.Sprintf("a: %s; b: %s", brief(s[0]), brief(s[1]))
}

func brief(s replication.Status) string {
	return fmt.Sprintf("%s/%s peer %s %s %s %s oos=%d gen=%x/%x alone=%q", s.Role, s.Disk, s.Peer.Connection,
		s.Peer.Role, s.Peer.Disk, s.Peer.Replication, s.Stats.OutOfSyncBytes, s.Gen.Current, s.Gen.Bitmap, s.StandAlone)
}

// watch observes the pair every few milliseconds while the steps run, to
// catch states that last less than a step; the returned func stops it.
func (r *runner) watch() (stop func()) {
	done, quit := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(3 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				r.observe()
			}
		}
	}()
	return func() { close(quit); <-done }
}

// observe checks the invariants that hold at every moment, and notes
// when each node was last in sync.
func (r *runner) observe() {
	if r.isHung() {
		return
	}
	tick := r.m.now()
	splitBefore := r.isSplit()
	s := r.statuses()
	if r.isHung() {
		return
	}
	// The statuses may be from any moment between the two reads: a split
	// brain holds for them only if it held before and after.
	split := splitBefore && r.isSplit()
	// A merge takes both ends: a node may still show Connected a link
	// whose handshake it finished reading just before a cut reset it,
	// while its peer saw the reset (seeds 59953, 63382).
	merged := s[0].Peer.Connection == "Connected" && s[1].Peer.Connection == "Connected"
	for i, st := range s {
		// A SyncTarget's marks are regions it lacks itself: its source
		// is UpToDate.
		if st.Peer.Disk == wire.UpToDate.String() && st.Stats.OutOfSyncBytes > 0 && st.Peer.Replication != "SyncTarget" {
			r.violate(InvHonesty, "%s reports its peer UpToDate with %d bytes out of sync", nodeName(i), st.Stats.OutOfSyncBytes)
		}
		if st.Role == "Primary" && st.Peer.Connection == "Connected" && st.Peer.Role == "Primary" {
			r.violate(InvTwoPrimaries, "%s is Primary, connected to a Primary", nodeName(i))
		}
		if split && merged {
			r.violate(InvSplitBrain, "%s connected after a split brain without DiscardMyData: %s", nodeName(i), brief(st))
		}
		if inSync(st) {
			r.sawInSync(i, tick)
		}
	}
}

// metaRoot is where the nodes' metadata directories go: a memory file
// system if there is one (the metadata is fsynced on every change, which a
// busy disk makes slow enough to stall a link), else the temp directory.
func metaRoot() string {
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		return "/dev/shm"
	}
	return ""
}
