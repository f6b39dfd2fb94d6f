package sim

import (
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// Network is an in-memory network between named hosts. Each connection is
// a pair of buffered byte streams: a write never blocks, a read waits for
// data, EOF, a reset or its deadline. Faults apply per direction (from one
// host to the other): a delay on delivery, a black hole (a partition one
// way: bytes written are held, as TCP keeps retransmitting them, and arrive
// in order once the hole closes, unless the connection is reset first), a
// cut (no dial gets through either way and live connections are reset),
// and a reset of the live connections.
type Network struct {
	mu        sync.Mutex // guards everything below
	listeners map[string]*listener
	dirs      map[[2]string]*direction
	conns     map[*pipe]struct{} // every live stream, both directions
	downs     map[string]int     // how many times each host went Down
}

// direction is the fault state of the bytes from one host to another.
type direction struct {
	delay time.Duration
	hole  bool // bytes are accepted and held until the hole closes
	cut   bool // dials refused
}

// NewNetwork returns a network with no hosts and no faults.
func NewNetwork() *Network {
	return &Network{listeners: map[string]*listener{}, dirs: map[[2]string]*direction{},
		conns: map[*pipe]struct{}{}, downs: map[string]int{}}
}

// dir is the fault state from a to b; n.mu held.
func (n *Network) dir(a, b string) *direction {
	d := n.dirs[[2]string{a, b}]
	if d == nil {
		d = &direction{}
		n.dirs[[2]string{a, b}] = d
	}
	return d
}

// SetDelay delays delivery of what from writes to to.
func (n *Network) SetDelay(from, to string, d time.Duration) {
	n.mu.Lock()
	n.dir(from, to).delay = d
	n.mu.Unlock()
}

// SetHole holds what from writes to to (on), or delivers it, and what was
// held, again (off).
func (n *Network) SetHole(from, to string, on bool) {
	n.mu.Lock()
	n.dir(from, to).hole = on
	n.mu.Unlock()
	if !on {
		n.release(from, to)
	}
}

// release delivers what the live connections from -> to held in a hole.
func (n *Network) release(from, to string) {
	n.mu.Lock()
	var hit []*pipe
	for p := range n.conns {
		if p.from == from && p.to == to {
			hit = append(hit, p)
		}
	}
	n.mu.Unlock()
	for _, p := range hit {
		p.release()
	}
}

// Cut refuses dials between a and b and resets their connections.
func (n *Network) Cut(a, b string) {
	n.mu.Lock()
	n.dir(a, b).cut, n.dir(b, a).cut = true, true
	n.mu.Unlock()
	n.Reset(a, b)
}

// Heal clears every fault between a and b.
func (n *Network) Heal(a, b string) {
	n.mu.Lock()
	*n.dir(a, b), *n.dir(b, a) = direction{}, direction{}
	n.mu.Unlock()
	n.release(a, b)
	n.release(b, a)
}

// Reset resets every live connection between a and b (either way round):
// both ends see ECONNRESET and unread bytes are lost.
func (n *Network) Reset(a, b string) {
	n.mu.Lock()
	var hit []*pipe
	for p := range n.conns {
		if p.from == a && p.to == b || p.from == b && p.to == a {
			hit = append(hit, p)
		}
	}
	n.mu.Unlock()
	for _, p := range hit {
		p.reset()
	}
}

// Down takes host h off the network, as its process dying does: its
// listener closes and its connections are reset.
func (n *Network) Down(h string) {
	n.mu.Lock()
	n.downs[h]++
	ln := n.listeners[h]
	delete(n.listeners, h)
	var hit []*pipe
	for p := range n.conns {
		if p.from == h || p.to == h {
			hit = append(hit, p)
		}
	}
	n.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	for _, p := range hit {
		p.reset()
	}
}

// Host is host h's view of the network: what its Resource's Config.Listen
// and Config.Dial call. A host that went Down stays down: it neither
// listens nor dials again (a dead process's goroutines may still run until
// it is closed, and must reach nobody); a restarted node gets a new Host.
type Host struct {
	net   *Network
	name  string
	downs int // the host's Down count when this view was made
}

// Host returns h's view of the network.
func (n *Network) Host(h string) *Host {
	n.mu.Lock()
	defer n.mu.Unlock()
	return &Host{net: n, name: h, downs: n.downs[h]}
}

// down reports whether h went Down since this view was made; n.mu held.
func (h *Host) down() bool { return h.net.downs[h.name] != h.downs }

// Listen registers h's listener; addr is ignored (a host has one).
func (h *Host) Listen(string) (net.Listener, error) {
	ln := &listener{host: h.name, accept: make(chan net.Conn, 4), closed: make(chan struct{})}
	h.net.mu.Lock()
	defer h.net.mu.Unlock()
	if h.down() {
		return nil, fmt.Errorf("sim: %s went down", h.name)
	}
	if h.net.listeners[h.name] != nil {
		return nil, fmt.Errorf("sim: %s already listens", h.name)
	}
	h.net.listeners[h.name] = ln
	return ln, nil
}

var errRefused = &net.OpError{Op: "dial", Net: "sim", Err: syscall.ECONNREFUSED}

// Dial connects h to the host named addr.
func (h *Host) Dial(ctx context.Context, addr string) (net.Conn, error) {
	n := h.net
	n.mu.Lock()
	ln := n.listeners[addr]
	if ln == nil || h.down() || n.dir(h.name, addr).cut || n.dir(addr, h.name).cut {
		n.mu.Unlock()
		return nil, errRefused
	}
	up, down := newPipe(n, h.name, addr), newPipe(n, addr, h.name)
	n.conns[up], n.conns[down] = struct{}{}, struct{}{}
	n.mu.Unlock()
	client := &conn{rd: down, wr: up, local: simAddr(h.name), remote: simAddr(addr)}
	server := &conn{rd: up, wr: down, local: simAddr(addr), remote: simAddr(h.name)}
	select {
	case ln.accept <- server:
		return client, nil
	case <-ln.closed:
	case <-ctx.Done():
	}
	up.reset()
	down.reset()
	return nil, errRefused
}

// forget drops p from the live streams.
func (n *Network) forget(p *pipe) {
	n.mu.Lock()
	delete(n.conns, p)
	n.mu.Unlock()
}

// faults is the fault state of the stream from -> to.
func (n *Network) faults(from, to string) direction {
	n.mu.Lock()
	defer n.mu.Unlock()
	return *n.dir(from, to)
}

type simAddr string

func (a simAddr) Network() string { return "sim" }
func (a simAddr) String() string  { return string(a) }

// listener is a host's listener.
type listener struct {
	host      string
	accept    chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func (l *listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.accept:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *listener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	for {
		select {
		case c := <-l.accept:
			c.Close()
		default:
			return nil
		}
	}
}

func (l *listener) Addr() net.Addr { return simAddr(l.host) }

var errReset = &net.OpError{Op: "read", Net: "sim", Err: syscall.ECONNRESET}

// errTimeout is a deadline passing, as net.Conn reports it.
var errTimeout = os.ErrDeadlineExceeded
