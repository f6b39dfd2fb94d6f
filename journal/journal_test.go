package journal

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

func TestCloseDrainsAndRejects(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(crashDiskSize)
	j, err := Open(fs, testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var failed int
	var mu sync.Mutex
	for i := range 100 {
		wg.Add(1)
		j.appendNow(Zero(int64(i%64)*512, 512, false), i%7 == 0, func(seq uint64, err error) {
			mu.Lock()
			if err != nil {
				failed++
			}
			mu.Unlock()
			wg.Done()
		})
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait() // every queued record completed before Close returned
	if failed != 0 || j.ckptSeq.Load() != 100 || j.appliedSeq.Load() != 100 {
		t.Fatalf("close: %d failed, checkpoint %d, applied %d", failed, j.ckptSeq.Load(), j.appliedSeq.Load())
	}
	if err := j.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := j.write(Trim(0, 512), false); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := j.SyncWait(); !errors.Is(err, ErrClosed) {
		t.Fatalf("sync after close: %v", err)
	}
	if err := j.checkpoint(); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("checkpoint after close: %v", err)
	}
	// A clean close leaves nothing to replay.
	j, err = Open(fs, testDir, disk.Crash(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if j.LastSeq() != 100 || j.ckptSeq.Load() != 100 {
		t.Fatalf("reopened at seq %d, checkpoint %d", j.LastSeq(), j.ckptSeq.Load())
	}
}

func TestSyncCoversEarlierAppends(t *testing.T) {
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for i := range 10 {
		j.appendNow(Trim(int64(i)*512, 512), false, func(uint64, error) {})
	}
	if err := j.SyncWait(); err != nil {
		t.Fatal(err)
	}
	if d := j.durableSeq.Load(); d < 10 {
		t.Fatalf("durable seq %d after a sync following seq 10", d)
	}
	syncs := j.Stats().Syncs
	if err := j.SyncWait(); err != nil || j.Stats().Syncs != syncs {
		t.Fatalf("a sync with nothing new written cost an fdatasync (%v)", err)
	}
}

// TestAppendKeepsGivenSeq is a replica journaling its primary's records:
// their seqs are kept, may skip, and must increase.
func TestAppendKeepsGivenSeq(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(crashDiskSize)
	j, err := Open(fs, testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	rec := Trim(0, 512)
	rec.Seq = 10
	if seq, err := j.write(rec, false); seq != 10 || err != nil {
		t.Fatalf("given seq 10: got %d, %v", seq, err)
	}
	if seq, err := j.write(Trim(512, 512), false); seq != 11 || err != nil {
		t.Fatalf("next seq: got %d, %v", seq, err)
	}
	rec.Seq = 11
	if _, err := j.write(rec, false); !errors.Is(err, ErrSeqOrder) {
		t.Fatalf("repeated seq: %v, want ErrSeqOrder", err)
	}
	rec.Seq = 20
	if _, err := j.write(rec, true); err != nil {
		t.Fatal(err)
	}
	j.Close()
	j, err = Open(fs, testDir, disk.Crash(), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	r, err := j.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, want := range []uint64{10, 11, 20} {
		if got, err := r.Next(); err != nil || got.Seq != want {
			t.Fatalf("read seq %d, %v; want %d", got.Seq, err, want)
		}
	}
}

// TestSequentialWritesCoalesce checks that consecutive small writes queued
// together reach the disk in few writes, and land right.
func TestSequentialWritesCoalesce(t *testing.T) {
	disk := NewMemDisk(crashDiskSize)
	var once sync.Once
	disk.Fail = func(string) error { // hold the applier so that records queue up
		once.Do(func() { time.Sleep(50 * time.Millisecond) })
		return nil
	}
	j, err := Open(vfs.NewMem(), testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rnd := rand.New(rand.NewPCG(11, 11))
	h := newHistory()
	c := NewCompressor(CodecS2)
	var wg sync.WaitGroup
	for i := range 120 {
		var data []byte
		if i%2 == 0 {
			data = compressible(rnd, 512)
		} else {
			data = randomBytes(rnd, 512)
		}
		off := int64(i%100) * 512
		wg.Add(1)
		seq := j.appendNow(c.Write(off, data), i%5 == 0, func(uint64, error) { wg.Done() })
		h.add(seq, op{kind: KindWrite, off: off, n: 512, data: data})
	}
	wg.Wait()
	if got, want := disk.Bytes(), h.image(t, crashDiskSize, 120); !bytes.Equal(got, want) {
		t.Fatalf("coalesced writes landed wrong (first difference at %d)", firstDiff(got, want))
	}
	if disk.writeCount() >= 120 {
		t.Fatalf("%d disk writes for 120 consecutive records queued together", disk.writeCount())
	}
}

// written (AppendLater) runs in seq order, before done, once the record is
// in the segment; WaitApplied returns once every appended record is applied.
func TestWrittenAndWaitApplied(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(crashDiskSize)
	j, err := Open(fs, testDir, disk, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const n = 200
	var mu sync.Mutex
	var order []uint64
	written := make(map[uint64]bool)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		var seq uint64
		w := func() {
			mu.Lock()
			defer mu.Unlock()
			if j.writtenSeq.Load() < seq {
				t.Errorf("seq %d: written before the segment holds it", seq)
			}
			order = append(order, seq)
			written[seq] = true
		}
		mu.Lock()
		seq = j.append(Zero(int64(i%64)*512, 512, false), i%9 == 0, w, func(s uint64, err error) {
			mu.Lock()
			defer mu.Unlock()
			if err != nil || !written[s] {
				t.Errorf("seq %d done (err %v) before written", s, err)
			}
			wg.Done()
		}, true)
		mu.Unlock()
	}
	if err := j.WaitApplied(); err != nil {
		t.Fatal(err)
	}
	if j.appliedSeq.Load() != n {
		t.Fatalf("WaitApplied returned at applied seq %d of %d", j.appliedSeq.Load(), n)
	}
	wg.Wait()
	for i, s := range order {
		if s != uint64(i+1) {
			t.Fatalf("written called out of order: %v", order)
		}
	}
}
