// Package nbdclient is a small pipelined NBD client for tests and tools.
//
// It negotiates with fixed-newstyle NBD_OPT_GO (falling back to
// NBD_OPT_EXPORT_NAME) and then lets many goroutines issue requests on one
// connection at once; a reader goroutine matches the replies by handle. A
// request the server refuses returns an *Error carrying the errno, so
// errors.Is(err, syscall.ENOSPC) works. DialTLS upgrades the connection
// with NBD_OPT_STARTTLS before anything else is negotiated. Simple replies
// only: structured replies and block status are not negotiated.
//
//	c, err := nbdclient.Dial(ctx, "127.0.0.1:10809", "disk")
//	if err != nil { ... }
//	defer c.Close()
//	_, err = c.WriteAt(buf, 0, nbdclient.FlagFUA)
//	_, err = c.ReadAt(buf, 4096)
//	err = c.Flush()
package nbdclient
