package replication

import (
	"log/slog"
	"net"
	"sync"
	"time"
)

// Bounds on the peer listener, against connections that never
// authenticate: each has Config.HandshakeLimit to start its handshake (the
// TLS handshake, or the first byte of a plain one; then each step of the
// wire handshake has the peer timeout), and at most Config.MaxHandshakes
// of them are in their handshake at once.
const (
	defaultHandshakeLimit = 10 * time.Second
	defaultMaxHandshakes  = 16
)

func (r *Resource) handshakeLimit() time.Duration {
	if r.cfg.HandshakeLimit > 0 {
		return r.cfg.HandshakeLimit
	}
	return defaultHandshakeLimit
}

func (r *Resource) maxHandshakes() int {
	if r.cfg.MaxHandshakes > 0 {
		return r.cfg.MaxHandshakes
	}
	return defaultMaxHandshakes
}

// unauthSlots bounds the accepted connections that have not authenticated
// yet. The accepting goroutine takes a slot for each; the connection's
// goroutine gives it back once the handshake is over, either way.
type unauthSlots struct {
	sem     chan struct{}
	dropped int       // connections closed for want of a slot since the last log line
	logged  time.Time // that line's time
}

func newUnauthSlots(n int) *unauthSlots {
	return &unauthSlots{sem: make(chan struct{}, n)}
}

// take takes a slot, if one is free, and returns the function that gives
// it back (once, however often it is called).
func (s *unauthSlots) take() (release func(), ok bool) {
	select {
	case s.sem <- struct{}{}:
		return sync.OnceFunc(func() { <-s.sem }), true
	default:
		return nil, false
	}
}

// logFull logs a connection closed for want of a slot, at most once a
// second, with how many were closed since the last line.
func (s *unauthSlots) logFull(log *slog.Logger, c net.Conn) {
	s.dropped++
	if time.Since(s.logged) < time.Second {
		return
	}
	log.Warn("peer connection closed: too many peer connections not yet authenticated",
		"addr", c.RemoteAddr().String(), "limit", cap(s.sem), "closed", s.dropped)
	s.dropped, s.logged = 0, time.Now()
}

// meetAccepted starts TLS (or checks that the peer does not) on a
// connection the listener accepted, within the handshake limit, and meets
// the peer on it; release gives its slot back once meet is done.
func (r *Resource) meetAccepted(raw net.Conn, release func()) {
	defer release()
	c, err := r.secureConn(raw, false)
	if err != nil {
		return
	}
	r.meet(c, false)
}
