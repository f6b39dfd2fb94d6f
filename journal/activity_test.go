package journal

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// watchedActivity wraps fs so that every ACTIVITY file put in place is
// reported on the channel; just before, *atRename runs if it is set.
func watchedActivity(fs vfs.FS) (watched vfs.FS, written chan struct{}, atRename *func()) {
	written = make(chan struct{}, 8)
	var mu sync.Mutex
	renamed := false
	atRename = new(func())
	return vfs.Inject(fs, func(op vfs.Op, path string) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case op == vfs.OpRename && path == testDir+"/"+activityTmp:
			if f := *atRename; f != nil {
				f()
			}
			renamed = true
		case op == vfs.OpSyncDir && renamed:
			renamed = false
			written <- struct{}{}
		}
		return nil
	}), written, atRename
}

// durableDisk is a disk that counts the writes made while the journal did
// not yet hold the seq in want durably.
type durableDisk struct {
	*MemDisk
	j         atomic.Pointer[Journal]
	want      atomic.Uint64
	writes    atomic.Int32 // writes made while want was set
	undurable atomic.Int32 // of them, before want was durable
}

func (d *durableDisk) WriteAt(p []byte, off int64) (int, error) {
	if j, want := d.j.Load(), d.want.Load(); j != nil && want != 0 {
		d.writes.Add(1)
		if j.durableSeq.Load() < want {
			d.undurable.Add(1)
		}
	}
	return d.MemDisk.WriteAt(p, off)
}

// A write outside the activity set is synced in the journal before it is
// applied, and the set then grows to hold its extent, durably, naming this
// boot; a later write there is applied without a journal sync.
func TestColdWriteIsDurableBeforeItIsApplied(t *testing.T) {
	fs, written, _ := watchedActivity(vfs.NewMem())
	o := testOptions()
	o.activityExtent = 16 << 10
	disk := &durableDisk{MemDisk: NewMemDisk(crashDiskSize)}
	j, err := Open(fs, testDir, disk, o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	disk.j.Store(j)
	c := NewCompressor(CodecNone)
	disk.want.Store(j.LastSeq() + 1)
	if _, err := j.write(c.Write(0, make([]byte, 4096)), false); err != nil {
		t.Fatal(err)
	}
	if disk.writes.Load() == 0 || disk.undurable.Load() != 0 {
		t.Fatalf("a write outside the set: %d disk writes, %d of them before its journal sync; want some, and none",
			disk.writes.Load(), disk.undurable.Load())
	}
	disk.want.Store(0)
	select {
	case <-written:
	case <-time.After(hangLimit):
		t.Fatal("no activity set published after a write outside it")
	}
	if a := readActivity(t, fs); !slices.Equal(a.extents, []int64{0}) || a.boot != j.boot || a.boot == "" {
		t.Fatalf("ACTIVITY is %+v, want extent 0 in boot %q", a, j.boot)
	}
	syncs := j.st.syncs.Load()
	if _, err := j.write(c.Write(4096, make([]byte, 4096)), false); err != nil {
		t.Fatal(err)
	}
	if n := j.st.syncs.Load(); n != syncs {
		t.Fatalf("a write in the activity set made %d journal syncs, want none", n-syncs)
	}
}

// A set that drops an extent is written only once the journal holds every
// record applied under the old set durably: here a write applied unsynced
// in extent 0, which a second shrink drops (the first keeps it: it was
// touched since the last one). The write, at the end of the set's run,
// also has the extents ahead published first.
func TestShrinkSyncsTheJournalFirst(t *testing.T) {
	fs, written, atRename := watchedActivity(vfs.NewMem())
	o := testOptions()
	o.activityExtent = 16 << 10
	j, err := Open(fs, testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	c := NewCompressor(CodecNone)
	if _, err := j.write(c.Write(0, make([]byte, 4096)), false); err != nil {
		t.Fatal(err)
	}
	<-written
	hot, err := j.write(c.Write(4096, make([]byte, 4096)), false)
	if err != nil {
		t.Fatal(err)
	}
	<-written // at the end of the set's run: the extents ahead are published (noteActivity)
	// Extents 0 and 1 and the look-ahead.
	ahead := extentRange(0, 2+lookAheadMin)
	if a := readActivity(t, fs); !slices.Equal(a.extents, ahead) {
		t.Fatalf("after a write at the end of the set's run, ACTIVITY names %v, want %v", a.extents, ahead)
	}
	if j.durableSeq.Load() >= hot {
		t.Fatalf("the write in the set is durable already (durable %d, seq %d): the test shows nothing", j.durableSeq.Load(), hot)
	}
	var atWrite atomic.Uint64
	*atRename = func() { atWrite.Store(j.durableSeq.Load()) }
	shrink := func() { // on this goroutine: the activity goroutine is idle, nothing kicked it
		j.mu.Lock()
		j.act.shrink = true
		j.mu.Unlock()
		j.publishActivity()
	}
	shrink()
	if a := readActivity(t, fs); !slices.Equal(a.extents, ahead) {
		t.Fatalf("after a shrink, ACTIVITY names %v, want %v: 0 and 1 were touched since the last", a.extents, ahead)
	}
	shrink()
	<-written
	if a := readActivity(t, fs); len(a.extents) != 0 {
		t.Fatalf("after a second shrink, ACTIVITY names %v, want none", a.extents)
	}
	if got := atWrite.Load(); got < hot {
		t.Fatalf("the set dropping extent 0 was written with the journal durable to %d, before seq %d applied unsynced there", got, hot)
	}
}

// nextActivitySet grows, shrinks, keeps the most recently touched extents
// past the limit and says when it drops one of the published set.
func TestNextActivitySet(t *testing.T) {
	set := func(es ...int64) map[int64]struct{} {
		m := map[int64]struct{}{}
		for _, e := range es {
			m[e] = struct{}{}
		}
		return m
	}
	for _, tc := range []struct {
		name    string
		hot     map[int64]struct{}
		touched map[int64]uint64
		limit   int
		shrink  bool
		want    []int64
		drops   bool
	}{
		{"first set", nil, map[int64]uint64{7: 1}, 8, false, []int64{7}, false},
		{"grows", set(7), map[int64]uint64{9: 2}, 8, false, []int64{7, 9}, false},
		{"grows a run ahead, to the limit", set(3, 4), map[int64]uint64{5: 4}, 8, false, []int64{3, 4, 5, 6, 7, 8, 9, 10}, false},
		{"shrinks to the touched", set(7, 9), map[int64]uint64{9: 2}, 8, true, []int64{9}, true},
		{"shrinks to nothing", set(7), nil, 8, true, nil, true},
		{"nothing to shrink", nil, nil, 8, true, nil, false},
		{"full: the untouched go first", set(1, 3, 5, 7), map[int64]uint64{9: 5, 3: 4, 11: 6}, 4, false, []int64{3, 9, 11}, true},
		{"full: the most recent stay", nil, map[int64]uint64{1: 1, 3: 2, 5: 3, 7: 4, 9: 5}, 4, false, []int64{5, 7, 9}, false},
	} {
		got, drops := nextActivitySet(tc.hot, tc.touched, tc.limit, tc.shrink)
		if g := slices.Sorted(maps.Keys(got)); !slices.Equal(g, tc.want) || drops != tc.drops {
			t.Errorf("%s: nextActivitySet = %v, drops %v; want %v, drops %v", tc.name, g, drops, tc.want, tc.drops)
		}
	}
}

// A crash of the process alone reports nothing: the kernel kept what the
// journal wrote. A power loss (a new boot) reports the set. A clean Close
// leaves it empty: a power loss after it reports nothing.
func TestActivityAcrossCrashes(t *testing.T) {
	o := testOptions()
	o.activityExtent = 16 << 10
	fs, disk := vfs.NewMem(), NewMemDisk(crashDiskSize)
	watched, written, _ := watchedActivity(fs)
	j, err := Open(watched, testDir, disk, o)
	if err != nil {
		t.Fatal(err)
	}
	c := NewCompressor(CodecNone)
	for _, off := range []int64{0, 40 << 10} {
		if _, err := j.write(c.Write(off, make([]byte, 4096)), false); err != nil {
			t.Fatal(err)
		}
	}
	for a := (activityRecord{}); len(a.extents) < 2; a = readActivity(t, fs) {
		<-written // one set or two, both extents in the last
	}
	for _, power := range []bool{false, true} {
		var after *vfs.MemFS
		var d *MemDisk
		if power {
			d = disk.CrashWith(func() { after = fs.CrashClone(nil) })
		} else {
			d = disk.CloneWith(func() { after = fs.Clone() })
		}
		j2, err := Open(after, testDir, d, o)
		if err != nil {
			t.Fatal(err)
		}
		got := j2.RecoveredExtents()
		j2.Close()
		want := 0
		if power {
			want = 2
		}
		if len(got) != want {
			t.Errorf("power loss %v: %d extents reported, want %d", power, len(got), want)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if a := readActivity(t, fs); len(a.extents) != 0 {
		t.Fatalf("after a clean Close ACTIVITY names %v, want none", a.extents)
	}
	j2, err := Open(fs.CrashClone(nil), testDir, disk.Crash(), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	if got := j2.RecoveredExtents(); len(got) != 0 {
		t.Fatalf("a power loss after a clean Close: %+v reported", got)
	}
}

// exposed decides whether recovery reports an activity set's extents.
func TestActivityExposed(t *testing.T) {
	for _, c := range []struct {
		name string
		a    activityRecord
		last uint64
		boot string
		want bool
	}{
		{"no extents", activityRecord{boot: "a"}, 0, "b", false},
		{"the same boot: the kernel kept what the journal wrote", activityRecord{extents: []int64{3}, boot: "a"}, 0, "a", false},
		{"a new boot: a power loss may have kept disk writes the journal lost", activityRecord{extents: []int64{3}, boot: "a"}, 100, "b", true},
		{"no boot named", activityRecord{extents: []int64{3}}, 100, "", true},
		{"this boot unknown", activityRecord{extents: []int64{3}, boot: "a"}, 100, "", true},
		{"v1 open: the disk sync may have made anything durable", activityRecord{v1: true, extents: []int64{3}, from: 10}, 100, "a", true},
		{"v1 closed, the journal holds every record applied unsynced", activityRecord{v1: true, extents: []int64{3}, closed: true, upto: 20}, 20, "a", false},
		{"v1 closed, the journal lost records applied unsynced", activityRecord{v1: true, extents: []int64{3}, closed: true, upto: 20}, 19, "a", true},
	} {
		if got := c.a.exposed(c.last, c.boot); got != c.want {
			t.Errorf("%s: exposed(%d, %q) = %v, want %v", c.name, c.last, c.boot, got, c.want)
		}
	}
}

// The ACTIVITY file reads back as written, a damaged one is refused, and a
// file of the first version reads as it was written.
func TestActivityFile(t *testing.T) {
	a := activityRecord{from: 7, extent: 4 << 20, boot: "0d7c0e0c-3b7c-4a0e-9a55-6f1b0f3f0c11", extents: []int64{0, 5, 1 << 40}}
	b := a.encode()
	got, err := decodeActivity(b)
	if err != nil || got.from != 7 || got.extent != 4<<20 || got.boot != a.boot || got.v1 || !slices.Equal(got.extents, a.extents) {
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
	v1 := make([]byte, activityHeaderV1)
	copy(v1, activityMagicV1)
	binary.LittleEndian.PutUint64(v1[8:], 7)
	binary.LittleEndian.PutUint64(v1[16:], 9)
	binary.LittleEndian.PutUint64(v1[24:], 4<<20)
	binary.LittleEndian.PutUint32(v1[32:], 1)
	v1[36] = 1
	v1 = binary.LittleEndian.AppendUint64(v1, 5)
	v1 = binary.LittleEndian.AppendUint32(v1, crc32.Checksum(v1, castagnoli))
	v1 = binary.LittleEndian.AppendUint32(v1, 0)
	got, err = decodeActivity(v1)
	if err != nil || !got.v1 || got.from != 7 || got.upto != 9 || got.extent != 4<<20 || !got.closed || !slices.Equal(got.extents, []int64{5}) {
		t.Fatalf("a version 1 file decoded as %+v, %v", got, err)
	}
}

// A journal reopened on an activity set of another boot reports its
// extents, Active, and refuses a damaged ACTIVITY file, as it refuses a
// damaged checkpoint.
func TestOpenReportsAnActivitySetOfAnotherBoot(t *testing.T) {
	fs := vfs.NewMem()
	j, err := Open(fs, testDir, NewMemDisk(crashDiskSize), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	j.Close()
	open := activityRecord{from: 1, extent: 16 << 10, boot: "an earlier boot", extents: []int64{1, 2}}
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
	// Once the caller marked them, a later crash does not report them
	// again. (The Close above left the set empty: no caller was to mark it.)
	if err := vfs.WriteFileAtomic(fs, testDir, activityFile, open.encode()); err != nil {
		t.Fatal(err)
	}
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

// lookAhead extends each run of two or more extents by its own length,
// up to the most extents a set holds.
// extentRange is the extents [from, to).
func extentRange(from, to int64) []int64 {
	var s []int64
	for e := from; e < to; e++ {
		s = append(s, e)
	}
	return s
}

func TestLookAhead(t *testing.T) {
	for _, tc := range []struct {
		in   []int64
		max  int
		want []int64
	}{
		{in: []int64{5}, max: 100, want: []int64{5}},
		{in: []int64{1, 3, 5}, max: 100, want: []int64{1, 3, 5}},
		{in: []int64{0, 1, 2}, max: 100, want: extentRange(0, 3+lookAheadMin)},
		{in: []int64{0, 1, 10, 11, 12}, max: 200, want: extentRange(0, 13+lookAheadMin)},
		{in: extentRange(0, 2*lookAheadMin), max: 1000, want: extentRange(0, 4*lookAheadMin)},
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
