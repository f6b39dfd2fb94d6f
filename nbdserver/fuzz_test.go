package nbdserver

import (
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/internal/tlspsk"
	"github.com/nbdmirror/nbdmirror/internal/tlstest"
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

// fakeConn is a net.Conn that reads a fixed input and keeps what is written
// in w, if set.
type fakeConn struct {
	r *bytes.Reader
	w *bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c *fakeConn) Write(p []byte) (int, error) {
	if c.w != nil {
		c.w.Write(p)
	}
	return len(p), nil
}
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return fakeAddr{} }
func (c *fakeConn) RemoteAddr() net.Addr             { return fakeAddr{} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }

// FuzzNegotiationTLS feeds arbitrary client bytes to a server in each TLS
// mode, with a certificate or with pre-shared keys (the first byte picks
// which) and checks what it answered in the clear:
// with "require", every option but STARTTLS and ABORT is refused with
// NBD_REP_ERR_TLS_REQD and transmission never starts (the fuzzer cannot
// finish a TLS handshake); with "on", nothing is refused for want of TLS;
// with "off", STARTTLS is never accepted.
func FuzzNegotiationTLS(f *testing.F) {
	hello := func(mode, cflags byte) []byte { return []byte{mode, 0, 0, 0, cflags} }
	startTLS := optionBytes(optStartTLS, nil)
	goOpt := optionBytes(optGo, infoData("", infoBlockSize))
	for mode := range byte(5) {
		f.Add(append(hello(mode, 1), startTLS...))
		f.Add(append(append(hello(mode, 1), goOpt...), startTLS...))
		f.Add(append(append(hello(mode, 3), optionBytes(optList, nil)...), optionBytes(optAbort, nil)...))
		f.Add(append(append(hello(mode, 1), startTLS...), goOpt...))
		f.Add(append(append(hello(mode, 1), optionBytes(optStartTLS, []byte("x"))...), optionBytes(optExportName, nil)...))
		f.Add(append(append(hello(mode, 1), startTLS...), 0x16, 3, 1, 0, 5, 1, 0, 0, 1, 0))
	}
	cert := tlstest.NewCA(f, "fuzz CA")
	certPEM, keyPEM := cert.Issue(f, "fuzz server", true)
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		f.Fatal(err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{pair}}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	// Servers 0-2: off, on and require with a certificate; 3 and 4: on
	// and require with pre-shared keys.
	var servers [5]*Server
	modes := [5]TLSMode{TLSOff, TLSOn, TLSRequire, TLSOn, TLSRequire}
	for i := range servers {
		o := Options{Name: "disk", Backend: NewMemBackend(64 << 10), Logger: quiet, TLSMode: modes[i],
			HandshakeTimeout: -1}
		switch {
		case i >= 3:
			o.TLSPSK = tlspsk.Keys{"alice": []byte("fuzz key")}
		case o.TLSMode != TLSOff:
			o.TLS = cfg
		}
		servers[i] = New(o)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		mode, s := modes[in[0]%5], servers[in[0]%5]
		before := s.Stats().Connections
		out := &bytes.Buffer{}
		done := make(chan struct{})
		go func() {
			s.ServeConn(&fakeConn{r: bytes.NewReader(in[1:]), w: out})
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatalf("ServeConn hangs on % x", in)
		}
		checkClearReplies(t, mode, out.Bytes())
		if mode == TLSRequire && s.Stats().Connections != before {
			t.Fatalf("transmission began without TLS on % x", in)
		}
	})
}

// checkClearReplies parses the option replies a server sent before TLS.
func checkClearReplies(t *testing.T, mode TLSMode, out []byte) {
	if len(out) < 18 {
		return
	}
	for b := out[18:]; len(b) >= repHeaderSize; {
		if binary.BigEndian.Uint64(b) != repMagic {
			return // the export's data after NBD_OPT_EXPORT_NAME
		}
		opt, typ := binary.BigEndian.Uint32(b[8:]), binary.BigEndian.Uint32(b[12:])
		b = b[min(len(b), repHeaderSize+int(binary.BigEndian.Uint32(b[16:]))):]
		switch {
		case mode == TLSRequire && opt != optStartTLS && opt != optAbort && typ != repErrTLSReqd:
			t.Fatalf("option %d answered with %#x before TLS", opt, typ)
		case mode != TLSRequire && typ == repErrTLSReqd:
			t.Fatalf("option %d refused for want of TLS in mode %v", opt, mode)
		case mode == TLSOff && opt == optStartTLS && typ == repAck:
			t.Fatal("STARTTLS accepted with TLS off")
		case opt == optStartTLS && typ == repAck:
			return // TLS records follow
		}
	}
}
