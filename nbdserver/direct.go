package nbdserver

import "net"

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

// add appends r's reply. The writer goroutine adds fewer than writeChunk
// bytes before each write, so its buf never outgrows base; the reader's
// burst of at most maxHeld replies may, and then buf moves to a larger
// array while vec keeps pointing into the old one, which stays valid.
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
	g gather
}

// Any goroutine with finished replies may send them itself when the writer
// goroutine is idle with nothing queued: it claims the socket, makes one
// non-blocking writev and leaves whatever the socket does not take to the
// writer goroutine. That saves waking the writer for every reply or burst.

// writeDirect sends the reader's burst of replies rs.
func (w *replyWriter) writeDirect(d *directState, rs []*request) {
	if !w.claim(rs) {
		return
	}
	for _, r := range rs {
		d.g.add(r)
	}
	v := d.g.buffers()
	if w.tls != nil {
		w.finishTLS(rs, v)
		d.g.reset() // the TLS layer copied v
		return
	}
	n, err := w.wv.Try(v)
	if w.finish(rs, v, n, d.g.n, err) || err != nil {
		d.g.reset()
	} else {
		d.g = newGather() // the unsent tail still points into the old one
	}
}

// sendOne sends the reply of r, finished on its own goroutine.
func (w *replyWriter) sendOne(r *request) {
	rs := [1]*request{r}
	if !w.claim(rs[:]) {
		return
	}
	bufs := &w.one // a payload stays referenced until the next sendOne
	bufs[0], bufs[1] = appendReplyHeader(r.hdr[:0], r), nil
	v, total := net.Buffers(bufs[:1]), replyHeaderSize
	if r.payload != nil {
		bufs[1] = *r.payload
		v, total = bufs[:2], total+len(bufs[1])
	}
	if w.tls != nil {
		w.finishTLS(rs[:], v)
		return
	}
	n, err := w.wv.Try(v)
	w.finish(rs[:], v, n, total, err)
}

// directTLSMax bounds the replies sent directly over TLS: encrypting them
// takes the sender's time, and a reader that encrypts large read payloads
// reads no requests meanwhile, while the writer goroutine would do it on
// another core. Small replies (write acknowledgements, small reads) cost
// less to encrypt than waking the writer.
const directTLSMax = 16 << 10

// replyBytes is the size of rs' replies.
func replyBytes(rs []*request) int {
	n := 0
	for _, r := range rs {
		n += replyHeaderSize
		if r.payload != nil {
			n += len(*r.payload)
		}
	}
	return n
}

// finishTLS sends v, carrying rs, through the TLS layer without blocking
// (tlsSocket.writeDirect) and ends the claimed write: what the socket did
// not take stays in the socket's tail, for the writer goroutine to flush.
func (w *replyWriter) finishTLS(rs []*request, v net.Buffers) {
	done, err := w.tls.writeDirect(w.c.nc, v)
	n := 0
	if done {
		n = 1
	}
	w.finish(rs, nil, n, 1, err)
}

// claim makes the caller the one writing if the writer goroutine is idle
// with nothing queued, and otherwise queues rs for it.
func (w *replyWriter) claim(rs []*request) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.raw == nil || !w.idle || w.direct || len(w.queue) > 0 || len(w.prefix) > 0 || w.tail || w.err != nil ||
		w.tls != nil && replyBytes(rs) > directTLSMax {
		w.queue = append(w.queue, rs...)
		w.kick()
		return false
	}
	w.direct = true
	return true
}

// finish ends a claimed write of v, carrying rs, of which n of total bytes
// went out. It reports whether all went out, in which case rs are freed;
// otherwise the writer goroutine owns the rest.
func (w *replyWriter) finish(rs []*request, v net.Buffers, n, total int, err error) bool {
	w.mu.Lock()
	w.direct = false
	switch {
	case err != nil:
		if w.err == nil {
			w.err = err
		}
		w.queue = append(w.queue, rs...) // dropped and freed by run
	case n < total:
		if w.tls != nil {
			w.tail = true
		} else {
			w.prefix = skip(v, n)
		}
		w.prefixReqs = append([]*request(nil), rs...)
	}
	w.kick()
	w.mu.Unlock()
	if err != nil {
		w.c.stop()
		return false
	}
	if n < total {
		return false
	}
	w.c.release(rs)
	return true
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
