package nbdclient

import (
	"bufio"
	"context"
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
	c := &Client{nc: nc, br: bufio.NewReaderSize(nc, 4096)}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	defer nc.SetDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	err := c.negotiate(exportName)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	return int64(c.size), c.flags, err
}
