package nbdserver

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"syscall"
	"testing"

	"github.com/nbdmirror/nbdmirror/nbdserver/nbdclient"
)

func pattern(n int, seed uint64) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

func TestWriteReadBack(t *testing.T) {
	s, addr := startServer(t, Options{Backend: NewMemBackend(64 << 20)})
	c := dial(t, addr)
	if c.Size() != 64<<20 {
		t.Fatalf("size %d", c.Size())
	}
	for i, tc := range []struct {
		off int64
		n   int
	}{{0, 1}, {1, 4095}, {4096, 4096}, {12345, 70000}, {1 << 20, 1 << 20}, {0, 32 << 20}, {64<<20 - 3, 3}, {100, 0}} {
		want := pattern(tc.n, uint64(i))
		if _, err := c.WriteAt(want, tc.off, 0); err != nil {
			t.Fatalf("write %d@%d: %v", tc.n, tc.off, err)
		}
		got := make([]byte, tc.n)
		if _, err := c.ReadAt(got, tc.off); err != nil {
			t.Fatalf("read %d@%d: %v", tc.n, tc.off, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("read back %d@%d differs", tc.n, tc.off)
		}
	}
	st := s.Stats()
	if st.Writes != 8 || st.Reads != 8 || st.Errors != 0 || st.BytesWritten != st.BytesRead || st.Connections != 1 {
		t.Fatalf("stats %+v", st)
	}
	if s.Connections() != 1 {
		t.Fatalf("Connections() = %d", s.Connections())
	}
}

func TestDurability(t *testing.T) {
	tb := newTestBackend(1 << 20)
	fb := &fuaBackend{testBackend: newTestBackend(1 << 20)}
	s, addr := startServer(t, Options{Backend: tb})
	_, faddr := startServer(t, Options{Backend: fb})
	c, fc := dial(t, addr), dial(t, faddr)
	buf := make([]byte, 4096)

	steps := []struct {
		name string
		do   func(c *nbdclient.Client) error
		// syncs wanted after the step on tb and on fb, and WriteAtFUA calls on fb
		syncs, fuaSyncs, fuaWrites int64
	}{
		{"plain write", func(c *nbdclient.Client) error { _, err := c.WriteAt(buf, 0, 0); return err }, 0, 0, 0},
		{"fua write", func(c *nbdclient.Client) error { _, err := c.WriteAt(buf, 0, nbdclient.FlagFUA); return err }, 1, 0, 1},
		{"flush", func(c *nbdclient.Client) error { return c.Flush() }, 2, 1, 1},
		{"fua trim", func(c *nbdclient.Client) error { return c.Trim(0, 4096, true) }, 3, 2, 1},
		{"fua zero", func(c *nbdclient.Client) error { return c.Zero(0, 4096, true, true) }, 4, 3, 1},
		{"plain trim and zero", func(c *nbdclient.Client) error {
			return errors.Join(c.Trim(0, 4096, false), c.Zero(0, 4096, false, false))
		}, 4, 3, 1},
	}
	for _, st := range steps {
		if err := errors.Join(st.do(c), st.do(fc)); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := [3]int64{tb.syncs.Load(), fb.syncs.Load(), fb.fuaWrites.Load()}; got != [3]int64{st.syncs, st.fuaSyncs, st.fuaWrites} {
			t.Fatalf("after %s: syncs %d, FUAWriter syncs %d, WriteAtFUA %d; want %d %d %d",
				st.name, got[0], got[1], got[2], st.syncs, st.fuaSyncs, st.fuaWrites)
		}
	}
	want := Stats{Writes: 2, FUAWrites: 1, Flushes: 1, Trims: 2, Zeroes: 2, BytesWritten: 8192, Connections: 1}
	if got := s.Stats(); got != want {
		t.Fatalf("Stats() = %+v, want %+v", got, want)
	}
}

func TestTrimAndZeroReadBackZeros(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	c := dial(t, addr)
	ones := bytes.Repeat([]byte{0xff}, 1<<20)
	for _, tc := range []struct {
		name string
		do   func() error
	}{
		{"trim", func() error { return c.Trim(4096, 8192, false) }},
		{"zero", func() error { return c.Zero(4096, 8192, false, false) }},
		{"zero no hole", func() error { return c.Zero(4096, 8192, true, false) }},
	} {
		if _, err := c.WriteAt(ones, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := tc.do(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got := make([]byte, 16384)
		if _, err := c.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		want := append(append(bytes.Repeat([]byte{0xff}, 4096), make([]byte, 8192)...), bytes.Repeat([]byte{0xff}, 4096)...)
		if !bytes.Equal(got, want) {
			t.Fatalf("%s: range not zeroed exactly", tc.name)
		}
	}
}

func TestRequestErrors(t *testing.T) {
	const size = 1 << 20
	s, addr := startServer(t, Options{Backend: NewMemBackend(size)})
	c := dial(t, addr)
	big := make([]byte, maxBlockSize+1)
	tests := []struct {
		name string
		do   func() error
		want syscall.Errno
	}{
		{"read past end", func() error { _, err := c.ReadAt(make([]byte, 2), size-1); return err }, syscall.EINVAL},
		{"read offset past end", func() error { _, err := c.ReadAt(make([]byte, 1), 1<<40); return err }, syscall.EINVAL},
		{"write past end", func() error { _, err := c.WriteAt(make([]byte, 4096), size-4095, 0); return err }, syscall.ENOSPC},
		{"trim past end", func() error { return c.Trim(size, 1, false) }, syscall.EINVAL},
		{"zero past end", func() error { return c.Zero(size-1, 2, false, false) }, syscall.EINVAL},
		{"cache past end", func() error { return c.Cache(size, 1) }, syscall.EINVAL},
		{"oversize write", func() error { _, err := c.WriteAt(big, 0, 0); return err }, syscall.EINVAL},
		{"oversize read", func() error { _, err := c.ReadAt(big, 0); return err }, syscall.EINVAL},
		{"unknown command", func() error { return c.Command(99, 0, 0, 0) }, syscall.EINVAL},
		{"block status without negotiation", func() error { return c.Command(7, 0, 0, 512) }, syscall.EINVAL},
		{"unknown flag", func() error { return c.Command(cmdFlush, 1<<5, 0, 0) }, syscall.EINVAL},
		{"no hole on write", func() error { _, err := c.WriteAt(make([]byte, 512), 0, nbdclient.FlagNoHole); return err }, syscall.EINVAL},
		{"df on read", func() error { return c.Command(cmdRead, 1<<2, 0, 0) }, syscall.EINVAL},
		{"zero-length read at end", func() error { _, err := c.ReadAt(nil, size); return err }, 0},
		{"zero-length write", func() error { _, err := c.WriteAt(nil, 0, nbdclient.FlagFUA); return err }, 0},
		{"fua on read is ignored", func() error { return c.Command(cmdRead, nbdclient.FlagFUA, 0, 0) }, 0},
		{"cache", func() error { return c.Cache(0, size) }, 0},
		{"trim over max block size", func() error { return c.Trim(0, size, false) }, 0},
	}
	for _, tc := range tests {
		err := tc.do()
		var ne *nbdclient.Error
		switch {
		case tc.want == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.want != 0 && (!errors.Is(err, tc.want) || !errors.As(err, &ne)):
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		// The connection goes on.
		if _, err := c.WriteAt([]byte("ok"), 10, 0); err != nil {
			t.Fatalf("after %s: %v", tc.name, err)
		}
	}
	if st := s.Stats(); st.Errors != 13 {
		t.Errorf("Errors = %d, want 13", st.Errors)
	}
}

// TestOffsetOverflow sends offset+length past 2^64 on the wire.
func TestOffsetOverflow(t *testing.T) {
	_, addr := startServer(t, Options{Backend: NewMemBackend(1 << 20)})
	r := dialRaw(t, addr)
	r.greet(flagCFixedNewstyle | flagCNoZeroes)
	r.send(optionBytes(optExportName, nil))
	r.recv(10)
	r.send(requestBytes(cmdRead, 0, 1, 1<<64-1, 2, nil))
	r.send(requestBytes(cmdWrite, 0, 2, 1<<64-1, 2, []byte("xy")))
	for _, want := range []struct {
		errno  uint32
		handle uint64
	}{{errnoInval, 1}, {errnoNoSpc, 2}} {
		if errno, h := r.readSimpleReply(); errno != want.errno || h != want.handle {
			t.Fatalf("reply errno %d handle %d, want %d %d", errno, h, want.errno, want.handle)
		}
	}
	r.checkTransmission()
}

func TestBackendErrors(t *testing.T) {
	tb := newTestBackend(1 << 20)
	tb.fail = func(op string, off int64) error {
		switch off {
		case 4096:
			return fmt.Errorf("disk full: %w", syscall.ENOSPC)
		case 8192:
			return errors.New("something broke")
		case 12288:
			return syscall.EDQUOT
		}
		return nil
	}
	_, addr := startServer(t, Options{Backend: tb})
	c := dial(t, addr)
	p := make([]byte, 512)
	for _, tc := range []struct {
		off  int64
		want syscall.Errno
	}{{4096, syscall.ENOSPC}, {8192, syscall.EIO}, {12288, syscall.ENOSPC}} {
		if _, err := c.WriteAt(p, tc.off, 0); !errors.Is(err, tc.want) {
			t.Errorf("write at %d: %v, want %v", tc.off, err, tc.want)
		}
		if _, err := c.ReadAt(p, tc.off); !errors.Is(err, tc.want) {
			t.Errorf("read at %d: %v, want %v", tc.off, err, tc.want)
		}
		if err := c.Trim(tc.off, 512, false); !errors.Is(err, tc.want) {
			t.Errorf("trim at %d: %v, want %v", tc.off, err, tc.want)
		}
		if _, err := c.ReadAt(p, 0); err != nil {
			t.Fatalf("connection broken after error at %d: %v", tc.off, err)
		}
	}
}

func TestConcurrentRequests(t *testing.T) {
	const workers, per, bs = 32, 40, 4096
	_, addr := startServer(t, Options{Backend: NewMemBackend(workers * per * bs)})
	c := dial(t, addr)
	parallel(t, workers, func(w int) error {
		for i := range per {
			if err := writeReadBack(c, int64((w*per+i)*bs), bs, 0); err != nil {
				return err
			}
		}
		return nil
	})
}
