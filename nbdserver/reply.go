package nbdserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/netio"
)

const (
	// copyMax is the largest read payload copied into the write buffer next
	// to its header; larger ones go out as their own iovec.
	copyMax = 16 << 10
	// writeChunk bounds the bytes gathered before a write system call, so
	// the first replies of a long batch are not held back.
	writeChunk = 256 << 10
)

// replyWriter sends a connection's replies. Its goroutine (run) takes
// everything queued at once and sends it with as few system calls as
// possible (writev), so under load many replies share one call, and a queue
// that runs dry is written out at once.
//
// When run is idle with nothing queued, whoever has finished replies (the
// reader with a burst of inline replies, or a request's goroutine) sends
// them itself with one non-blocking writev and queues only what the socket
// did not take (see direct.go). That saves waking run for every reply, which
// on a small machine costs more than the write.
type replyWriter struct {
	c    *conn
	raw  syscall.RawConn // nil if the connection has no file descriptor
	wv   *netio.Writev   // raw's, for the direct writes (direct.go) of whoever holds the claim
	one  [2][]byte       // sendOne's reply, under the claim: a local array would be an allocation per reply
	tls  *tlsSocket      // the socket under TLS, if STARTTLS made one
	wake chan struct{}   // one token when the idle writer must look again
	done chan struct{}   // closed when run returns

	mu         sync.Mutex // guards the fields below
	queue      []*request
	prefix     net.Buffers // unsent tail of a direct write: goes out first
	prefixReqs []*request  // replies in prefix (or tls's tail), freed once it is sent
	tail       bool        // tls holds the unsent tail of a direct write
	idle       bool        // run is waiting on wake
	direct     bool        // the reader is writing; run must not
	closed     bool        // no more pushes; exit once all is sent
	err        error       // first write error; later replies are dropped

	g     gather     // run's
	batch []*request // run's
}

func newReplyWriter(c *conn) *replyWriter {
	w := &replyWriter{
		c:    c,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		g:    newGather(),
	}
	if sc, ok := c.nc.(syscall.Conn); ok {
		w.raw, _ = sc.SyscallConn()
	}
	if c.tlsUp {
		w.tls, w.raw = c.tlsSock, c.tlsSock.raw
	}
	if w.raw != nil {
		w.wv = netio.NewWritev(w.raw)
	}
	return w
}

// push queues replies. The writer owns rs' requests from here on.
func (w *replyWriter) push(rs ...*request) {
	w.mu.Lock()
	w.queue = append(w.queue, rs...)
	w.kick()
	w.mu.Unlock()
}

// kick wakes run if it is idle and has work. Called with w.mu held.
func (w *replyWriter) kick() {
	if w.idle && !w.direct && (len(w.queue) > 0 || len(w.prefix) > 0 || w.tail || w.closed) {
		w.idle = false
		w.wake <- struct{}{}
	}
}

// close waits until every queued reply is written and the writer exits.
// No push may follow.
func (w *replyWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.kick()
	w.mu.Unlock()
	<-w.done
}

func (w *replyWriter) run() {
	defer close(w.done)
	w.mu.Lock()
	for {
		for w.direct || len(w.queue) == 0 && len(w.prefix) == 0 && !w.tail {
			if w.closed && !w.direct {
				w.mu.Unlock()
				return
			}
			w.idle = true
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		prefix, prefixReqs, tail := w.prefix, w.prefixReqs, w.tail
		w.prefix, w.prefixReqs, w.tail = nil, nil, false
		w.batch, w.queue = w.queue, w.batch[:0]
		w.mu.Unlock()
		if len(prefix) > 0 {
			w.write(&prefix)
		}
		if tail {
			w.flushTail()
		}
		w.c.release(prefixReqs)
		w.send(w.batch)
		clear(w.batch)
		w.mu.Lock()
	}
}

// send writes the replies of batch, then frees them and their slots.
func (w *replyWriter) send(batch []*request) {
	start := 0
	for i, r := range batch {
		w.g.add(r)
		if w.g.n >= writeChunk || i == len(batch)-1 {
			v := w.g.buffers()
			w.write(&v)
			w.g.reset()
			w.c.release(batch[start : i+1])
			start = i + 1
		}
	}
}

// write sends v, blocking, unless an earlier write failed.
func (w *replyWriter) write(v *net.Buffers) {
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return
	}
	timeout := w.c.srv.opts.ReplyTimeout
	if timeout > 0 {
		// Cleared after, or the next direct write would find it passed.
		defer w.c.raw.SetWriteDeadline(time.Time{})
	}
	for len(*v) > 0 {
		piece := w.next(v)
		if timeout > 0 {
			w.c.raw.SetWriteDeadline(time.Now().Add(timeout))
		}
		if _, err := piece.WriteTo(w.c.nc); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Not wrapped: a deadline error reads as a clean stop.
				err = fmt.Errorf("nbdserver: the client took no reply for %v (%v)", timeout, err)
			} else {
				err = fmt.Errorf("nbdserver: sending replies: %w", err)
			}
			w.fail(err)
			return
		}
	}
}

// flushTail sends what the socket did not take of a direct write over TLS.
func (w *replyWriter) flushTail() {
	w.mu.Lock()
	err := w.err
	w.mu.Unlock()
	if err != nil {
		return
	}
	if timeout := w.c.srv.opts.ReplyTimeout; timeout > 0 {
		w.c.raw.SetWriteDeadline(time.Now().Add(timeout))
		defer w.c.raw.SetWriteDeadline(time.Time{})
	}
	if err := w.tls.flush(); err != nil {
		w.fail(fmt.Errorf("nbdserver: sending replies: %w", err))
	}
}

// stallPiece is the most written under one write deadline: replies that
// make no progress for Options.ReplyTimeout close the connection, however
// large they are.
const stallPiece = 4 << 20

// next takes from v the buffers of the next write: all of v when it is
// small, else up to stallPiece bytes of it, splitting a buffer if need be.
func (w *replyWriter) next(v *net.Buffers) net.Buffers {
	total := 0
	for i, b := range *v {
		if total+len(b) <= stallPiece {
			total += len(b)
			continue
		}
		if i > 0 {
			piece := (*v)[:i:i]
			*v = (*v)[i:]
			return piece
		}
		(*v)[0] = b[stallPiece:]
		return net.Buffers{b[:stallPiece]}
	}
	piece := *v
	*v = nil
	return piece
}

// fail records the first write error and stops the connection: the client
// is gone, so stop reading, drain and close.
func (w *replyWriter) fail(err error) {
	w.mu.Lock()
	if w.err == nil {
		w.err = err
	}
	w.mu.Unlock()
	w.c.stop()
}

// failure returns the first write error, if any.
func (w *replyWriter) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// release frees replied requests and their in-flight slots.
func (c *conn) release(rs []*request) {
	for _, r := range rs {
		c.releaseBytes(r)
		freeRequest(r)
		<-c.slots
	}
}
