package journal

import (
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// A segment on a real file system is synced early, once, when its writes come
// within presyncLead of its end, and again for the next segment; Close waits
// for an early sync under way. The rotation's own sync still runs.
func TestPresyncOncePerSegmentNearItsEnd(t *testing.T) {
	o := testOptions()
	o.segmentSize = presyncLead + 1<<20
	o.MaxBytes = 8 * o.segmentSize
	j, err := Open(vfs.Default, t.TempDir(), NewMemDisk(64<<20), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	c := NewCompressor(CodecNone)
	data := make([]byte, 64<<10)
	write := func(n int) {
		t.Helper()
		for i := range n {
			if _, err := j.write(c.Write(int64(i%512)*int64(len(data)), data), false); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(8) // half a MiB: far from the end
	j.presyncs.Wait()
	if got := j.Stats().Presyncs; got != 0 {
		t.Fatalf("%d early syncs %d bytes into a segment of %d, want 0", got, j.w.off, o.segmentSize)
	}
	write(24) // past segmentSize - presyncLead
	j.presyncs.Wait()
	if got := j.Stats().Presyncs; got != 1 {
		t.Fatalf("%d early syncs %d bytes into a segment of %d, want 1", got, j.w.off, o.segmentSize)
	}
	write(16)
	j.presyncs.Wait()
	if got := j.Stats().Presyncs; got != 1 {
		t.Fatalf("%d early syncs with no new segment, want 1", got)
	}
	syncs := j.Stats().Syncs
	write(160) // a rotation, then 1 MiB and more into the next segment
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	st := j.Stats()
	if st.Presyncs != 2 {
		t.Fatalf("%d early syncs over two segments, want 2", st.Presyncs)
	}
	if st.Syncs == syncs {
		t.Fatal("no sync at the rotation: the early sync must not replace it")
	}
}

// A file system whose files cannot start write-back (the in-memory one the
// crash schedules run on) is never synced early: those schedules stay
// deterministic.
func TestNoPresyncWithoutWriteback(t *testing.T) {
	o := testOptions()
	o.segmentSize = presyncLead + 1<<20
	o.MaxBytes = 8 * o.segmentSize
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(64<<20), o)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCompressor(CodecNone)
	for i := range 200 {
		if _, err := j.write(c.Write(int64(i%512)<<16, make([]byte, 64<<10)), false); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if got := j.Stats().Presyncs; got != 0 {
		t.Fatalf("%d early syncs on the in-memory file system, want 0", got)
	}
}
