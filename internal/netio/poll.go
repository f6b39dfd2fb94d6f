package netio

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"
)

// PollReader reads from a socket and, when the wait for its data is likely
// to be short, polls the socket for up to Limit before it sleeps in the
// runtime's poller. A sleeping reader is woken through the poller and the
// scheduler, which on a virtual machine costs tens of microseconds: about as
// long as a client takes to send its next request after a reply. Polling
// trades that for a core kept busy while it waits; between tries it
// yields that core to any thread that has work on it.
//
// It polls only while the mean of its recent waits is below Limit (a client
// that pauses longer costs no polling after a few waits; a wait Want said
// no to does not count), when Want, if set, says so, and when fewer readers
// of the process poll than it has cores besides one. Kick wakes a read that
// slept because Want said no, for it to ask again. A read deadline set
// before Read is honoured (through SetReadDeadline if Kick is used); one
// that expires while polling ends the wait at the latest at Limit.
type PollReader struct {
	conn  net.Conn
	raw   syscall.RawConn // nil if conn has no descriptor: never polls
	limit time.Duration
	// Want, if set, is asked before each poll; false sleeps at once.
	Want func() bool
	mean time.Duration // moving mean of recent waits, each counted up to 2 x limit
	// Polled and Slept, if set, count the reads whose data came while
	// polling and those that slept in the poller (with polling off, none).
	Polled, Slept *atomic.Uint64
	// Between, if set, runs on the reading goroutine between two tries of
	// a poll and once as the poll ends: a reader that polls may do small
	// work there that would otherwise wake another goroutine. It must not
	// block for long.
	Between func()
	polling atomic.Bool // a poll runs now
	tried   tryState    // the last try's read, see try

	// kmu orders Kick against the sleep it cuts short and the deadline it
	// puts back.
	kmu      sync.Mutex
	deadline time.Time // the caller's read deadline
	sleeping bool      // Read sleeps, or is about to, in the poller
	kicked   bool      // Kick cut that sleep short
}

// NewPollReader reads conn, polling for up to limit; 0 never polls.
func NewPollReader(conn net.Conn, limit time.Duration) *PollReader {
	r := &PollReader{conn: conn, limit: max(limit, 0)}
	if sc, ok := conn.(syscall.Conn); ok && limit > 0 {
		r.raw, _ = sc.SyscallConn()
	}
	r.tried.fn = r.tried.read
	return r
}

// pollers counts readers polling now, across the process.
var pollers atomic.Int32

// Read reads into p as net.Conn does.
func (r *PollReader) Read(p []byte) (int, error) {
	if r.raw == nil || len(p) == 0 {
		return r.conn.Read(p)
	}
	start := time.Now()
	for {
		// A wait Want said no to is not one polling would have shortened:
		// it does not count in the mean.
		wanted := r.Want == nil || r.Want()
		if wanted && r.mean < r.limit && r.enter() {
			n, ok, err := r.poll(p, start)
			pollers.Add(-1)
			if ok {
				r.note(time.Since(start))
				count(r.Polled)
				return n, err
			}
		}
		n, err, kicked := r.sleep(p)
		if kicked && n == 0 && errors.Is(err, os.ErrDeadlineExceeded) {
			start = time.Now() // the wait that counts is the one after the Kick
			continue           // ask Want again
		}
		if wanted {
			r.note(time.Since(start))
		}
		count(r.Slept)
		return n, err
	}
}

// sleep reads p in the poller; kicked says a Kick came meanwhile.
func (r *PollReader) sleep(p []byte) (n int, err error, kicked bool) {
	r.kmu.Lock()
	r.sleeping = true
	r.kmu.Unlock()
	n, err = r.conn.Read(p)
	r.kmu.Lock()
	defer r.kmu.Unlock()
	r.sleeping = false
	if kicked = r.kicked; kicked {
		r.kicked = false
		r.conn.SetReadDeadline(r.deadline)
	}
	return n, err, kicked
}

// SetReadDeadline sets the connection's read deadline, as net.Conn does;
// use it rather than the connection's own while reading through r.
func (r *PollReader) SetReadDeadline(t time.Time) error {
	r.kmu.Lock()
	defer r.kmu.Unlock()
	r.deadline = t
	return r.conn.SetReadDeadline(t)
}

// Sleeping reports whether a Read sleeps in the poller now (also if
// kicked and not yet awake).
func (r *PollReader) Sleeping() bool {
	r.kmu.Lock()
	defer r.kmu.Unlock()
	return r.sleeping
}

// Kick makes a Read that sleeps because Want said no ask Want again, and
// poll if it now says yes: for when the reader's data just became likely to
// come soon (a request went out whose answer it reads). It cuts the sleep
// short through the read deadline, which Read then puts back.
func (r *PollReader) Kick() {
	if r.raw == nil {
		return
	}
	r.kmu.Lock()
	defer r.kmu.Unlock()
	if r.sleeping && !r.kicked {
		r.kicked = true
		r.conn.SetReadDeadline(time.Now())
	}
}

func count(c *atomic.Uint64) {
	if c != nil {
		c.Add(1)
	}
}

// yield gives the core to any other thread runnable on it, between two
// tries of a poll: the thread that will send the awaited data, or the one
// that has work to do meanwhile, waits for no scheduler tick nor time
// slice. With nothing else runnable it returns at once. A variable for
// tests.
var yield = func() { syscall.RawSyscall(syscall.SYS_SCHED_YIELD, 0, 0, 0) }

// Polling reports whether a Read polls now, and so runs Between soon: a
// caller that leaves work for Between stores what it left before it asks,
// and does the work itself if Polling says false (the poll's end runs
// Between once more after it stops saying true).
func (r *PollReader) Polling() bool { return r.polling.Load() }

// Yield gives the core to any other thread runnable on it, as a poll does
// between tries.
func Yield() { yield() }

// enter takes one of the process's polling places, if one is free.
func (r *PollReader) enter() bool {
	if pollers.Add(1) <= int32(runtime.GOMAXPROCS(0)-1) {
		return true
	}
	pollers.Add(-1)
	return false
}

// poll reads without waiting until data, an error or the limit comes; ok is
// false if the limit came first. Each try is one RawConn.Read call that
// returns at once: Between and the yield run outside it, so they may write
// to the connection, or have it closed, without waiting on this read.
func (r *PollReader) poll(p []byte, start time.Time) (n int, ok bool, err error) {
	if r.Between != nil {
		r.polling.Store(true)
		defer func() {
			// Work left for the poll after its last try is done here: the
			// store comes before the call, see Polling.
			r.polling.Store(false)
			r.Between()
		}()
	}
	for i := 1; ; i++ {
		n, ok, err = r.try(p)
		switch {
		case ok:
			return n, true, err
		case i%16 == 0 && time.Since(start) >= r.limit:
			return 0, false, nil // sleep in the poller
		}
		if r.Between != nil {
			r.Between()
		}
		yield()
	}
}

// try makes one read of p that does not wait; ok is false if nothing was
// there to read.
func (r *PollReader) try(p []byte) (n int, ok bool, err error) {
	t := &r.tried
	t.p = p
	rerr := r.raw.Read(t.fn)
	t.p = nil
	n, ok, errno := t.n, t.ok, t.errno
	switch {
	case rerr != nil: // closed, or the deadline had passed
		return 0, true, rerr
	case !ok:
		return 0, false, nil
	case errno != 0:
		return 0, true, &net.OpError{Op: "read", Net: r.conn.LocalAddr().Network(), Source: r.conn.LocalAddr(),
			Addr: r.conn.RemoteAddr(), Err: errno}
	case n == 0:
		return 0, true, io.EOF
	}
	return n, true, nil
}

// tryState is a try's read: its buffer, its result, and the RawConn.Read
// callback that makes it, made once with the reader, since a closure made
// at each try is an allocation at each try, and lone requests then pay
// for the collections it brings on.
type tryState struct {
	p     []byte
	n     int
	ok    bool
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// read is the callback: one read that does not wait.
func (t *tryState) read(fd uintptr) bool {
	for {
		// The socket does not block: no need to tell the scheduler.
		m, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&t.p[0])), uintptr(len(t.p)))
		if e != syscall.EINTR {
			t.n, t.errno, t.ok = int(m), e, e != syscall.EAGAIN
			return true
		}
	}
}

// note adds a wait to the moving mean (weight 1/8), counting a wait longer
// than twice the limit as twice the limit, so that one long pause does not
// stop polling for long.
func (r *PollReader) note(d time.Duration) {
	d = min(d, 2*r.limit)
	r.mean += (d - r.mean) / 8
}

// Batches is the history a Want rule keeps of what its reader read: a bit
// for each of the last 8 reads (or frames), set if that one carried more
// than one message, as from a peer that pipelines. The zero value has seen
// only lone messages.
type Batches uint8

// AllBatched is a history that turns lone only after 8 lone messages.
const AllBatched Batches = 0xff

// Note adds a read to the history: batched if it carried more than one
// message.
func (b *Batches) Note(batched bool) {
	*b <<= 1
	if batched {
		*b |= 1
	}
}

// Lone reports whether each of the last 8 reads carried one message.
func (b Batches) Lone() bool { return b == 0 }
