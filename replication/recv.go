package replication

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// recvLoop reads frames until the link fails.
func (l *link) recvLoop() {
	br := bufio.NewReaderSize(l.pr, 256<<10)
	r := wire.NewDataReader(br)
	for {
		l.pr.SetReadDeadline(time.Now().Add(l.res.cfg.PeerTimeout))
		f, err := r.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("%w: the peer closed the connection", ErrLinkDown)
			} else {
				err = fmt.Errorf("%w: receive: %v", ErrLinkDown, err)
			}
			l.fail(err)
			return
		}
		l.lastFrame.Store(time.Now().UnixNano())
		idle := br.Buffered() == 0
		if err := l.handle(f, idle); err != nil {
			l.fail(err)
			return
		}
		if idle && l.acksMoved() {
			// Acks of everything read so far go out together, from the
			// sender: this goroutine must keep reading whatever the peer does.
			l.wake()
		}
	}
}

// wantPoll says whether the reader polls for the next frame (see
// Config.PeerPoll): on the side that sends records, while one or two wait
// for their ack, none waits for a sync, each of the last 8 acks completed
// one write and no barrier (a writer that flushes often waits for the
// peer's fdatasync, longer than a poll should last), and this node is done
// journaling and applying them (until then the write waits for that work,
// which a polling reader would take a core from; its end kicks the
// reader); with nothing in flight, while each of the last 8 acks completed
// one write and no barrier (the next lone write's record is then sent by
// this reader, see sendIfQueued); on the side that receives them, while
// each of the last 8 Records frames carried one record and came alone. A
// pipelining writer keeps both sides busy without it, and with the client
// and both nodes on a few cores, polling then would take a core from them.
func (l *link) wantPoll() bool {
	if n := l.inflight.Load(); n != 0 {
		return n > 0 && n <= 2 && l.ackBatched.Lone() && l.localBusy.Load() == 0
	}
	if l.sends.Load() {
		return l.ackBatched.Lone()
	}
	return l.recBatched.Lone()
}

// handle acts on frame f; idle says nothing more has arrived behind it.
func (l *link) handle(f wire.Frame, idle bool) error {
	switch f.Type {
	case wire.TypeRecords:
		n, err := l.applyRecords(f.Records, idle)
		l.recBatched.Note(n != 1 || !idle)
		return err
	case wire.TypeBarrier:
		seq, err := wire.ParseBarrier(f.Body)
		if err != nil {
			return err
		}
		l.res.journal.SyncLater(func(err error) {
			if err != nil {
				l.res.health.fault(OpReplicate, err) // Diskless from now: the peer is refused
				l.fail(fmt.Errorf("%w: journal sync: %v", ErrLinkDown, err))
				return
			}
			storeMax(&l.syncedSeq, seq)
			l.sendAcks()
		})
		l.writeJournal(idle)
	case wire.TypeAck:
		a, err := wire.ParseAck(f.Body)
		if err != nil {
			return err
		}
		l.ackBatched.Note(l.ack(a))
	case wire.TypePing:
		token, err := wire.ParsePing(f.Body)
		if err != nil {
			return err
		}
		l.queue(wire.AppendPong(nil, token))
	case wire.TypePong:
		token, err := wire.ParsePing(f.Body)
		if err != nil {
			return err
		}
		l.pong(token)
	case wire.TypeBye:
		return errPeerDisconnected
	case wire.TypeRefuse:
		ref, _ := wire.ParseRefuse(f.Body)
		return fmt.Errorf("%w: %w", ErrLinkDown, &wire.RefusedError{Reason: ref.Reason, Text: ref.Text, ByPeer: true})
	case wire.TypeBitmapChunk:
		if f.Flags&wire.BitmapEnd != 0 {
			l.peerBitmapOnce.Do(func() { close(l.peerBitmap) })
			return nil
		}
		if err := l.res.oos.merge(f.Body); err != nil {
			return fmt.Errorf("%w: %v", ErrLinkDown, err)
		}
	case wire.TypeSyncStart:
		return l.res.startTarget(l, f.Flags, f.Body)
	case wire.TypeSumRequest:
		return l.answerSums(f.Body)
	case wire.TypeSums:
		select {
		case l.sums <- append([]byte(nil), f.Body...):
		default:
			return fmt.Errorf("%w: checksums nobody asked for", ErrLinkDown)
		}
	case wire.TypeSyncDone:
		return l.res.syncDoneFrame(l, f.Body)
	case wire.TypeRolePrimary:
		l.res.peerAsksPrimary(l)
	case wire.TypeRoleAnswer:
		a, err := wire.ParseRoleAnswer(f.Body)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrLinkDown, err)
		}
		select {
		case l.roleAnswer <- a:
		default: // an answer nobody waits for: askPrimary gave up
		}
	case wire.TypeDiskState:
		return l.res.peerDiskStateFrame(l, f.Body)
	case wire.TypeReadRequest:
		return l.answerRead(f.Body)
	case wire.TypeReadReply:
		return l.readReply(f.Body)
	default:
		return fmt.Errorf("%w: unexpected %s frame", ErrLinkDown, f.Type)
	}
	return nil
}

// applyRecords journals the records of a Records frame; the journal
// applies them in order. Each one's Journaled ack goes out once it is
// written to the journal's segment, where this node's recovery replays it
// from: applying it to the disk is not waited for. When nothing more has
// arrived, this goroutine writes the journal itself if its writer idles.
// The nth record of the link has seq n. A frame with a record the journal
// would refuse is refused whole: none of its records is journaled. n is
// how many records it read.
func (l *link) applyRecords(parts []wire.RecordPart, idle bool) (n int, err error) {
	if l.res.Role() == wire.Primary {
		wire.ReleaseParts(parts)
		return 0, fmt.Errorf("%w: the peer sent data to a Primary", ErrLinkDown)
	}
	defer l.writeJournal(idle) // what was queued, also if a record is bad
	if l.sends.Load() {
		l.sends.Store(false)
	}
	recs := l.recs[:0]
	prev := l.lastRecv
	for i := range parts {
		rec, err := wire.ParseRecordPart(&parts[i], l.res.size, prev)
		if err != nil {
			wire.ReleaseParts(parts[i+1:])
			for j := range recs {
				recs[j].Release()
			}
			return 0, fmt.Errorf("%w: record %d: %v", ErrLinkDown, l.recvSeq.Load()+uint64(i)+1, err)
		}
		recs = append(recs, rec)
		prev = rec.Seq
	}
	l.recs = recs[:0]
	plantedSwap(recs)
	for i := range recs {
		rec := recs[i]
		recs[i] = journal.Record{} // the journal owns it now
		l.lastRecv = rec.Seq
		seq := l.recvSeq.Add(1)
		last := idle && i == len(recs)-1
		written := func() {
			// The peer holds what it sent (meet marks what it lost since,
			// up to peerSeq): counted once journaled, not once applied, so
			// that a record whose apply fails is counted too.
			storeMax(&l.res.peerSeq, rec.Seq)
			l.journaledSeq.Store(seq)
			if last && l.recvWriting.Load() {
				// This goroutine journaled the last record read and nothing
				// is behind it: its ack goes now, before it is applied.
				l.sendAcks()
			} else {
				l.wake()
			}
		}
		l.res.replRecv.Add(uint64(rec.RawLen))
		l.res.journal.AppendLater(rec, false, written, func(_ uint64, err error) {
			rec.Release() // journaled and applied: its pooled payload goes back
			if err != nil {
				l.res.health.fault(OpReplicate, err) // Diskless from now: the peer is refused
				l.fail(fmt.Errorf("%w: journal: %v", ErrLinkDown, err))
				return
			}
			l.settle()
		})
	}
	return len(recs), nil
}

// writeJournal has what was queued in the journal written (and synced, for
// a barrier): by this goroutine when idle and the journal's writer idles
// too, so that a lone write or FLUSH waits for no hand-off; by the writer
// otherwise.
func (l *link) writeJournal(idle bool) {
	l.recvWriting.Store(true)
	l.res.journal.WriteQueued(idle)
	l.recvWriting.Store(false)
}

// queue adds a frame to the send queue.
func (l *link) queue(frame []byte) {
	l.mu.Lock()
	if l.down == nil {
		l.out = append(l.out, outItem{b: frame})
		l.wake()
	}
	l.mu.Unlock()
}
