package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// raw is a client speaking bytes, for tests of the wire format.
type raw struct {
	t testing.TB
	net.Conn
}

func dialRaw(t testing.TB, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &raw{t, c}
}

func (r *raw) send(b []byte) {
	r.t.Helper()
	if _, err := r.Write(b); err != nil {
		r.t.Fatalf("send: %v", err)
	}
}

func (r *raw) recv(n int) []byte {
	r.t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		r.t.Fatalf("recv %d bytes: %v", n, err)
	}
	return b
}

// greet reads the server greeting, checks it and sends the client flags.
func (r *raw) greet(cflags uint32) {
	r.t.Helper()
	b := r.recv(18)
	if binary.BigEndian.Uint64(b[0:8]) != nbdMagic || binary.BigEndian.Uint64(b[8:16]) != optMagic {
		r.t.Fatalf("bad greeting % x", b)
	}
	if f := binary.BigEndian.Uint16(b[16:18]); f != flagFixedNewstyle|flagNoZeroes {
		r.t.Fatalf("handshake flags %#x", f)
	}
	r.send(binary.BigEndian.AppendUint32(nil, cflags))
}

func optionBytes(opt uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint64(nil, optMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// infoData builds the data of NBD_OPT_INFO / NBD_OPT_GO.
func infoData(name string, reqs ...uint16) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
	b = append(b, name...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(reqs)))
	for _, q := range reqs {
		b = binary.BigEndian.AppendUint16(b, q)
	}
	return b
}

// optReply is one decoded option reply.
type optReply struct {
	opt, typ uint32
	data     []byte
}

// kind names a reply for comparison in tables: "ack", "server:NAME",
// "info:export", "info:block", "info:name", "err:unsup", ...
func (o optReply) kind() string {
	switch o.typ {
	case repAck:
		return "ack"
	case repServer:
		return "server:" + string(o.data[4:])
	case repInfo:
		switch binary.BigEndian.Uint16(o.data) {
		case infoExport:
			return "info:export"
		case infoBlockSize:
			return "info:block"
		case infoName:
			return "info:name=" + string(o.data[2:])
		}
		return "info:?"
	case repErrUnsup:
		return "err:unsup"
	case repErrPolicy:
		return "err:policy"
	case repErrInvalid:
		return "err:invalid"
	case repErrUnknown:
		return "err:unknown"
	case repErrTooBig:
		return "err:toobig"
	case repErrTLSReqd:
		return "err:tls_reqd"
	}
	return fmt.Sprintf("reply:%#x", o.typ)
}

func (r *raw) readReply() optReply {
	r.t.Helper()
	h := r.recv(20)
	if m := binary.BigEndian.Uint64(h[0:8]); m != repMagic {
		r.t.Fatalf("option reply magic %#x", m)
	}
	o := optReply{opt: binary.BigEndian.Uint32(h[8:12]), typ: binary.BigEndian.Uint32(h[12:16])}
	o.data = r.recv(int(binary.BigEndian.Uint32(h[16:20])))
	return o
}

func requestBytes(typ, flags uint16, handle, off uint64, length uint32, payload []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, requestMagic)
	b = binary.BigEndian.AppendUint16(b, flags)
	b = binary.BigEndian.AppendUint16(b, typ)
	b = binary.BigEndian.AppendUint64(b, handle)
	b = binary.BigEndian.AppendUint64(b, off)
	b = binary.BigEndian.AppendUint32(b, length)
	return append(b, payload...)
}

// readSimpleReply reads a simple reply header and returns errno and handle.
func (r *raw) readSimpleReply() (errno uint32, handle uint64) {
	r.t.Helper()
	h := r.recv(16)
	if m := binary.BigEndian.Uint32(h[0:4]); m != simpleReplyMagic {
		r.t.Fatalf("reply magic %#x", m)
	}
	return binary.BigEndian.Uint32(h[4:8]), binary.BigEndian.Uint64(h[8:16])
}

// checkTransmission reads 8 bytes at 0 and expects success.
func (r *raw) checkTransmission() {
	r.t.Helper()
	r.send(requestBytes(cmdRead, 0, 77, 0, 8, nil))
	if errno, h := r.readSimpleReply(); errno != 0 || h != 77 {
		r.t.Fatalf("read reply errno %d handle %d", errno, h)
	}
	r.recv(8)
}

// expectClosed expects the server to close the connection.
func (r *raw) expectClosed() {
	r.t.Helper()
	b := make([]byte, 1)
	// A server closing with request bytes still unread resets the connection.
	if n, err := r.Read(b); err != io.EOF && !errors.Is(err, syscall.ECONNRESET) {
		r.t.Fatalf("want EOF, got %d bytes, %v", n, err)
	}
}
