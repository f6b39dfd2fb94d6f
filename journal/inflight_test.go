package journal

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// heldDisk holds every write of gated bytes or more until the test lets it
// go: it says on entered which offset came in, then waits on release.
type heldDisk struct {
	*MemDisk
	gated   int
	entered chan int64
	release chan struct{}
}

func (d *heldDisk) WriteAt(p []byte, off int64) (int, error) {
	if len(p) >= d.gated {
		d.entered <- off
		<-d.release
	}
	return d.MemDisk.WriteAt(p, off)
}

// TestInPlaceWritesConcurrent: two writes in place that do not overlap are
// on their way to the disk at once; a third that overlaps the first, and a
// small write over the second, wait until the one they overlap has landed,
// so both end on the disk in seq order; the written callbacks keep seq order
// whichever write lands first.
func TestInPlaceWritesConcurrent(t *testing.T) {
	disk := &heldDisk{MemDisk: NewMemDisk(inPlaceDiskSize), gated: 64 << 10,
		entered: make(chan int64, 4), release: make(chan struct{})}
	j, err := Open(vfs.NewMem(), "/meta/journal", disk,
		Options{CheckpointInterval: -1, Logger: quiet, DataMax: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	defer close(disk.release) // lets held writes go if the test fails first
	rnd := rand.New(rand.NewPCG(11, 12))
	a, b, c := randomBytes(rnd, 256<<10), randomBytes(rnd, 256<<10), randomBytes(rnd, 128<<10)
	small := randomBytes(rnd, 4<<10)
	comp := NewCompressor(CodecNone)
	var written []uint64
	done := make(chan uint64, 4)
	appendOne := func(r Record) {
		var seq uint64
		seq = j.AppendLater(r, false, func() { written = append(written, seq) },
			func(seq uint64, err error) {
				if err != nil {
					t.Error(err)
				}
				done <- seq
			})
		j.WriteQueued(false)
	}
	appendOne(comp.WriteLent(0, a))           // seq 1
	appendOne(comp.WriteLent(1<<20, b))       // seq 2
	appendOne(comp.WriteLent(128<<10, c))     // seq 3: over a's second half
	appendOne(comp.Write(1<<20+8<<10, small)) // seq 4: inside b
	first, second := <-disk.entered, <-disk.entered
	if min(first, second) != 0 || max(first, second) != 1<<20 {
		t.Fatalf("writes in flight at %d and %d, want 0 and %d", first, second, 1<<20)
	}
	select {
	case off := <-disk.entered:
		t.Fatalf("the write at %d started while a write it overlaps was in flight", off)
	case seq := <-done:
		t.Fatalf("seq %d completed while the writes before it were in flight", seq)
	default:
	}
	disk.release <- struct{}{} // one of the two lands
	disk.release <- struct{}{} // the other
	if off := <-disk.entered; off != 128<<10 {
		t.Fatalf("third write in place at %d, want %d", off, 128<<10)
	}
	disk.release <- struct{}{}
	for range 4 {
		<-done
	}
	want := append(append([]byte(nil), a[:128<<10]...), c...)
	if got := disk.Bytes()[:256<<10]; !bytes.Equal(got, want) {
		t.Fatalf("overlapping writes in place out of seq order (first difference at %d)", firstDiff(got, want))
	}
	wantB := append(append(append([]byte(nil), b[:8<<10]...), small...), b[12<<10:]...)
	if got := disk.Bytes()[1<<20 : 1<<20+256<<10]; !bytes.Equal(got, wantB) {
		t.Fatalf("a small write over a write in place out of seq order (first difference at %d)", firstDiff(got, wantB))
	}
	if len(written) != 4 || written[0] != 1 || written[1] != 2 || written[2] != 3 || written[3] != 4 {
		t.Fatalf("written callbacks ran in the order %v, want 1 2 3 4", written)
	}
}
