package nbdclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"time"
)

// Negotiate runs the handshake for exportName on nc and returns the export's
// size and transmission flags, leaving nc at the start of the transmission
// phase for another owner, such as the kernel's nbd driver (NBD_SET_SOCK).
// The server sends nothing after its last option reply until it gets a
// request, so no byte of the transmission phase is read here. nc is not
// closed on error.
func Negotiate(ctx context.Context, nc net.Conn, exportName string) (int64, TransmissionFlags, error) {
	_, size, flags, err := NegotiateTLS(ctx, nc, exportName, nil)
	return size, flags, err
}

// NegotiateTLS is Negotiate with TLS when cfg is not nil (STARTTLS first,
// as in DialTLS). It returns the connection the transmission phase goes on:
// the TLS one over nc, or nc itself without cfg.
func NegotiateTLS(ctx context.Context, nc net.Conn, exportName string, cfg *tls.Config) (net.Conn, int64, TransmissionFlags, error) {
	c := &Client{nc: nc, br: bufio.NewReaderSize(nc, 4096), tls: cfg}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	defer nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err := c.negotiate(exportName)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	return c.nc, int64(c.size), c.flags, err
}
