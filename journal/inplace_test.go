package journal

import (
	"bytes"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

const inPlaceDiskSize = 4 << 20

func openInPlace(t *testing.T, fs *vfs.MemFS, disk *MemDisk, o Options) *Journal {
	t.Helper()
	o.CheckpointInterval, o.Logger = -1, quiet
	if o.DataMax == 0 {
		o.DataMax = 64 << 10
	}
	j, err := Open(fs, "/meta/journal", disk, o)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// TestInPlaceWritesOnce: a large write reaches the disk with one write and
// the segment gets a small extent frame, which a Reader returns with the
// data's CRC; a small write is journaled whole.
func TestInPlaceWritesOnce(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	rnd := rand.New(rand.NewPCG(1, 2))
	big, small := randomBytes(rnd, 1<<20), randomBytes(rnd, 4<<10)
	c := NewCompressor(CodecNone)
	if _, err := j.write(c.WriteLent(1<<20, big), false); err != nil {
		t.Fatal(err)
	}
	if _, err := j.write(c.Write(0, small), false); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.InPlace != 1 || st.BytesInPlace != 1<<20 || st.BytesStored != 4<<10 || disk.writeCount() != 2 {
		t.Fatalf("in place %d (%d bytes), stored %d, disk writes %d; want 1 (1 MiB), 4096, 2",
			st.InPlace, st.BytesInPlace, st.BytesStored, disk.writeCount())
	}
	if st.Size > 8<<10+2*pageSize {
		t.Fatalf("journal holds %d bytes for a 1 MiB write in place and a 4 KiB one", st.Size)
	}
	if got := disk.Bytes()[1<<20 : 2<<20]; !bytes.Equal(got, big) {
		t.Fatal("the write in place is not on the disk")
	}
	r, err := j.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rec, err := r.Next()
	if err != nil || rec.Kind != KindExtent || rec.Offset != 1<<20 || rec.RawLen != 1<<20 ||
		rec.DataSum != crc32.Checksum(big, castagnoli) || len(rec.Payload) != 0 {
		t.Fatalf("reader: %v %v at %d+%d sum %x, want an extent of the 1 MiB write", err, rec.Kind, rec.Offset, rec.RawLen, rec.DataSum)
	}
	if rec, err = r.Next(); err != nil || rec.Kind != KindWrite {
		t.Fatalf("reader: %v %v, want the small write", err, rec.Kind)
	}
}

// TestInPlaceCompressedPayload: a replica's record comes compressed; the
// journal decodes it once and writes the data in place.
func TestInPlaceCompressedPayload(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	data := compressible(rand.New(rand.NewPCG(3, 4)), 256<<10)
	rec := NewCompressor(CodecS2).Write(0, data)
	if rec.Codec != CodecS2 {
		t.Fatal("test data did not compress")
	}
	rec.Seq = 7 // as a replica appends what its primary numbered
	if _, err := j.write(rec, false); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disk.Bytes()[:len(data)], data) || j.Stats().InPlace != 1 {
		t.Fatal("the compressed record was not decoded and written in place")
	}
}

// writesInPlace is the torn writes in place of exts: after a power loss
// recovery also reports the activity set (Active), whose tests are in
// activity_test.go.
func writesInPlace(exts []Extent) []Extent {
	return slices.DeleteFunc(exts, func(e Extent) bool { return e.Active })
}

// TestInPlaceNotResurrected: a journaled write, then a FUA write in place
// over it, then a power loss: recovery replays the journaled record but
// not over the newer bytes, and the extent matches its CRC.
func TestInPlaceNotResurrected(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	rnd := rand.New(rand.NewPCG(5, 6))
	old, newer := randomBytes(rnd, 8<<10), randomBytes(rnd, 128<<10)
	c := NewCompressor(CodecNone)
	if _, err := j.write(c.Write(64<<10, old), true); err != nil {
		t.Fatal(err)
	}
	if _, err := j.write(c.WriteLent(0, newer), true); err != nil {
		t.Fatal(err)
	}
	var fs2 *vfs.MemFS
	disk2 := disk.CrashWith(func() { fs2 = fs.CrashClone(nil) })
	j.Close()
	j2 := openInPlace(t, fs2, disk2, Options{})
	defer j2.Close()
	if got := disk2.Bytes()[:len(newer)]; !bytes.Equal(got, newer) {
		t.Fatalf("older data replayed over the newer write in place (first difference at %d)", firstDiff(got, newer))
	}
	if torn := writesInPlace(j2.RecoveredExtents()); len(torn) != 0 {
		t.Fatalf("torn extents %+v, want none: the FUA write in place was durable", torn)
	}
}

// TestInPlaceTornHeld: a write in place whose data a power loss took is
// reported torn; with MarkExtents the checkpoint stays before it until
// ExtentsMarked, so a second crash finds it again.
func TestInPlaceTornHeld(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{MarkExtents: true})
	c := NewCompressor(CodecNone)
	data := randomBytes(rand.New(rand.NewPCG(7, 8)), 256<<10)
	seq, err := j.write(c.WriteLent(512<<10, data), false)
	if err != nil {
		t.Fatal(err)
	}
	// A FUA journaled write makes the extent record durable, not the disk.
	if _, err := j.write(c.Write(0, make([]byte, 4096)), true); err != nil {
		t.Fatal(err)
	}
	fs3, disk3 := crashBoth(j, fs, disk)
	want := []Extent{{Seq: seq, Offset: 512 << 10, Len: 256 << 10, Sum: crc32.Checksum(data, castagnoli)}}
	for range 2 {
		jr := openInPlace(t, fs3, disk3, Options{MarkExtents: true})
		if got := writesInPlace(jr.RecoveredExtents()); !slices.Equal(got, want) {
			t.Fatalf("torn extents %+v, want %+v", got, want)
		}
		if err := jr.checkpoint(); err != nil {
			t.Fatal(err)
		}
		if cp := jr.Stats().CheckpointSeq; cp >= seq {
			t.Fatalf("checkpoint %d passed the unmarked torn extent %d", cp, seq)
		}
		fs3, disk3 = crashBoth(jr, fs3, disk3)
	}
	jr := openInPlace(t, fs3, disk3, Options{MarkExtents: true})
	defer jr.Close()
	jr.ExtentsMarked()
	if err := jr.checkpoint(); err != nil {
		t.Fatal(err)
	}
	if cp := jr.Stats().CheckpointSeq; cp < seq {
		t.Fatalf("checkpoint %d after ExtentsMarked, want past %d", cp, seq)
	}
}

// crashBoth power-fails j's FS and disk at once and closes j.
func crashBoth(j *Journal, fs *vfs.MemFS, disk *MemDisk) (*vfs.MemFS, *MemDisk) {
	var fs2 *vfs.MemFS
	disk2 := disk.CrashWith(func() { fs2 = fs.CrashClone(nil) })
	j.Close()
	return fs2, disk2
}

// TestInPlaceFlushSyncsDisk: a FLUSH after writes in place syncs the disk
// once for all the FLUSHes of a batch; a FLUSH with no write in place since
// the last disk sync syncs only the journal. A FUA write in place syncs the
// disk too.
func TestInPlaceFlushSyncsDisk(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	c := NewCompressor(CodecNone)
	data := make([]byte, 128<<10)
	j.AppendLater(c.WriteLent(0, data), false, nil, func(uint64, error) {})
	errs := make(chan error, 3)
	for range 3 {
		j.SyncLater(func(err error) { errs <- err })
	}
	j.WriteQueued(false)
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := disk.syncCount(); n != 1 {
		t.Fatalf("3 FLUSHes after a write in place synced the disk %d times, want 1", n)
	}
	if _, err := j.write(c.Write(0, data[:4096]), false); err != nil {
		t.Fatal(err)
	}
	if err := j.SyncWait(); err != nil {
		t.Fatal(err)
	}
	if n := disk.syncCount(); n != 1 {
		t.Fatalf("a FLUSH after journaled writes only synced the disk (%d syncs, want 1)", n)
	}
	// Away from the journaled write, which the synced disk may lack: a
	// write in place over it would be journaled (unsynced.go).
	if _, err := j.write(c.WriteLent(1<<20, data), true); err != nil {
		t.Fatal(err)
	}
	if n := disk.syncCount(); n != 2 {
		t.Fatalf("a FUA write in place: %d disk syncs, want 2", n)
	}
}

// TestWrittenInSeqOrder: written callbacks keep seq order when an extent,
// whose callback waits for its data on the disk, comes between small writes.
func TestWrittenInSeqOrder(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	c := NewCompressor(CodecNone)
	var mu sync.Mutex
	var order []uint64
	done := make(chan struct{}, 64)
	for i := range 30 {
		n := 4 << 10
		if i%5 == 2 {
			n = 256 << 10
		}
		rec := c.Write(int64(i)*(128<<10), make([]byte, n))
		var seq uint64
		written := func() {
			mu.Lock()
			order = append(order, seq)
			mu.Unlock()
		}
		seq = j.AppendLater(rec, false, written, func(_ uint64, err error) {
			if err != nil {
				t.Error(err)
			}
			done <- struct{}{}
		})
		j.WriteQueued(i%3 == 0)
	}
	for range 30 {
		<-done
	}
	if !slices.IsSorted(order) || len(order) != 30 {
		t.Fatalf("written callbacks ran in the order %v", order)
	}
}

func TestCoverMap(t *testing.T) {
	m := newCoverMap([]Extent{{Seq: 5, Offset: 100, Len: 100}, {Seq: 9, Offset: 150, Len: 100}, {Seq: 3, Offset: 400, Len: 10}})
	for _, tc := range []struct {
		off, end int64
		seq      uint64
		want     [][2]int64
	}{
		{0, 100, 1, [][2]int64{{0, 100}}},
		{0, 500, 1, [][2]int64{{0, 100}, {250, 400}, {410, 500}}},
		{0, 500, 5, [][2]int64{{0, 150}, {250, 500}}},
		{120, 180, 6, [][2]int64{{120, 150}}},
		{160, 170, 9, [][2]int64{{160, 170}}},
		{160, 170, 4, nil},
	} {
		if got := m.uncovered(tc.off, tc.end, tc.seq); !slices.Equal(got, tc.want) {
			t.Errorf("uncovered(%d, %d, %d) = %v, want %v", tc.off, tc.end, tc.seq, got, tc.want)
		}
	}
}

var _ io.ReaderAt = (*MemDisk)(nil) // torn extents are found by reading the disk

// TestExtentSumOfEveryPayloadForm: the extent frame of a write in place
// carries the CRC32C of the data whether the payload is the lent data, a
// copy of it, or compressed (then the sum is the raw data's, not the
// payload's): a raw payload's own checksum stands for the data's.
func TestExtentSumOfEveryPayloadForm(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 4))
	random, text := randomBytes(rnd, 512<<10), bytes.Repeat([]byte("nbdmirror extent "), 32<<10)[:512<<10]
	raw, s2c := NewCompressor(CodecNone), NewCompressor(CodecS2)
	cases := []struct {
		name string
		rec  func(off int64) Record
		data []byte
	}{
		{"lent", func(off int64) Record { return raw.WriteLent(off, random) }, random},
		{"copied", func(off int64) Record { return raw.Write(off, random) }, random},
		{"compressed", func(off int64) Record { return s2c.Write(off, text) }, text},
		{"compressed, raw lent", func(off int64) Record { return s2c.WriteLent(off, text) }, text},
	}
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	for i, c := range cases {
		rec := c.rec(int64(i) << 20)
		if i >= 2 && rec.Codec == CodecNone {
			t.Fatalf("%s: the payload was not compressed", c.name)
		}
		if _, err := j.write(rec, false); err != nil {
			t.Fatal(err)
		}
	}
	r, err := j.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, c := range cases {
		rec, err := r.Next()
		if err != nil || rec.Kind != KindExtent || rec.Offset != int64(i)<<20 {
			t.Fatalf("%s: %v %v at %d, want its extent", c.name, err, rec.Kind, rec.Offset)
		}
		if want := crc32.Checksum(c.data, castagnoli); rec.DataSum != want {
			t.Errorf("%s: extent sum %x, want the data's %x", c.name, rec.DataSum, want)
		}
		if got := disk.Bytes()[i<<20 : i<<20+len(c.data)]; !bytes.Equal(got, c.data) {
			t.Errorf("%s: not on the disk", c.name)
		}
	}
}

// heldDisk is a MemDisk whose writes wait until release is closed: a
// record's apply that has not run yet when the process dies.
type heldDisk struct {
	*MemDisk
	release chan struct{}
}

func (d *heldDisk) WriteAt(p []byte, off int64) (int, error) {
	<-d.release
	return d.MemDisk.WriteAt(p, off)
}

// TestInPlaceOverAnUnappliedRecord: a journaled write is in the segment
// (a Secondary acknowledges it then) but not applied yet, and a write in
// place over it is appended; the process dies before either reaches the
// disk. Recovery must not lose the journaled write to an extent whose
// data never landed.
func TestInPlaceOverAnUnappliedRecord(t *testing.T) {
	fs, mem := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	disk := &heldDisk{MemDisk: mem, release: make(chan struct{})}
	j, err := Open(fs, "/meta/journal", disk, Options{CheckpointInterval: -1, Logger: quiet, DataMax: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(9, 10))
	small, big := randomBytes(rnd, 8<<10), randomBytes(rnd, 128<<10)
	c := NewCompressor(CodecNone)
	applied := make(chan error, 2)
	done := func(_ uint64, err error) { applied <- err }
	j.AppendLater(c.Write(64<<10, small), false, nil, done)
	j.WriteQueued(false)
	seq := j.AppendLater(c.WriteLent(0, big), false, nil, done)
	j.WriteQueued(false)
	if err := j.AwaitWritten(seq, nil); err != nil {
		t.Fatal(err)
	}
	fs2, disk2 := fs.Clone(), mem.Clone() // the process dies; the OS keeps what it was given
	close(disk.release)
	for range 2 {
		if err := <-applied; err != nil {
			t.Fatal(err)
		}
	}
	j.Close()
	smallOrBig(t, fs2, disk2, small, big, "the journaled write was lost behind a write in place that never landed")
}

// TestInPlaceOverAFlushedRecord: a journaled write made durable by a
// FLUSH (its journal synced, the disk not), then a write in place over it
// whose extent frame a later FUA write makes durable; the power fails
// before the disk is synced. The flushed write must survive.
func TestInPlaceOverAFlushedRecord(t *testing.T) {
	fs, disk := vfs.NewMem(), NewMemDisk(inPlaceDiskSize)
	j := openInPlace(t, fs, disk, Options{})
	rnd := rand.New(rand.NewPCG(11, 12))
	small, big := randomBytes(rnd, 8<<10), randomBytes(rnd, 128<<10)
	c := NewCompressor(CodecNone)
	if _, err := j.write(c.Write(64<<10, small), false); err != nil {
		t.Fatal(err)
	}
	if err := j.SyncWait(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.write(c.WriteLent(0, big), false); err != nil {
		t.Fatal(err)
	}
	if _, err := j.write(c.Write(1<<20, make([]byte, 4096)), true); err != nil {
		t.Fatal(err)
	}
	fs2, disk2 := crashBoth(j, fs, disk)
	smallOrBig(t, fs2, disk2, small, big, "a flushed write was lost behind a write in place that the power loss took")
}

// smallOrBig recovers a journal on fs and disk and checks that the disk
// holds, at 64 KiB, the 8 KiB write small or the write big from 0 over it.
func smallOrBig(t *testing.T, fs *vfs.MemFS, disk *MemDisk, small, big []byte, lost string) {
	t.Helper()
	j := openInPlace(t, fs, disk, Options{})
	defer j.Close()
	got := disk.Bytes()[64<<10 : 72<<10]
	if !bytes.Equal(got, small) && !bytes.Equal(got, big[64<<10:72<<10]) {
		t.Fatalf("%s (holds %x...)", lost, got[:8])
	}
}

// TestUnsynced: which large writes overlap a record the synced disk may
// lack, by 4 KiB block, and wide records kept as spans; a disk sync past a
// record's seq drops it.
func TestUnsynced(t *testing.T) {
	var u unsynced
	u.note(70<<10, 4<<10, 5, 0) // blocks 17-18 (70 KiB is not aligned)
	u.note(10<<20, 8<<20, 7, 0) // wide: [10 MiB, 18 MiB)
	u.note(100<<10, 0, 9, 0)    // no bytes: nothing
	for _, c := range []struct {
		off, n  int64
		covered uint64
		want    bool
	}{
		{0, 64 << 10, 0, false},        // blocks 0-15
		{64 << 10, 8 << 10, 0, true},   // blocks 16-17
		{76 << 10, 64 << 10, 0, false}, // from block 19
		{64 << 10, 1 << 20, 5, false},  // synced past seq 5
		{17 << 20, 2 << 20, 6, true},   // the wide trim
		{18 << 20, 1 << 20, 6, false},  // just after it
		{9 << 20, 1<<20 + 1, 6, true},  // one byte into it
		{17 << 20, 2 << 20, 7, false},  // synced past every seq: all dropped
	} {
		if got := u.overlaps(c.off, c.n, c.covered); got != c.want {
			t.Errorf("overlaps(%d, %d, covered %d) = %v, want %v", c.off, c.n, c.covered, got, c.want)
		}
	}
	if len(u.blocks) != 0 || len(u.wide) != 0 {
		t.Fatalf("after a sync past every seq: %d blocks, %d spans left", len(u.blocks), len(u.wide))
	}
	u.note(0, 4<<10, 8, 0)
	u.note(8<<10, 4<<10, 9, 0)
	u.prune(8)
	if len(u.blocks) != 1 || u.overlaps(0, 4<<10, 8) || !u.overlaps(8<<10, 4<<10, 8) {
		t.Fatalf("prune past seq 8 kept %v", u.blocks)
	}
	// Small writes alone (nothing asks overlaps) stay bounded by what the
	// last disk sync left: noting prunes too.
	var v unsynced
	for i := range 100000 {
		v.note(int64(i)<<12, 4<<10, uint64(i+1), uint64(i))
	}
	if len(v.blocks) > 2048 {
		t.Fatalf("%d blocks kept, all but the last synced", len(v.blocks))
	}
}
