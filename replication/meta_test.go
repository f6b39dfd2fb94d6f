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
	got := r.meta
	if got.TailFrom == 0 {
		t.Error("the marked activity set left no tail floor (TailFrom)")
	}
	got.TailFrom = 0 // set by the marking, after the crash
	if got != saved || got.Gen.Bitmap == 0 {
		t.Errorf("meta after the crash %+v, saved %+v (a Primary alone has a bitmap generation)", r.meta, saved)
	}
	// The power loss marks the 3 writes and the journal's activity set,
	// whose one 4 MiB extent covers the whole disk here.
	active := 0
	for _, e := range r.journal.RecoveredExtents() {
		if e.Active {
			active++
		}
	}
	if got := r.oos.bytes(); active != 1 || got != testSize {
		t.Errorf("%d bytes marked after the crash, %d activity extents reported; want the whole disk, 1", got, active)
	}
}

// A Primary that opens goes on without the link of its last run: as at a
// link loss, it starts a generation over the one it shared with its peer,
// so that a peer promoted meanwhile meets it as a split brain, and no
// resync takes its writes away as those of a node behind. One whose bitmap
// counts from an older generation has one of its own already, and keeps it.
func TestPrimaryOpenedStartsAGeneration(t *testing.T) {
	fs, disk, dir := journal.NewMemFS(), journal.NewMemDisk(testSize), t.TempDir()
	gen := func(role wire.Role, created bool) wire.GenIDs {
		t.Helper()
		r, err := Open(Config{Name: "r0", Disk: memDisk{disk}, MetaDir: dir, FS: fs,
			Role: role, Created: created, CheckpointInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.meta.Gen
	}
	shared := gen(wire.Secondary, true)
	if shared.Bitmap != 0 {
		t.Fatalf("a created Secondary has bitmap generation %d", shared.Bitmap)
	}
	own := gen(wire.Primary, false)
	if own.Current == shared.Current || own.Bitmap != shared.Current {
		t.Fatalf("a Primary opened in generation %+v is in %+v, want a new one counting from %d", shared, own, shared.Current)
	}
	if again := gen(wire.Primary, false); again != own {
		t.Fatalf("a Primary opened with a bitmap generation moved from %+v to %+v", own, again)
	}
}
