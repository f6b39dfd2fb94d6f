package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxOptionLength bounds the data of one option. Longer options are read and
// dropped, and refused with NBD_REP_ERR_TOO_BIG (NBD_OPT_EXPORT_NAME, which
// cannot be refused, closes the connection).
const maxOptionLength = 16 << 10

// errAbort ends a negotiation the client aborted with NBD_OPT_ABORT.
var errAbort = errors.New("nbdserver: client aborted negotiation")

// handshake runs the fixed-newstyle negotiation. It returns true once the
// client has chosen the export and the transmission phase begins.
func (c *conn) handshake() (bool, error) {
	if t := c.srv.opts.HandshakeTimeout; t > 0 {
		c.setDeadline(time.Now().Add(t))
	}
	ok, err := c.negotiate()
	if errors.Is(err, errAbort) {
		return false, nil
	}
	if err != nil || !ok {
		return false, err
	}
	c.setDeadline(time.Time{})
	return true, nil
}

func (c *conn) negotiate() (bool, error) {
	var hello [18]byte
	binary.BigEndian.PutUint64(hello[0:8], nbdMagic)
	binary.BigEndian.PutUint64(hello[8:16], optMagic)
	binary.BigEndian.PutUint16(hello[16:18], flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(hello[:]); err != nil {
		return false, fmt.Errorf("nbdserver: sending greeting: %w", err)
	}
	var cf [4]byte
	if _, err := io.ReadFull(c.br, cf[:]); err != nil {
		return false, fmt.Errorf("nbdserver: reading client flags: %w", err)
	}
	flags := binary.BigEndian.Uint32(cf[:])
	if flags&^(flagCFixedNewstyle|flagCNoZeroes) != 0 {
		return false, fmt.Errorf("nbdserver: unknown client flags %#x", flags)
	}
	c.noZero = flags&flagCNoZeroes != 0
	for {
		opt, data, err := c.readOption()
		if err != nil {
			return false, err
		}
		done, err := c.option(opt, data)
		if err == nil {
			err = c.sendOptionReplies()
		}
		if err != nil || done {
			return done, err
		}
	}
}

// readOption reads one option. data is nil for an option longer than
// maxOptionLength, whose data has been consumed.
func (c *conn) readOption() (opt uint32, data []byte, err error) {
	var h [optHeaderSize]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return 0, nil, fmt.Errorf("nbdserver: reading option: %w", err)
	}
	if m := binary.BigEndian.Uint64(h[0:8]); m != optMagic {
		return 0, nil, fmt.Errorf("nbdserver: bad option magic %#016x", m)
	}
	opt = binary.BigEndian.Uint32(h[8:12])
	n := binary.BigEndian.Uint32(h[12:16])
	if n > maxOptionLength {
		if opt == optExportName {
			return 0, nil, fmt.Errorf("nbdserver: export name of %d bytes", n)
		}
		if _, err := c.br.Discard(int(n)); err != nil {
			return 0, nil, fmt.Errorf("nbdserver: discarding option %d: %w", opt, err)
		}
		return opt, nil, nil
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(c.br, data); err != nil {
		return 0, nil, fmt.Errorf("nbdserver: reading option %d data: %w", opt, err)
	}
	return opt, data, nil
}

// option answers one option, gathering the replies in c.hbuf. It returns
// true when transmission begins (GO or EXPORT_NAME accepted).
func (c *conn) option(opt uint32, data []byte) (bool, error) {
	if c.tlsRequired(opt) {
		if opt == optExportName {
			return false, errors.New("nbdserver: NBD_OPT_EXPORT_NAME before NBD_OPT_STARTTLS, and TLS is required")
		}
		c.optionReply(opt, repErrTLSReqd, []byte("TLS is required: send NBD_OPT_STARTTLS first"))
		return false, nil
	}
	if data == nil {
		c.optionReply(opt, repErrTooBig, []byte("option too long"))
		return false, nil
	}
	switch opt {
	case optExportName:
		return c.exportName(string(data))
	case optAbort:
		c.optionReply(opt, repAck, nil)
		if err := c.sendOptionReplies(); err != nil {
			return false, err
		}
		return false, errAbort
	case optList:
		c.list(data)
	case optStartTLS:
		return false, c.startTLS(data)
	case optInfo, optGo:
		return c.infoOrGo(opt, data), nil
	default:
		c.optionReply(opt, repErrUnsup, nil)
	}
	return false, nil
}

// sendOptionReplies writes the gathered option replies.
func (c *conn) sendOptionReplies() error {
	if len(c.hbuf) == 0 {
		return nil
	}
	_, err := c.nc.Write(c.hbuf)
	c.hbuf = c.hbuf[:0]
	if err != nil {
		return fmt.Errorf("nbdserver: sending option reply: %w", err)
	}
	return nil
}
