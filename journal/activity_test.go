package journal

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// readActivity reads and decodes the ACTIVITY file of the journal in fs.
func readActivity(t *testing.T, fs vfs.FS) activityRecord {
	t.Helper()
	b, err := vfs.ReadFile(fs, testDir+"/"+activityFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := decodeActivity(b)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// While a checkpoint's disk sync runs, a write whose extent is in the
// activity set is applied without a journal sync, and a write elsewhere is
// synced in the journal first. The ACTIVITY file names the set, open, while
// the disk syncs; closed, it names the last seq applied unsynced.
func TestActivitySetSparesTheJournalSync(t *testing.T) {
	fs := vfs.NewMem()
	written := make(chan struct{}, 4) // an ACTIVITY file was put in place
	var mu sync.Mutex
	renamed := false
	watched := vfs.Inject(fs, func(op vfs.Op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op == vfs.OpRename && path == testDir+"/"+activityTmp:
			renamed = true
		case op == vfs.OpSyncDir && renamed:
			renamed = false
			written <- struct{}{}
		}
		return nil
	})
	o := testOptions()
	o.activityExtent = 16 << 10
	j, disk, unblock := openGated(t, watched, o)
	c := NewCompressor(CodecNone)
	write := func(off int64) uint64 {
		done := make(chan error, 1)
		seq := j.appendNow(c.Write(off, make([]byte, 4096)), false, func(_ uint64, err error) { done <- err })
		if err := waitResult(t, done, "a write while the disk syncs"); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	write(0) // extent 0 is touched
	disk.syncHeld <- struct{}{}
	ckpt := make(chan error, 1)
	if err := j.queueCheckpoint(func(_ uint64, err error) { ckpt <- err }); err != nil {
		t.Fatal(err)
	}
	<-disk.syncEntered // the set is published before the disk sync starts
	<-written
	if a := readActivity(t, fs); a.closed || !slices.Equal(a.extents, []int64{0}) {
		t.Fatalf("while the disk syncs, ACTIVITY is %+v, want extent 0 open", a)
	}
	syncs := j.st.syncs.Load()
	hot := write(4096)
	if n := j.st.syncs.Load(); n != syncs {
		t.Fatalf("a write in the activity set made %d journal syncs, want none", n-syncs)
	}
	write(32 << 10) // extent 2
	if j.st.syncs.Load() == syncs {
		t.Fatal("a write outside the activity set was applied during the disk sync without a journal sync")
	}
	unblock()
	if err := waitResult(t, ckpt, "the checkpoint"); err != nil {
		t.Fatal(err)
	}
	<-written // closed once the checkpoint is done
	if a := readActivity(t, fs); !a.closed || a.upto != hot {
		t.Fatalf("after the disk sync, ACTIVITY is %+v, want closed up to seq %d", a, hot)
	}
}

// exposed decides whether recovery reports an activity set's extents.
func TestActivityExposed(t *testing.T) {
	for _, c := range []struct {
		name string
		a    activityRecord
		last uint64
		want bool
	}{
		{"no extents", activityRecord{}, 0, false},
		{"open: the disk sync may have made anything durable", activityRecord{extents: []int64{3}, from: 10}, 100, true},
		{"closed, the journal holds every record applied unsynced", activityRecord{extents: []int64{3}, closed: true, upto: 20}, 20, false},
		{"closed, the journal lost records applied unsynced", activityRecord{extents: []int64{3}, closed: true, upto: 20}, 19, true},
		{"closed, nothing applied unsynced", activityRecord{extents: []int64{3}, closed: true}, 0, false},
	} {
		if got := c.a.exposed(c.last); got != c.want {
			t.Errorf("%s: exposed(%d) = %v, want %v", c.name, c.last, got, c.want)
		}
	}
}

// The ACTIVITY file reads back as written, and a damaged one is refused.
func TestActivityFile(t *testing.T) {
	a := activityRecord{from: 7, upto: 9, extent: 4 << 20, closed: true, extents: []int64{0, 5, 1 << 40}}
	b := a.encode()
	got, err := decodeActivity(b)
	if err != nil || got.from != 7 || got.upto != 9 || got.extent != 4<<20 || !got.closed || !slices.Equal(got.extents, a.extents) {
		t.Fatalf("decode(encode(%+v)) = %+v, %v", a, got, err)
	}
	for i := range b[:len(b)-4] {
		bad := slices.Clone(b)
		bad[i] ^= 1
		if _, err := decodeActivity(bad); err == nil {
			t.Fatalf("byte %d flipped: decoded", i)
		}
	}
	if _, err := decodeActivity(b[:len(b)-8]); err == nil {
		t.Fatal("a short file decoded")
	}
}

// A journal reopened on an open activity set reports its extents, Active,
// and refuses a damaged ACTIVITY file, as it refuses a damaged checkpoint.
func TestOpenReportsAnOpenActivitySet(t *testing.T) {
	fs := vfs.NewMem()
	j, err := Open(fs, testDir, NewMemDisk(crashDiskSize), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	open := activityRecord{from: 1, extent: 16 << 10, extents: []int64{1, 2}}
	if err := vfs.WriteFileAtomic(fs, testDir, activityFile, open.encode()); err != nil {
		t.Fatal(err)
	}
	j, err = Open(fs, testDir, NewMemDisk(crashDiskSize), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	got := j.RecoveredExtents()
	j.Close()
	want := []Extent{{Seq: 1, Offset: 16 << 10, Len: 16 << 10, Active: true}, {Seq: 1, Offset: 32 << 10, Len: 16 << 10, Active: true}}
	if !slices.Equal(got, want) {
		t.Fatalf("RecoveredExtents = %+v, want %+v", got, want)
	}
	// Once the caller marked them, a later crash does not report them again.
	o := testOptions()
	o.MarkExtents = true
	for _, marked := range []bool{false, true} {
		j, err = Open(fs, testDir, NewMemDisk(crashDiskSize), o)
		if err != nil {
			t.Fatal(err)
		}
		if n := len(j.RecoveredExtents()); n != 2 {
			t.Fatalf("reopened (marked before: %v): %d extents reported, want 2", marked, n)
		}
		if marked {
			j.ExtentsMarked()
		}
		j.Close()
	}
	if j, err = Open(fs, testDir, NewMemDisk(crashDiskSize), o); err != nil {
		t.Fatal(err)
	}
	if got := j.RecoveredExtents(); len(got) != 0 {
		t.Fatalf("reopened after ExtentsMarked: %+v reported again", got)
	}
	j.Close()
	b := open.encode()
	b[9] ^= 1
	if err := vfs.WriteFileAtomic(fs, testDir, activityFile, b); err != nil {
		t.Fatal(err)
	}
	var ce *CorruptionError
	if _, err := Open(fs, testDir, NewMemDisk(crashDiskSize), testOptions()); !errors.As(err, &ce) {
		t.Fatalf("Open on a damaged ACTIVITY file: %v, want a CorruptionError", err)
	}
}
