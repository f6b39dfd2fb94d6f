package replication

import (
	"fmt"
	"sync"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// A request is one client write (or trim, zero or flush) from its
// submission to its reply. Its life is two halves, each a state that only
// step changes:
//
//	local: pending -> done | failed          journal append and apply (FUA: synced too)
//	       none                              Diskless: the write goes to the peer only
//	peer:  queued  -> sent | received | journaled | synced | lost
//	       none                              no link took it: its region was marked at submission
//
// The peer half ends with the ack the protocol asks for (A: sent, B:
// received, C: journaled, FUA or flush: synced), or lost when the link went
// down first. Once both halves are final, complete runs once, on the
// goroutine of the last event: replyOf decides what the client hears and
// whether the region is marked out of sync (replyOf), for every combination.
type request struct {
	mu        sync.Mutex // guards the states; held only inside step
	local     localState
	peer      peerState
	err       error // the local half's error
	completed bool
	reply     error // what the client hears, once completed (for wait)

	res         *Resource
	off, length int64
	op          string // OpWrite or OpFlush: what a disk fault is counted as
	// busy, if set, is the link the request went out on: its localBusy
	// counts the request until the local half ends (see link.wantPoll).
	busy  *link
	then  func(error) // called with the reply, if set; else ready is signalled
	ready chan struct{}

	// A client's write (submit): when it came, to time its stages, and
	// its record, whose buffers the request gives back once complete.
	write  bool
	start  time.Time
	rec    journal.Record
	sentOn *link  // the link it went out on, for peerAcked
	jseq   uint64 // its seq in the journal
	// Callbacks bound to this request once, when the pool made it: a
	// method value made per write is an allocation per write.
	localFn   func(uint64, error)
	writtenFn func()
	peerFn    func(bool, wire.AckKind)
}

type localState uint8

const (
	localPending localState = iota
	localDone
	localFailed
	localNone // Diskless: no local half (see appendPeerOnly)
)

type peerState uint8

const (
	peerNone      peerState = iota // not on a link: marked at submission, a resync carries it
	peerQueued                     // on the link, not acknowledged as far as asked yet
	peerSent                       // written to the connection (protocol A)
	peerReceived                   // the peer read it (protocol B)
	peerJournaled                  // in the peer's journal (protocol C)
	peerSynced                     // durable on the peer (FUA, flush)
	peerLost                       // the link went down first: the peer may or may not hold it
)

var peerStateNames = [...]string{"none", "queued", "sent", "received", "journaled", "synced", "lost"}

func (s peerState) String() string { return peerStateNames[s] }

// event is what happened to one half of a request.
type event uint8

const (
	evLocalDone event = iota
	evLocalFailed
	evPeerAcked // with the peer state the ack brought
	evPeerLost
)

// ackState is the peer state an ack of kind k brings; kind 0 is "written
// to the connection" (protocol A).
func ackState(k wire.AckKind) peerState {
	switch k {
	case wire.Received:
		return peerReceived
	case wire.Journaled:
		return peerJournaled
	case wire.Synced:
		return peerSynced
	}
	return peerSent
}

// replyOf is the reply and the out-of-sync mark of a request whose halves
// are final. The client hears success only if a node holds the write and
// can serve it: this one while its disk is in use, or the peer when this
// node has no disk (none) or its disk failed under the write and is being
// detached (throughPeer, see onDiskFault and finishIfFinal). A write only
// a disk that is out holds (diskOut: done there, but the peer never took
// it) fails: the node can no longer serve it, and once the peer holds
// other writes that disk lacks, neither copy is whole. The region is
// marked whenever the peer may hold something else than this node's disk,
// which stays: the link was lost under it, or this node failed a write
// the peer took (--on-io-error pass-on). A disk that is out stays only as
// a disk behind its peer: a mark would say it holds a write its peer
// lacks (see disklessOutcome). A request that never reached a link was
// marked when submitted.
func replyOf(local localState, peer peerState, throughPeer, diskOut bool) (ok, mark bool) {
	acked := peer != peerNone && peer != peerLost
	switch local {
	case localNone:
		return acked, false
	case localFailed:
		if throughPeer {
			return acked, false // the disk is going: the peer holds the data
		}
		return false, peer != peerNone
	}
	return acked || !diskOut, peer == peerLost && !diskOut
}

var requests sync.Pool

func init() {
	requests.New = func() any {
		q := &request{ready: make(chan struct{}, 1)}
		q.localFn, q.writtenFn, q.peerFn = q.localResult, q.journalWritten, q.peerAcked
		return q
	}
}

// newRequest starts a request over [off, off+length): local pending, peer
// queued until the submitter says otherwise (step evPeerLost or
// notOnLink).
func newRequest(res *Resource, off, length int64, then func(error)) *request {
	q := requests.Get().(*request)
	q.local, q.peer, q.err, q.completed, q.reply = localPending, peerQueued, nil, false, nil
	q.res, q.off, q.length, q.busy, q.then = res, off, length, nil, then
	q.op, q.write, q.rec, q.sentOn = OpWrite, false, journal.Record{}, nil
	return q
}

// peerAcked is the link's completion of a client's write sent on sentOn.
func (q *request) peerAcked(acked bool, kind wire.AckKind) {
	if acked {
		r := q.res
		storeMax(&r.peerSeq, q.jseq)
		q.sentOn.settle()
		r.observeSince(stagePeer, q.start)
	}
	q.peerResult(acked, kind)
}

// journalWritten is the journal's written callback of a write: it times
// stageJournal.
func (q *request) journalWritten() {
	if obs := q.res.cfg.ObserveStage; obs != nil {
		obs(stageJournal, time.Since(q.start))
	}
}

// account closes a client's write with the reply err it gets: gives its
// record's buffers back, and counts and times it, or names the resource
// in its error.
func (q *request) account(err error) error {
	if !q.write {
		return err
	}
	q.rec.Release()
	r := q.res
	if err != nil {
		return fmt.Errorf("replication: %s: %w", r.name, err)
	}
	r.writes.Add(1)
	r.bytesWritten.Add(uint64(q.length))
	if r.cfg.ObserveWrite != nil {
		r.cfg.ObserveWrite(time.Since(q.start))
	}
	return nil
}

// refuse completes a request refused before it was journaled or sent.
func (q *request) refuse(err error) {
	if q.write {
		q.rec.Release()
	}
	then := q.then
	requests.Put(q)
	then(err)
}

// notOnLink says no link took the request: its region is already marked.
func (q *request) notOnLink() {
	q.mu.Lock()
	q.peer = peerNone
	q.mu.Unlock()
	q.finishIfFinal()
}

// localResult is the journal's completion of the local half.
func (q *request) localResult(_ uint64, err error) {
	if l := q.busy; l != nil {
		q.busy = nil
		l.localDone()
	}
	if err != nil {
		q.step(evLocalFailed, 0, err)
		return
	}
	q.step(evLocalDone, 0, nil)
}

// peerResult is the link's completion of the peer half: the ack that
// completed it (see ackState), or lost.
func (q *request) peerResult(acked bool, kind wire.AckKind) {
	if !acked {
		q.step(evPeerLost, 0, nil)
		return
	}
	q.step(evPeerAcked, kind, nil)
}

// step applies ev, the one place a request's states change, and completes
// the request if that made both halves final.
func (q *request) step(ev event, kind wire.AckKind, err error) {
	q.mu.Lock()
	switch ev {
	case evLocalDone:
		q.local = localDone
	case evLocalFailed:
		q.local, q.err = localFailed, err
	case evPeerAcked:
		q.peer = ackState(kind)
	case evPeerLost:
		q.peer = peerLost
	}
	q.mu.Unlock()
	q.finishIfFinal()
}

// finishIfFinal completes the request, once, when both halves are final.
func (q *request) finishIfFinal() {
	q.mu.Lock()
	final := q.local != localPending && q.peer != peerQueued && !q.completed
	q.completed = q.completed || final
	local, peer, err := q.local, q.peer, q.err
	q.mu.Unlock()
	if !final {
		return
	}
	throughPeer := false
	switch local {
	case localFailed:
		// Through the peer only if it holds everything the disk held:
		// with regions marked, it lacks writes that only the disk holds,
		// and would hold this one that the disk lacks.
		throughPeer = q.res.health.fault(q.op, err) && q.res.oos.bytes() == 0
	case localNone:
		err = errNoPeer
	}
	diskOut := q.res.health.out()
	if local == localDone && diskOut && err == nil {
		err = errDetached
	}
	ok, mark := replyOf(local, peer, throughPeer, diskOut)
	if mark {
		q.res.oos.mark(q.off, q.length)
	}
	if diskOut && peer != peerNone && q.length > 0 {
		q.res.health.peerAhead()
	}
	if ok {
		err = nil
	}
	if ok && diskOut {
		// Through the peer alone: once it is known to follow this node.
		// A FLUSH too: what it makes durable (the writes acknowledged
		// before it, which the failed disk may not hold) is then durable
		// on the peer alone, and a restart on that disk must meet a peer
		// that knows itself ahead.
		q.res.health.follow.complete(func(followed bool) {
			if !followed {
				err = errNotFollowed
			}
			q.answer(err)
		})
		return
	}
	q.answer(err)
}

// answer gives the request's reply err to its submitter, and recycles the
// request if that one does not wait for it.
func (q *request) answer(err error) {
	if then := q.then; then != nil {
		err = q.account(err)
		requests.Put(q)
		then(err)
		return
	}
	q.reply = err // read by wait after the signal
	q.ready <- struct{}{}
}

// wait blocks until a request without then completes, returns its reply
// (the local error, nil if the reply is success) and recycles the request.
func (q *request) wait() error {
	<-q.ready
	err := q.reply
	requests.Put(q)
	return err
}
