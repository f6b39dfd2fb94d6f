package filedisk

import (
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// DropCache writes the disk's dirty pages back and takes its pages out of
// the page cache (sync_file_range, then POSIX_FADV_DONTNEED). It makes
// nothing durable: Sync does. Pages dirtied meanwhile stay cached.
//
// A node that does not read its disk has no use for those pages, and they
// cost it on every write: ext4 walks each block of the cached folio a write
// lands in, so a 4 KiB write into a folio that readahead or a large write
// made 2 MiB costs several times one into a page of its own.
func (d *Disk) DropCache() error {
	const flags = unix.SYNC_FILE_RANGE_WAIT_BEFORE | unix.SYNC_FILE_RANGE_WRITE | unix.SYNC_FILE_RANGE_WAIT_AFTER
	for {
		err := unix.SyncFileRange(d.fd, 0, 0, flags)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("filedisk: write back before dropping the cache: %w", err)
		}
		break
	}
	if err := unix.Fadvise(d.fd, 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("filedisk: drop the cache: %w", err)
	}
	d.drops.Add(1)
	return nil
}

// CacheDrops is the number of DropCache calls that succeeded.
func (d *Disk) CacheDrops() uint64 { return d.drops.Load() }

// Resident counts the pages of the file at path that are in the page cache
// (mincore on a read-only mapping), for tests and diagnostics.
func Resident(path string) (int, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("filedisk: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() == 0 {
		return 0, err
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
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
