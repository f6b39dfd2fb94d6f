package replication

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
)

// What a node does when its own storage fails: the backing disk, the
// journal's files or the metadata (meta.json, the bitmap file). An I/O
// error there (EIO, ENOSPC, EROFS, EDQUOT, a failed fdatasync, which Linux
// reports as EIO) is a disk fault; any other error (a closed journal, a
// write outside the disk) is not, and changes nothing here.
//
//	OnIOErrorDetach  the first fault takes the disk out: Failed, then
//	                 Diskless once nothing writes to it any more. A Primary
//	                 goes on through its peer, a Secondary goes StandAlone.
//	OnIOErrorPassOn  the fault goes to the client; the disk stays, and the
//	                 region of a failed write is marked out of sync.
//
// Either way the first fault is kept for status (DiskError) and every
// fault is counted by operation.

// OnIOError is the policy for a disk fault (serve --on-io-error).
type OnIOError uint8

const (
	OnIOErrorDetach OnIOError = iota // the default
	OnIOErrorPassOn
)

// ParseOnIOError reads "detach" or "pass-on".
func ParseOnIOError(s string) (OnIOError, error) {
	switch s {
	case "detach", "":
		return OnIOErrorDetach, nil
	case "pass-on":
		return OnIOErrorPassOn, nil
	}
	return 0, fmt.Errorf("replication: --on-io-error %q: want detach or pass-on", s)
}

func (p OnIOError) String() string {
	if p == OnIOErrorPassOn {
		return "pass-on"
	}
	return "detach"
}

// The operations a disk fault is counted by (status disk_error.operation,
// the metric's op label).
const (
	OpRead      = "read"      // a client's read of the disk
	OpWrite     = "write"     // a client's write: journal append, apply, FUA sync
	OpFlush     = "flush"     // a client's flush: the journal's sync
	OpReplicate = "replicate" // a Secondary journaling the peer's records
	OpJournal   = "journal"   // the journal on its own: checkpoint, disk sync, apply
	OpMeta      = "meta"      // meta.json or the bitmap file
)

// DiskError is the first disk fault of a node (status disk_error).
type DiskError struct {
	Operation string    `json:"operation"`
	Error     string    `json:"error"`
	Time      time.Time `json:"time"`
}

// diskFault says whether err is the node's storage failing.
func diskFault(err error) bool {
	for _, e := range []syscall.Errno{syscall.EIO, syscall.ENOSPC, syscall.EROFS, syscall.EDQUOT} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// diskPhase is where a node's disk is in its life.
type diskPhase uint32

const (
	diskAttached  diskPhase = iota // in use
	diskFaulted                    // faulted: being taken out
	diskDiskless                   // out: nothing reads or writes it
	diskAttaching                  // a disk is being attached: still out
)

// onDiskFault is the decision for a fault in phase: whether it takes the
// disk out (attached to failed, the caller then detaches) and whether the
// request that met it may still succeed through the peer.
func onDiskFault(policy OnIOError, phase diskPhase) (detach, throughPeer bool) {
	if policy == OnIOErrorPassOn {
		return false, false
	}
	return phase == diskAttached, true
}

// errDetached is what the journal's queued and later records fail with
// once the disk is out; a request that gets it is decided as a fault.
var errDetached = fmt.Errorf("replication: the disk is detached: %w", syscall.EIO)

// errNoPeer is a Diskless node's I/O that its peer cannot serve.
var errNoPeer = fmt.Errorf("replication: Diskless, and no UpToDate peer connected: %w", syscall.EIO)

// diskHealth is the state of a node's storage. phase is read without a
// lock on every I/O; mu guards the record of faults.
type diskHealth struct {
	policy OnIOError
	phase  atomic.Uint32 // a diskPhase
	// onDetach, set by Open, takes the disk out after a fault moved phase
	// to diskFaulted; it runs on a goroutine of its own.
	onDetach func(op string, err error)

	mu     sync.Mutex
	first  *DiskError        // the first fault since the disk was attached
	counts map[string]uint64 // faults by operation, since start

	pull pullState // a Diskless Primary's attach (pull.go)
	// lacks: a write reached the peer since the disk went out (it was
	// acknowledged through the peer, or lost on the way): the detached
	// disk may lack what the peer holds, and nothing else on this node
	// says so (no mark: see replyOf; AttachDisk).
	lacks atomic.Bool
	// follow: whether the peer is known to hold this Diskless Primary's
	// new generation (see followGate).
	follow followGate
}

// followGate holds back the replies of writes (and FLUSHes) that succeed
// through the peer alone while the peer may not have followed this Primary
// into the generation it moved to when its disk went out (diskFailed,
// peerDiskState). A peer that followed marks everything, and a restart on
// the old disk then meets ids that say the disk is behind. One that did
// not (the announcement lost with a link that failed first) shares the old
// disk's generation, and a restart on that disk, which lacks the writes
// the peer took and may report its own failed write torn, would take
// itself for the source. Writes that went out on the link alive when the
// disk failed wait for the pong of the ping sent behind the announcement
// (link.askFollow); a link attached to a Diskless Primary was followed at
// its attach.
type followGate struct {
	mu      sync.Mutex
	state   followState
	waiting []func(followed bool)
}

type followState uint8

const (
	followed      followState = iota // the peer holds the node's generation, or the disk is in
	followPending                    // the disk went out: the announcement is not acknowledged yet
	followUnknown                    // it never will be on that link: until another attaches
)

// complete runs fn once the state is known: whether the peer followed.
func (g *followGate) complete(fn func(followed bool)) {
	g.mu.Lock()
	if g.state == followPending {
		g.waiting = append(g.waiting, fn)
		g.mu.Unlock()
		return
	}
	ok := g.state == followed
	g.mu.Unlock()
	fn(ok)
}

// set moves the gate to s, and runs the completions held if s is known.
func (g *followGate) set(s followState) {
	g.mu.Lock()
	g.state = s
	var held []func(bool)
	if s != followPending {
		held, g.waiting = g.waiting, nil
	}
	g.mu.Unlock()
	for _, fn := range held {
		fn(s == followed)
	}
}

// errNotFollowed fails a write the peer took for a Diskless Primary that
// does not know whether the peer followed it (see followGate).
var errNotFollowed = fmt.Errorf("replication: Diskless, and the peer did not confirm it follows this node: %w", syscall.EIO)

func (h *diskHealth) load() diskPhase {
	if h == nil {
		return diskAttached
	}
	return diskPhase(h.phase.Load())
}

// out says the disk is not to be used: failed, diskless or attaching.
func (h *diskHealth) out() bool { return h.load() != diskAttached }

// peerOnly says writes go to the peer only: the disk is out and nothing
// writes to its journal any more (diskless, or a disk being attached).
func (h *diskHealth) peerOnly() bool {
	p := h.load()
	return p == diskDiskless || p == diskAttaching
}

// fault records err, met in op, if it is a disk fault, and applies the
// policy: it reports whether the request that met it may still succeed
// through the peer (detach), and starts the detach on the first fault.
func (h *diskHealth) fault(op string, err error) (throughPeer bool) {
	if h == nil {
		return false
	}
	if errors.Is(err, errDetached) {
		return h.policy == OnIOErrorDetach
	}
	if !diskFault(err) {
		return false
	}
	h.mu.Lock()
	if h.counts == nil {
		h.counts = map[string]uint64{}
	}
	h.counts[op]++
	if h.first == nil {
		h.first = &DiskError{Operation: op, Error: err.Error(), Time: time.Now().UTC()}
	}
	h.mu.Unlock()
	detach, throughPeer := onDiskFault(h.policy, h.load())
	if detach && h.phase.CompareAndSwap(uint32(diskAttached), uint32(diskFaulted)) {
		h.follow.set(followPending) // before the request that met the fault replies
		if h.onDetach != nil {
			go h.onDetach(op, err)
		}
	}
	return throughPeer
}

// peerAhead notes a write that reached the peer while the disk is out:
// the disk may lack it (see lacks).
func (h *diskHealth) peerAhead() {
	if h != nil {
		h.lacks.Store(true)
	}
}

// firstError is the first fault since the disk was attached, if any.
func (h *diskHealth) firstError() *DiskError {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.first == nil {
		return nil
	}
	e := *h.first
	return &e
}

// DiskErrorCount is the number of disk faults met in one operation.
type DiskErrorCount struct {
	Operation string
	Count     uint64
}

// DiskErrors counts the disk faults met since start, by operation.
func (r *Resource) DiskErrors() []DiskErrorCount {
	h := r.health
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]DiskErrorCount, 0, len(h.counts))
	for op, n := range h.counts {
		out = append(out, DiskErrorCount{op, n})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Operation < out[j].Operation })
	return out
}

// diskStateName is the disk state status shows: the phase's, while the
// disk is out, else the persisted one.
func diskStateName(phase diskPhase, persisted string) string {
	switch phase {
	case diskFaulted:
		return "Failed"
	case diskDiskless, diskAttaching:
		return "Diskless"
	}
	return persisted
}

// openJournal opens c's journal over disk; its own failures (a checkpoint,
// a disk sync) are disk faults of op journal.
func openJournal(c Config, disk Disk, health *diskHealth) (*journal.Journal, error) {
	return journal.Open(c.FS, filepath.Join(c.MetaDir, "journal"), disk, journal.Options{
		MaxBytes:           c.JournalSize,
		RetainBytes:        c.JournalRetain,
		CheckpointInterval: c.CheckpointInterval,
		Logger:             c.Logger,
		OnFailure:          func(err error) { health.fault(OpJournal, err) },
		Observe:            c.journalObserver(),
		DataMax:            c.JournalDataMax,
		MarkExtents:        true, // see recoverExtents
	})
}
