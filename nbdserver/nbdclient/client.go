package nbdclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// CloseTimeout bounds how long Close waits for the server to answer the
// requests in flight and close its end after NBD_CMD_DISC.
const CloseTimeout = 10 * time.Second

// Client is a connection to one export in the transmission phase. Its
// methods are safe for concurrent use: each sends its request at once and
// waits for its own reply while other requests are in flight, and a reader
// goroutine matches replies to requests by handle.
type Client struct {
	nc    net.Conn      // TLS over the socket once STARTTLS succeeded
	br    *bufio.Reader // reader goroutine only, after negotiation
	tls   *tls.Config   // nil: no STARTTLS
	size  uint64
	flags TransmissionFlags

	handles atomic.Uint64

	wmu     sync.Mutex    // guards bw and writing to nc
	bw      *bufio.Writer // requests are gathered here
	writers atomic.Int32  // senders writing or waiting for wmu; the last flushes

	mu      sync.Mutex // guards the fields below
	pending map[uint64]*call
	err     error // why the connection failed; every later request gets it
	closing bool  // Close was called: no new requests

	readerDone chan struct{}
}

// call is one request waiting for its reply.
type call struct {
	op    string
	read  []byte // destination of a READ's data
	errno uint32
	err   error
	done  chan struct{} // receives one value when the call is complete
}

var callPool = sync.Pool{New: func() any { return &call{done: make(chan struct{}, 1)} }}

// Dial connects to addr ("host:port", or "unix:/path" for a Unix socket) and
// negotiates the export name with NBD_OPT_GO. ctx bounds the connection and
// the negotiation only.
func Dial(ctx context.Context, addr, exportName string) (*Client, error) {
	return DialTLS(ctx, addr, exportName, nil)
}

// DialTLS is Dial with TLS when cfg is not nil: it sends NBD_OPT_STARTTLS
// first and gives up if the server refuses it or the TLS handshake fails.
// Without cfg.ServerName (and InsecureSkipVerify), the server's certificate
// must name the host of addr.
func DialTLS(ctx context.Context, addr, exportName string, cfg *tls.Config) (*Client, error) {
	network := "tcp"
	if p, ok := strings.CutPrefix(addr, "unix:"); ok {
		network, addr = "unix", p
	}
	if cfg != nil && cfg.ServerName == "" && !cfg.InsecureSkipVerify {
		cfg = cfg.Clone()
		cfg.ServerName = addr
		if host, _, err := net.SplitHostPort(addr); err == nil {
			cfg.ServerName = host
		}
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("nbdclient: %w", err)
	}
	return NewClientTLS(ctx, nc, exportName, cfg)
}

// NewClient negotiates exportName on an established connection and returns a
// Client owning nc. On error nc is closed.
func NewClient(ctx context.Context, nc net.Conn, exportName string) (*Client, error) {
	return NewClientTLS(ctx, nc, exportName, nil)
}

// NewClientTLS is NewClient with TLS when cfg is not nil (see DialTLS).
func NewClientTLS(ctx context.Context, nc net.Conn, exportName string, cfg *tls.Config) (*Client, error) {
	c := &Client{
		nc:         nc,
		br:         bufio.NewReaderSize(nc, 128<<10),
		tls:        cfg,
		pending:    make(map[uint64]*call),
		readerDone: make(chan struct{}),
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err := c.negotiate(exportName)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		c.nc.Close()
		return nil, err
	}
	nc.SetDeadline(time.Time{})
	c.bw = bufio.NewWriterSize(c.nc, 128<<10)
	go c.readReplies()
	return c, nil
}

// Size returns the export size in bytes.
func (c *Client) Size() int64 { return int64(c.size) }

// Flags returns the export's transmission flags.
func (c *Client) Flags() TransmissionFlags { return c.flags }

// ReadAt reads len(p) bytes at off. It implements io.ReaderAt.
func (c *Client) ReadAt(p []byte, off int64) (int, error) {
	if err := c.do("read", cmdRead, 0, off, len(p), nil, p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// WriteAt writes p at off; flags may hold FlagFUA.
func (c *Client) WriteAt(p []byte, off int64, flags CmdFlags) (int, error) {
	if err := c.do("write", cmdWrite, flags, off, len(p), p, nil); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush asks the server to make every write it has replied to durable.
func (c *Client) Flush() error { return c.do("flush", cmdFlush, 0, 0, 0, nil, nil) }

// Trim discards [off, off+length).
func (c *Client) Trim(off, length int64, fua bool) error {
	return c.do("trim", cmdTrim, fuaFlag(fua), off, int(length), nil, nil)
}

// Zero writes zeros over [off, off+length); noHole keeps the range allocated.
func (c *Client) Zero(off, length int64, noHole, fua bool) error {
	flags := fuaFlag(fua)
	if noHole {
		flags |= FlagNoHole
	}
	return c.do("write_zeroes", cmdWriteZeroes, flags, off, int(length), nil, nil)
}

// Cache asks the server to prefetch [off, off+length).
func (c *Client) Cache(off, length int64) error {
	return c.do("cache", cmdCache, 0, off, int(length), nil, nil)
}

// Command sends a request with no payload in either direction, with any
// type and flags: a tool for testing servers.
func (c *Client) Command(typ uint16, flags CmdFlags, off int64, length uint32) error {
	return c.do(fmt.Sprintf("command %d", typ), typ, flags, off, int(length), nil, nil)
}

func fuaFlag(fua bool) CmdFlags {
	if fua {
		return FlagFUA
	}
	return 0
}

// do sends one request and waits for its reply.
func (c *Client) do(op string, typ uint16, flags CmdFlags, off int64, length int, payload, read []byte) error {
	if off < 0 || length < 0 || length > math.MaxUint32 {
		return fmt.Errorf("nbdclient: %s: offset %d length %d out of range", op, off, length)
	}
	cl := callPool.Get().(*call)
	cl.op, cl.read = op, read
	h, err := c.register(cl)
	if err == nil {
		err = c.send(typ, flags, h, uint64(off), uint32(length), payload)
		if err != nil {
			c.fail(err)
		}
		<-cl.done
		err = cl.result()
	}
	*cl = call{done: cl.done}
	callPool.Put(cl)
	return err
}

func (cl *call) result() error {
	if cl.err != nil {
		return cl.err
	}
	if cl.errno != 0 {
		return &Error{Op: cl.op, Errno: errnoOf(cl.errno)}
	}
	return nil
}

// register gives cl a handle and records it as pending.
func (c *Client) register(cl *call) (uint64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, c.err
	}
	if c.closing {
		return 0, ErrClosed
	}
	h := c.handles.Add(1)
	c.pending[h] = cl
	return h, nil
}

// send writes one request. Concurrent senders share the buffer; the last one
// waiting flushes it, so requests sent together go out together.
func (c *Client) send(typ uint16, flags CmdFlags, h, off uint64, length uint32, payload []byte) error {
	var b [requestHeaderSize]byte
	binary.BigEndian.PutUint32(b[0:4], requestMagic)
	binary.BigEndian.PutUint16(b[4:6], uint16(flags))
	binary.BigEndian.PutUint16(b[6:8], typ)
	binary.BigEndian.PutUint64(b[8:16], h)
	binary.BigEndian.PutUint64(b[16:24], off)
	binary.BigEndian.PutUint32(b[24:28], length)
	c.writers.Add(1)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := c.bw.Write(b[:])
	if err == nil {
		_, err = c.bw.Write(payload)
	}
	if c.writers.Add(-1) == 0 && err == nil {
		err = c.bw.Flush()
	}
	if err != nil {
		return fmt.Errorf("nbdclient: sending request: %w", err)
	}
	return nil
}

// readReplies is the reader goroutine.
func (c *Client) readReplies() {
	defer close(c.readerDone)
	var h [replyHeaderSize]byte
	for {
		if _, err := io.ReadFull(c.br, h[:]); err != nil {
			c.fail(fmt.Errorf("nbdclient: reading reply: %w", err))
			return
		}
		if m := binary.BigEndian.Uint32(h[0:4]); m != simpleReplyMagic {
			c.fail(fmt.Errorf("nbdclient: bad reply magic %#08x", m))
			return
		}
		errno := binary.BigEndian.Uint32(h[4:8])
		handle := binary.BigEndian.Uint64(h[8:16])
		c.mu.Lock()
		cl := c.pending[handle]
		delete(c.pending, handle)
		c.mu.Unlock()
		if cl == nil {
			c.fail(fmt.Errorf("nbdclient: reply for unknown handle %d", handle))
			return
		}
		if errno == 0 && cl.read != nil {
			if _, err := io.ReadFull(c.br, cl.read); err != nil {
				cl.err = fmt.Errorf("nbdclient: reading %d bytes of read data: %w", len(cl.read), err)
				cl.done <- struct{}{}
				c.fail(cl.err)
				return
			}
		}
		cl.errno = errno
		cl.done <- struct{}{}
	}
}

// fail breaks the connection: every pending and later request gets err.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err == nil {
		if c.closing {
			err = ErrClosed
		}
		c.err = err
	}
	err = c.err
	pending := c.pending
	c.pending = make(map[uint64]*call)
	c.mu.Unlock()
	c.nc.Close()
	for _, cl := range pending {
		cl.err = err
		cl.done <- struct{}{}
	}
}

// Close sends NBD_CMD_DISC, lets the server answer the requests in flight
// (up to CloseTimeout) and closes the connection. Requests still pending
// then fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return nil
	}
	c.closing = true
	broken := c.err != nil
	c.mu.Unlock()
	if !broken {
		c.send(cmdDisc, 0, 0, 0, 0, nil)
	}
	t := time.NewTimer(CloseTimeout)
	defer t.Stop()
	select {
	case <-c.readerDone:
	case <-t.C:
	}
	c.fail(ErrClosed)
	<-c.readerDone
	return nil
}

var _ io.ReaderAt = (*Client)(nil)
