package nbdserver

import (
	"net"
	"sync"
)

const (
	// copyMax is the largest read payload copied into the write buffer next
	// to its header; larger ones go out as their own iovec.
	copyMax = 16 << 10
	// writeChunk bounds the bytes gathered before a write system call, so
	// the first replies of a long batch are not held back.
	writeChunk = 256 << 10
)

// replyWriter is the one goroutine per connection that writes replies. Any
// goroutine pushes a finished request; the writer takes everything queued at
// once and sends it with as few system calls as possible (writev), so under
// load many replies share one call, and a queue that runs dry is written out
// at once.
type replyWriter struct {
	c    *conn
	wake chan struct{} // one token when the idle writer must look again
	done chan struct{} // closed when run returns

	mu     sync.Mutex // guards queue, idle, closed
	queue  []*request
	idle   bool // run is waiting on wake
	closed bool // no more pushes; exit once the queue is empty

	// Owned by run.
	batch []*request
	base  []byte      // backing array of buf
	buf   []byte      // headers and small payloads not yet in vec
	vec   net.Buffers // what one write sends
	n     int         // bytes gathered in buf and vec
	err   error       // first write error; later replies are dropped
}

func newReplyWriter(c *conn) *replyWriter {
	base := make([]byte, 0, writeChunk+copyMax+replyHeaderSize)
	return &replyWriter{
		c:    c,
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
		base: base,
		buf:  base,
	}
}

// push queues r's reply. The writer owns r from here on.
func (w *replyWriter) push(r *request) {
	w.mu.Lock()
	w.queue = append(w.queue, r)
	wake := w.idle
	w.idle = false
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{}
	}
}

// close waits until every queued reply is written and the writer exits.
// No push may follow.
func (w *replyWriter) close() {
	w.mu.Lock()
	w.closed = true
	wake := w.idle
	w.idle = false
	w.mu.Unlock()
	if wake {
		w.wake <- struct{}{}
	}
	<-w.done
}

func (w *replyWriter) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 {
			if w.closed {
				w.mu.Unlock()
				return
			}
			w.idle = true
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		w.batch, w.queue = w.queue, w.batch[:0]
		w.mu.Unlock()
		w.send(w.batch)
		clear(w.batch)
	}
}

// send writes the replies of batch, then frees them and their slots.
func (w *replyWriter) send(batch []*request) {
	start := 0
	for i, r := range batch {
		w.buf = appendReplyHeader(w.buf, r)
		w.n += replyHeaderSize
		if r.payload != nil {
			p := *r.payload
			w.n += len(p)
			if len(p) <= copyMax {
				w.buf = append(w.buf, p...)
			} else {
				// buf's bytes so far go out before p; later headers are
				// appended after them in the same array.
				w.vec = append(w.vec, w.buf, p)
				w.buf = w.buf[len(w.buf):]
			}
		}
		if w.n >= writeChunk || i == len(batch)-1 {
			w.flush()
			w.release(batch[start : i+1])
			start = i + 1
		}
	}
}

// flush writes what has been gathered. Before each reply is added fewer than
// writeChunk bytes are gathered, so buf never outgrows base.
func (w *replyWriter) flush() {
	if len(w.buf) > 0 {
		w.vec = append(w.vec, w.buf)
	}
	if w.err == nil && len(w.vec) > 0 {
		v := w.vec // WriteTo consumes v
		if _, err := v.WriteTo(w.c.nc); err != nil {
			w.err = err
			w.c.stop() // the client is gone: stop reading, drain and close
		}
	}
	clear(w.vec)
	w.vec = w.vec[:0]
	w.buf = w.base[:0]
	w.n = 0
}

func (w *replyWriter) release(rs []*request) {
	for _, r := range rs {
		freeRequest(r)
		<-w.c.slots
	}
}
