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
	res    *Resource
	conn   net.Conn
	remote wire.Hello
	proto  Protocol

	// mu guards the send queue, the pending writes and the ack marks. The
	// writers and the resync add, the sender takes, the receiver completes.
	mu       sync.Mutex
	out      []outItem  // frames and records to send, in order
	outA     []*pending // protocol A: complete once out has been written
	pending  []*pending // sent records waiting for their ack, seq ascending
	barriers int        // how many of pending wait for a sync
	// inflight is len(pending), or -1 if one of them waits for a sync:
	// for the reader's polling rule.
	inflight atomic.Int32
	// localBusy counts writes sent on this link that this node has not
	// journaled and applied yet (Resource.appendAsync, waiter.localDone).
	localBusy atomic.Int32
	seq       uint64 // last link seq handed out
	lastSent  uint64 // journal seq of the last record queued; written under Resource.order
	// catchingUp: a journal tail is being replayed; writers journal only,
	// the tail loop sends their records. Guarded by Resource.order.
	catchingUp bool
	tailFrom   uint64    // the first seq of the tail
	acked      [4]uint64 // by wire.AckKind: highest cumulative ack seen
	oldest     time.Time // when the oldest pending record was queued
	down       error     // set once: the link failed
	// sending: someone holds the sender role, which owns bw and writes
	// sentAck (see sendQueued); again: someone found it held and left work
	// for it.
	sending, again bool
	bw             *bufio.Writer
	sentAck        [4]atomic.Uint64 // by wire.AckKind: highest ack written; read by anyone
	raw            syscall.RawConn  // nil if conn has no descriptor: acks then go through the sender
	kick           chan struct{}
	closed         chan struct{}
	// peerBitmap is closed once the peer's bitmap has been merged (a
	// SyncSource waits for it before it starts).
	peerBitmap     chan struct{}
	peerBitmapOnce sync.Once
	// sums carries the peer's checksum replies to compareSums, which
	// holds sumMu: one comparison at a time.
	sums      chan []byte
	sumMu     sync.Mutex
	closeOnce sync.Once
	ackBuf    [128]byte       // acks being written (three frames); sender role only
	ackIov    []syscall.Iovec // their iovec, for netio.TryWritev; sender role only

	// Receiving side (the peer of a Primary): what to acknowledge.
	lastRecv     uint64        // journal seq of the last record read; receiver only
	recvSeq      atomic.Uint64 // last record read off the link
	journaledSeq atomic.Uint64 // last record written to the journal
	syncedSeq    atomic.Uint64 // last barrier done
	lastFrame    atomic.Int64  // unix nanos of the last frame read
	recvWriting  atomic.Bool   // the receiver is writing queued records to the journal

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
}

// pending is a record (or barrier) sent and not yet acknowledged enough.
type pending struct {
	seq    uint64
	need   wire.AckKind // the ack that completes it
	off    int64        // the region it wrote, marked out of sync if the link fails
	length int64
	done   func(acked bool) // acked is false when the link gave up on it
}

func newLink(res *Resource, conn net.Conn, remote wire.Hello) *link {
	l := &link{res: res, conn: conn, remote: remote, proto: res.cfg.Protocol,
		recBatched: netio.AllBatched, ackBatched: netio.AllBatched,
		kick: make(chan struct{}, 1), closed: make(chan struct{}), peerBitmap: make(chan struct{}),
		sums: make(chan []byte, 1)}
	l.bw = bufio.NewWriterSize(conn, 256<<10)
	l.pr = netio.NewPollReader(conn, res.cfg.PeerPoll)
	l.pr.Want, l.pr.Polled, l.pr.Slept = l.wantPoll, &res.linkPolled, &res.linkSlept
	l.pr.Between = l.sendIfQueued
	if sc, ok := conn.(syscall.Conn); ok {
		l.raw, _ = sc.SyscallConn()
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
func (l *link) sendRecord(rec *journal.Record, fua bool, done func(acked bool)) bool {
	seq := l.seq + 1
	enc := appendWireRecord(make([]byte, 0, wireRecordHeader+binary.MaxVarintLen64+len(rec.Payload)), rec, l.lastSent)
	l.lastSent = rec.Seq
	p := &pending{seq: seq, need: l.needFor(fua), off: rec.Offset, length: int64(rec.RawLen), done: done}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return false
	}
	l.seq = seq
	l.out = append(l.out, outItem{b: enc, record: true})
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
func (l *link) sendBarrier(done func(acked bool)) bool {
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
		p.done(true)
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
	for _, p := range l.pending {
		if p.length > 0 || p.need != wire.Synced {
			records++
			bytes += uint64(p.length)
		}
	}
	return records, bytes
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
	}
	l.mu.Unlock()
	for _, p := range done {
		p.done(true)
	}
	return batched || len(done) > 1
}

// fail takes the link down once: the connection closes, and every write
// still waiting on the peer is marked out of sync and completed, so it is
// acknowledged on the strength of the local disk alone.
func (l *link) fail(err error) {
	l.mu.Lock()
	if l.down != nil {
		l.mu.Unlock()
		return
	}
	l.down = err
	waiting := append(l.pending, l.outA...)
	l.pending, l.outA, l.out, l.barriers = nil, nil, nil, 0
	l.inflight.Store(0)
	l.mu.Unlock()
	l.closeOnce.Do(func() { close(l.closed); l.conn.Close() })
	l.res.linkDown(l, err, waiting)
}

func (l *link) isDown() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.down != nil
}

// sendLoop is the sender goroutine: woken, it writes what is queued unless
// someone else is writing; it pings the peer and checks it is alive.
func (l *link) sendLoop() {
	ping := time.NewTicker(l.res.cfg.PeerTimeout / 4)
	defer ping.Stop()
	for {
		select {
		case <-l.kick:
		case <-ping.C:
			if err := l.checkAlive(); err != nil {
				l.fail(err)
				return
			}
			l.queue(wire.AppendPing(nil, uint64(time.Now().UnixNano())))
		case <-l.closed:
			return
		}
		if l.claimSender() {
			l.sendQueued()
		}
	}
}

// send has what is queued sent: on the calling goroutine with here, if no
// one else is sending (a lone write then waits for no hand-off), and by the
// sender goroutine otherwise.
func (l *link) send(here bool) {
	if here && l.claimSender() {
		l.sendQueued()
		return
	}
	l.wake()
}

// sendIfQueued sends, from the polling reader, the records a writer left
// queued for it: the writer went on with its own half of the write while
// this goroutine, already running, sent its record.
func (l *link) sendIfQueued() {
	if l.queued.Load() && l.claimSender() && l.sendQueued() {
		l.res.readerSends.Add(1)
	}
}

// claimSender makes the caller the sender if no one is. If someone is, it
// leaves them word to look again before they give the role up, so nothing
// queued or acknowledged meanwhile waits for the next wake.
func (l *link) claimSender() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return false
	}
	if l.sending {
		l.again = true
		return false
	}
	l.sending = true
	return true
}

// sendQueued writes, as the sender, the queued frames (runs of records as
// Records frames, many per system call) and the acks that moved, until
// nothing more is queued; then it gives the role up. It reports whether
// it wrote records.
func (l *link) sendQueued() (records bool) {
	for {
		l.mu.Lock()
		out, outA := l.out, l.outA
		l.out, l.outA, l.again = nil, nil, false
		records = records || l.queued.Load()
		l.queued.Store(false)
		l.mu.Unlock()
		l.writeOut(l.bw, out)
		l.bw.Write(l.appendAcks(l.ackBuf[:0]))
		if err := l.bw.Flush(); err != nil {
			l.mu.Lock()
			l.sending = false
			l.mu.Unlock()
			l.fail(fmt.Errorf("%w: send: %v", ErrLinkDown, err))
			return
		}
		for _, p := range outA {
			p.done(true)
		}
		l.mu.Lock()
		if len(l.out) == 0 && len(l.outA) == 0 && !l.again {
			l.sending = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
	}
}

// writeOut writes queued items; runs of records go out as Records frames.
func (l *link) writeOut(bw *bufio.Writer, out []outItem) {
	for i := 0; i < len(out); {
		if !out[i].record {
			bw.Write(out[i].b)
			l.bytesWire.Add(uint64(len(out[i].b)))
			i++
			continue
		}
		parts, size := make([][]byte, 0, len(out)-i), 0
		for ; i < len(out) && out[i].record && size+len(out[i].b) <= wire.MaxBodySize; i++ {
			parts = append(parts, out[i].b)
			size += len(out[i].b)
		}
		hdr, _ := wire.AppendRecordsHeader(nil, parts)
		bw.Write(hdr)
		for _, p := range parts {
			bw.Write(p)
		}
		l.bytesWire.Add(uint64(len(hdr) + size))
	}
}

// acks are the cumulative acks this side owes the peer, by kind.
func (l *link) acks() [3]wire.Ack {
	return [3]wire.Ack{
		{Kind: wire.Received, Seq: l.recvSeq.Load()},
		{Kind: wire.Journaled, Seq: l.journaledSeq.Load()},
		{Kind: wire.Synced, Seq: l.syncedSeq.Load()},
	}
}

// acksMoved reports whether an ack moved past the last one written.
func (l *link) acksMoved() bool {
	for _, a := range l.acks() {
		if a.Seq > l.sentAck[a.Kind].Load() {
			return true
		}
	}
	return false
}

// appendAcks appends to b the acks that moved since the last ones written
// and counts them as written. Requires the sender role.
func (l *link) appendAcks(b []byte) []byte {
	for _, a := range l.acks() {
		if a.Seq > l.sentAck[a.Kind].Load() {
			b = wire.AppendAck(b, a)
			l.sentAck[a.Kind].Store(a.Seq)
		}
	}
	return b
}

// sendAcks has the acks that moved sent, on the calling goroutine when the
// sender role is free and nothing else is queued: one write that never
// blocks, so the receiver can call it and still never stop reading. What
// that write cannot take, and anything queued, the sender goroutine sends.
// A Secondary's lone write thus hears its ack without waiting for a
// goroutine hand-off, nor for being applied to the disk.
func (l *link) sendAcks() {
	if !l.acksMoved() {
		return
	}
	if l.raw == nil || !l.claimSender() {
		l.wake()
		return
	}
	l.mu.Lock()
	quiet := len(l.out) == 0 && len(l.outA) == 0 && l.bw.Buffered() == 0
	l.mu.Unlock()
	if quiet {
		b := l.appendAcks(l.ackBuf[:0])
		n, err := netio.TryWritev(l.raw, &l.ackIov, [][]byte{b})
		if err != nil {
			// The sender's write meets the error again and fails the link
			// from its own goroutine: this one may be the journal's writer.
			n = 0
		}
		l.bw.Write(b[n:]) // the rest goes next, from the sender
		// A Primary's reader that polls for this ack on this core reads it
		// now, before this goroutine goes on to apply the record.
		netio.Yield()
	}
	l.mu.Lock()
	l.sending = false
	rest := !quiet || l.again || len(l.out) > 0 || len(l.outA) > 0 || l.bw.Buffered() > 0
	l.mu.Unlock()
	if rest {
		l.wake()
	}
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

// close ends the link in an orderly way (Bye), as for a disconnect command.
func (l *link) close() {
	l.mu.Lock()
	if l.down == nil {
		l.out = append(l.out, outItem{b: wire.AppendBye(nil)})
		l.wake()
	}
	l.mu.Unlock()
	time.Sleep(10 * time.Millisecond) // let the Bye go out; the peer copes without it
	l.fail(fmt.Errorf("%w: disconnected by command", ErrLinkDown))
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
