package nbdserver

import (
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
)

func BenchmarkDecodeRequest(b *testing.B) {
	var h [requestHeaderSize]byte
	copy(h[:], requestBytes(cmdWrite, cmdFlagFUA, 42, 1<<20, 4096, nil))
	var r request
	b.ReportAllocs()
	for b.Loop() {
		if err := decodeRequest(&h, &r); err != nil {
			b.Fatal(err)
		}
		if r.check(1<<30) != 0 {
			b.Fatal("rejected")
		}
	}
}

// benchIO runs 4 KiB requests from 16 goroutines sharing one connection,
// so about 16 are in flight, against the memory backend over loopback TCP.
func benchIO(b *testing.B, write bool) {
	const size = 64 << 20
	_, addr := startServer(b, Options{Backend: NewMemBackend(size),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := dial(b, addr)
	var next atomic.Int64
	b.SetBytes(4096)
	b.ReportAllocs()
	b.SetParallelism(8) // 16 goroutines on 2 CPUs
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		p := make([]byte, 4096)
		for pb.Next() {
			off := (next.Add(1) * 4096) % size
			var err error
			if write {
				_, err = c.WriteAt(p, off, 0)
			} else {
				_, err = c.ReadAt(p, off)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkWrite4K(b *testing.B) { benchIO(b, true) }
func BenchmarkRead4K(b *testing.B)  { benchIO(b, false) }

// BenchmarkWrite4KQD1 is one request at a time: the round-trip latency.
func BenchmarkWrite4KQD1(b *testing.B) {
	_, addr := startServer(b, Options{Backend: NewMemBackend(1 << 20),
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	c := dial(b, addr)
	p := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.WriteAt(p, int64(i%256)*4096, 0); err != nil {
			b.Fatal(err)
		}
	}
}
