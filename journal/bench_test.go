package journal

import (
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// fileDisk is a Disk on a real file: pwrite, fallocate, fdatasync.
type fileDisk struct{ f *os.File }

func newFileDisk(b *testing.B, size int64) *fileDisk {
	f, err := os.OpenFile(b.TempDir()+"/disk.img", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return &fileDisk{f: f}
}

func (d *fileDisk) WriteAt(p []byte, off int64) (int, error) { return d.f.WriteAt(p, off) }
func (d *fileDisk) Sync() error                              { return unix.Fdatasync(int(d.f.Fd())) }
func (d *fileDisk) Trim(off, n int64) error {
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
}
func (d *fileDisk) Zero(off, n int64, _ bool) error {
	return unix.Fallocate(int(d.f.Fd()), unix.FALLOC_FL_ZERO_RANGE, off, n)
}

const benchDiskSize = 1 << 30

func openBench(b *testing.B) (*Journal, *fileDisk) {
	return openBenchWith(b, Options{Logger: quiet})
}

func openBenchWith(b *testing.B, o Options) (*Journal, *fileDisk) {
	b.Helper()
	disk := newFileDisk(b, benchDiskSize)
	j, err := Open(vfs.Default, b.TempDir(), disk, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { j.Close() })
	// The spares a fresh journal prepares are a one-time cost: not measured.
	for deadline := time.Now().Add(10 * time.Second); j.nspares.Load() < int32(j.opts.spares) && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	return j, disk
}

// warmUp writes a journal's worth of 1 MiB records and checkpoints, so that
// the segments written next are recycled ones.
func warmUp(b *testing.B, j *Journal) {
	c := NewCompressor(CodecNone)
	data := make([]byte, 1<<20)
	for i := range 3 * int(j.opts.segmentSize>>20) {
		if _, err := j.write(c.Write(int64(i)<<20, data), false); err != nil {
			b.Fatal(err)
		}
		if i%8 == 7 {
			j.checkpoint()
		}
	}
	if err := j.checkpoint(); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkAppend is the journal's throughput: 32 records in flight, no
// FUA, written to the segment and applied to a disk file.
func BenchmarkAppend(b *testing.B) {
	for _, bc := range []struct {
		name string
		size int
		lent bool
	}{{"4k", 4 << 10, false}, {"1M", 1 << 20, false}, {"1M-lent", 1 << 20, true}} {
		b.Run(bc.name, func(b *testing.B) {
			j, _ := openBench(b)
			c := NewCompressor(CodecS2)
			rnd := rand.New(rand.NewPCG(1, 1))
			data := randomBytes(rnd, bc.size)
			slots := int64(benchDiskSize / bc.size)
			inflight := make(chan struct{}, 32)
			var wg sync.WaitGroup
			b.SetBytes(int64(bc.size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				inflight <- struct{}{}
				wg.Add(1)
				off := rnd.Int64N(slots) * int64(bc.size)
				var rec Record
				if bc.lent {
					rec = c.WriteLent(off, data)
				} else {
					rec = c.Write(off, data)
				}
				j.appendNow(rec, false, func(uint64, error) {
					rec.Release()
					<-inflight
					wg.Done()
				})
			}
			wg.Wait()
			b.StopTimer()
			st := j.Stats()
			b.ReportMetric(float64(st.Batches)/float64(b.N), "writes/op")
		})
	}
}

func benchFUA(b *testing.B, writers int) {
	b.Run("fresh", func(b *testing.B) { j, _ := openBench(b); runFUA(b, j, writers) })
	b.Run("recycled", func(b *testing.B) {
		j, _ := openBenchWith(b, Options{segmentSize: 16 << 20, RetainBytes: -1, Logger: quiet})
		warmUp(b, j)
		runFUA(b, j, writers)
	})
}

func runFUA(b *testing.B, j *Journal, writers int) {
	c := NewCompressor(CodecS2)
	data := randomBytes(rand.New(rand.NewPCG(2, 2)), 4096)
	before := j.Stats().Syncs
	var wg sync.WaitGroup
	per := (b.N + writers - 1) / writers
	b.SetBytes(4096)
	b.ResetTimer()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 3))
			for range per {
				rec := c.Write(rnd.Int64N(benchDiskSize/4096)*4096, data)
				if _, err := j.write(rec, true); err != nil {
					b.Error(err)
					return
				}
				rec.Release()
			}
		}()
	}
	wg.Wait()
	b.StopTimer()
	b.ReportMetric(float64(j.Stats().Syncs-before)/float64(per*writers), "fdatasyncs/write")
}

// BenchmarkFUA1 is one writer doing 4k FUA writes: one fdatasync each.
func BenchmarkFUA1(b *testing.B) { benchFUA(b, 1) }

// BenchmarkFUA32 is 32 writers doing 4k FUA writes: group commit shares the
// fdatasyncs.
func BenchmarkFUA32(b *testing.B) { benchFUA(b, 32) }

func BenchmarkS2Encode4K(b *testing.B) {
	c := NewCompressor(CodecS2)
	data := compressible(rand.New(rand.NewPCG(4, 4)), 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		r := c.Write(0, data)
		r.Release()
	}
}

func BenchmarkRecordEncode(b *testing.B) {
	r := NewCompressor(CodecNone).Write(4096, randomBytes(rand.New(rand.NewPCG(5, 5)), 4096))
	r.Seq = 1
	buf := make([]byte, 0, r.encodedLen())
	b.SetBytes(int64(r.encodedLen()))
	b.ReportAllocs()
	for b.Loop() {
		buf = appendFrame(buf[:0], &r)
	}
}

func BenchmarkRecordDecode(b *testing.B) {
	r := NewCompressor(CodecNone).Write(4096, randomBytes(rand.New(rand.NewPCG(6, 6)), 4096))
	r.Seq = 1
	frame := appendFrame(nil, &r)
	b.SetBytes(int64(len(frame)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := decodeRecord(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBaselineWriteSync is what FUA1 is measured against: a 4k pwrite
// and an fdatasync per write on a plain file, appending or overwriting.
func BenchmarkBaselineWriteSync(b *testing.B) {
	for _, overwrite := range []bool{false, true} {
		name := map[bool]string{false: "append", true: "overwrite"}[overwrite]
		b.Run(name, func(b *testing.B) {
			f, err := os.OpenFile(b.TempDir()+"/f", os.O_RDWR|os.O_CREATE, 0o644)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 4096)
			const span = 64 << 20
			if overwrite {
				for off := int64(0); off < span; off += 1 << 20 {
					f.WriteAt(make([]byte, 1<<20), off)
				}
				unix.Fdatasync(int(f.Fd()))
			}
			b.SetBytes(4096)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				f.WriteAt(buf, int64(i)*4096%span)
				if err := unix.Fdatasync(int(f.Fd())); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBaselineWrite is what BenchmarkAppend is measured against: the
// same writes as plain pwrites to the disk file, with no journal.
func BenchmarkBaselineWrite(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		b.Run(map[int]string{4 << 10: "4k", 1 << 20: "1M"}[size], func(b *testing.B) {
			disk := newFileDisk(b, benchDiskSize)
			rnd := rand.New(rand.NewPCG(1, 1))
			data := randomBytes(rnd, size)
			slots := int64(benchDiskSize / size)
			b.SetBytes(int64(size))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := disk.WriteAt(data, rnd.Int64N(slots)*int64(size)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCompressorWrite is the compression step of a write, by kind of
// data: random, slightly compressible (fio's default buffers: stored raw after
// sampling), half compressible.
func BenchmarkCompressorWrite(b *testing.B) {
	rnd := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{4096, 1 << 20} {
		for _, d := range []struct {
			name string
			data []byte
		}{
			{"random", randomBytes(rnd, n)},
			{"slight", slightlyCompressible(rnd, n)},
			{"half", halfCompressible(rnd, n)},
		} {
			b.Run(fmt.Sprintf("%s-%dK", d.name, n>>10), func(b *testing.B) {
				c := NewCompressor(CodecS2)
				b.SetBytes(int64(n))
				var stored int
				for b.Loop() {
					r := c.WriteLent(0, d.data)
					stored = len(r.Payload)
					r.Release()
				}
				b.ReportMetric(float64(stored)/float64(n), "stored/raw")
			})
		}
	}
}

// BenchmarkDataMax compares writes of a size through the journal with the
// same writes in place (Options.DataMax), to choose DataMax: 8 in flight,
// sequential, lent as the NBD path lends them, and a checkpoint at the end
// (the disk synced) inside the time, as fio's end_fsync puts the final flush
// in its time.
func BenchmarkDataMax(b *testing.B) {
	eachDataMax(b, func(b *testing.B, o Options, size int) {
		j, _ := openBenchWith(b, o)
		runSeqWrites(b, j, size, 8)
	})
}

// eachDataMax runs f for each write size, with the journal taking every
// write whole and with writes of that size in place.
func eachDataMax(b *testing.B, f func(b *testing.B, o Options, size int)) {
	for _, size := range []int{64 << 10, 128 << 10, 256 << 10, 1 << 20} {
		for _, mode := range []string{"journal", "inplace"} {
			b.Run(fmt.Sprintf("%dK-%s", size>>10, mode), func(b *testing.B) {
				o := Options{Logger: quiet, DataMax: -1}
				if mode == "inplace" {
					o.DataMax = int64(size)
				}
				f(b, o, size)
			})
		}
	}
}

// runSeqWrites writes b.N records of size bytes one after the other on the
// disk, inflight at a time, then checkpoints.
func runSeqWrites(b *testing.B, j *Journal, size, inflight int) {
	c := NewCompressor(CodecS2)
	data := randomBytes(rand.New(rand.NewPCG(3, 3)), size)
	slots := int64(benchDiskSize / size)
	sem := make(chan struct{}, inflight)
	var wg sync.WaitGroup
	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		sem <- struct{}{}
		wg.Add(1)
		rec := c.WriteLent(int64(i)%slots*int64(size), data)
		j.appendNow(rec, false, func(uint64, error) {
			rec.Release()
			<-sem
			wg.Done()
		})
	}
	wg.Wait()
	if err := j.checkpoint(); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	st := j.Stats()
	b.ReportMetric(float64(st.BytesStored)/float64(b.N), "journal-B/op")
}

// BenchmarkDataMaxFlush is BenchmarkDataMax one write at a time, each
// followed by a FLUSH: a FLUSH after writes in place syncs the disk too.
func BenchmarkDataMaxFlush(b *testing.B) {
	eachDataMax(b, func(b *testing.B, o Options, size int) {
		j, disk := openBenchWith(b, o)
		// Overwrites of written blocks, as on a disk in use: no
		// block allocation for the disk's fdatasync to commit.
		const area = 64 << 20
		if _, err := disk.f.WriteAt(make([]byte, area), 0); err != nil || disk.Sync() != nil {
			b.Fatal("prefill the disk", err)
		}
		c := NewCompressor(CodecS2)
		data := randomBytes(rand.New(rand.NewPCG(4, 4)), size)
		slots := int64(area / size)
		b.SetBytes(int64(size))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := j.write(c.WriteLent(int64(i)%slots*int64(size), data), false); err != nil {
				b.Fatal(err)
			}
			if err := j.SyncWait(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
