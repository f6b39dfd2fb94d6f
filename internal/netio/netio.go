// Package netio does socket I/O without waiting: the non-blocking write
// that both the NBD server's replies and the replication link's acks make
// from goroutines that must not block on a full socket, and the reader
// that polls for a request about to arrive instead of sleeping.
package netio

import (
	"syscall"
	"unsafe"
)

// Writev makes writevs on one socket that do not wait for room in it. Its
// iovecs and its RawConn.Write callback are made once, with it: a closure
// made at each write is an allocation at each reply, and lone requests pay
// for the collections it brings on. One writer at a time.
type Writev struct {
	raw   syscall.RawConn
	iov   []syscall.Iovec
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// NewWritev writes on raw.
func NewWritev(raw syscall.RawConn) *Writev {
	w := &Writev{raw: raw}
	w.fn = w.writev
	return w
}

// Try makes one writev of bufs and returns the bytes the socket took: 0,
// with no error, when it took none. It keeps no reference to bufs.
func (w *Writev) Try(bufs [][]byte) (int, error) {
	v := w.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			e := syscall.Iovec{Base: &b[0]}
			e.SetLen(len(b))
			v = append(v, e)
		}
	}
	if len(v) == 0 {
		return 0, nil
	}
	w.iov = v
	err := w.raw.Write(w.fn)
	clear(v)
	switch {
	case err != nil:
		return 0, err
	case w.errno == syscall.EAGAIN:
		return 0, nil
	case w.errno != 0:
		return 0, w.errno
	}
	return w.n, nil
}

// writev is the callback: one writev of iov.
func (w *Writev) writev(fd uintptr) bool {
	for {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
		if e != syscall.EINTR {
			w.n, w.errno = int(r), e
			return true
		}
	}
}
