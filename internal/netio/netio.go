// Package netio does socket I/O without waiting: the non-blocking write
// that both the NBD server's replies and the replication link's acks make
// from goroutines that must not block on a full socket, and the reader
// that polls for a request about to arrive instead of sleeping.
package netio

import (
	"syscall"
	"unsafe"
)

// TryWritev makes one writev of bufs on raw that does not wait for room in
// the socket, and returns the bytes it took: 0, with no error, when it took
// none. iov is scratch for the iovecs, kept by the caller between calls; it
// holds no references to bufs afterwards.
func TryWritev(raw syscall.RawConn, iov *[]syscall.Iovec, bufs [][]byte) (int, error) {
	v := (*iov)[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			e := syscall.Iovec{Base: &b[0]}
			e.SetLen(len(b))
			v = append(v, e)
		}
	}
	*iov = v
	if len(v) == 0 {
		return 0, nil
	}
	var n int
	var errno syscall.Errno
	err := raw.Write(func(fd uintptr) bool {
		for {
			r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&v[0])), uintptr(len(v)))
			if e == syscall.EINTR {
				continue
			}
			n, errno = int(r), e
			return true
		}
	})
	clear(v)
	switch {
	case err != nil:
		return 0, err
	case errno == syscall.EAGAIN:
		return 0, nil
	case errno != 0:
		return 0, errno
	}
	return n, nil
}
