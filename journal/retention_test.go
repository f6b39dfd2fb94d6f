package journal

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// writeRaw writes n incompressible 1 KiB records and returns their data by seq.
func writeRaw(t *testing.T, j *Journal, rnd *rand.Rand, n int) map[uint64][]byte {
	t.Helper()
	c := NewCompressor(CodecNone)
	got := map[uint64][]byte{}
	for range n {
		data := randomBytes(rnd, 1024)
		seq, err := j.write(c.Write(rnd.Int64N(60)*1024, data), false)
		if err != nil {
			t.Fatal(err)
		}
		got[seq] = data
	}
	return got
}

func segmentBytesBefore(j *Journal, seq uint64) (total int64, n int) {
	j.segMu.Lock()
	defer j.segMu.Unlock()
	for i, s := range j.segs {
		if i+1 < len(j.segs) && j.segs[i+1].firstSeq <= seq+1 {
			total += s.size.Load()
			n++
		}
	}
	return total, n
}

func TestRetention(t *testing.T) {
	for _, tc := range []struct {
		name   string
		retain int64
	}{{"beyond RetainBytes", 16 << 10}, {"within RetainBytes", 1 << 20}, {"none", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{segmentSize: 4 << 10, RetainBytes: tc.retain, CheckpointInterval: -1, Logger: quiet}
			j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			writeRaw(t, j, rand.New(rand.NewPCG(1, 2)), 100) // ~105 KiB, ~30 segments
			if err := j.checkpoint(); err != nil {
				t.Fatal(err)
			}
			kept, n := segmentBytesBefore(j, j.ckptSeq.Load())
			switch {
			case tc.retain == 1<<20 && (j.OldestRetainedSeq() != 1 || n < 20):
				t.Fatalf("deleted within RetainBytes: oldest seq %d, %d segments", j.OldestRetainedSeq(), n)
			case tc.retain == 16<<10 && (kept > tc.retain || kept < tc.retain-8<<10):
				t.Fatalf("kept %d bytes before the checkpoint, want about %d", kept, tc.retain)
			case tc.retain < 0 && n != 0:
				t.Fatalf("kept %d segments before the checkpoint, want none", n)
			}
		})
	}
}

func TestReaderFromRetainedSeq(t *testing.T) {
	o := Options{segmentSize: 4 << 10, RetainBytes: 16 << 10, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rnd := rand.New(rand.NewPCG(3, 4))
	data := writeRaw(t, j, rnd, 100)
	if err := j.checkpoint(); err != nil {
		t.Fatal(err)
	}
	oldest := j.OldestRetainedSeq()
	if oldest <= 1 {
		t.Fatalf("oldest retained seq %d: nothing was removed", oldest)
	}
	if _, err := j.NewReader(oldest - 1); !errors.Is(err, ErrNotRetained) {
		t.Fatalf("reader before the oldest retained seq: %v, want ErrNotRetained", err)
	}
	from := oldest + 3
	r, err := j.NewReader(from)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	expectRecords(t, r, data, from, j.LastSeq())
	// The reader follows the journal as it grows, across new segments.
	more := writeRaw(t, j, rnd, 20)
	expectRecords(t, r, more, j.LastSeq()-19, j.LastSeq())
}

// expectRecords reads seqs from..to from r, then io.EOF.
func expectRecords(t *testing.T, r *Reader, data map[uint64][]byte, from, to uint64) {
	t.Helper()
	for seq := from; seq <= to; seq++ {
		rec, err := r.Next()
		if err != nil {
			t.Fatalf("reading seq %d: %v", seq, err)
		}
		raw, _ := rec.Raw(nil)
		if rec.Seq != seq || !bytes.Equal(raw, data[seq]) {
			t.Fatalf("got seq %d, want %d with its data", rec.Seq, seq)
		}
	}
	if _, err := r.Next(); err != io.EOF {
		t.Fatalf("after seq %d: %v, want io.EOF", to, err)
	}
}

// TestBackPressure fills a small journal from many writers: they wait for
// checkpoints to free space and never fail.
func TestBackPressure(t *testing.T) {
	o := Options{MaxBytes: 64 << 10, RetainBytes: 1 << 20, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var wg sync.WaitGroup
	var maxSize int64
	var mu sync.Mutex
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := NewCompressor(CodecNone)
			rnd := rand.New(rand.NewPCG(uint64(g), 9))
			for range 100 {
				if _, err := j.write(c.Write(rnd.Int64N(60)*1024, randomBytes(rnd, 1024)), g == 0); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				maxSize = max(maxSize, j.Stats().Size)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	st := j.Stats()
	if st.Stalls == 0 || st.Checkpoints == 0 {
		t.Fatalf("800 KiB through a 64 KiB journal without waiting: %+v", st)
	}
	if maxSize > o.MaxBytes {
		t.Fatalf("journal grew to %d bytes, MaxBytes is %d", maxSize, o.MaxBytes)
	}
	// A record of half the journal still gets in.
	big := NewCompressor(CodecNone).Write(0, make([]byte, 32<<10))
	for range 4 {
		if _, err := j.write(big, false); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRecycleSegments checks that retired segments are reused as spares and
// that a journal running on recycled files recovers after a crash.
func TestRecycleSegments(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(crashDiskSize)
	o := Options{segmentSize: 4 << 10, RetainBytes: -1, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(fs, testDir, disk, o)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(8, 8))
	data := map[uint64][]byte{}
	for range 10 {
		for seq, d := range writeRaw(t, j, rnd, 10) {
			data[seq] = d
		}
		if err := j.checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	names, _ := fs.ReadDir(testDir)
	spares, segs := 0, 0
	for _, n := range names {
		if isSpareName(n) {
			spares++
		} else if _, ok := parseSegmentName(n); ok {
			segs++
		}
	}
	if spares == 0 || spares > maxSpares || segs > 3 {
		t.Fatalf("%d spares and %d segments after 100 KiB through 4 KiB segments: %v", spares, segs, names)
	}
	from := j.OldestRetainedSeq()
	seq, err := j.write(Trim(0, 512), true)
	if err != nil {
		t.Fatal(err)
	}
	data[seq] = nil
	crashed := disk.CrashWith(func() { fs = fs.CrashClone(nil) })
	j.Close()
	j, err = Open(fs, testDir, crashed, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r, err := j.NewReader(from)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	expectRecords(t, r, data, from, seq)
}

// TestReaderFallsBehind reads while a journal far smaller than what is
// written through it fills up: the reader keeps its segments only until the
// journal passes its high-water mark, so appends never stall on it, and it
// reads true records, then maybe ErrNotRetained, never other data.
func TestReaderFallsBehind(t *testing.T) {
	o := Options{segmentSize: 4 << 10, MaxBytes: 64 << 10, RetainBytes: -1, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rnd := rand.New(rand.NewPCG(9, 9))
	data := writeRaw(t, j, rnd, 20)
	r, err := j.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := r.Next(); err != nil {
		t.Fatal(err)
	}
	wrote := make(chan error, 1)
	c := NewCompressor(CodecNone)
	go func() { // 200 KiB through 64 KiB; data is the test's once wrote says so
		for i := range 200 {
			d := randomBytes(rnd, 1024)
			seq, err := j.write(c.Write(rnd.Int64N(60)*1024, d), false)
			if err == nil && i%20 == 19 {
				err = j.checkpoint()
			}
			if err != nil {
				wrote <- err
				return
			}
			data[seq] = d
		}
		wrote <- nil
	}()
	if err := waitResult(t, wrote, "appends past an open reader"); err != nil {
		t.Fatal(err)
	}
	if st := j.Stats(); st.Size > o.MaxBytes {
		t.Fatalf("journal of %d bytes, MaxBytes %d", st.Size, o.MaxBytes)
	}
	for want := uint64(2); ; want++ {
		rec, err := r.Next()
		if errors.Is(err, ErrNotRetained) || err == io.EOF && want == j.LastSeq()+1 {
			return
		}
		if err != nil {
			t.Fatalf("reader behind retention: %v, want records or ErrNotRetained", err)
		}
		raw, _ := rec.Raw(nil)
		if rec.Seq != want || !bytes.Equal(raw, data[rec.Seq]) {
			t.Fatalf("got seq %d, want %d with its data", rec.Seq, want)
		}
	}
}

// TestReaderKeepsItsSegments opens a reader at the oldest seq and forces
// checkpoints that retain nothing while appending more: the reader still
// reads every record, the segments behind it go as it moves on, and the rest
// go at the first checkpoint after it is closed.
func TestReaderKeepsItsSegments(t *testing.T) {
	o := Options{segmentSize: 4 << 10, RetainBytes: -1, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rnd := rand.New(rand.NewPCG(10, 10))
	data := writeRaw(t, j, rnd, 40) // ~10 segments
	r, err := j.NewReader(1)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkpoint := func() {
		t.Helper()
		if err := j.checkpoint(); err != nil {
			t.Fatal(err)
		}
	}
	checkpoint()
	if _, n := segmentBytesBefore(j, j.ckptSeq.Load()); j.OldestRetainedSeq() != 1 || n < 5 {
		t.Fatalf("checkpoint under a reader at seq 1: oldest seq %d, %d segments", j.OldestRetainedSeq(), n)
	}
	next := uint64(1) // the next seq the reader returns
	for range 8 {
		for seq, d := range writeRaw(t, j, rnd, 10) {
			data[seq] = d
		}
		checkpoint()
		if oldest := j.OldestRetainedSeq(); oldest > next {
			t.Fatalf("reader at seq %d, but the oldest retained is %d", next, oldest)
		}
		for range 8 { // slower than the writes: it stays behind
			rec, err := r.Next()
			if err != nil {
				t.Fatalf("reading seq %d: %v", next, err)
			}
			raw, _ := rec.Raw(nil)
			if rec.Seq != next || !bytes.Equal(raw, data[next]) {
				t.Fatalf("got seq %d, want %d with its data", rec.Seq, next)
			}
			next++
		}
	}
	checkpoint()
	if oldest := j.OldestRetainedSeq(); oldest <= 1 || oldest > next {
		t.Fatalf("reader at seq %d, oldest retained %d: want the segments it moved past gone, its own kept", next, oldest)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	checkpoint()
	if _, n := segmentBytesBefore(j, j.ckptSeq.Load()); n != 0 || j.OldestRetainedSeq() <= next {
		t.Fatalf("closed reader at seq %d: oldest retained %d, %d segments before the checkpoint",
			next, j.OldestRetainedSeq(), n)
	}
}

func TestSegmentsToRemove(t *testing.T) {
	o := Options{MaxBytes: 1000, RetainBytes: 150}
	sizes := []int64{100, 100, 100, 100, 100, 100}
	for _, tc := range []struct {
		name   string
		done   int   // segments wholly at or before the checkpoint
		total  int64 // journal bytes
		pinned int   // oldest segment a reader is in; len(sizes) if none
		want   int
	}{
		{"retain 150 bytes: the newest done one kept", 5, 450, 6, 4},
		{"nothing done", 0, 450, 6, 0},
		{"reader in the oldest", 5, 450, 0, 0},
		{"reader in the second", 5, 450, 1, 1},
		{"reader past the removable", 5, 450, 5, 4},
		{"past half: retention shrinks", 5, 700, 6, 5},
		{"past half, reader keeps", 5, 700, 2, 2},
		{"past high water: readers lose", 5, 760, 0, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := segmentsToRemove(sizes, tc.done, tc.total, tc.pinned, &o); got != tc.want {
				t.Fatalf("segmentsToRemove(done %d, total %d, pinned %d) = %d, want %d",
					tc.done, tc.total, tc.pinned, got, tc.want)
			}
		})
	}
}
