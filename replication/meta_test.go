package replication

import (
	"testing"

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
	m.newCurrent()
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
