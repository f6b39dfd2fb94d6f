package nbdclient

import (
	"errors"
	"fmt"
	"syscall"
)

// ErrClosed is returned for requests on a closed Client.
var ErrClosed = errors.New("nbdclient: client closed")

// Error is an error value the server replied to a request with.
// errors.Is(err, syscall.EINVAL) and the like work through Unwrap.
type Error struct {
	Op    string // "read", "write", "flush", ...
	Errno syscall.Errno
}

func (e *Error) Error() string {
	return fmt.Sprintf("nbdclient: %s: server error %d (%v)", e.Op, int(e.Errno), e.Errno)
}

// Unwrap returns the errno.
func (e *Error) Unwrap() error { return e.Errno }

// errnoOf converts an NBD error value to the local errno. The protocol's
// values are Linux's, so this is the identity there.
func errnoOf(v uint32) syscall.Errno {
	switch v {
	case 1:
		return syscall.EPERM
	case 5:
		return syscall.EIO
	case 12:
		return syscall.ENOMEM
	case 22:
		return syscall.EINVAL
	case 28:
		return syscall.ENOSPC
	case 75:
		return syscall.EOVERFLOW
	case 95:
		return syscall.ENOTSUP
	case 108:
		return syscall.ESHUTDOWN
	}
	return syscall.Errno(v)
}

// OptionError is an error reply to an option during negotiation, such as
// NBD_REP_ERR_UNKNOWN for an export the server does not have or will not
// serve now.
type OptionError struct {
	Option  uint32 // the option refused, e.g. 7 for NBD_OPT_GO
	Reply   uint32 // the reply type, bit 31 set
	Message string // the server's explanation, possibly empty
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("nbdclient: option %d refused with reply %#x: %s", e.Option, e.Reply, e.Message)
}
