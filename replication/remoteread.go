package replication

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Remote reads: this node reads a range of the peer's disk over the link
// (readPeer), for a Primary whose own disk is gone or to spread reads over
// both disks. The request travels behind every record queued before it,
// and the peer answers only once it has applied every record it read
// before the request: so the answer holds every write acknowledged before
// readPeer was called, even one the peer had journaled and not applied.
//
//	node                         peer
//	readPeer: ReadRequest{id} -> (after the records before it)
//	                             AwaitApplied(last record read), pread
//	wait (<= PeerTimeout)     <- ReadReply{id, status, data}
//	copy into p, return
//
// The link's receiver only hands frames on: on the peer a goroutine per
// request waits for the journal and reads the disk, then queues the reply
// for the link's sender; on this node the receiver copies a reply's data
// into the waiting caller's buffer and wakes it.

// ErrPeerCannotRead refuses a read from the peer: it is not connected, its
// disk is not UpToDate, it may lack part of the range, or it does not
// serve reads.
var ErrPeerCannotRead = errors.New("replication: the peer cannot serve reads")

// ErrPeerRead is a read the peer took and did not answer with data: it
// failed there, or no answer came within the peer timeout.
var ErrPeerRead = errors.New("replication: read from the peer failed")

// peerReads are the reads this node sent on a link and waits for.
type peerReads struct {
	mu      sync.Mutex
	next    uint64               // the last id handed out
	waiting map[uint64]*readWait // by id: taken out by the reply, or by the caller giving up
}

// readWait is one read in flight: its reply's data goes to p, then the
// outcome to done. Whoever takes it out of waiting owns p until done.
type readWait struct {
	p    []byte
	done chan error // buffered: the receiver never blocks on it
}

// add registers w and returns its id.
func (pr *peerReads) add(w *readWait) uint64 {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.waiting == nil {
		pr.waiting = make(map[uint64]*readWait)
	}
	pr.next++
	pr.waiting[pr.next] = w
	return pr.next
}

// take removes and returns the read id, or nil if it is no longer waited
// for (its caller gave up).
func (pr *peerReads) take(id uint64) *readWait {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	w := pr.waiting[id]
	delete(pr.waiting, id)
	return w
}

// readPeer reads len(p) bytes at off from the peer's disk. It fails with
// an error wrapping ErrPeerCannotRead at once if the peer is not Connected
// with an UpToDate disk that holds the whole range, with ErrLinkDown if the
// link goes down before the answer, and with ErrPeerRead if the peer's
// read failed or no answer came within Config.PeerTimeout. The data holds
// every write acknowledged before readPeer was called. Each read it
// serves counts in stats.read_remote.
func (r *Resource) readPeer(p []byte, off int64) error {
	if off < 0 || off > r.size || int64(len(p)) > r.size-off {
		return fmt.Errorf("replication: %s: read from the peer: [%d, +%d) outside a %d-byte disk",
			r.name, off, len(p), r.size)
	}
	for len(p) > 0 {
		n := min(len(p), peerReadChunk)
		if err := r.readPeerOnce(p[:n], off); err != nil {
			return fmt.Errorf("replication: %s: read [%d, +%d) from the peer: %w", r.name, off, n, err)
		}
		p, off = p[n:], off+int64(n)
	}
	r.bal.remoteDone.Add(1)
	return nil
}

// peerReadChunk is the most one ReadRequest asks for; tests lower it.
var peerReadChunk = wire.MaxReadLength

// readPeerOnce sends one ReadRequest and waits for its reply.
func (r *Resource) readPeerOnce(p []byte, off int64) error {
	l, err := r.peerForRead(off, int64(len(p)))
	if err != nil {
		return err
	}
	w := &readWait{p: p, done: make(chan error, 1)}
	id := l.reads.add(w)
	frame := wire.AppendReadRequest(nil, wire.ReadRequest{ID: id, Offset: uint64(off), Length: uint32(len(p))})
	if !l.queueFrame(frame) {
		l.reads.take(id)
		return ErrLinkDown
	}
	l.send(true)
	timer := time.NewTimer(r.cfg.PeerTimeout)
	defer timer.Stop()
	select {
	case err := <-w.done:
		return err
	case <-l.closed:
		err = ErrLinkDown
	case <-timer.C:
		err = fmt.Errorf("%w: no answer within %v", ErrPeerRead, r.cfg.PeerTimeout)
	}
	if l.reads.take(id) == nil {
		// The receiver took the reply first and is copying it into p:
		// it is done with p once it says so, at once.
		return <-w.done
	}
	return err
}

// peerForRead returns the link if the peer can serve a read of [off,
// off+length) (see peerReadRefusal).
func (r *Resource) peerForRead(off, length int64) (*link, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.link
	why := peerReadRefusal(peerReadState{
		Linked:      l != nil,
		Resync:      r.resync.source || r.resync.target,
		PeerDisk:    r.peer.Disk,
		ServesReads: l != nil && l.remote.Flags&wire.ServesReads != 0,
		OutOfSync:   r.oos.anySet(off, length),
	})
	if why != "" {
		return nil, fmt.Errorf("%w: %s", ErrPeerCannotRead, why)
	}
	return l, nil
}

// peerReadState is what decides whether the peer may serve a read.
type peerReadState struct {
	Linked      bool           // a link is up
	Resync      bool           // a resync runs on it, either way
	PeerDisk    wire.DiskState // the peer's disk as this node knows it
	ServesReads bool           // the peer's Hello says it answers ReadRequests
	OutOfSync   bool           // part of the range is marked out of sync
}

// peerReadRefusal says why the peer may not serve a read, or "" if it
// may: it must be connected with no resync running, its disk UpToDate,
// none of the range marked out of sync (the peer may lack a write there),
// and it must answer reads.
func peerReadRefusal(s peerReadState) string {
	switch {
	case !s.Linked:
		return "not connected"
	case s.Resync:
		return "a resync is running"
	case s.PeerDisk != wire.UpToDate:
		return "its disk is " + s.PeerDisk.String()
	case !s.ServesReads:
		return "it does not answer read requests (an older version)"
	case s.OutOfSync:
		return "the range is marked out of sync"
	}
	return ""
}

// queueFrame queues a frame behind everything queued so far, for the
// caller to send; false if the link is down.
func (l *link) queueFrame(frame []byte) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return false
	}
	l.out = append(l.out, outItem{b: frame})
	return true
}

// readReply hands a ReadReply to the read waiting for it; the receiver
// calls it, and it never blocks. A reply for a read whose caller gave up
// is dropped; one whose data does not fit its request fails the link.
func (l *link) readReply(body []byte) error {
	rep, err := wire.ParseReadReply(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	w := l.reads.take(rep.ID)
	switch {
	case w == nil:
		return nil
	case rep.Status != wire.ReadOK:
		w.done <- fmt.Errorf("%w: the peer answered: %s", ErrPeerRead, rep.Status)
	case len(rep.Data) != len(w.p):
		w.done <- fmt.Errorf("%w: %d bytes in the answer to a read of %d", ErrPeerRead, len(rep.Data), len(w.p))
		return fmt.Errorf("%w: a read reply of %d bytes for %d asked", ErrLinkDown, len(rep.Data), len(w.p))
	default:
		copy(w.p, rep.Data)
		w.done <- nil
	}
	return nil
}

// answerRead has a ReadRequest served, on a goroutine of its own: the
// receiver calls it, and it never blocks. The answer waits for every
// record read off the link before the request to be applied.
func (l *link) answerRead(body []byte) error {
	req, err := wire.ParseReadRequest(body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	after := l.lastRecv // the journal seq of the last record read before it
	l.res.wg.Add(1)     // the link's run holds the count above zero meanwhile
	go func() {
		defer l.res.wg.Done()
		status, data := l.res.readForPeer(req, after, l.closed)
		if l.queueFrame(wire.AppendReadReply(nil, req.ID, status, data)) {
			l.send(true)
		}
	}()
	return nil
}

// readForPeer reads what the peer asked for, once the records up to after
// are applied to the disk (or the link closes: cancel).
func (r *Resource) readForPeer(req wire.ReadRequest, after uint64, cancel <-chan struct{}) (wire.ReadStatus, []byte) {
	off, n := int64(req.Offset), int64(req.Length)
	if req.Offset > uint64(r.size) || n > r.size-off {
		return wire.ReadOutOfRange, nil
	}
	if !r.servesReads() {
		return wire.ReadNotUpToDate, nil
	}
	if testHookServeRead != nil {
		testHookServeRead(req, after)
	}
	if err := r.journal.AwaitApplied(after, cancel); err != nil {
		r.log.Warn("peer read: waiting for the journal", "off", off, "len", n, "seq", after, "err", err)
		return wire.ReadIOError, nil
	}
	data := make([]byte, n)
	if m, err := r.disk.ReadAt(data, off); err != nil && !(err == io.EOF && int64(m) == n) {
		r.health.fault(OpRead, err)
		r.log.Warn("peer read: reading the disk", "off", off, "len", n, "err", err)
		return wire.ReadIOError, nil
	}
	return wire.ReadOK, data
}

// testHookServeRead, if set by a test, is told of each read this node
// serves, and of the seq it waits for, before the wait.
var testHookServeRead func(req wire.ReadRequest, after uint64)

// servesReads reports whether this node's disk may answer the peer's
// reads: UpToDate, and not the target of a resync.
func (r *Resource) servesReads() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.meta.Disk == wire.UpToDate.String() && !r.resync.target
}

// anySet reports whether a region that [off, off+length) touches is marked.
func (b *bitmap) anySet(off, length int64) bool {
	if length <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.count == 0 {
		return false
	}
	for r := off / RegionSize; r <= (off+length-1)/RegionSize; r++ {
		if b.words[r/64]&(uint64(1)<<(r%64)) != 0 {
			return true
		}
	}
	return false
}
