package nbdclient_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/nbdserver"
	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

func serve(t *testing.T, b nbdserver.Backend) (*nbdserver.Server, string) {
	t.Helper()
	s := nbdserver.New(nbdserver.Options{Name: "disk", Backend: b,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(l)
	t.Cleanup(func() { s.Shutdown(context.Background()) })
	return s, l.Addr().String()
}

func dial(t *testing.T, addr, name string) (*nbdclient.Client, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := nbdclient.Dial(ctx, addr, name)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func TestCommands(t *testing.T) {
	_, addr := serve(t, nbdserver.NewMemBackend(1<<20))
	c, err := dial(t, addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != 1<<20 || c.Flags()&nbdclient.FlagSendFlush == 0 || c.Flags()&nbdclient.FlagCanMultiConn == 0 {
		t.Fatalf("size %d flags %#x", c.Size(), c.Flags())
	}
	data := bytes.Repeat([]byte("nbd!"), 2048)
	if _, err := c.WriteAt(data, 100, nbdclient.FlagFUA); err != nil {
		t.Fatal(err)
	}
	if err := errors.Join(c.Flush(), c.Trim(100, 4, false), c.Zero(104, 4, true, true), c.Cache(0, 4096)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if _, err := c.ReadAt(got, 100); err != nil {
		t.Fatal(err)
	}
	if want := append(make([]byte, 8), data[8:]...); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
}

func TestErrors(t *testing.T) {
	_, addr := serve(t, nbdserver.NewMemBackend(1<<20))
	if _, err := dial(t, addr, "nope"); err == nil {
		t.Fatal("unknown export accepted")
	} else if oe := (*nbdclient.OptionError)(nil); !errors.As(err, &oe) || oe.Reply != 1<<31|6 ||
		!strings.HasPrefix(err.Error(), "nbdclient: NBD_OPT_GO refused (NBD_REP_ERR_UNKNOWN)") {
		t.Fatalf("unknown export: %v", err)
	}
	c, err := dial(t, addr, "")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.ReadAt(make([]byte, 2), 1<<20-1)
	var ne *nbdclient.Error
	if !errors.As(err, &ne) || ne.Op != "read" || !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("read past end: %v", err)
	}
	if _, err := c.WriteAt(make([]byte, 2), 1<<20-1, 0); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("write past end: %v", err)
	}
	if _, err := c.ReadAt(make([]byte, 2), 0); err != nil {
		t.Fatalf("connection broken after errors: %v", err)
	}
}

// TestConcurrentModel has goroutines write and read their own blocks at
// random through one Client and checks every read against a model.
func TestConcurrentModel(t *testing.T) {
	const workers, blocks, bs = 16, 16, 512
	mem := nbdserver.NewMemBackend(workers * blocks * bs)
	_, addr := serve(t, mem)
	c, err := dial(t, addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, workers*blocks*bs)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			for range 200 {
				off := (w*blocks + rng.IntN(blocks)) * bs
				if rng.IntN(2) == 0 {
					p := make([]byte, bs)
					for i := range p {
						p[i] = byte(rng.Uint32())
					}
					if _, err := c.WriteAt(p, int64(off), 0); err != nil {
						t.Error(err)
						return
					}
					copy(model[off:], p)
					continue
				}
				got := make([]byte, bs)
				if _, err := c.ReadAt(got, int64(off)); err != nil {
					t.Error(err)
					return
				}
				if !bytes.Equal(got, model[off:off+bs]) {
					t.Errorf("block at %d differs from the model", off)
					return
				}
			}
		})
	}
	wg.Wait()
	final := make([]byte, len(model))
	mem.ReadAt(final, 0)
	if !bytes.Equal(final, model) {
		t.Fatal("server holds other bytes than acknowledged")
	}
}

// gatedBackend blocks writes until the gate opens.
type gatedBackend struct {
	*nbdserver.MemBackend
	entered chan struct{}
	gate    chan struct{}
}

func (b *gatedBackend) WriteAt(p []byte, off int64) (int, error) {
	b.entered <- struct{}{}
	<-b.gate
	return b.MemBackend.WriteAt(p, off)
}

// TestCloseLetsInflightFinish closes the client while a write is in flight:
// the write is still acknowledged, then the client refuses new requests.
func TestCloseLetsInflightFinish(t *testing.T) {
	b := &gatedBackend{nbdserver.NewMemBackend(1 << 20), make(chan struct{}, 1), make(chan struct{})}
	_, addr := serve(t, b)
	c, err := dial(t, addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { _, err := c.WriteAt([]byte("late"), 0, 0); wrote <- err }()
	<-b.entered
	closed := make(chan error, 1)
	go func() { closed <- c.Close() }()
	time.Sleep(20 * time.Millisecond)
	close(b.gate)
	if err := <-wrote; err != nil {
		t.Fatalf("in-flight write: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(make([]byte, 1), 0); !errors.Is(err, nbdclient.ErrClosed) {
		t.Fatalf("request after Close: %v", err)
	}
}

// TestServerGone fails pending and later requests instead of hanging.
func TestServerGone(t *testing.T) {
	b := &gatedBackend{nbdserver.NewMemBackend(1 << 20), make(chan struct{}, 1), make(chan struct{})}
	s, addr := serve(t, b)
	c, err := dial(t, addr, "disk")
	if err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	go func() { _, err := c.WriteAt([]byte("x"), 0, 0); wrote <- err }()
	<-b.entered
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	s.Shutdown(ctx) // times out: the connection is cut under the write
	if err := <-wrote; err == nil {
		t.Fatal("write acknowledged although the connection was cut")
	}
	close(b.gate)
	if _, err := c.ReadAt(make([]byte, 1), 0); err == nil {
		t.Fatal("request on a dead connection succeeded")
	}
}

// TestExportNameFallback talks to a server that does not know NBD_OPT_GO.
func TestExportNameFallback(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go oldServer(t, l)
	c, err := dial(t, l.Addr().String(), "disk")
	if err != nil {
		t.Fatal(err)
	}
	if c.Size() != 12345 || c.Flags() != nbdclient.FlagHasFlags {
		t.Fatalf("size %d flags %#x", c.Size(), c.Flags())
	}
	got := make([]byte, 4)
	if _, err := c.ReadAt(got, 0); err != nil || string(got) != "old!" {
		t.Fatalf("read %q: %v", got, err)
	}
}

// oldServer answers NBD_OPT_GO with NBD_REP_ERR_UNSUP, accepts
// NBD_OPT_EXPORT_NAME with the 124 zero bytes, and serves one 4-byte read.
func oldServer(t *testing.T, l net.Listener) {
	nc, err := l.Accept()
	if err != nil {
		return
	}
	defer nc.Close()
	be := binary.BigEndian
	hello := be.AppendUint64(nil, 0x4e42444d41474943)
	hello = be.AppendUint64(hello, 0x49484156454F5054)
	nc.Write(be.AppendUint16(hello, 1)) // fixed newstyle, no NO_ZEROES
	buf := make([]byte, 4+16)
	io.ReadFull(nc, buf)
	opt, n := be.Uint32(buf[12:16]), be.Uint32(buf[16:20])
	io.ReadFull(nc, make([]byte, n))
	rep := be.AppendUint64(nil, 0x3e889045565a9)
	rep = be.AppendUint32(rep, opt)
	rep = be.AppendUint32(rep, 1<<31|1)
	nc.Write(be.AppendUint32(rep, 0))
	io.ReadFull(nc, buf[:16])
	io.ReadFull(nc, make([]byte, be.Uint32(buf[12:16])))
	reply := be.AppendUint64(nil, 12345)
	nc.Write(append(be.AppendUint16(reply, 1), make([]byte, 124)...))
	req := make([]byte, 28)
	io.ReadFull(nc, req)
	r := be.AppendUint32(nil, 0x67446698)
	r = be.AppendUint32(r, 0)
	nc.Write(append(be.AppendUint64(r, be.Uint64(req[8:16])), "old!"...))
	io.ReadFull(nc, req) // DISC
}
