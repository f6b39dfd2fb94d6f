package nbdclient

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// negotiate runs the fixed-newstyle handshake on c.nc and fills in the
// export's size and flags. It uses NBD_OPT_GO and falls back to
// NBD_OPT_EXPORT_NAME for servers that do not know GO.
func (c *Client) negotiate(name string) error {
	br := c.br
	var hello [18]byte
	if _, err := io.ReadFull(br, hello[:]); err != nil {
		return fmt.Errorf("nbdclient: reading greeting: %w", err)
	}
	if binary.BigEndian.Uint64(hello[0:8]) != nbdMagic || binary.BigEndian.Uint64(hello[8:16]) != optMagic {
		return errors.New("nbdclient: not a newstyle NBD server")
	}
	hflags := binary.BigEndian.Uint16(hello[16:18])
	if hflags&flagFixedNewstyle == 0 {
		return errors.New("nbdclient: server does not support fixed newstyle negotiation")
	}
	cflags := flagCFixedNewstyle
	noZeroes := hflags&flagNoZeroes != 0
	if noZeroes {
		cflags |= flagCNoZeroes
	}
	b := binary.BigEndian.AppendUint32(nil, cflags)
	if c.tls != nil {
		if err := c.startTLS(b); err != nil {
			return err
		}
		b, br = nil, c.br
	}
	// NBD_OPT_GO: name length, name, no information requests.
	data := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	data = append(data, name...)
	data = binary.BigEndian.AppendUint16(data, 0)
	b = appendOption(b, optGo, data)
	if _, err := c.nc.Write(b); err != nil {
		return fmt.Errorf("nbdclient: sending NBD_OPT_GO: %w", err)
	}
	err := c.goReplies(br)
	var oe *OptionError
	if errors.As(err, &oe) && oe.Reply == repErrUnsup {
		return c.exportName(br, name, noZeroes)
	}
	return err
}

func appendOption(b []byte, opt uint32, data []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// startTLS sends prefix (the client flags) and NBD_OPT_STARTTLS, and on its
// acknowledgement makes the TLS handshake: from then on c.nc and c.br are
// TLS. A refusal ends the negotiation, since the caller asked for TLS.
func (c *Client) startTLS(prefix []byte) error {
	if _, err := c.nc.Write(appendOption(prefix, optStartTLS, nil)); err != nil {
		return fmt.Errorf("nbdclient: sending NBD_OPT_STARTTLS: %w", err)
	}
	var h [20]byte
	if _, err := io.ReadFull(c.br, h[:]); err != nil {
		return fmt.Errorf("nbdclient: reading NBD_OPT_STARTTLS reply: %w", err)
	}
	opt, typ, n := binary.BigEndian.Uint32(h[8:12]), binary.BigEndian.Uint32(h[12:16]), binary.BigEndian.Uint32(h[16:20])
	if binary.BigEndian.Uint64(h[0:8]) != repMagic || opt != optStartTLS || n > maxOptionReply {
		return errors.New("nbdclient: bad reply to NBD_OPT_STARTTLS")
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(c.br, msg); err != nil {
		return fmt.Errorf("nbdclient: reading NBD_OPT_STARTTLS reply: %w", err)
	}
	if typ != repAck {
		return &OptionError{Option: opt, Reply: typ, Message: string(msg)}
	}
	if c.br.Buffered() > 0 {
		return errors.New("nbdclient: server sent data after accepting NBD_OPT_STARTTLS")
	}
	tc := tls.Client(c.nc, c.tls)
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("nbdclient: TLS handshake: %w", err)
	}
	c.nc = tc
	c.br = bufio.NewReaderSize(tc, c.br.Size())
	return nil
}

// goReplies reads the replies to NBD_OPT_GO up to the final one.
func (c *Client) goReplies(br *bufio.Reader) error {
	haveExport := false
	for {
		var h [20]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return fmt.Errorf("nbdclient: reading option reply: %w", err)
		}
		if binary.BigEndian.Uint64(h[0:8]) != repMagic {
			return errors.New("nbdclient: bad option reply magic")
		}
		opt := binary.BigEndian.Uint32(h[8:12])
		typ := binary.BigEndian.Uint32(h[12:16])
		n := binary.BigEndian.Uint32(h[16:20])
		if opt != optGo {
			return fmt.Errorf("nbdclient: reply for option %d, want %d", opt, optGo)
		}
		if n > maxOptionReply {
			return fmt.Errorf("nbdclient: option reply of %d bytes", n)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(br, data); err != nil {
			return fmt.Errorf("nbdclient: reading option reply: %w", err)
		}
		switch {
		case typ == repAck:
			if !haveExport {
				return errors.New("nbdclient: NBD_OPT_GO acknowledged without NBD_INFO_EXPORT")
			}
			return nil
		case typ == repInfo:
			if len(data) >= 12 && binary.BigEndian.Uint16(data[0:2]) == infoExport {
				c.size = binary.BigEndian.Uint64(data[2:10])
				c.flags = TransmissionFlags(binary.BigEndian.Uint16(data[10:12]))
				haveExport = true
			}
		case typ&(1<<31) != 0:
			return &OptionError{Option: opt, Reply: typ, Message: string(data)}
		}
		// Other replies are ignored, as the protocol asks.
	}
}

// exportName ends negotiation the old way, with NBD_OPT_EXPORT_NAME.
func (c *Client) exportName(br *bufio.Reader, name string, noZeroes bool) error {
	if _, err := c.nc.Write(appendOption(nil, optExportName, []byte(name))); err != nil {
		return fmt.Errorf("nbdclient: sending NBD_OPT_EXPORT_NAME: %w", err)
	}
	n := 10
	if !noZeroes {
		n += 124
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return fmt.Errorf("nbdclient: export %q refused: %w", name, err)
	}
	c.size = binary.BigEndian.Uint64(b[0:8])
	c.flags = TransmissionFlags(binary.BigEndian.Uint16(b[8:10]))
	return nil
}
