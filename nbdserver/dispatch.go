package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// readLoop reads requests until DISC, a broken stream or stop. It returns
// nil for a clean end (DISC, stop) and the error otherwise.
func (c *conn) readLoop() error {
	defer c.pushHeld()
	var hdr [requestHeaderSize]byte
	for {
		// Once stopped, nothing more is started, not even requests
		// already in the read buffer.
		if c.stopped() || !c.acquireSlot() {
			return nil
		}
		if c.buffered() < requestHeaderSize {
			c.pushHeld() // about to wait for the client
		}
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			<-c.slots
			if c.stopped() && errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("nbdserver: reading request: %w", err)
		}
		c.requests++
		r := newRequest()
		if err := decodeRequest(&hdr, r); err != nil {
			<-c.slots
			freeRequest(r)
			return err
		}
		if r.typ == cmdDisc {
			<-c.slots
			freeRequest(r)
			return nil // nothing after DISC is read, let alone written
		}
		if err := c.dispatch(r); err != nil {
			return err
		}
	}
}

// acquireSlot takes an in-flight slot, waiting while MaxInFlight requests
// are unanswered. It returns false if the connection is stopped meanwhile.
func (c *conn) acquireSlot() bool {
	select {
	case c.slots <- struct{}{}:
		return true
	default:
	}
	c.pushHeld() // held replies free slots once written
	select {
	case c.slots <- struct{}{}:
		return true
	case <-c.quit:
		return false
	}
}

// dispatch validates r, reads its payload and runs it, inline or on a
// goroutine of its own. It returns an error only if the stream broke.
func (c *conn) dispatch(r *request) error {
	r.errno = r.check(c.size)
	if r.errno == 0 && (r.typ == cmdRead || r.typ == cmdWrite) && r.length > 0 && !c.acquireBytes(r) {
		<-c.slots // stopped while waiting: readLoop ends
		freeRequest(r)
		return nil
	}
	if r.hasPayload() {
		if err := c.readPayload(r); err != nil {
			c.releaseBytes(r)
			<-c.slots
			freeRequest(r)
			return err
		}
	}
	if r.errno != 0 {
		c.srv.stats.count(r)
		c.hold(r)
		return nil
	}
	if r.typ == cmdWrite && r.length > 0 && c.srv.async != nil {
		c.startAsync(r)
		return nil
	}
	if c.inline(r) {
		c.execInline(r)
		return nil
	}
	c.ops.Add(1)
	go func() {
		c.exec(r)
		c.srv.stats.count(r)
		c.w.sendOne(r)
		c.ops.Done()
	}()
	return nil
}

// startAsync starts a WRITE on an AsyncWriter. Its reply leaves from the
// goroutine that ends it: directly when it is the connection's last write in
// flight, since nothing else is about to end with it; otherwise through the
// writer goroutine, which sends together the replies that end meanwhile.
func (c *conn) startAsync(r *request) {
	c.ops.Add(1)
	c.asyncWrites.Add(1)
	last := c.buffered() == 0
	r.c = c
	c.srv.async.WriteAsync(*r.payload, int64(r.off), r.flags&cmdFlagFUA != 0, last, r.doneFunc)
}

// asyncDone ends an async WRITE (see startAsync).
func (r *request) asyncDone(err error) {
	c := r.c
	putPayload(r.payload)
	r.payload = nil
	if err != nil {
		r.errno = errnoOf(err)
		c.srv.logBackendError(r, err)
	}
	c.srv.stats.count(r)
	if c.asyncWrites.Add(-1) == 0 {
		c.w.sendOne(r)
	} else {
		c.w.push(r)
	}
	c.ops.Done()
}

// readPayload reads a WRITE's data into a pooled buffer, or consumes and
// drops it when the request is refused, so the stream stays in sync.
func (c *conn) readPayload(r *request) error {
	if c.buffered() < int(r.length) {
		c.pushHeld()
	}
	if r.errno != 0 {
		if _, err := c.br.Discard(int(r.length)); err != nil {
			return fmt.Errorf("nbdserver: discarding %d bytes of refused write: %w", r.length, err)
		}
		return nil
	}
	if r.length == 0 {
		return nil
	}
	r.payload = getPayload(int(r.length))
	if _, err := io.ReadFull(c.br, *r.payload); err != nil {
		return fmt.Errorf("nbdserver: reading %d bytes of write data: %w", r.length, err)
	}
	return nil
}

// hold keeps a reply the reader produced until the reader is about to wait
// (for the client or for a slot), then sends all of them at once: one write
// for a burst of pipelined requests.
func (c *conn) hold(r *request) {
	c.held = append(c.held, r)
	if len(c.held) >= maxHeld {
		c.pushHeld()
	}
}

// maxHeld bounds the replies the reader holds back.
const maxHeld = 64

func (c *conn) pushHeld() {
	if len(c.held) > 0 {
		c.w.writeDirect(&c.direct, c.held)
		clear(c.held)
		c.held = c.held[:0]
	}
}

// acquireBytes charges r's payload to the connection's and the server's
// in-flight byte bounds, first sending the replies held back and then
// waiting while either bound is reached (the client's requests stay unread
// meanwhile). A request larger than a bound is charged the bound. It
// returns false if the connection is stopped while waiting.
func (c *conn) acquireBytes(r *request) bool {
	n := int64(r.length)
	own, all := min(n, c.srv.connBytes), min(n, c.srv.totalBytes)
	if !c.bytes.TryAcquire(own) {
		c.pushHeld()
		if c.bytes.Acquire(c.ctx, own) != nil {
			return false
		}
	}
	if !c.srv.total.TryAcquire(all) {
		c.pushHeld()
		if c.srv.total.Acquire(c.ctx, all) != nil {
			c.bytes.Release(own)
			return false
		}
	}
	r.charged = true
	return true
}

// releaseBytes gives back what acquireBytes charged for r.
func (c *conn) releaseBytes(r *request) {
	if r.charged {
		n := int64(r.length)
		c.bytes.Release(min(n, c.srv.connBytes))
		c.srv.total.Release(min(n, c.srv.totalBytes))
		r.charged = false
	}
}
