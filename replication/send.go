package replication

import (
	"bufio"
	"fmt"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/netio"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// sender is the write half of a link's connection. Whoever writes to the
// connection holds the sender role (claimSender returns this, to one
// holder at a time; sendQueued and sendAcks give it back): the link's
// sender goroutine, a writer sending its own record at once (send), the
// polling reader between two tries (sendIfQueued), or the receiver writing
// acks that never block (sendAcks). No one else touches these fields.
type sender struct {
	bw     *bufio.Writer
	raw    syscall.RawConn // nil if the connection has no descriptor: acks then wait for the sender goroutine
	ackBuf [128]byte       // acks being written (three frames)
	ackWv  *netio.Writev   // raw's, for them
}

// sendLoop is the sender goroutine: woken, it writes what is queued unless
// someone else is writing; it pings the peer and checks it is alive.
func (l *link) sendLoop() {
	ping := time.NewTicker(l.res.cfg.PeerTimeout / time.Duration(tune.pingsPerTimeout))
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
		if s := l.claimSender(); s != nil {
			l.sendQueued(s)
		}
	}
}

// send has what is queued sent: on the calling goroutine with here, if no
// one else is sending (a lone write then waits for no hand-off), and by the
// sender goroutine otherwise.
func (l *link) send(here bool) {
	if here {
		if s := l.claimSender(); s != nil {
			l.sendQueued(s)
			return
		}
	}
	l.wake()
}

// sendIfQueued sends, from the polling reader, the records a writer left
// queued for it: the writer went on with its own half of the write while
// this goroutine, already running, sent its record.
func (l *link) sendIfQueued() {
	if !l.queued.Load() {
		return
	}
	if s := l.claimSender(); s != nil && l.sendQueued(s) {
		l.res.readerSends.Add(1)
	}
}

// claimSender makes the caller the sender and returns the write half, if
// no one holds it. If someone does, it leaves them word to look again
// before they give the role up, so nothing queued or acknowledged meanwhile
// waits for the next wake.
func (l *link) claimSender() *sender {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down != nil {
		return nil
	}
	if l.sending {
		l.again = true
		return nil
	}
	l.sending = true
	return &l.snd
}

// sendQueued writes, as the sender, the queued frames (runs of records as
// Records frames, many per system call) and the acks that moved, until
// nothing more is queued; then it gives the role up. It reports whether
// it wrote records.
func (l *link) sendQueued(s *sender) (records bool) {
	for {
		l.mu.Lock()
		out, outA, bye := l.out, l.outA, l.byeQueued && !l.byeSent
		l.out, l.outA, l.again = nil, nil, false
		l.byeSent = l.byeSent || bye
		records = records || l.queued.Load()
		l.queued.Store(false)
		l.mu.Unlock()
		// Acks first: a frame queued after records were read (a SyncDone
		// answer) must not overtake their acks.
		s.bw.Write(l.appendAcks(s.ackBuf[:0]))
		l.writeOut(s.bw, out)
		if err := s.bw.Flush(); err != nil {
			l.mu.Lock()
			l.sending = false
			l.mu.Unlock()
			l.fail(fmt.Errorf("%w: send: %v", ErrLinkDown, err))
			for _, p := range outA {
				p.done(false, 0)
			}
			return
		}
		for _, p := range outA {
			p.done(true, 0)
		}
		if bye {
			l.fail(errDisconnected)
			return
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

// writeOut writes queued items; runs of records go out as Records frames of
// about tune.recordsFrame bytes.
func (l *link) writeOut(bw *bufio.Writer, out []outItem) {
	for i := 0; i < len(out); {
		if !out[i].record {
			bw.Write(out[i].b)
			l.bytesWire.Add(uint64(len(out[i].b)))
			i++
			continue
		}
		first, parts, size := i, make([][]byte, 0, 2*(len(out)-i)), 0
		sums := make([]wire.PartSum, 0, cap(parts))
		for ; i < len(out) && out[i].record; i++ {
			n := len(out[i].b) + len(out[i].payload)
			if size >= tune.recordsFrame || size+n > wire.MaxBodySize {
				break
			}
			parts, sums = append(parts, out[i].b), append(sums, wire.PartSum{})
			if len(out[i].payload) > 0 {
				parts, sums = append(parts, out[i].payload), append(sums, out[i].sum)
			}
			size += n
		}
		hdr, _ := wire.AppendRecordsHeaderSums(nil, parts, sums)
		bw.Write(hdr)
		for _, p := range parts {
			bw.Write(p) // written or copied into bw: the buffers are free
		}
		for k := first; k < i; k++ {
			out[k].free()
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
// and counts them as written. Only the sender role's holder calls it.
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
	s := l.claimSender()
	if s == nil || s.raw == nil {
		if s != nil {
			l.releaseSender(true)
		}
		l.wake()
		return
	}
	l.mu.Lock()
	quiet := len(l.out) == 0 && len(l.outA) == 0 && s.bw.Buffered() == 0
	l.mu.Unlock()
	if quiet {
		b := l.appendAcks(s.ackBuf[:0])
		n, err := s.ackWv.Try([][]byte{b})
		if err != nil {
			// The sender's write meets the error again and fails the link
			// from its own goroutine: this one may be the journal's writer.
			n = 0
		}
		s.bw.Write(b[n:]) // the rest goes next, from the sender
		// A Primary's reader that polls for this ack on this core reads it
		// now, before this goroutine goes on to apply the record.
		netio.Yield()
	}
	l.releaseSender(!quiet)
}

// releaseSender gives the sender role up, and wakes the sender goroutine if
// work is left: rest, or what was queued or buffered meanwhile.
func (l *link) releaseSender(rest bool) {
	l.mu.Lock()
	l.sending = false
	rest = rest || l.again || len(l.out) > 0 || len(l.outA) > 0 || l.snd.bw.Buffered() > 0
	l.mu.Unlock()
	if rest {
		l.wake()
	}
}
