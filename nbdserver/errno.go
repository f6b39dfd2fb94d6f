package nbdserver

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"time"
)

// errnoOf maps a Backend error to the NBD error value sent to the client.
// The errno values the protocol defines pass through; EDQUOT and EFBIG become
// ENOSPC as the specification asks; anything else is EIO.
func errnoOf(err error) uint32 {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return errnoIO
	}
	switch e {
	case syscall.EPERM:
		return errnoPerm
	case syscall.ENOMEM:
		return errnoNoMem
	case syscall.EINVAL:
		return errnoInval
	case syscall.ENOSPC, syscall.EDQUOT, syscall.EFBIG:
		return errnoNoSpc
	case syscall.EOVERFLOW:
		return errnoOverflow
	case syscall.ESHUTDOWN:
		return errnoShutdown
	}
	return errnoIO
}

// rateLimiter lets one log line through per interval and counts the rest, so
// a failing disk cannot flood the log from every request.
type rateLimiter struct {
	interval time.Duration

	mu         sync.Mutex // guards the fields below
	next       time.Time
	suppressed int
}

// allow reports whether a line may be logged now and how many were held back
// since the last one.
func (rl *rateLimiter) allow(now time.Time) (ok bool, suppressed int) {
	rl.mu.Lock()
	defer rl.mu.Unlock()
	if now.Before(rl.next) {
		rl.suppressed++
		return false, 0
	}
	rl.next = now.Add(rl.interval)
	suppressed, rl.suppressed = rl.suppressed, 0
	return true, suppressed
}

// logBackendError logs a failed Backend call, at most once per second.
func (s *Server) logBackendError(r *request, err error) {
	ok, suppressed := s.errLimit.allow(time.Now())
	if !ok {
		return
	}
	s.log.Warn("nbdserver: backend error", slog.String("cmd", cmdName(r.typ)),
		slog.Uint64("offset", r.off), slog.Uint64("length", uint64(r.length)),
		slog.Uint64("errno", uint64(r.errno)), slog.Any("err", err),
		slog.Int("suppressed", suppressed))
}

func cmdName(t uint16) string {
	switch t {
	case cmdRead:
		return "read"
	case cmdWrite:
		return "write"
	case cmdDisc:
		return "disc"
	case cmdFlush:
		return "flush"
	case cmdTrim:
		return "trim"
	case cmdCache:
		return "cache"
	case cmdWriteZeroes:
		return "write_zeroes"
	}
	return "unknown"
}
