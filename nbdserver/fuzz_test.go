package nbdserver

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"
)

func FuzzRequestHeader(f *testing.F) {
	f.Add(requestBytes(cmdRead, 0, 1, 0, 4096, nil), uint64(1<<20))
	f.Add(requestBytes(cmdWrite, cmdFlagFUA, 2, 1<<20-1, 2, nil), uint64(1<<20))
	f.Add(requestBytes(cmdWriteZeroes, cmdFlagNoHole|cmdFlagFUA, 3, 1<<64-1, 1<<32-1, nil), uint64(1<<64-1))
	f.Add([]byte("short"), uint64(0))
	f.Fuzz(func(t *testing.T, b []byte, size uint64) {
		if len(b) < requestHeaderSize {
			return
		}
		var h [requestHeaderSize]byte
		copy(h[:], b)
		var r request
		if err := decodeRequest(&h, &r); err != nil {
			return
		}
		if got := requestBytes(r.typ, r.flags, r.handle, r.off, r.length, nil); !bytes.Equal(got, h[:]) {
			t.Fatalf("decode/encode mismatch: % x vs % x", got, h)
		}
		errno := r.check(size)
		switch errno {
		case 0:
			if r.typ != cmdFlush && (r.off > size || r.off+uint64(r.length) > size || r.off+uint64(r.length) < r.off) {
				t.Fatalf("accepted out-of-range request %+v on size %d", r, size)
			}
			if (r.typ == cmdRead || r.typ == cmdWrite) && r.length > maxBlockSize {
				t.Fatalf("accepted oversize request %+v", r)
			}
		case errnoInval, errnoNoSpc:
		default:
			t.Fatalf("check returned errno %d", errno)
		}
	})
}

// FuzzNegotiation feeds arbitrary client bytes (negotiation and then
// requests) to a connection: the server must neither panic nor hang.
func FuzzNegotiation(f *testing.F) {
	hello := func(cflags byte) []byte { return []byte{0, 0, 0, cflags} }
	goOpt := optionBytes(optGo, infoData("", infoBlockSize))
	f.Add(hello(1))
	f.Add(append(hello(1), goOpt...))
	f.Add(append(append(hello(3), optionBytes(optList, nil)...), optionBytes(optAbort, nil)...))
	f.Add(append(append(hello(1), goOpt...), requestBytes(cmdWrite, 0, 1, 0, 4, []byte("abcd"))...))
	f.Add(append(append(hello(1), optionBytes(optExportName, []byte("disk"))...),
		requestBytes(cmdRead, 0, 1, 0, 512, nil)...))
	f.Add(append(append(hello(1), goOpt...), requestBytes(cmdWrite, 0, 1, 0, 1<<30, nil)...))
	f.Add(append(hello(1), optionBytes(optInfo, []byte{0xff, 0xff, 0xff, 0xff, 0, 0})...))
	s := New(Options{Name: "disk", Backend: NewMemBackend(64 << 10),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	f.Fuzz(func(t *testing.T, in []byte) {
		done := make(chan struct{})
		go func() {
			s.ServeConn(&fakeConn{r: bytes.NewReader(in)})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ServeConn hangs on % x", in)
		}
	})
}

// fakeConn is a net.Conn that reads a fixed input and discards writes.
type fakeConn struct{ r *bytes.Reader }

func (c *fakeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error)      { return len(p), nil }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }
