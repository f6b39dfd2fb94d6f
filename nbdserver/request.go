package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// errBadMagic reports a request header that does not start with the request
// magic: the stream is out of sync and the connection must close.
var errBadMagic = errors.New("nbdserver: bad request magic")

// request is one transmission-phase request, from its header to its reply.
// It is owned by one goroutine at a time: the reader, then the goroutine that
// runs it (maybe the reader), then the reply writer, which frees it.
type request struct {
	handle  uint64
	off     uint64
	length  uint32
	typ     uint16
	flags   uint16
	errno   uint32                // error to reply with; 0 is success
	charged bool                  // its length counts in the in-flight byte bounds
	payload *[]byte               // write data until applied; read data until replied
	hdr     [replyHeaderSize]byte // the reply header when sent on its own
	// An async WRITE's connection, and its completion (asyncDone), bound
	// once, when the pool made the request: a closure made per write is
	// an allocation per write.
	c        *conn
	doneFunc func(error)
}

var requestPool sync.Pool

func init() {
	requestPool.New = func() any {
		r := new(request)
		r.doneFunc = r.asyncDone
		return r
	}
}

func newRequest() *request { return requestPool.Get().(*request) }

func freeRequest(r *request) {
	putPayload(r.payload)
	*r = request{doneFunc: r.doneFunc}
	requestPool.Put(r)
}

// decodeRequest parses a request header:
//
//	magic u32 | flags u16 | type u16 | handle u64 | offset u64 | length u32
func decodeRequest(b *[requestHeaderSize]byte, r *request) error {
	if m := binary.BigEndian.Uint32(b[0:4]); m != requestMagic {
		return fmt.Errorf("%w %#08x", errBadMagic, m)
	}
	r.flags = binary.BigEndian.Uint16(b[4:6])
	r.typ = binary.BigEndian.Uint16(b[6:8])
	r.handle = binary.BigEndian.Uint64(b[8:16])
	r.off = binary.BigEndian.Uint64(b[16:24])
	r.length = binary.BigEndian.Uint32(b[24:28])
	return nil
}

// hasPayload tells whether length bytes of data follow the header. Only
// WRITE carries data, whether or not the request is valid.
func (r *request) hasPayload() bool { return r.typ == cmdWrite }

// check validates r against an export of size bytes and returns the errno to
// reply with, or 0 if the request can run. DISC is handled before check.
func (r *request) check(size uint64) uint32 {
	allowed := cmdFlagFUA // valid on every command once SEND_FUA is advertised
	switch r.typ {
	case cmdRead, cmdWrite:
		if r.length > maxBlockSize {
			return errnoInval
		}
	case cmdWriteZeroes:
		allowed |= cmdFlagNoHole
	case cmdFlush, cmdTrim, cmdCache:
	default:
		return errnoInval
	}
	if r.flags&^allowed != 0 {
		return errnoInval
	}
	if r.typ == cmdFlush {
		return 0 // offset and length are reserved
	}
	if r.off > size || uint64(r.length) > size-r.off {
		if r.typ == cmdWrite {
			return errnoNoSpc
		}
		return errnoInval
	}
	return 0
}

// appendReplyHeader appends r's simple reply header:
//
//	magic u32 | error u32 | handle u64
func appendReplyHeader(b []byte, r *request) []byte {
	b = binary.BigEndian.AppendUint32(b, simpleReplyMagic)
	b = binary.BigEndian.AppendUint32(b, r.errno)
	return binary.BigEndian.AppendUint64(b, r.handle)
}
