package filedisk

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// cachedDisk makes a disk of four regions of data, written back and read
// once, so that every page of it is cached and clean.
func cachedDisk(t *testing.T) (*Disk, string) {
	t.Helper()
	dir := t.TempDir()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err == nil && st.Type == unix.TMPFS_MAGIC {
		t.Skip("the temp dir is a tmpfs: its pages cannot be dropped")
	}
	path := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(path, bytes.Repeat([]byte{0x5a}, 4*cacheRegion), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := Open(path, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(make([]byte, 4*cacheRegion), 0); err != nil {
		t.Fatal(err)
	}
	return d, path
}

// resident is how many pages of region r of the file at path are cached.
func resident(t *testing.T, path string, r int64) int {
	t.Helper()
	n, err := Resident(path, r*cacheRegion, cacheRegion)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestWriteOnlyDiskDropsARegionBeforeItsFirstSmallWrite(t *testing.T) {
	d, path := cachedDisk(t)
	pages := cacheRegion / os.Getpagesize()
	for r := int64(0); r < 4; r++ {
		if n := resident(t, path, r); n != pages {
			t.Fatalf("region %d: %d of %d pages cached after the read", r, n, pages)
		}
	}
	d.SetWriteOnly(true)
	small := bytes.Repeat([]byte{1}, 4096)
	if _, err := d.WriteAt(small, 8192); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path, 0); n > 1 {
		t.Fatalf("region 0: %d pages cached after a small write, want only the page written", n)
	}
	if n := resident(t, path, 1); n != pages {
		t.Fatalf("region 1, not written: %d of %d pages cached", n, pages)
	}
	if d.CacheDrops() != 1 {
		t.Fatalf("%d drops after the first small write, want 1", d.CacheDrops())
	}

	// Once dropped, a region is not dropped again by small writes...
	if _, err := d.WriteAt(small, 65536); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path, 0); n != 2 {
		t.Fatalf("region 0: %d pages cached after two small writes, want the 2 written", n)
	}
	// ... until a large buffered write (below directMin) or a read there
	// caches it anew.
	if _, err := d.WriteAt(bytes.Repeat([]byte{2}, 128<<10), 0); err != nil {
		t.Fatal(err)
	}
	if d.CacheDrops() != 1 {
		t.Fatalf("a large write dropped the cache (%d drops)", d.CacheDrops())
	}
	if _, err := d.WriteAt(small, 4096); err != nil {
		t.Fatal(err)
	}
	if d.CacheDrops() != 2 {
		t.Fatalf("%d drops, want 2: a small write after a large one drops the region again", d.CacheDrops())
	}
	if _, err := d.ReadAt(make([]byte, cacheRegion), cacheRegion); err != nil {
		t.Fatal(err)
	}
	// A small write that straddles two regions drops both; the region read
	// above had not been dropped yet anyway.
	if _, err := d.WriteAt(small, cacheRegion-2048); err != nil {
		t.Fatal(err)
	}
	if d.CacheDrops() != 3 {
		t.Fatalf("%d drops after a write across regions 0 and 1, want 3 (region 1)", d.CacheDrops())
	}
	if n := resident(t, path, 1); n > 1 {
		t.Fatalf("region 1: %d pages cached after the straddling write", n)
	}

	// The bytes are what was written, dropped or not.
	got := make([]byte, 4096)
	if _, err := d.ReadAt(got, 4096); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("read back %x..., %v", got[:4], err)
	}
}

func TestDiskThatIsReadKeepsItsCache(t *testing.T) {
	d, path := cachedDisk(t)
	pages := cacheRegion / os.Getpagesize()
	if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 4096), 8192); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path, 0); n != pages || d.CacheDrops() != 0 {
		t.Fatalf("%d of %d pages cached, %d drops: a disk that is read lost its cache", n, pages, d.CacheDrops())
	}
	// Turned on, then off again (a Secondary promoted): no drop.
	d.SetWriteOnly(true)
	d.SetWriteOnly(false)
	if _, err := d.WriteAt(bytes.Repeat([]byte{1}, 4096), cacheRegion); err != nil {
		t.Fatal(err)
	}
	if n := resident(t, path, 1); n != pages || d.CacheDrops() != 0 {
		t.Fatalf("%d of %d pages cached, %d drops after write-only was turned off", n, pages, d.CacheDrops())
	}
}
