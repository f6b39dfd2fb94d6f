package sim

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// pipe is one direction of a connection: bytes written by host from, read
// by host to. Writes are delivered after the direction's delay, in order.
type pipe struct {
	net      *Network
	from, to string

	mu       sync.Mutex // guards everything below
	buf      []byte     // delivered, unread
	inflight []chunk    // written, not yet delivered (delay), in order
	held     []byte     // written into a hole: delivered once it closes
	eof      bool       // the writer closed: EOF once buf is read
	gone     bool       // the reader closed: writes fail
	broken   bool       // reset: reads and writes fail, bytes are lost
	wake     chan struct{}
}

// chunk is written bytes on their way.
type chunk struct {
	at time.Time
	b  []byte
}

func newPipe(n *Network, from, to string) *pipe {
	return &pipe{net: n, from: from, to: to, wake: make(chan struct{})}
}

// signal wakes the reader; p.mu held.
func (p *pipe) signal() {
	close(p.wake)
	p.wake = make(chan struct{})
}

func (p *pipe) write(b []byte) (int, error) {
	f := p.net.faults(p.from, p.to)
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.broken:
		return 0, &net.OpError{Op: "write", Net: "sim", Err: syscall.ECONNRESET}
	case p.eof:
		return 0, net.ErrClosed
	case p.gone:
		return 0, &net.OpError{Op: "write", Net: "sim", Err: syscall.EPIPE}
	case f.hole:
		p.held = append(p.held, b...)
		return len(b), nil
	}
	c := chunk{at: time.Now().Add(f.delay), b: append(p.held, b...)} // what the hole held goes first
	p.held = nil
	if f.delay <= 0 && len(p.inflight) == 0 {
		p.buf = append(p.buf, c.b...)
		p.signal()
		return len(b), nil
	}
	p.inflight = append(p.inflight, c)
	time.AfterFunc(f.delay, p.deliver)
	return len(b), nil
}

// release delivers what a hole held, after what is on its way.
func (p *pipe) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.held) == 0 || p.broken {
		return
	}
	if len(p.inflight) == 0 {
		p.buf = append(p.buf, p.held...)
		p.signal()
	} else {
		p.inflight = append(p.inflight, chunk{at: time.Now(), b: p.held})
	}
	p.held = nil
}

// deliver moves the chunks whose time has come to buf, in order: a chunk
// behind one still on its way waits for it.
func (p *pipe) deliver() {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	moved := false
	for len(p.inflight) > 0 && !p.inflight[0].at.After(now) {
		if !p.broken {
			p.buf = append(p.buf, p.inflight[0].b...)
		}
		p.inflight = p.inflight[1:]
		moved = true
	}
	if moved {
		p.signal()
	}
}

// read reads into b, waiting until dl (zero: no deadline) or a change of
// the deadline (dlChanged).
func (p *pipe) read(b []byte, dl *deadline) (int, error) {
	for {
		t, changed := dl.get()
		p.mu.Lock()
		switch {
		case p.broken:
			p.mu.Unlock()
			return 0, errReset
		case p.gone:
			p.mu.Unlock()
			return 0, net.ErrClosed
		case len(p.buf) > 0:
			n := copy(b, p.buf)
			p.buf = p.buf[n:]
			p.mu.Unlock()
			return n, nil
		case p.eof && len(p.inflight) == 0:
			p.mu.Unlock()
			return 0, io.EOF
		}
		wake := p.wake
		p.mu.Unlock()
		if !t.IsZero() && !time.Now().Before(t) {
			return 0, errTimeout
		}
		var timer <-chan time.Time
		var tm *time.Timer
		if !t.IsZero() {
			tm = time.NewTimer(time.Until(t))
			timer = tm.C
		}
		select {
		case <-wake:
		case <-changed:
		case <-timer:
		}
		if tm != nil {
			tm.Stop()
		}
	}
}

// reset breaks the stream: both ends fail from now on.
func (p *pipe) reset() {
	p.mu.Lock()
	p.broken = true
	p.buf, p.inflight, p.held = nil, nil, nil
	p.signal()
	p.mu.Unlock()
	p.net.forget(p)
}

// closeWrite: the writer is done; the reader reads EOF after the rest.
func (p *pipe) closeWrite() {
	p.mu.Lock()
	p.eof = true
	p.signal()
	p.mu.Unlock()
	p.net.forget(p)
}

// closeRead: the reader is done; unread bytes are dropped.
func (p *pipe) closeRead() {
	p.mu.Lock()
	p.gone = true
	p.buf = nil
	p.signal()
	p.mu.Unlock()
	p.net.forget(p)
}

// deadline is a settable time whose changes wake a waiting read.
type deadline struct {
	mu      sync.Mutex
	t       time.Time
	changed chan struct{}
}

func (d *deadline) get() (time.Time, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.changed == nil {
		d.changed = make(chan struct{})
	}
	return d.t, d.changed
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.t = t
	if d.changed != nil {
		close(d.changed)
	}
	d.changed = make(chan struct{})
}

// conn is one end of a connection: it reads rd and writes wr. Writes never
// block, so the write deadline only fails writes once it has passed.
type conn struct {
	rd, wr        *pipe
	local, remote simAddr
	rdl, wdl      deadline
	closeOnce     sync.Once
}

func (c *conn) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	return c.rd.read(b, &c.rdl)
}

func (c *conn) Write(b []byte) (int, error) {
	if t, _ := c.wdl.get(); !t.IsZero() && !time.Now().Before(t) {
		return 0, errTimeout
	}
	return c.wr.write(b)
}

func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.wr.closeWrite()
		c.rd.closeRead()
	})
	return nil
}

func (c *conn) LocalAddr() net.Addr  { return c.local }
func (c *conn) RemoteAddr() net.Addr { return c.remote }

func (c *conn) SetDeadline(t time.Time) error {
	c.rdl.set(t)
	c.wdl.set(t)
	return nil
}

func (c *conn) SetReadDeadline(t time.Time) error  { c.rdl.set(t); return nil }
func (c *conn) SetWriteDeadline(t time.Time) error { c.wdl.set(t); return nil }
