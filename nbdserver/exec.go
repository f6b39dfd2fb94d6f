package nbdserver

import (
	"errors"
	"io"
)

// exec runs a valid request against the Backend and records its errno.
func (c *conn) exec(r *request) {
	var err error
	switch r.typ {
	case cmdRead:
		err = c.read(r)
	case cmdWrite:
		err = c.write(r)
	case cmdFlush:
		err = c.srv.backend.Sync()
	case cmdTrim:
		err = c.syncIfFUA(r, c.srv.backend.Trim(int64(r.off), int64(r.length)))
	case cmdWriteZeroes:
		err = c.syncIfFUA(r, c.srv.backend.Zero(int64(r.off), int64(r.length), r.flags&cmdFlagNoHole != 0))
	case cmdCache:
		// A hint only: the data is read on demand anyway.
	}
	if err != nil {
		r.errno = errnoOf(err)
		c.srv.logBackendError(r, err)
	}
}

func (c *conn) read(r *request) error {
	if r.length == 0 {
		return nil
	}
	r.payload = getPayload(int(r.length))
	n, err := c.srv.backend.ReadAt(*r.payload, int64(r.off))
	if n == int(r.length) {
		return nil // io.ReaderAt may report io.EOF with a full read
	}
	putPayload(r.payload)
	r.payload = nil
	if err == nil || errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func (c *conn) write(r *request) error {
	if r.length == 0 {
		return nil
	}
	p := *r.payload
	var n int
	var err error
	if r.flags&cmdFlagFUA != 0 && c.srv.fua != nil {
		n, err = c.srv.fua.WriteAtFUA(p, int64(r.off))
	} else {
		n, err = c.srv.backend.WriteAt(p, int64(r.off))
		if err == nil && n == len(p) && r.flags&cmdFlagFUA != 0 {
			err = c.srv.backend.Sync()
		}
	}
	putPayload(r.payload)
	r.payload = nil
	if err == nil && n != len(p) {
		err = io.ErrShortWrite
	}
	return err
}

// syncIfFUA makes a successful TRIM or WRITE_ZEROES with FUA durable.
func (c *conn) syncIfFUA(r *request, err error) error {
	if err == nil && r.flags&cmdFlagFUA != 0 {
		err = c.srv.backend.Sync()
	}
	return err
}
