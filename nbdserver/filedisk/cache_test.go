package filedisk

import (
	"bytes"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// resident counts the pages of path in the page cache.
func resident(t *testing.T, path string) int {
	t.Helper()
	n, err := Resident(path)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestDropCacheLeavesNoPageCachedAndLosesNothing(t *testing.T) {
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.TMPFS_MAGIC {
		t.Skip("tmpfs pages cannot leave the page cache")
	}
	path := filepath.Join(dir, "disk.img")
	d, err := Open(path, 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte("0123456789abcdef"), (2<<20)/16)
	if _, err := d.WriteAt(data, 1<<20); err != nil { // dirty, never synced
		t.Fatal(err)
	}
	if n := resident(t, path); n < 256 {
		t.Fatalf("%d pages cached after a 2 MiB write, want at least 256", n)
	}
	if err := d.DropCache(); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path); n != 0 {
		t.Fatalf("%d pages still cached after DropCache", n)
	}
	if d.CacheDrops() != 1 {
		t.Fatalf("CacheDrops %d, want 1", d.CacheDrops())
	}
	got := make([]byte, len(data))
	if _, err := d.ReadAt(got, 1<<20); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the data read back after DropCache differs from what was written")
	}
}
