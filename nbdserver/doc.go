// Package nbdserver serves one Backend as an NBD export over the
// fixed-newstyle protocol (NetworkBlockDevice/nbd doc/proto.md).
//
// It owns the wire: negotiation (NBD_OPT_GO, INFO, LIST, ABORT,
// EXPORT_NAME, and STARTTLS as Options.TLSMode says; unknown options are
// refused and negotiation goes on) and the transmission phase (READ, WRITE, FLUSH, TRIM, WRITE_ZEROES,
// CACHE, DISC, with FUA). It knows nothing of replication: it checks each
// request against the export size and calls the Backend.
//
// Each connection has a reader goroutine that decodes requests. At most
// Options.MaxInFlight requests are between being read and being replied to;
// at the bound the reader stops reading. A small READ or WRITE runs on the
// reader itself while recent calls show the Backend answering quickly
// (page-cache I/O); the replies of such a burst leave together in one
// writev. Everything else (FLUSH, TRIM, WRITE_ZEROES, large I/O, and small
// I/O on a Backend that waits, such as a mirrored write) runs on a goroutine
// of its own, so requests overlap, and is replied to as it completes, in
// whatever order. Replies are written by whoever has them when the socket is
// free, with one non-blocking writev; a writer goroutine per connection
// takes over whenever replies queue up, gathering all that are ready into
// one write.
//
// The export advertises HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM,
// SEND_WRITE_ZEROES and CAN_MULTI_CONN, and block sizes 1 / 4096 / 32 MiB.
// Only simple replies are used.
//
// A client cannot make the server hold much: payload bytes in flight are
// bounded per connection and in total (Options.MaxInFlightBytes) and a
// connection at its bound is not read, connections are bounded in number
// (MaxConnections), negotiation (with its TLS handshake) in time
// (HandshakeTimeout), and replies that the client does not take in time
// (ReplyTimeout) close its connection.
//
// Usage:
//
//	srv := nbdserver.New(nbdserver.Options{Name: "disk", Backend: b})
//	l, err := net.Listen("tcp", "127.0.0.1:10809")
//	if err != nil { ... }
//	go srv.Serve(l) // returns net.ErrClosed after Shutdown
//	...
//	err = srv.Shutdown(ctx) // in-flight requests finish and are replied to
package nbdserver
