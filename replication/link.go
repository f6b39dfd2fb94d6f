package replication

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/internal/plant"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Protocol says when a write is acknowledged to the NBD client.
type Protocol uint8

const (
	ProtocolA Protocol = 'A' // once sent to the peer
	ProtocolB Protocol = 'B' // once the peer received it
	ProtocolC Protocol = 'C' // once the peer journaled it (default)
)

// ParseProtocol reads "A", "B" or "C".
func ParseProtocol(s string) (Protocol, error) {
	switch s {
	case "A", "B", "C":
		return Protocol(s[0]), nil
	}
	return 0, fmt.Errorf("replication: protocol %q: want A, B or C", s)
}

// ErrLinkDown marks a link that failed or was closed.
var ErrLinkDown = errors.New("replication: link down")

// link is one connection to the peer, after the handshake. It carries
// records from the Primary (or the SyncSource) to the other side, and acks
// back. Each side runs a sender and a receiver goroutine on it.
type link struct {
	res   *Resource
	conn  net.Conn
	start time.Time // when it was attached
	// settled: a write crossed this link both ways: the peer acknowledged
	// a client write, or this node journaled a record from the peer (see
	// nextFlapDelay).
	settled atomic.Bool
	remote  wire.Hello
	proto   Protocol
	since   uint64 // State.Connects when this node said its Hello on the connection

	// mu guards the send queue, the pending writes and the ack marks. The
	// writers and the resync add, the sender takes, the receiver completes.
	mu      sync.Mutex
	out     []outItem  // frames and records to send, in order
	outA    []*pending // protocol A: complete once out has been written
	pending []*pending // sent records waiting for their ack, seq ascending
	// acking is signalled when acks complete pending records and when the
	// link fails: for waitLag.
	acking   *sync.Cond
	barriers int // how many of pending wait for a sync
	// inflight is len(pending), or -1 if one of them waits for a sync:
	// for the reader's polling rule.
	inflight atomic.Int32
	// localBusy counts writes sent on this link that this node has not
	// journaled and applied yet (Resource.appendAsync, request.localResult).
	localBusy atomic.Int32
	seq       uint64 // last link seq handed out
	lastSent  uint64 // journal seq of the last record queued; written under Resource.order
	// catchingUp: a journal tail is being replayed; writers journal only,
	// the tail loop sends their records. Guarded by Resource.order.
	catchingUp bool
	tailFrom   uint64    // the first seq of the tail
	fromSeq    uint64    // the journal's last seq at attach: what the link carries is above it
	acked      [4]uint64 // by wire.AckKind: highest cumulative ack seen
	oldest     time.Time // when the oldest pending record was queued
	down       error     // set once: the link failed
	// followToken is the token of the ping sent behind a Diskless
	// announcement (askFollow); followDone, until taken, hears whether its
	// pong came (the peer took the announcement before it) or the link
	// ended first.
	followToken uint64
	followDone  func(followed bool)
	// byeQueued: close queued a Bye; byeSent: a sender took it, and takes
	// the link down once it is written.
	byeQueued, byeSent bool
	// sending: someone holds the sender role (see sender); again: someone
	// found it held and left work for it.
	sending, again bool
	snd            sender           // the write half: only the sender role's holder touches it
	sentAck        [4]atomic.Uint64 // by wire.AckKind: highest ack written; read by anyone
	kick           chan struct{}
	closed         chan struct{} // closed by fail: run tears the link down
	gone           chan struct{} // closed by run once linkDown returned (the new generation saved)
	// peerBitmap is closed once the peer's bitmap has been merged (a
	// SyncSource waits for it before it starts).
	peerBitmap     chan struct{}
	peerBitmapOnce sync.Once
	// sums carries the peer's checksum replies to compareSums, which
	// holds sumMu: one comparison at a time.
	sums  chan []byte
	sumMu sync.Mutex
	// roleAnswer carries the peer's RoleAnswer to askPrimary.
	roleAnswer chan wire.RoleAnswer
	// reads are this node's reads waiting for the peer's answer (readPeer).
	reads peerReads

	// Receiving side (the peer of a Primary): what to acknowledge.
	lastRecv     uint64           // journal seq of the last record read; receiver only
	recs         []journal.Record // a Records frame's records, parsed; receiver only
	recvSeq      atomic.Uint64    // last record read off the link
	journaledSeq atomic.Uint64    // last record written to the journal
	syncedSeq    atomic.Uint64    // last barrier done
	lastFrame    atomic.Int64     // unix nanos of the last frame read
	recvWriting  atomic.Bool      // the receiver is writing queued records to the journal

	// The reader's polling, on either side.
	// pr reads the connection for the receiving goroutine, polling as
	// wantPoll says; anyone may Kick it.
	pr *netio.PollReader
	// recBatched has a bit for each of the last 8 Records frames read, set
	// unless it carried one record and nothing was read behind it;
	// ackBatched one for each of the last 8 Ack frames, set if it completed
	// more than one pending write, or a barrier. Receiving goroutine only.
	recBatched, ackBatched netio.Batches

	bytesRaw  atomic.Uint64 // disk bytes carried by records sent
	bytesWire atomic.Uint64 // bytes written to the connection

	// queued: records wait in out for a sender (see Resource.appendAsync);
	// sends: this side sent records since it last read any.
	queued, sends atomic.Bool
}

// outItem is a frame to send, or a journal record frame that goes out in
// a Records frame together with the records queued next to it.
type outItem struct {
	b      []byte
	record bool
	// payload follows b in the frame: a record's payload, written from
	// the record's own buffers (see sendOwnedRecord) or from the copy in
	// pooled (sendRecord). sum is its CRC32C, when the record had taken
	// it: the frame's checksum needs no pass over it then.
	payload []byte
	sum     wire.PartSum
	// pooled is the buffer behind b, from bufpool, and release gives the
	// payload's record back: whoever writes the item calls them (see
	// writeOut); an item dropped unwritten (the link went down) is left
	// to the garbage collector.
	pooled  *[]byte
	release func()
}

// free gives the item's buffers back once it is written.
func (it *outItem) free() {
	if it.pooled != nil {
		bufpool.Put(it.pooled)
	}
	if it.release != nil {
		it.release()
	}
}

// pending is a record (or barrier) sent and not yet acknowledged enough.
type pending struct {
	seq    uint64
	need   wire.AckKind // the ack that completes it
	off    int64        // the region it wrote, marked out of sync if the link fails
	length int64
	// done is told the ack that completed it (kind 0: written, under
	// protocol A), or acked false when the link gave up on it.
	done func(acked bool, kind wire.AckKind)
}

func newLink(res *Resource, conn net.Conn, remote wire.Hello) *link {
	l := &link{res: res, conn: conn, remote: remote, proto: res.cfg.Protocol, start: time.Now(),
		recBatched: netio.AllBatched, ackBatched: netio.AllBatched,
		kick: make(chan struct{}, 1), closed: make(chan struct{}), gone: make(chan struct{}), peerBitmap: make(chan struct{}),
		sums: make(chan []byte, 1), roleAnswer: make(chan wire.RoleAnswer, 1)}
	l.acking = sync.NewCond(&l.mu)
	l.snd.bw = bufio.NewWriterSize(conn, 256<<10)
	l.pr = netio.NewPollReader(conn, res.cfg.PeerPoll)
	l.pr.Want, l.pr.Polled, l.pr.Slept = l.wantPoll, &res.linkPolled, &res.linkSlept
	l.pr.Between = l.sendIfQueued
	if sc, ok := conn.(syscall.Conn); ok {
		l.snd.raw, _ = sc.SyscallConn()
	}
	if l.snd.raw != nil {
		l.snd.ackWv = netio.NewWritev(l.snd.raw)
	}
	l.lastFrame.Store(time.Now().UnixNano())
	return l
}

// needFor is the ack a write waits for under the link's protocol.
func (l *link) needFor(fua bool) wire.AckKind {
	switch {
	case plant.On(plant.AckBeforePeer) && !fua:
		return 0
	case fua:
		return wire.Synced
	case l.proto == ProtocolB:
		return wire.Received
	case l.proto == ProtocolA:
		return 0 // complete once written to the socket
	}
	return wire.Journaled
}

// sendRecord queues rec for the peer. done runs once the peer has it as
// far as the protocol (or fua) asks, or once the link gives up; it returns
// false, without queueing, when the link is already down. The caller holds
// Resource.order, which keeps seqs in journal order: seq is written only
// under it, so the frame is encoded before l.mu is taken. The caller then
// calls send, or leaves the record to the reader if it polls (see
// PollReader.Polling and sendIfQueued).
func (l *link) sendRecord(rec *journal.Record, fua bool, done func(acked bool, kind wire.AckKind)) bool {
	bp := bufpool.Get(wire.RecordHeaderSize + binary.MaxVarintLen64 + len(rec.Payload))
	frame := wire.AppendRecord((*bp)[:0], rec, l.lastSent)
	head := len(frame) - len(rec.Payload)
	it := outItem{b: frame[:head], payload: frame[head:], sum: knownSum(rec), record: true, pooled: bp}
	return l.queueRecord(rec, it, fua, done)
}

// sendOwnedRecord is sendRecord for a record the caller hands over, with
// its pooled buffers: its payload is written from where it is, not copied,
// and rec is Released once it is written (never if the link goes down
// first, the garbage collector then takes its buffers). If it returns
// false the caller keeps rec.
func (l *link) sendOwnedRecord(rec *journal.Record, done func(acked bool, kind wire.AckKind)) bool {
	var head [wire.RecordHeaderSize + binary.MaxVarintLen64]byte
	it := outItem{b: wire.AppendRecordHead(head[:0], rec, l.lastSent), record: true, payload: rec.Payload,
		sum: knownSum(rec), release: rec.Release}
	return l.queueRecord(rec, it, false, done)
}

// knownSum is rec's payload checksum for its frame, if rec has taken it.
func knownSum(rec *journal.Record) wire.PartSum {
	sum, ok := rec.KnownSum()
	return wire.PartSum{Sum: sum, Known: ok}
}

// queueRecord queues it, rec's frame, for sendRecord and sendOwnedRecord.
func (l *link) queueRecord(rec *journal.Record, it outItem, fua bool, done func(acked bool, kind wire.AckKind)) bool {
	seq := l.seq + 1
	l.lastSent = rec.Seq
	p := &pending{seq: seq, need: l.needFor(fua), off: rec.Offset, length: int64(rec.RawLen), done: done}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return false
	}
	l.seq = seq
	l.out = append(l.out, it)
	l.queued.Store(true)
	if !l.sends.Load() {
		l.sends.Store(true)
	}
	if fua {
		l.out = append(l.out, outItem{b: wire.AppendBarrier(nil, seq)})
	}
	l.track(p)
	l.bytesRaw.Add(uint64(rec.RawLen))
	return true
}

// sendBarrier queues a flush barrier covering every record queued so far.
// The caller holds Resource.order.
func (l *link) sendBarrier(done func(acked bool, kind wire.AckKind)) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return false
	}
	l.out = append(l.out, outItem{b: wire.AppendBarrier(nil, l.seq)})
	l.track(&pending{seq: l.seq, need: wire.Synced, done: done})
	l.wake()
	return true
}

// askFollow sends a ping behind what is queued (a Diskless announcement)
// and calls done with whether its pong came back before the link ended:
// the peer reads frames in order, so it took the announcement first. It
// reports false, without calling done, if the link is down already.
func (l *link) askFollow(done func(followed bool)) bool {
	l.mu.Lock()
	if l.down != nil {
		l.mu.Unlock()
		return false
	}
	// A callback still waiting (a disk detached again on this link) is
	// replaced: both tell the same gate, which the later ping answers.
	l.followToken = randomID() | 1<<63 // never a time (the pings' tokens)
	l.followDone = done
	l.out = append(l.out, outItem{b: wire.AppendPing(nil, l.followToken)})
	l.wake()
	l.mu.Unlock()
	return true
}

// pong takes a Pong's token: the answer askFollow waits for, if it is.
func (l *link) pong(token uint64) {
	l.mu.Lock()
	done := l.followDone
	if done == nil || token != l.followToken {
		l.mu.Unlock()
		return
	}
	l.followDone = nil
	l.mu.Unlock()
	done(true)
}

// takeFollow takes askFollow's callback if its pong has not come: the
// link's teardown tells it no.
func (l *link) takeFollow() func(bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	done := l.followDone
	l.followDone = nil
	return done
}

// track adds p to the pending list (or to outA under protocol A); l.mu held.
func (l *link) track(p *pending) {
	if p.need == 0 {
		l.outA = append(l.outA, p)
		return
	}
	if len(l.pending) == 0 {
		l.oldest = time.Now()
	}
	if p.seq <= l.acked[p.need] {
		p.done(true, p.need)
		return
	}
	l.pending = append(l.pending, p)
	if p.need == wire.Synced {
		l.barriers++
	}
	l.notePending()
	if len(l.pending) == 1 && p.need != wire.Synced {
		l.pr.Kick() // the reader may have gone to sleep with nothing to wait for
	}
}

// notePending sets inflight from pending; l.mu held.
func (l *link) notePending() {
	n := int32(len(l.pending))
	if l.barriers > 0 {
		n = -1
	}
	l.inflight.Store(n)
}

func (l *link) wake() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// lag is how far the peer is behind: records sent and not yet acknowledged
// there (barriers aside), and the disk bytes they cover.
func (l *link) lag() (records, bytes uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.lagLocked()
}

func (l *link) lagLocked() (records, bytes uint64) {
	for _, p := range l.pending {
		if p.length > 0 || p.need != wire.Synced {
			records++
			bytes += uint64(p.length)
		}
	}
	return records, bytes
}

// waitLag waits until the records in flight cover at most maxBytes of the
// disk, or the link fails.
func (l *link) waitLag(maxBytes uint64) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if l.down != nil {
			return ErrLinkDown
		}
		if _, bytes := l.lagLocked(); bytes <= maxBytes {
			return nil
		}
		l.acking.Wait()
	}
}

// ack applies a cumulative ack from the peer: every pending write it
// satisfies completes. It reports whether that was more than one write, or
// a barrier: acks the reader does not poll for (see wantPoll).
func (l *link) ack(a wire.Ack) (batched bool) {
	l.mu.Lock()
	for k := wire.Received; k <= a.Kind; k++ {
		l.acked[k] = max(l.acked[k], a.Seq) // a stronger ack implies the weaker ones
	}
	var done []*pending
	kept := l.pending[:0]
	for _, p := range l.pending {
		if p.seq <= l.acked[p.need] {
			done = append(done, p)
			if p.need == wire.Synced {
				l.barriers--
				batched = true
			}
		} else {
			kept = append(kept, p)
		}
	}
	clear(l.pending[len(kept):])
	l.pending = kept
	l.notePending()
	if len(done) > 0 {
		l.oldest = time.Now()
		l.acking.Broadcast()
	}
	l.mu.Unlock()
	for _, p := range done {
		p.done(true, p.need)
	}
	return batched || len(done) > 1
}

// fail takes the link down once. It may be called from any goroutine,
// also one that holds the sender role or reads the connection: it only
// records err and tells the link's owner (run), which closes the
// connection and completes the writes still waiting on the peer.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.down != nil {
		l.mu.Unlock()
		return
	}
	l.down = err
	l.acking.Broadcast()
	l.mu.Unlock()
	close(l.closed)
}

// run owns the link: it starts its sender and receiver goroutines and, once
// the link fails (by them or anyone), closes the connection, waits for
// both to end, and hands the resource the writes still waiting on the peer,
// which are then marked out of sync and complete on the strength of the
// local disk alone. Nothing inside a read or a write ever closes the
// connection or waits for the teardown.
func (l *link) run() {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); l.sendLoop() }()
	go func() { defer wg.Done(); l.recvLoop() }()
	<-l.closed
	l.conn.Close()
	wg.Wait()
	l.mu.Lock()
	waiting := append(l.pending, l.outA...)
	l.pending, l.outA, l.out, l.barriers = nil, nil, nil, 0
	l.inflight.Store(0)
	err := l.down
	l.mu.Unlock()
	l.res.linkDown(l, err, waiting)
	close(l.gone)
}

func (l *link) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down != nil
}

// checkAlive fails a link whose peer has gone quiet or stopped acking for
// longer than the peer timeout.
func (l *link) checkAlive() error {
	timeout := l.res.cfg.PeerTimeout
	if quiet := time.Since(time.Unix(0, l.lastFrame.Load())); quiet > timeout {
		return fmt.Errorf("%w: nothing heard for %v", ErrLinkDown, quiet.Round(time.Millisecond))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) > 0 && time.Since(l.oldest) > timeout {
		return fmt.Errorf("%w: no ack for %v", ErrLinkDown, time.Since(l.oldest).Round(time.Millisecond))
	}
	return nil
}

// errDisconnected and errPeerDisconnected end a link closed on purpose, by
// this node or by the peer (Bye): no failure, so no wait before the next
// link (see nextFlapDelay).
var (
	errDisconnected     = fmt.Errorf("%w: disconnected by command", ErrLinkDown)
	errPeerDisconnected = fmt.Errorf("%w: the peer disconnected", ErrLinkDown)
)

// close ends the link in an orderly way: a Bye is queued, and whoever
// writes it takes the link down; if that does not happen within tune.byeGrace,
// close does.
func (l *link) close() {
	l.mu.Lock()
	if l.down == nil && !l.byeQueued {
		l.byeQueued = true
		l.out = append(l.out, outItem{b: wire.AppendBye(nil)})
		l.wake()
	}
	l.mu.Unlock()
	select {
	case <-l.closed:
	case <-time.After(tune.byeGrace):
		l.fail(errDisconnected)
	}
}

// localDone is told that a request sent on this link is done here: its
// reader, if it slept, may now poll for the acks (see wantPoll).
func (l *link) localDone() {
	if l.localBusy.Add(-1) == 0 && l.inflight.Load() > 0 {
		l.pr.Kick()
	}
}

// settle records that a write crossed the link both ways (see settled);
// it loads first, so the hot path writes the flag once per link.
func (l *link) settle() {
	if !l.settled.Load() {
		l.settled.Store(true)
	}
}

// storeMax raises a to v unless it is already higher.
func storeMax(a *atomic.Uint64, v uint64) {
	for {
		old := a.Load()
		if v <= old || a.CompareAndSwap(old, v) {
			return
		}
	}
}
