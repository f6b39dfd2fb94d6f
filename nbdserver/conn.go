package nbdserver

import (
	"bufio"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/netio"
)

// readBufferSize is the connection's read buffer: large enough that a burst
// of small pipelined writes arrives with few read calls.
const readBufferSize = 128 << 10

// conn is one client connection. Its goroutines: the reader (handshake, then
// reading requests, running the small ones inline and sending their replies
// in bursts), one goroutine per request that does not run inline, and the
// reply writer (replyWriter.run).
type conn struct {
	srv    *Server
	nc     net.Conn
	br     *bufio.Reader // owned by the reader goroutine
	log    *slog.Logger
	size   uint64 // export size, fixed when transmission starts
	hbuf   []byte // handshake replies being built; reader goroutine only
	noZero bool   // client set NBD_FLAG_C_NO_ZEROES

	// slots holds one token per request between reading its header and
	// writing its reply: a full channel stops the reader (back-pressure).
	slots chan struct{}
	// ops counts requests running on their own goroutine or ending
	// asynchronously.
	ops sync.WaitGroup
	// asyncWrites counts writes started on an AsyncWriter and not ended.
	asyncWrites atomic.Int32
	w           *replyWriter
	held        []*request  // replies of inline requests not yet pushed; reader only
	lat         inlineStats // reader only
	direct      directState // reader only
	// requests counts the requests read; polledAt is its value when the
	// reader last asked whether to poll; batched has a bit for each of the
	// last 8 such asks, set if more than one request came before it.
	// Reader only.
	requests, polledAt uint64
	batched            netio.Batches

	quit     chan struct{} // closed by stop
	stopOnce sync.Once
	done     chan struct{} // closed when serve returns

	mu       sync.Mutex // guards stopping and every deadline change
	stopping bool
}

func newConn(s *Server, nc net.Conn) *conn {
	pr := netio.NewPollReader(nc, s.opts.Poll)
	c := &conn{
		srv:   s,
		nc:    nc,
		br:    bufio.NewReaderSize(pr, readBufferSize),
		log:   s.log.With(slog.String("remote", remoteAddr(nc))),
		slots: make(chan struct{}, s.opts.MaxInFlight),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	// Poll only for the next request of a client that waits for each reply
	// before it sends more. With a request of this connection in flight
	// (the reader holds one slot for the request it reads), the wait is for
	// the Backend, and a polling reader would take the core the Backend or
	// its peer needs. A client that sent several requests between two of
	// the last 8 reads pipelines them: while the reader sleeps, it sends
	// more, and the next read takes them all at once.
	pr.Want = func() bool {
		c.batched.Note(c.requests-c.polledAt > 1)
		c.polledAt = c.requests
		return c.batched.Lone() && len(c.slots) <= 1 && (s.opts.PollIf == nil || s.opts.PollIf())
	}
	pr.Polled, pr.Slept = &s.stats.polled, &s.stats.slept // a reader that never polls counts nothing
	return c
}

// serve runs the connection to its end and closes it.
func (c *conn) serve() {
	defer close(c.done)
	defer c.nc.Close()
	ok, err := c.handshake()
	if err != nil {
		c.logEnd("negotiation", err)
		return
	}
	if !ok {
		return
	}
	c.srv.active.Add(1)
	c.srv.stats.connections.Add(1)
	defer c.srv.active.Add(-1)
	c.transmit()
}

// transmit serves requests until the client disconnects, the stream breaks
// or the connection is stopped, then drains: every request already read
// runs and is replied to before the connection closes.
func (c *conn) transmit() {
	c.w = newReplyWriter(c)
	c.direct.g = newGather()
	go c.w.run()
	err := c.readLoop()
	c.ops.Wait()
	c.w.close()
	c.logEnd("transmission", err)
}

// stop makes the reader quit at its next request boundary (or at once if it
// is waiting for data); requests already read still complete and get replies.
func (c *conn) stop() {
	c.stopOnce.Do(func() {
		close(c.quit)
		c.mu.Lock()
		c.stopping = true
		c.nc.SetReadDeadline(time.Unix(1, 0))
		c.mu.Unlock()
	})
}

// stopped reports whether stop was called.
func (c *conn) stopped() bool {
	select {
	case <-c.quit:
		return true
	default:
		return false
	}
}

// setDeadline sets the connection deadline unless stop has already set one.
func (c *conn) setDeadline(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.stopping {
		c.nc.SetDeadline(t)
	}
}

// logEnd logs why a phase ended: quietly for a clean end, one line otherwise.
func (c *conn) logEnd(phase string, err error) {
	switch {
	case err == nil, errors.Is(err, io.EOF), c.stopped() && errors.Is(err, os.ErrDeadlineExceeded):
		c.log.Debug("nbdserver: connection closed", slog.String("phase", phase), slog.Any("err", err))
	default:
		c.log.Info("nbdserver: connection closed", slog.String("phase", phase), slog.Any("err", err))
	}
}

func remoteAddr(nc net.Conn) string {
	if a := nc.RemoteAddr(); a != nil {
		return a.String()
	}
	return "unknown"
}
