package replication

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// Sync modes a source announces in its SyncStart frame.
const (
	syncBitmap = 1 // regions from the bitmap: the target is Inconsistent until the end
	syncTail   = 2 // the journal's tail, in order: the target stays Consistent
)

// tailMaxPending bounds the bytes of a journal tail in flight on the link.
const tailMaxPending = 32 << 20

func appendSyncStart(mode byte, full bool) []byte {
	body := []byte{mode, 0}
	if full {
		body[1] = 1
	}
	f, _ := wire.AppendFrame(nil, wire.TypeSyncStart, 0, body)
	return f
}

// tailLoop replays the journal after the peer's last seq, in order, while
// writers keep the link to themselves: until it has caught up, their
// records reach the peer through this loop. Then the link goes live, the
// regions the tail carried are no longer out of sync, and the end of the
// sync is announced as for a bitmap resync.
func (r *Resource) tailLoop(l *link, from uint64) error {
	rd, err := r.journal.NewReader(from)
	if err != nil {
		return err
	}
	defer rd.Close()
	carried := newBitmap(r.size)
	last := from - 1
	pace := newPacer(r.cfg.ResyncRate)
	for {
		rec, err := rd.Next()
		if errors.Is(err, io.EOF) {
			if r.goLive(l, last) {
				break
			}
			time.Sleep(100 * time.Microsecond) // appended, not yet in the segment
			continue
		}
		if err != nil {
			return err
		}
		last = rec.Seq
		carried.mark(rec.Offset, int64(rec.RawLen))
		n := int64(rec.RawLen)
		r.mu.Lock()
		r.resync.total += n
		r.mu.Unlock()
		r.order.Lock()
		sent := l.sendRecord(&rec, false, func(acked bool) {
			if acked {
				r.mu.Lock()
				r.resync.done += n
				r.mu.Unlock()
			}
		})
		r.order.Unlock()
		if !sent {
			return ErrLinkDown
		}
		l.send(false)
		r.resyncWire.Add(uint64(wireRecordHeader + len(rec.Payload)))
		pace.wait(n, l.closed)
		for _, lagBytes := l.lag(); lagBytes > tailMaxPending && !l.isDown(); _, lagBytes = l.lag() {
			time.Sleep(time.Millisecond)
		}
	}
	r.oos.subtract(carried)
	return nil
}

// goLive ends the catch-up if the tail read so far reaches the journal's
// last record: from then on writers send their records themselves.
func (r *Resource) goLive(l *link, last uint64) bool {
	r.order.Lock()
	defer r.order.Unlock()
	if last < r.journal.LastSeq() {
		return false
	}
	l.catchingUp = false
	return true
}

// startTarget handles a source's SyncStart: a bitmap sync makes this node
// Inconsistent and sends the source its own bitmap first; a journal tail
// keeps it Consistent, holding a state the source really had.
func (r *Resource) startTarget(l *link, body []byte) error {
	if len(body) != 2 || body[0] != syncBitmap && body[0] != syncTail {
		return fmt.Errorf("%w: bad sync start", ErrLinkDown)
	}
	r.mu.Lock()
	state := wire.Consistent
	if body[0] == syncBitmap {
		state = wire.Inconsistent
		if body[1] == 1 { // a full sync: the peer's bitmap does not cover this node's changes
			r.meta.Gen.Bitmap = 0
		}
	}
	r.meta.Disk = state.String()
	err := saveMeta(r.cfg.MetaDir, r.meta)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("%w: %v", ErrLinkDown, err)
	}
	if body[0] == syncBitmap {
		for _, f := range r.oos.chunks() {
			l.queue(f)
		}
		end, _ := wire.AppendFrame(nil, wire.TypeBitmapChunk, bitmapEnd, nil)
		l.queue(end)
	}
	r.log.Info("sync target", "mode", map[byte]string{syncBitmap: "bitmap", syncTail: "journal tail"}[body[0]],
		"disk", state.String())
	return nil
}
