package nbdserver

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// inlineMax is the largest READ or WRITE the reader may run itself instead
// of handing it to a goroutine of its own.
const inlineMax = 64 << 10

// readLoop reads requests until DISC, a broken stream or stop. It returns
// nil for a clean end (DISC, stop) and the error otherwise.
func (c *conn) readLoop() error {
	var hdr [requestHeaderSize]byte
	for {
		select {
		case c.slots <- struct{}{}:
		case <-c.quit:
			return nil
		}
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			<-c.slots
			if c.stopped() && errors.Is(err, os.ErrDeadlineExceeded) {
				return nil
			}
			return fmt.Errorf("nbdserver: reading request: %w", err)
		}
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

// dispatch validates r, reads its payload and runs it, inline or on a
// goroutine of its own. It returns an error only if the stream broke.
func (c *conn) dispatch(r *request) error {
	r.errno = r.check(c.size)
	if r.hasPayload() {
		if err := c.readPayload(r); err != nil {
			<-c.slots
			freeRequest(r)
			return err
		}
	}
	switch {
	case r.errno != 0:
		c.complete(r)
	case c.inline(r):
		c.exec(r)
	default:
		c.busy.Add(1)
		c.ops.Add(1)
		go func() {
			c.exec(r)
			c.busy.Add(-1)
			c.ops.Done()
		}()
	}
	return nil
}

// readPayload reads a WRITE's data into a pooled buffer, or consumes and
// drops it when the request is refused, so the stream stays in sync.
func (c *conn) readPayload(r *request) error {
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

// inline decides whether the reader runs r itself. A small read or write
// runs inline when nothing else is running and no further request has
// arrived: that saves a goroutine hand-off per request at low queue depth
// and costs no parallelism, since the client is waiting. Everything else
// runs off the reader so it keeps reading.
func (c *conn) inline(r *request) bool {
	switch r.typ {
	case cmdCache:
		return true
	case cmdRead, cmdWrite:
		return r.length <= inlineMax && c.busy.Load() == 0 && c.br.Buffered() == 0
	}
	return false
}

// exec runs a valid request against the Backend and queues its reply.
func (c *conn) exec(r *request) {
	var err error
	switch r.typ {
	case cmdRead:
		err = c.read(r)
	case cmdWrite:
		err = c.write(r)
	case cmdFlush:
		err = c.srv.backend.Sync()
	case cmdTrim:
		err = c.syncIfFUA(r, c.srv.backend.Trim(int64(r.off), int64(r.length)))
	case cmdWriteZeroes:
		err = c.syncIfFUA(r, c.srv.backend.Zero(int64(r.off), int64(r.length), r.flags&cmdFlagNoHole != 0))
	case cmdCache:
		// A hint only: the data is read on demand anyway.
	}
	if err != nil {
		r.errno = errnoOf(err)
		c.srv.logBackendError(r, err)
	}
	c.complete(r)
}

// complete counts r and hands it to the reply writer.
func (c *conn) complete(r *request) {
	c.srv.stats.count(r)
	c.w.push(r)
}

func (c *conn) read(r *request) error {
	if r.length == 0 {
		return nil
	}
	r.payload = getPayload(int(r.length))
	n, err := c.srv.backend.ReadAt(*r.payload, int64(r.off))
	if n == int(r.length) {
		return nil // io.ReaderAt may report io.EOF with a full read
	}
	putPayload(r.payload)
	r.payload = nil
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (c *conn) write(r *request) error {
	if r.length == 0 {
		return nil
	}
	p := *r.payload
	var n int
	var err error
	if r.flags&cmdFlagFUA != 0 && c.srv.fua != nil {
		n, err = c.srv.fua.WriteAtFUA(p, int64(r.off))
	} else {
		n, err = c.srv.backend.WriteAt(p, int64(r.off))
		if err == nil && n == len(p) && r.flags&cmdFlagFUA != 0 {
			err = c.srv.backend.Sync()
		}
	}
	putPayload(r.payload)
	r.payload = nil
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// syncIfFUA makes a successful TRIM or WRITE_ZEROES with FUA durable.
func (c *conn) syncIfFUA(r *request, err error) error {
	if err == nil && r.flags&cmdFlagFUA != 0 {
		err = c.srv.backend.Sync()
	}
	return err
}
