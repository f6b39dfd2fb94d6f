package filedisk

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directDisk opens a fresh disk of four regions at path, write-only and
// direct, and skips the test if its file system refuses O_DIRECT.
func directDisk(t *testing.T, path string) *Disk {
	t.Helper()
	d, err := Open(path, 4*cacheRegion)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.direct == nil {
		t.Skipf("%s refuses O_DIRECT", filepath.Dir(path))
	}
	d.SetWriteOnly(true)
	d.SetDirect(true)
	return d
}

// pattern is n bytes of seed's pattern, starting misaligned in memory by
// skew bytes from a 4096-aligned address.
func pattern(seed byte, n, skew int) []byte {
	b := alignedBytes(n + skew)[skew:]
	for i := range b {
		b[i] = seed + byte(i/512)
	}
	return b
}

// alignedBytes is n bytes at a 4096-aligned address.
func alignedBytes(n int) []byte {
	b := make([]byte, n+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	return b[skip : skip+n]
}

// onDevice reads [off, off+n) of the file at path with O_DIRECT: what the
// file holds, not a cached page that would hide it.
func onDevice(t *testing.T, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := alignedBytes(n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func readBack(t *testing.T, d *Disk, off int64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := d.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func write(t *testing.T, d *Disk, p []byte, off int64) {
	t.Helper()
	if n, err := d.WriteAt(p, off); err != nil || n != len(p) {
		t.Fatalf("write of %d at %d: %d, %v", len(p), off, n, err)
	}
}

func TestWriteOnlyDiskWritesLargeAlignedWritesDirect(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	for _, c := range []struct {
		name   string
		off    int64
		n      int
		skew   int // of the caller's slice from an aligned address
		direct bool
	}{
		{"1 MiB, aligned slice", 0, 1 << 20, 0, true},
		{"1 MiB, unaligned slice", 1 << 20, 1 << 20, 1, true},
		{"directMin", 3 << 20, directMin, 512, true},
		{"3 MiB, unaligned slice: in chunks", 4<<20 + 4096, 3 << 20, 8, true},
		{"below directMin", 2 << 20, directMin - directAlign, 0, false},
		{"small", 2<<20 + 8192, 4096, 0, false},
		{"offset off 4096", 512, 1 << 20, 0, false},
		{"length off 4096", 6 << 20, 1<<20 + 512, 0, false},
	} {
		before := d.DirectWrites()
		p := pattern(byte(len(c.name)), c.n, c.skew)
		write(t, d, p, c.off)
		if direct := d.DirectWrites() > before; direct != c.direct {
			t.Errorf("%s: direct %v, want %v", c.name, direct, c.direct)
		}
		if !bytes.Equal(readBack(t, d, c.off, c.n), p) {
			t.Errorf("%s: read back other bytes", c.name)
		}
	}
	if d.noDirect.Load() {
		t.Fatal("direct writes were turned off")
	}
}

func TestDirectWriteLeavesNothingCached(t *testing.T) {
	d, path := cachedDisk(t)
	if d.direct == nil {
		t.Skip("the temp dir refuses O_DIRECT")
	}
	d.SetWriteOnly(true)
	d.SetDirect(true)
	p := pattern(7, 1<<20, 0)
	write(t, d, p, 512<<10) // half of it in region 0, half in region 1
	if n, err := Resident(path, 512<<10, 1<<20); err != nil || n != 0 {
		t.Fatalf("%d pages of the direct write's range cached (%v)", n, err)
	}

	// A region covered whole holds nothing a small write could drop...
	write(t, d, pattern(8, cacheRegion, 0), 2*cacheRegion)
	if n := resident(t, path, 2); n != 0 {
		t.Fatalf("region 2: %d pages cached after a direct write over all of it", n)
	}
	write(t, d, pattern(9, 4096, 0), 2*cacheRegion+4096)
	if d.CacheDrops() != 0 {
		t.Fatalf("%d drops: a small write dropped a region a direct write had emptied", d.CacheDrops())
	}
	// ... but one covered in part may keep its other pages (here the read
	// had cached region 0 in one folio, which went whole), dropped before a
	// small write as before.
	write(t, d, pattern(9, 4096, 0), 4096)
	if d.CacheDrops() != 1 {
		t.Fatalf("%d drops after a small write into region 0, in part cached, want 1", d.CacheDrops())
	}
}

// TestDirectAndBufferedWritesAgree checks the kernel's coherence between
// the two descriptors: the later of two overlapping writes holds, for a
// read through the cache and on the device, in either order.
func TestDirectAndBufferedWritesAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	large, small := pattern(1, 1<<20, 0), pattern(2, 8192, 0)
	check := func(when string, off int64, want []byte) {
		t.Helper()
		if !bytes.Equal(readBack(t, d, off, len(want)), want) {
			t.Errorf("%s: a read sees other bytes", when)
		}
		if !bytes.Equal(onDevice(t, path, off, len(want)), want) {
			t.Errorf("%s: the file holds other bytes", when)
		}
	}
	sync := func() {
		t.Helper()
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
		unix.Fadvise(d.fd, 0, 0, unix.FADV_DONTNEED)
	}

	// A buffered write, dirty in the cache, then a direct one over it: the
	// dirty page must not be written back over the direct write later.
	write(t, d, small, 64<<10)
	write(t, d, large, 0)
	check("buffered then direct", 0, large)
	sync()
	check("buffered then direct, synced", 0, large)

	// A direct write, then a buffered one over part of it.
	write(t, d, small, 64<<10)
	want := bytes.Clone(large)
	copy(want[64<<10:], small)
	check("direct then buffered", 0, want)
	sync()
	check("direct then buffered, synced", 0, want)

	// A range read into the cache, then written direct: the read after it
	// must not be served the old pages.
	readBack(t, d, 2<<20, 1<<20)
	write(t, d, large, 2<<20)
	check("read then direct", 2<<20, large)
	if d.DirectWrites() != 2 {
		t.Fatalf("%d direct writes, want 2", d.DirectWrites())
	}
}

// TestRandomMixOfWritesReadsBack runs a seeded random mix of direct and
// buffered writes, reads and syncs, and checks every read and the file at
// the end against a copy kept in memory.
func TestRandomMixOfWritesReadsBack(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	size := int64(4 * cacheRegion)
	model := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := []int{512, 4096, 12288, 64 << 10, 128 << 10, 256 << 10, 1 << 20, 3 << 20}
	for i := range 400 {
		n := sizes[rng.IntN(len(sizes))]
		off := rng.Int64N(size-int64(n)+1) &^ (directAlign - 1)
		if rng.IntN(4) == 0 {
			off = rng.Int64N(size - int64(n) + 1) // mostly unaligned
		}
		p := pattern(byte(i), n, []int{0, 1, 512}[rng.IntN(3)])
		write(t, d, p, off)
		copy(model[off:], p)
		switch rng.IntN(8) {
		case 0:
			if err := d.Sync(); err != nil {
				t.Fatal(err)
			}
		case 1:
			d.SetDirect(!d.directOn.Load())
		}
		lo := max(0, off-int64(rng.IntN(64<<10)))
		hi := min(size, off+int64(n)+int64(rng.IntN(64<<10)))
		if !bytes.Equal(readBack(t, d, lo, int(hi-lo)), model[lo:hi]) {
			t.Fatalf("write %d (%d at %d, %d direct so far): [%d, %d) reads back other bytes", i, n, off, d.DirectWrites(), lo, hi)
		}
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(onDevice(t, path, 0, int(size)), model) {
		t.Fatal("the file holds other bytes than were written")
	}
	if d.DirectWrites() == 0 || d.noDirect.Load() {
		t.Fatalf("%d direct writes, turned off %v", d.DirectWrites(), d.noDirect.Load())
	}
}

func TestDiskNotToldDirectWritesThroughTheCache(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	d.SetDirect(false)
	write(t, d, pattern(3, 1<<20, 0), 0)
	if d.DirectWrites() != 0 {
		t.Fatalf("%d direct writes on a disk not told to", d.DirectWrites())
	}
	if n, _ := Resident(path, 0, 1<<20); n != (1<<20)/os.Getpagesize() {
		t.Fatalf("%d pages of a 1 MiB write cached on a disk that is read", n)
	}
}

func TestDiskRefusedODirectAtOpenWritesBuffered(t *testing.T) {
	openDirectFile = func(string) (*os.File, error) { return nil, unix.EINVAL }
	defer func() { openDirectFile = openDirectDefault }()
	d, err := Open(filepath.Join(t.TempDir(), "disk.img"), 4*cacheRegion)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	d.SetDirect(true)
	p := pattern(4, 1<<20, 0)
	write(t, d, p, 0)
	if d.DirectWrites() != 0 || !bytes.Equal(readBack(t, d, 0, len(p)), p) {
		t.Fatalf("%d direct writes without an O_DIRECT descriptor, or other bytes read back", d.DirectWrites())
	}
}

// TestDiskRefusedADirectWriteWritesBuffered has the kernel refuse a direct
// write for real: its buffer is misaligned in memory, which O_DIRECT
// refuses with EINVAL as it would refuse a file system's or device's
// alignment it does not meet.
func TestDiskRefusedADirectWriteWritesBuffered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	calls := 0
	pwriteDirect = func(fd int, p []byte, off int64) (int, error) {
		calls++
		q := alignedBytes(len(p) + 1)[1:]
		copy(q, p)
		return unix.Pwrite(fd, q, off)
	}
	defer func() { pwriteDirect = unix.Pwrite }()
	p := pattern(5, 1<<20, 0)
	write(t, d, p, 0)
	if calls != 1 || d.DirectWrites() != 0 || !d.noDirect.Load() {
		t.Fatalf("%d direct pwrites, %d direct writes, turned off %v: want 1, 0, true", calls, d.DirectWrites(), d.noDirect.Load())
	}
	write(t, d, p, 1<<20)
	if calls != 1 {
		t.Fatal("a direct write was tried after one was refused")
	}
	if !bytes.Equal(readBack(t, d, 0, len(p)), p) || !bytes.Equal(readBack(t, d, 1<<20, len(p)), p) {
		t.Fatal("other bytes read back")
	}
}

func TestDirectWriteErrorIsTheWritesError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	pwriteDirect = func(int, []byte, int64) (int, error) { return 0, unix.EIO }
	defer func() { pwriteDirect = unix.Pwrite }()
	if _, err := d.WriteAt(pattern(6, 1<<20, 0), 0); !errors.Is(err, unix.EIO) {
		t.Fatalf("write: %v, want the device's EIO", err)
	}
	if d.noDirect.Load() {
		t.Fatal("an I/O error turned direct writes off")
	}
}

func TestCloseClosesBothDescriptors(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	d := directDisk(t, path)
	if n := openDescriptors(t, path); n != 2 {
		t.Fatalf("%d descriptors of the disk open, want 2", n)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if n := openDescriptors(t, path); n != 0 {
		t.Fatalf("%d descriptors of the disk open after Close", n)
	}
}

// openDescriptors counts this process's descriptors open on path.
func openDescriptors(t *testing.T, path string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && l == path {
			n++
		}
	}
	return n
}

// TestBlockDeviceWritesDirect runs the coherence and fallback checks on a
// loop device (root only).
func TestBlockDeviceWritesDirect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a loop device")
	}
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip(err)
	}
	file := filepath.Join(t.TempDir(), "loop.img")
	if err := os.WriteFile(file, make([]byte, 4*cacheRegion), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", "--direct-io=off", file).Output()
	if err != nil {
		t.Skipf("losetup: %v", err)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })

	d := directDisk(t, dev)
	if !d.isBlock {
		t.Fatalf("%s not seen as a block device", dev)
	}
	small, large := pattern(1, 4096, 0), pattern(2, 1<<20, 1)
	write(t, d, small, 8192)
	write(t, d, large, 0)
	write(t, d, small, 12288)
	want := bytes.Clone(large)
	copy(want[12288:], small)
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	if d.DirectWrites() != 1 || !bytes.Equal(readBack(t, d, 0, len(want)), want) ||
		!bytes.Equal(onDevice(t, dev, 0, len(want)), want) {
		t.Fatalf("%d direct writes, or other bytes read back", d.DirectWrites())
	}

	pwriteDirect = func(int, []byte, int64) (int, error) { return 0, unix.EINVAL }
	defer func() { pwriteDirect = unix.Pwrite }()
	write(t, d, large, 2<<20)
	if d.DirectWrites() != 1 || !d.noDirect.Load() || !bytes.Equal(readBack(t, d, 2<<20, len(large)), large) {
		t.Fatalf("refused: %d direct writes, turned off %v, or other bytes read back", d.DirectWrites(), d.noDirect.Load())
	}
}

// BenchmarkWrite writes a 1 GiB file (written once before) in writes of
// each size, buffered and direct, from a misaligned buffer as the journal's
// are, and ends each pass with an fdatasync and the file's pages dropped:
// a Secondary's disk is not in the cache. It is how directMin was chosen:
//
//	go test -run NONE -bench Write -benchtime 5x ./internal/filedisk/
func BenchmarkWrite(b *testing.B) {
	const size = 1 << 30
	path := filepath.Join(b.TempDir(), "disk.img")
	d, err := Open(path, size)
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	if d.direct == nil {
		b.Skip("the temp dir refuses O_DIRECT")
	}
	pass := func(b *testing.B, p []byte, direct bool) {
		for off := int64(0); off < size; off += int64(len(p)) {
			var err error
			if direct {
				_, err = d.writeDirect(p, off)
			} else {
				_, err = d.WriteAt(p, off)
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := d.Sync(); err != nil {
			b.Fatal(err)
		}
		unix.Fadvise(d.fd, 0, 0, unix.FADV_DONTNEED)
	}
	pass(b, pattern(1, 1<<20, 16), false)
	for _, bs := range []int{64 << 10, 128 << 10, 256 << 10, 512 << 10, 1 << 20} {
		p := pattern(2, bs, 16)
		for _, mode := range []string{"buffered", "direct"} {
			b.Run(mode+"/"+fmtKiB(bs), func(b *testing.B) {
				b.SetBytes(size)
				busy := busyTime(b)
				for b.Loop() {
					pass(b, p, mode == "direct")
				}
				b.ReportMetric(float64(busyTime(b)-busy)/1e6/float64(b.N), "cpu-ms/op")
			})
		}
	}
}

func fmtKiB(n int) string { return strconv.Itoa(n>>10) + "K" }

// busyTime is the CPU time the machine spent outside idle and I/O wait, in
// nanoseconds: the write-back threads' time, which the writer's rusage
// leaves out, counts too.
func busyTime(b *testing.B) int64 {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Skip(err)
	}
	fields := strings.Fields(strings.SplitN(string(stat), "\n", 2)[0])
	var ticks int64
	for i, f := range fields[1:min(9, len(fields))] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		ticks += v
	}
	return ticks * 1e7 // USER_HZ is 100
}
