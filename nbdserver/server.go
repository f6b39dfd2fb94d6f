package nbdserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/nbdmirror/nbdmirror/internal/tlspsk"
)

// Defaults for Options fields left zero.
const (
	DefaultMaxInFlight      = 128
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxInFlightBytes bounds the payload held for all clients at
	// once; each connection may hold a quarter of the bound.
	DefaultMaxInFlightBytes = 256 << 20
	DefaultMaxConnections   = 128
	DefaultReplyTimeout     = 60 * time.Second
)

// Options configure a Server.
type Options struct {
	// Name is the export's name. The export also answers to the empty name.
	Name string
	// Backend holds the data. Required.
	Backend Backend
	// Logger receives connection and error events; nil means slog.Default().
	Logger *slog.Logger
	// MaxInFlight bounds the requests read but not yet replied to on one
	// connection; the connection stops reading at the bound. Zero means
	// DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightBytes bounds the READ and WRITE payload bytes held for all
	// clients together, from reading a request until its reply is sent;
	// MaxConnInFlightBytes bounds those of one connection. A connection at
	// either bound stops reading requests until replies go out, so a client
	// that sends faster than the Backend answers, or never reads its
	// replies, makes the server wait, not allocate. A request larger than a
	// bound is let through alone. Zero means DefaultMaxInFlightBytes, and a
	// quarter of MaxInFlightBytes (at least the 32 MiB of the largest
	// request, at most MaxInFlightBytes) per connection.
	MaxInFlightBytes, MaxConnInFlightBytes int64
	// MaxConnections bounds the connections open at once, negotiating or
	// not; one more is closed as soon as it is accepted. Zero means
	// DefaultMaxConnections; negative means no bound.
	MaxConnections int
	// ReplyTimeout closes a connection whose replies make no progress for
	// this long: a client that stopped reading them. Zero means
	// DefaultReplyTimeout; negative means no limit.
	ReplyTimeout time.Duration
	// TLSMode says whether clients may or must use STARTTLS; TLS is the
	// configuration of its handshake, or TLSPSK the pre-shared keys (one of
	// them is required unless TLSMode is TLSOff). With TLSPSK the handshake
	// is TLS 1.3 with an external PSK and no certificates (nbdkit's
	// --tls-psk); TLS is then not used.
	TLSMode TLSMode
	TLS     *tls.Config
	TLSPSK  tlspsk.Keys
	// HandshakeTimeout bounds the whole negotiation phase of a connection.
	// Zero means DefaultHandshakeTimeout; negative means no limit.
	HandshakeTimeout time.Duration
	// Admit, if set, is called when a client selects the export
	// (NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME). A non-nil error
	// refuses it: GO and INFO get NBD_REP_ERR_UNKNOWN ("the requested export
	// is not available") carrying the error text and negotiation goes on;
	// EXPORT_NAME, which cannot carry an error, closes the connection.
	Admit func() error
	// Poll is how long a connection's reader may poll its socket for the
	// client's next request before it sleeps, when nothing of that
	// connection is in flight and its recent requests came sooner than that
	// (see netio.PollReader). Zero never polls.
	Poll time.Duration
	// PollIf, if set, is asked before each poll too: false sleeps.
	PollIf func() bool
}

// Server serves one export over the NBD fixed-newstyle protocol.
type Server struct {
	name    string
	backend Backend
	fua     FUAWriter   // nil unless backend implements it
	async   AsyncWriter // nil unless backend implements it
	log     *slog.Logger
	opts    Options

	stats     counters
	active    atomic.Int64 // connections in the transmission phase
	errLimit  rateLimiter
	fullLimit rateLimiter // logs of connections refused at MaxConnections

	// total bounds the payload bytes of all connections, connBytes is each
	// connection's bound (Options.MaxInFlightBytes, MaxConnInFlightBytes).
	total                 *semaphore.Weighted
	totalBytes, connBytes int64

	mu        sync.Mutex // guards the fields below
	closed    bool       // Shutdown was called
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
}

// New returns a Server for o. It panics if o.Backend is nil, or if
// o.TLSMode asks for TLS without o.TLS or o.TLSPSK.
func New(o Options) *Server {
	if o.Backend == nil {
		panic("nbdserver: Options.Backend is nil")
	}
	if o.TLSMode != TLSOff && o.TLS == nil && len(o.TLSPSK) == 0 {
		panic("nbdserver: Options.TLSMode " + o.TLSMode.String() + " without Options.TLS or Options.TLSPSK")
	}
	o = o.withDefaults()
	s := &Server{
		name:       o.Name,
		backend:    o.Backend,
		log:        o.Logger,
		opts:       o,
		errLimit:   rateLimiter{interval: time.Second},
		fullLimit:  rateLimiter{interval: time.Second},
		total:      semaphore.NewWeighted(o.MaxInFlightBytes),
		totalBytes: o.MaxInFlightBytes,
		connBytes:  o.MaxConnInFlightBytes,
		listeners:  make(map[net.Listener]struct{}),
		conns:      make(map[*conn]struct{}),
	}
	s.fua, _ = o.Backend.(FUAWriter)
	s.async, _ = o.Backend.(AsyncWriter)
	return s
}

// withDefaults fills in the fields left zero.
func (o Options) withDefaults() Options {
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.HandshakeTimeout == 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.ReplyTimeout == 0 {
		o.ReplyTimeout = DefaultReplyTimeout
	}
	if o.MaxConnections == 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	if o.MaxInFlightBytes <= 0 {
		o.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if o.MaxConnInFlightBytes <= 0 {
		o.MaxConnInFlightBytes = min(max(o.MaxInFlightBytes/4, maxBlockSize), o.MaxInFlightBytes)
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Serve accepts connections on l and serves each on its own goroutine. It
// closes l and returns net.ErrClosed once Shutdown is called; any other
// accept error is returned wrapped.
func (s *Server) Serve(l net.Listener) error {
	if !s.trackListener(l, true) {
		l.Close()
		return net.ErrClosed
	}
	defer s.trackListener(l, false)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return net.ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return fmt.Errorf("nbdserver: accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		go s.ServeConn(nc)
	}
}

// ServeConn serves one client on nc and returns when the connection is
// closed. It takes ownership of nc.
func (s *Server) ServeConn(nc net.Conn) {
	c := newConn(s, nc)
	if err := s.trackConn(c, true); err != nil {
		if errors.Is(err, errTooManyConnections) {
			// Counted and logged before the close: a client that sees it
			// closed finds it counted, and nothing is left to log after.
			s.stats.refused.Add(1)
			if ok, suppressed := s.fullLimit.allow(time.Now()); ok {
				c.log.Warn("nbdserver: connection refused", "err", err,
					"max", s.opts.MaxConnections, "refused_before", suppressed)
			}
		}
		nc.Close()
		return
	}
	defer s.trackConn(c, false)
	c.serve()
}

// Shutdown stops accepting connections, then lets every connection finish
// the requests it has already read, write their replies and close. It
// returns once all connections are closed, or with ctx's error when ctx ends
// first, in which case the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	s.mu.Unlock()
	return s.CloseClients(ctx)
}

// CloseClients disconnects every current client gracefully, as Shutdown
// does, but keeps listening. Clients connecting meanwhile are served as
// usual, so make Admit refuse first (e.g. on demotion to Secondary).
func (s *Server) CloseClients(ctx context.Context) error {
	s.mu.Lock()
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.stop()
	}
	for i, c := range conns {
		select {
		case <-c.done:
		case <-ctx.Done():
			for _, c := range conns[i:] {
				c.raw.Close()
			}
			return fmt.Errorf("nbdserver: closing clients: %w", ctx.Err())
		}
	}
	return nil
}

// Stats returns a snapshot of the request counters.
func (s *Server) Stats() Stats { return s.stats.snapshot() }

// Connections returns the number of clients currently in the transmission
// phase.
func (s *Server) Connections() int { return int(s.active.Load()) }

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Server) trackListener(l net.Listener, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !add {
		delete(s.listeners, l)
		return true
	}
	if s.closed {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

// trackConn adds or removes c. Adding fails once Shutdown was called or
// with MaxConnections open.
func (s *Server) trackConn(c *conn, add bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case !add:
		delete(s.conns, c)
		return nil
	case s.closed:
		return net.ErrClosed
	case s.opts.MaxConnections > 0 && len(s.conns) >= s.opts.MaxConnections:
		return errTooManyConnections
	}
	s.conns[c] = struct{}{}
	return nil
}

var errTooManyConnections = errors.New("nbdserver: too many connections")

// Open returns the number of connections open now, negotiating or not.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// exportFor returns the export size for a client asking for name, or an
// error telling why it is refused.
func (s *Server) exportFor(name string) (uint64, error) {
	if name != "" && name != s.name {
		return 0, errUnknownExport
	}
	if s.opts.Admit != nil {
		if err := s.opts.Admit(); err != nil {
			return 0, err
		}
	}
	size, err := s.backend.Size()
	if err != nil {
		return 0, fmt.Errorf("nbdserver: export size: %w", err)
	}
	if size < 0 {
		return 0, fmt.Errorf("nbdserver: export size %d is negative", size)
	}
	return uint64(size), nil
}

var errUnknownExport = errors.New("nbdserver: unknown export")
