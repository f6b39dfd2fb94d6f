package nbdserver

import (
	"net"
	"syscall"
	"unsafe"
)

// gather collects replies for one writev: headers and small payloads are
// copied into buf, large payloads are referenced.
type gather struct {
	base []byte      // backing array of buf
	buf  []byte      // bytes not yet in vec
	vec  net.Buffers // what one write sends
	n    int         // bytes gathered in buf and vec
}

func newGather() gather {
	base := make([]byte, 0, writeChunk+copyMax+replyHeaderSize)
	return gather{base: base, buf: base}
}

// add appends r's reply. Before each call fewer than writeChunk bytes are
// gathered, so buf never outgrows base.
func (g *gather) add(r *request) {
	g.buf = appendReplyHeader(g.buf, r)
	g.n += replyHeaderSize
	if r.payload == nil {
		return
	}
	p := *r.payload
	g.n += len(p)
	if len(p) <= copyMax {
		g.buf = append(g.buf, p...)
		return
	}
	// buf's bytes so far go out before p; later bytes are appended after
	// them in the same array.
	g.vec = append(g.vec, g.buf, p)
	g.buf = g.buf[len(g.buf):]
}

// buffers returns everything gathered, in order.
func (g *gather) buffers() net.Buffers {
	if len(g.buf) > 0 {
		g.vec = append(g.vec, g.buf)
		g.buf = g.buf[len(g.buf):]
	}
	return g.vec
}

func (g *gather) reset() {
	clear(g.vec)
	g.vec = g.vec[:0]
	g.buf = g.base[:0]
	g.n = 0
}

// directState is the reader's side of writeDirect. Owned by the reader.
type directState struct {
	g   gather
	iov []syscall.Iovec
}

// writeDirect sends rs from the reader goroutine if the writer goroutine is
// idle with nothing queued: one non-blocking writev, and whatever the socket
// does not take is left to the writer goroutine. Otherwise rs are queued.
func (w *replyWriter) writeDirect(d *directState, rs []*request) {
	w.mu.Lock()
	if w.raw == nil || !w.idle || w.direct || len(w.queue) > 0 || len(w.prefix) > 0 || w.err != nil ||
		len(rs) > maxHeld {
		w.queue = append(w.queue, rs...)
		w.kick()
		w.mu.Unlock()
		return
	}
	w.direct = true
	w.mu.Unlock()

	for _, r := range rs {
		d.g.add(r)
	}
	v := d.g.buffers()
	n, err := w.tryWritev(d, v)
	total := d.g.n

	w.mu.Lock()
	w.direct = false
	switch {
	case err != nil:
		if w.err == nil {
			w.err = err
		}
		w.queue = append(w.queue, rs...) // dropped and freed by run
		d.g.reset()
	case n < total:
		w.prefix = skip(v, n)
		w.prefixReqs = append([]*request(nil), rs...)
		d.g = newGather() // prefix still points into the old one
	}
	w.kick()
	w.mu.Unlock()
	if err != nil {
		w.c.stop()
	}
	if err == nil && n == total {
		d.g.reset()
		w.c.release(rs)
	}
}

// tryWritev makes one non-blocking writev of v and returns the bytes taken.
func (w *replyWriter) tryWritev(d *directState, v net.Buffers) (int, error) {
	d.iov = d.iov[:0]
	for _, b := range v {
		if len(b) > 0 {
			iov := syscall.Iovec{Base: &b[0]}
			iov.SetLen(len(b))
			d.iov = append(d.iov, iov)
		}
	}
	if len(d.iov) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := w.raw.Write(func(fd uintptr) bool {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&d.iov[0])), uintptr(len(d.iov)))
		if e == syscall.EINTR {
			return false
		}
		n, errno = int(r), e
		return true
	})
	clear(d.iov)
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, errno
	}
	return n, nil
}

// skip returns a copy of v without its first n bytes.
func skip(v net.Buffers, n int) net.Buffers {
	var out net.Buffers
	for _, b := range v {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		out = append(out, b[n:])
		n = 0
	}
	return out
}
