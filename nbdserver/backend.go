package nbdserver

import "github.com/pojntfx/go-nbd/pkg/backend"

// Backend is what the server exports: go-nbd's backend.Backend (io.ReaderAt,
// io.WriterAt, Size, Sync) extended with the two commands that change data
// without a payload.
//
// The server calls a Backend from many goroutines at once. It checks every
// request against Size before calling, so a Backend never sees an
// out-of-range offset from a client. Sync must make durable every write that
// has returned before Sync was called, on any connection (the server
// advertises CAN_MULTI_CONN). A write with NBD_CMD_FLAG_FUA is WriteAt followed
// by Sync, unless the Backend implements FUAWriter.
type Backend interface {
	backend.Backend

	// Trim discards [off, off+length); afterwards the range reads as zeros.
	Trim(off, length int64) error
	// Zero writes zeros over [off, off+length). With noHole the range must
	// stay allocated (NBD_CMD_FLAG_NO_HOLE); without it a hole may be punched.
	Zero(off, length int64, noHole bool) error
}

// AsyncWriter is implemented by Backends whose writes wait on something
// other than the CPU: a journal's writer, a peer's acknowledgement. The
// server then starts a WRITE from the connection's reader and replies from
// done, so no goroutine waits on each write and the replies of writes that
// end together leave in one system call.
//
// WriteAsync writes p at off, durably if fua is set (as WriteAtFUA would),
// and calls done exactly once when the write has ended, from any goroutine,
// possibly before WriteAsync returns. p stays unchanged until done is
// called. last says that no other request of the connection has arrived
// behind this one: nothing waits for the calling goroutine, so the Backend
// may do the work on it rather than wake another one. Otherwise WriteAsync
// may block only for back-pressure; done must not block.
type AsyncWriter interface {
	WriteAsync(p []byte, off int64, fua, last bool, done func(error))
}

// FUAWriter is implemented by Backends that can make one write durable more
// cheaply than WriteAt followed by a full Sync.
type FUAWriter interface {
	WriteAtFUA(p []byte, off int64) (int, error)
}
