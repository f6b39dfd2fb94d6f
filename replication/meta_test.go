package replication

import (
	"bytes"
	"os"
	"path"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// TestMetaLivesOnTheResourceFS checks that meta.json is created, replaced
// and read through the given file system, and that a power loss of that
// file system right after a save keeps what was saved.
func TestMetaLivesOnTheResourceFS(t *testing.T) {
	fs := vfs.NewMem()
	if err := fs.MkdirAll("/meta", 0o755); err != nil {
		t.Fatal(err)
	}
	m, err := loadMeta(fs, "/meta", true)
	if err != nil {
		t.Fatal(err)
	}
	if m.Gen.Current != GenZero || m.NodeID == 0 {
		t.Fatalf("a new created node: %+v", m)
	}
	m.Disk = wire.Outdated.String()
	m.Gen = newGeneration(m.Gen, randomID())
	if err := writeMeta(fs, "/meta", m); err != nil {
		t.Fatal(err)
	}
	got, err := loadMeta(fs.CrashClone(nil), "/meta", false)
	if err != nil {
		t.Fatal(err)
	}
	if got != m {
		t.Fatalf("after a crash: %+v, saved %+v", got, m)
	}
	if err := writeAtomic(fs, "/meta", metaFile, []byte("{")); err != nil {
		t.Fatal(err)
	}
	if _, err := loadMeta(fs, "/meta", false); err == nil {
		t.Fatal("a damaged meta.json loaded")
	}
}

// TestResourceStateLivesOnItsFS promotes a node alone on a memory file
// system (a new generation), writes (each write is marked: no peer has
// it), saves, and opens
// again on what a power loss of that file system and the disk leaves: the
// generation ids and the marks are back, meta.json and the bitmap are in the
// memory file system, and the real META-DIR holds nothing.
func TestResourceStateLivesOnItsFS(t *testing.T) {
	testCrashOfANodeAlone(t, true)
}

// TestCrashBeforeTheFirstBitmapSave: as above, but the power goes before
// any bitmap was saved. The node has a bitmap generation and no bitmap
// file: every write its journal holds is marked again, none is taken as
// one the peer has.
func TestCrashBeforeTheFirstBitmapSave(t *testing.T) {
	testCrashOfANodeAlone(t, false)
}

func testCrashOfANodeAlone(t *testing.T, save bool) {
	fs, disk, dir := journal.NewMemFS(), journal.NewMemDisk(testSize), t.TempDir()
	open := func(fs vfs.FS, disk *journal.MemDisk, role wire.Role) *Resource {
		t.Helper()
		r, err := Open(Config{Name: "r0", Disk: memDisk{disk}, MetaDir: dir, FS: fs,
			Role: role, Created: true, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := open(fs, disk, wire.Secondary)
	if err := r.SetRole(wire.Primary, false); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 64 << 10, testSize - 4096} {
		if _, err := r.WriteAtFUA(bytes.Repeat([]byte{1}, 4096), off); err != nil {
			t.Fatal(err)
		}
	}
	if save {
		if err := r.saveBitmap(); err != nil {
			t.Fatal(err)
		}
	}
	r.mu.Lock()
	saved := r.meta
	r.mu.Unlock()
	afterFS, afterDisk := fs.CrashClone(nil), disk.Crash()
	r.Close()
	names := []string{metaFile}
	if save {
		names = append(names, bitmapFile)
	}
	for _, name := range names {
		if _, err := afterFS.Stat(path.Join(dir, name)); err != nil {
			t.Errorf("%s is not on the resource's file system: %v", name, err)
		}
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
		t.Errorf("the real META-DIR holds %v (%v)", ents, err)
	}
	r = open(afterFS, afterDisk, wire.Primary)
	defer r.Close()
	// The power loss marks the 3 writes and, if its file was durable by
	// then, the journal's activity set, whose first 4 MiB extent covers the
	// whole disk here; marking it sets the tail floor (TailFrom).
	active := 0
	for _, e := range r.journal.RecoveredExtents() {
		if e.Active {
			active++
		}
	}
	want := int64(3 * 4096)
	if active > 0 {
		want = testSize
	}
	if got := r.oos.bytes(); got != want { // the set may name extents ahead too, past the disk's end
		t.Errorf("%d bytes marked after the crash, %d activity extents reported; want %d", got, active, want)
	}
	got := r.meta
	if (got.TailFrom != 0) != (active > 0) {
		t.Errorf("tail floor %d with %d activity extents marked", got.TailFrom, active)
	}
	got.TailFrom = 0 // set by the marking, after the crash
	if got != saved || got.Gen.Bitmap == 0 {
		t.Errorf("meta after the crash %+v, saved %+v (a Primary alone has a bitmap generation)", r.meta, saved)
	}
}

// A Primary that opens goes on without the link of its last run: its
// first write apart starts a generation over the one it shared with its
// peer, as at a link loss, so that a peer promoted meanwhile meets it as a
// split brain, and no resync takes its writes away as those of a node
// behind. One that writes nothing keeps the generation (a peer that moved
// on is newer, not split from it); one whose bitmap counts from an older
// generation has one of its own already, and keeps it, unless its
// resync's target may have reached it (meta.DoneSent).
func TestPrimaryOpenedStartsAGenerationAtItsFirstWrite(t *testing.T) {
	fs, disk, dir := journal.NewMemFS(), journal.NewMemDisk(testSize), t.TempDir()
	gen := func(role wire.Role, created, write bool) wire.GenIDs {
		t.Helper()
		r, err := Open(Config{Name: "r0", Disk: memDisk{disk}, MetaDir: dir, FS: fs,
			Role: role, Created: created, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		if write {
			if _, err := r.WriteAt(make([]byte, 4096), 0); err != nil {
				t.Fatal(err)
			}
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.meta.Gen
	}
	shared := gen(wire.Secondary, true, false)
	if shared.Bitmap != 0 {
		t.Fatalf("a created Secondary has bitmap generation %d", shared.Bitmap)
	}
	if g := gen(wire.Primary, false, false); g != shared {
		t.Fatalf("a Primary opened in generation %+v and writing nothing is in %+v", shared, g)
	}
	own := gen(wire.Primary, false, true)
	if own.Current == shared.Current || own.Bitmap != shared.Current {
		t.Fatalf("a Primary opened in generation %+v wrote apart in %+v, want a new one counting from %d", shared, own, shared.Current)
	}
	if again := gen(wire.Primary, false, true); again != own {
		t.Fatalf("a Primary opened with a bitmap generation moved from %+v to %+v", own, again)
	}
	// Unless it had sent a resync's SyncDone in that generation and heard
	// no answer before it stopped: its target may be UpToDate in it.
	m, err := loadMeta(fs, dir, false)
	if err != nil {
		t.Fatal(err)
	}
	m.DoneSent = true
	if err := writeMeta(fs, dir, m); err != nil {
		t.Fatal(err)
	}
	if g := gen(wire.Primary, false, false); g != own {
		t.Fatalf("a Primary opened after a SyncDone sent in %+v and writing nothing is in %+v", own, g)
	}
	moved := gen(wire.Primary, false, true)
	if moved.Current == own.Current || moved.Bitmap != own.Bitmap || moved.History[0] != own.Current {
		t.Fatalf("a Primary opened after a SyncDone sent in %+v wrote apart in %+v, want a new one over it", own, moved)
	}
	if m, err = loadMeta(fs, dir, false); err != nil || m.DoneSent {
		t.Fatalf("after its generation moved on, meta.json still says the SyncDone was sent (%v)", err)
	}
}

// A node told to discard its data (resolve --discard-my-data) and started
// Primary takes the word back, as a promotion does: a Primary never
// discards its data, and the word kept would make its peer the source.
func TestStartedPrimaryTakesBackDiscardMyData(t *testing.T) {
	fs, disk, dir := journal.NewMemFS(), journal.NewMemDisk(testSize), t.TempDir()
	open := func(role wire.Role, created bool) *Resource {
		t.Helper()
		r, err := Open(Config{Name: "r0", Disk: memDisk{disk}, MetaDir: dir, FS: fs,
			Role: role, Created: created, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := open(wire.Secondary, true)
	if err := r.DiscardMyData(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	r = open(wire.Primary, false)
	defer r.Close()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.meta.DiscardMyData {
		t.Fatal("started Primary, the node still means to discard its data")
	}
	if m, err := loadMeta(fs, dir, false); err != nil || m.DiscardMyData {
		t.Fatalf("meta.json after the start: %+v, %v; want discard_my_data off", m, err)
	}
}
