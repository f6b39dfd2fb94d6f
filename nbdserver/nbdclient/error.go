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
	msg := fmt.Sprintf("nbdclient: %s refused (%s)", optionName(e.Option), replyName(e.Reply))
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// optionName is the spec's name of an option, or its number.
func optionName(opt uint32) string {
	names := [...]string{1: "EXPORT_NAME", 2: "ABORT", 3: "LIST", 5: "STARTTLS", 6: "INFO", 7: "GO",
		8: "STRUCTURED_REPLY", 9: "LIST_META_CONTEXT", 10: "SET_META_CONTEXT"}
	if int(opt) < len(names) && names[opt] != "" {
		return "NBD_OPT_" + names[opt]
	}
	return fmt.Sprintf("option %d", opt)
}

// replyName is the spec's name of an error reply, or its number.
func replyName(rep uint32) string {
	names := [...]string{1: "UNSUP", 2: "POLICY", 3: "INVALID", 4: "PLATFORM", 5: "TLS_REQD",
		6: "UNKNOWN", 7: "SHUTDOWN", 8: "BLOCK_SIZE_REQD", 9: "TOO_BIG"}
	if n := rep &^ (1 << 31); rep&(1<<31) != 0 && int(n) < len(names) && names[n] != "" {
		return "NBD_REP_ERR_" + names[n]
	}
	return fmt.Sprintf("reply %#x", rep)
}
