package journal

import (
	"errors"
	"maps"
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
	go func() { ckpt <- j.checkpoint() }()
	<-written // the set is published before the marker is queued
	<-disk.syncEntered
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
	<-written // closed before the checkpoint is done
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

// A set written over a closed one keeps the closed set's extents while the
// journal is not synced past the closed set's last seq: the records applied
// unsynced under it may be on the disk and not in the journal. With
// activityMax 1 the touched extents do not name them by chance.
func TestActivityKeepsTheClosedSetUntilSynced(t *testing.T) {
	for _, synced := range []bool{false, true} {
		o := testOptions()
		o.activityExtent, o.activityMax = 16<<10, 1
		j, disk, unblock := openGated(t, vfs.NewMem(), o)
		c := NewCompressor(CodecNone)
		write := func(off int64) {
			done := make(chan error, 1)
			j.appendNow(c.Write(off, make([]byte, 4096)), false, func(_ uint64, err error) { done <- err })
			if err := waitResult(t, done, "a write"); err != nil {
				t.Fatal(err)
			}
		}
		write(0)
		disk.syncHeld <- struct{}{}
		ckpt := make(chan error, 1)
		go func() { ckpt <- j.checkpoint() }()
		<-disk.syncEntered
		write(32 << 10) // extent 2, synced in the journal: the next set
		write(4096)     // extent 0, in the set: applied unsynced
		unblock()
		if err := waitResult(t, ckpt, "the first checkpoint"); err != nil {
			t.Fatal(err)
		}
		if synced {
			if err := j.SyncWait(); err != nil {
				t.Fatal(err)
			}
		}
		if err := j.checkpoint(); err != nil {
			t.Fatal(err)
		}
		want := []int64{0, 2}
		if synced {
			want = []int64{2}
		}
		if a := readActivity(t, j.fs); !slices.Equal(a.extents, want) {
			t.Fatalf("journal synced past the closed set: %v; the next set names %v, want %v", synced, a.extents, want)
		}
	}
}

// lookAhead extends each run of two or more extents by its own length,
// up to the most extents a set holds.
func TestLookAhead(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		max  int
		want []int64
	}{
		{in: []int64{5}, max: 100, want: []int64{5}},
		{in: []int64{1, 3, 5}, max: 100, want: []int64{1, 3, 5}},
		{in: []int64{0, 1, 2}, max: 100, want: []int64{0, 1, 2, 3, 4, 5}},
		{in: []int64{0, 1, 4, 5, 6}, max: 100, want: []int64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{in: []int64{0, 1, 2}, max: 4, want: []int64{0, 1, 2, 3}},
		{in: []int64{0, 1, 2}, max: 2, want: []int64{0, 1, 2}},
	} {
		set := map[int64]struct{}{}
		for _, e := range tc.in {
			set[e] = struct{}{}
		}
		lookAhead(set, tc.max)
		if got := slices.Sorted(maps.Keys(set)); !slices.Equal(got, tc.want) {
			t.Errorf("lookAhead(%v, %d) = %v, want %v", tc.in, tc.max, got, tc.want)
		}
	}
}
