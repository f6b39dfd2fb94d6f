package nbdserver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/nbdmirror/nbdmirror/internal/netio"
)

// readBufferSize is the connection's read buffer in the transmission phase:
// large enough that a burst of small pipelined writes arrives with few read
// calls. Negotiation reads through a small one, so a crowd of connections
// that never get past it holds little memory.
const (
	readBufferSize      = 128 << 10
	handshakeBufferSize = 4 << 10
)

// conn is one client connection. Its goroutines: the reader (handshake, then
// reading requests, running the small ones inline and sending their replies
// in bursts), one goroutine per request that does not run inline, and the
// reply writer (replyWriter.run).
type conn struct {
	srv *Server
	raw net.Conn // the socket: deadlines and closing act on it
	// nc carries the protocol: raw, or TLS over it once STARTTLS
	// succeeded. The reader goroutine's until transmission starts.
	nc     net.Conn
	pr     *netio.PollReader // reads raw
	br     *bufio.Reader     // reads nc; owned by the reader goroutine
	log    *slog.Logger
	size   uint64 // export size, fixed when transmission starts
	hbuf   []byte // handshake replies being built; reader goroutine only
	noZero bool   // client set NBD_FLAG_C_NO_ZEROES
	tlsUp  bool   // STARTTLS succeeded; reader goroutine only
	// tlsSock is the socket under the TLS layer, once STARTTLS began.
	tlsSock *tlsSocket

	// bytes bounds the READ and WRITE payload bytes of this connection
	// between reading a request and freeing its reply (Options.
	// MaxInFlightBytes); ctx ends the reader's wait for it, and for the
	// server's total, when the connection stops.
	bytes  *semaphore.Weighted
	ctx    context.Context
	cancel context.CancelFunc

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
		raw:   nc,
		nc:    nc,
		pr:    pr,
		br:    bufio.NewReaderSize(pr, handshakeBufferSize),
		log:   s.log.With(slog.String("remote", remoteAddr(nc))),
		bytes: semaphore.NewWeighted(s.connBytes),
		slots: make(chan struct{}, s.opts.MaxInFlight),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
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
	defer func() { c.nc.Close() }() // the TLS connection if STARTTLS made one
	defer c.cancel()
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
	c.growReadBuffer()
	c.w = newReplyWriter(c)
	c.direct.g = newGather()
	go c.w.run()
	err := c.readLoop()
	c.ops.Wait()
	c.w.close()
	if err == nil {
		err = c.w.failure() // why the writer stopped the reader, if it did
	}
	c.logEnd("transmission", err)
}

// stop makes the reader quit at its next request boundary (or at once if it
// is waiting for data); requests already read still complete and get replies.
func (c *conn) stop() {
	c.stopOnce.Do(func() {
		close(c.quit)
		c.cancel()
		c.mu.Lock()
		c.stopping = true
		c.raw.SetReadDeadline(time.Unix(1, 0))
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
		c.raw.SetDeadline(t)
	}
}

// growReadBuffer moves reading to a buffer of readBufferSize for the
// transmission phase, keeping whatever the client already sent.
func (c *conn) growReadBuffer() {
	var src io.Reader = c.pr
	if c.tlsUp {
		c.tlsSock.bufferReads()
		src = c.nc
	}
	if n := c.br.Buffered(); n > 0 {
		early, _ := c.br.Peek(n)
		src = io.MultiReader(bytes.NewReader(bytes.Clone(early)), src)
	}
	c.br = bufio.NewReaderSize(src, readBufferSize)
}

// buffered is how many bytes of the client's stream are already read: in
// br and, with TLS, under the TLS layer (sealed: a little more than they
// carry). A request whose bytes are there is not waited for. Reader only.
func (c *conn) buffered() int {
	n := c.br.Buffered()
	if c.tlsUp {
		n += c.tlsSock.buffered()
	}
	return n
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
