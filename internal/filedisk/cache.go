package filedisk

import (
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A node that does not read its disk (a Secondary) has no use for the disk's
// pages in the page cache, and on ext4 they cost it on small writes: a write
// walks every block of the cached folio it lands in, so a 4 KiB write into a
// folio that readahead or a large write made 2 MiB costs several times one
// into a page of its own. With write-only set, the disk drops the clean
// cached pages of a region before the first small write there; large writes
// and reads, which make large folios again, have the region dropped anew
// before the next small write. Large buffered writes themselves keep the
// cache: they fill whole folios, and dropping them first would only make
// them allocate fresh ones. Large aligned writes go around the cache
// (direct.go) and leave nothing cached: a region they cover whole is marked
// dropped.
const (
	cacheRegion = 2 << 20  // the largest folio the page cache makes (a PMD on x86-64)
	smallWrite  = 64 << 10 // writes up to this size drop the region first
)

// SetWriteOnly says whether this node reads the disk (false, the default)
// or only writes it (true), see above. Turning it on forgets which regions
// were dropped: the cache may hold anything by then.
func (d *Disk) SetWriteOnly(on bool) {
	if on {
		for i := range d.dropped {
			d.dropped[i].Store(0)
		}
	}
	d.writeOnly.Store(on)
}

// CacheDrops is how many regions small writes had dropped from the page cache.
func (d *Disk) CacheDrops() uint64 { return d.drops.Load() }

// beforeWrite drops, on a write-only disk, the regions a small write of n
// bytes at off lands in unless they were dropped since their last large
// write or read; a large write marks its regions cached again.
func (d *Disk) beforeWrite(off, n int64) {
	if !d.writeOnly.Load() || n == 0 {
		return
	}
	if n > smallWrite {
		d.cached(off, n)
		return
	}
	for r := off / cacheRegion; r <= (off+n-1)/cacheRegion; r++ {
		w, bit := d.regionBit(r)
		if w.Load()&bit != 0 || w.Or(bit)&bit != 0 { // dropped already, or by another writer now
			continue
		}
		// Only clean pages go; dirty ones are left (and their write-back
		// started). A failure costs speed, not data: it is not an error.
		if unix.Fadvise(d.fd, r*cacheRegion, cacheRegion, unix.FADV_DONTNEED) == nil {
			d.drops.Add(1)
		}
	}
}

// cached marks the regions of [off, off+n) as possibly cached in large
// folios again, on a write-only disk.
func (d *Disk) cached(off, n int64) {
	if !d.writeOnly.Load() || n == 0 {
		return
	}
	for r := off / cacheRegion; r <= (off+n-1)/cacheRegion; r++ {
		if w, bit := d.regionBit(r); w.Load()&bit != 0 {
			w.And(^bit)
		}
	}
}

// uncached marks the regions that [off, off+n) covers whole as holding
// no cached pages, after a direct write there: the kernel dropped the
// range's pages, and a small write into such a region has nothing to drop.
// A region the write covers in part keeps its mark: the rest of it may
// hold what it held (a folio across the range's edge goes whole, one
// beside it stays).
func (d *Disk) uncached(off, n int64) {
	for r := (off + cacheRegion - 1) / cacheRegion; (r+1)*cacheRegion <= off+n; r++ {
		if w, bit := d.regionBit(r); w.Load()&bit == 0 {
			w.Or(bit)
		}
	}
}

// regionBit is the word of d.dropped and the bit in it for region r.
func (d *Disk) regionBit(r int64) (*atomic.Uint64, uint64) {
	return &d.dropped[r/64], uint64(1) << (r % 64)
}

// Resident counts the pages of the file at path that are in the page cache
// (mincore on a read-only mapping), for tests and diagnostics.
func Resident(path string, off, length int64) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("filedisk: %w", err)
	}
	defer f.Close()
	if length == 0 {
		return 0, nil
	}
	m, err := unix.Mmap(int(f.Fd()), off, int(length), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		return 0, fmt.Errorf("filedisk: map %s: %w", path, err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return 0, fmt.Errorf("filedisk: mincore %s: %w", path, e)
	}
	n := 0
	for _, v := range vec {
		n += int(v & 1)
	}
	return n, nil
}
