package replication

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// tailLoop replays the journal after the peer's last seq, in order, while
// writers keep the link to themselves: until it has caught up, their
// records reach the peer through this loop. Then the link goes live, the
// regions the tail carried are no longer out of sync, and the end of the
// sync is announced as for a bitmap resync. A record the link loses before
// the peer acknowledged it marks its region again.
func (r *Resource) tailLoop(l *link, from uint64) error {
	recs, stop, err := r.readTail(from) // keeps the tail's segments
	if err != nil {
		return err
	}
	defer stop()
	counted := r.countTail(from)
	carried := newBitmap(r.size)
	last := from - 1
	pace := r.newPacer(true)
	for {
		var it tailItem
		select {
		case it = <-recs:
		case <-l.closed:
			return ErrLinkDown
		}
		switch {
		case it.err != nil:
			return it.err
		case it.eof:
			live, err := r.goLive(l, last, carried)
			if live || err != nil {
				return err
			}
			continue
		}
		if it.inPlace {
			r.tailInPlace(l)
		}
		rec := it.rec
		last = rec.Seq
		carried.mark(rec.Offset, int64(rec.RawLen))
		off, n := rec.Offset, int64(rec.RawLen)
		if rec.Seq > counted { // written since the tail was counted
			r.mu.Lock()
			r.resync.total += n
			r.mu.Unlock()
		}
		wireBytes := wire.RecordHeaderSize + len(rec.Payload)
		r.order.Lock()
		sent := l.sendOwnedRecord(&rec, func(acked bool, _ wire.AckKind) {
			if !acked {
				r.oos.mark(off, n) // goLive may have cleared it already
				return
			}
			r.mu.Lock()
			r.resync.add(n, time.Now())
			r.mu.Unlock()
		})
		r.order.Unlock()
		if !sent {
			rec.Release()
			return ErrLinkDown
		}
		l.send(false)
		r.resyncWire.Add(uint64(wireBytes))
		pace.wait(n, l.closed)
		if err := l.waitLag(r.resyncLag(tune.tailMaxPending)); err != nil {
			return err
		}
	}
}

// tailInPlace tells the target, before the tail's first write made in
// place, that from then on it holds no state this node had: it is
// Inconsistent until the end. A tail that held one when it began said so
// in its SyncStart already (see attached in core.go).
func (r *Resource) tailInPlace(l *link) {
	r.mu.Lock()
	told := r.resync.inPlace
	r.resync.inPlace = true
	r.mu.Unlock()
	if !told {
		l.queue(wire.AppendSyncStart(nil, wire.SyncStart{Mode: wire.SyncTail, InPlace: true}))
	}
}

// tailItem is a record of the journal's tail as it is sent (tailRecord),
// or its current end (eof), or the error that ended the reading. inPlace:
// the record was a write made in place, its data read from the disk.
type tailItem struct {
	rec     journal.Record
	inPlace bool
	eof     bool
	err     error
}

// readTail starts reading the journal from seq from ahead of the sender:
// up to tune.tailReadAhead records wait, a write made in place read from
// the disk and compressed (tailRecord), so that the sender's goroutine
// only sends. At the journal's end it says so, then waits for the next
// record to be written. stop ends the reading.
func (r *Resource) readTail(from uint64) (recs <-chan tailItem, stop func(), err error) {
	rd, err := r.journal.NewReader(from)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan tailItem, tune.tailReadAhead)
	quit, done := make(chan struct{}), make(chan struct{})
	put := func(it tailItem) bool {
		select {
		case ch <- it:
			return true
		case <-quit:
			return false
		}
	}
	go func() {
		defer close(done)
		defer rd.Close()
		last := from - 1
		for {
			rec, err := rd.Next()
			if errors.Is(err, io.EOF) {
				if !put(tailItem{eof: true}) {
					return
				}
				// Appended, not yet in the segment: wait until it is.
				if err = r.journal.AwaitWritten(last+1, quit); err == nil {
					continue
				}
			}
			if err != nil {
				put(tailItem{err: err})
				return
			}
			last = rec.Seq
			inPlace := rec.Kind == journal.KindExtent
			w, err := r.tailRecord(rec, quit)
			if inPlace {
				rec.Release() // w is the write read from the disk
			}
			if err != nil {
				put(tailItem{err: err})
				return
			}
			if !put(tailItem{rec: w, inPlace: inPlace}) {
				w.Release()
				return
			}
		}
	}()
	return ch, func() { close(quit); <-done }, nil
}

// countTail starts a tail pass whose total is every byte the tail from
// seq from writes, read from the journal's record headers, and returns the
// last seq counted. If they cannot be read, the total grows as the tail is
// read.
func (r *Resource) countTail(from uint64) (counted uint64) {
	bytes, last, err := r.journal.TailBytes(from)
	if err != nil {
		r.log.Warn("counting the journal tail", "from", from, "err", err)
		bytes, last = 0, from-1
	}
	r.mu.Lock()
	r.resync.beginPass(bytes)
	r.mu.Unlock()
	return last
}

// goLive ends the catch-up if the tail read so far reaches the journal's
// last record: from then on writers send their records themselves, and
// the regions the tail carried are no longer out of sync (one whose record
// the link then loses is marked again). Under order, no write falls
// between the two. On a link already down it clears nothing: linkDown may
// have marked the regions of records the peer never acknowledged already,
// and they must stay marked.
func (r *Resource) goLive(l *link, last uint64, carried *bitmap) (bool, error) {
	r.order.Lock()
	defer r.order.Unlock()
	switch {
	case l.isDown():
		return false, ErrLinkDown
	case last < r.journal.LastSeq():
		return false, nil
	}
	l.catchingUp = false
	r.oos.subtract(carried)
	return true, nil
}

// startTarget handles a source's SyncStart: a bitmap sync makes this node
// Inconsistent and sends the source its own bitmap first; a journal tail
// keeps it Consistent, holding a state the source really had, unless the
// tail holds writes made in place (their data is what the source's disk
// holds when sent).
func (r *Resource) startTarget(l *link, flags uint8, body []byte) error {
	start, err := wire.ParseSyncStart(flags, body)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	r.mu.Lock()
	r.stepLocked(SyncStartReceived{}) // saves nothing
	state := wire.Consistent
	if start.Mode == wire.SyncBitmap || start.InPlace {
		state = wire.Inconsistent
		if start.Full { // a full sync: the peer's bitmap does not cover this node's changes
			r.meta.Gen.Bitmap = 0
		}
	}
	r.meta.Disk = state.String()
	err = r.saveMeta()
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	if start.Mode == wire.SyncBitmap && !start.Full {
		// Records this node holds past the source's last are ones the
		// source lost (a power loss took its unflushed tail after this
		// node journaled them): their regions join the bitmap sent, and
		// the source's data, older there, is synced over them.
		if err := r.markRange(r.journal, sameUpTo(l.remote), r.journal.LastSeq()); err != nil {
			return fmt.Errorf("%w: %v", ErrLinkDown, err)
		}
	}
	if start.Mode == wire.SyncBitmap {
		for _, f := range r.oos.chunks() {
			l.queue(f)
		}
		l.queue(wire.AppendBitmapEnd(nil))
	}
	r.log.Info("sync target", "mode", start.Mode.String(),
		"disk", state.String())
	return nil
}
