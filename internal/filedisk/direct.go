package filedisk

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Direct writes. A resync target's disk has no reader for the pages a
// large buffered write leaves in the page cache, and the write pays for
// them: most of a 1 MiB pwrite's time goes to allocating folios and copying
// into them. With SetDirect on, a write of directMin bytes or more
// whose offset and length are multiples of directAlign goes through a second
// descriptor opened with O_DIRECT, straight from an aligned buffer to the
// device; everything else keeps pwrite on the first.
//
// The two descriptors share the inode's page cache, and the kernel keeps
// them coherent: before a direct write it writes back and drops the cached
// pages of the range (so an earlier buffered write there is on the device
// first and a later read reads the new bytes from it), and drops them again
// after it. A buffered write that overlaps a direct one still running is
// another matter: the pages it dirties cannot be dropped, the kernel warns
// of a possible corruption and reports EIO at the next fdatasync. Writes to
// one range must not run concurrently (the journal applies records in one
// goroutine).
//
// A Secondary that mirrors a Primary's stream keeps buffered writes: a
// direct write waits for the device, and where the device is busy (with
// the Primary's write-back, when both share it) the stream stalls behind
// it. Side by side, a pair's 1 MiB stream (10 s, two runs each) ran at
// 421-447 MiB/s with p99 47-59 ms buffered, against 328-383 MiB/s with p99
// 210-255 ms direct; a bitmap resync of random data ran 1.52x faster direct.
//
// Where O_DIRECT is refused, at open or by a write (EINVAL: tmpfs before
// Linux 6.6, some FUSE and network file systems, a device whose logical
// block is larger than directAlign), the disk turns direct writes off for
// good and writes with pwrite: O_DIRECT never fails a write.
const (
	// directAlign is the alignment of a direct write's offset, length and
	// memory: the largest logical block of common devices (and file system
	// block), and x86-64's page size.
	directAlign = 4096
	// directMin is the smallest write made direct. A direct write waits
	// for the device, a buffered one only for its copy into the cache, so
	// small direct writes lose. BenchmarkWrite (1 GiB in writes of one
	// size, then fdatasync; medians of 6, ext4 on virtio, 2 CPUs), buffered
	// against direct, in MB/s and busy CPU ms per GiB: 256 KiB 2260/610
	// against 1500/880, 512 KiB 2180/720 against 1950/730, 1 MiB 1990/740
	// against 2160/485. Only from 1 MiB does direct win, in time and CPU.
	directMin = 1 << 20
	// directChunk is the size of the aligned buffers an unaligned caller's
	// bytes are copied through; a larger write is written chunk by chunk.
	directChunk = 1 << 20
)

// openDirectFile opens path with O_DIRECT; a variable so that tests can
// make it refuse.
var openDirectFile = openDirectDefault

func openDirectDefault(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|unix.O_DIRECT, 0)
}

// pwriteDirect is the pwrite of direct writes; a variable so that tests can
// make it fail.
var pwriteDirect = unix.Pwrite

// openDirect opens the disk at path a second time, with O_DIRECT, for
// direct writes. Any failure leaves the disk without direct writes.
func (d *Disk) openDirect(path string) {
	f, err := openDirectFile(path)
	if err != nil {
		return
	}
	// It must be the same file, not one renamed into its place since Open.
	var a, b unix.Stat_t
	if unix.Fstat(d.fd, &a) != nil || unix.Fstat(int(f.Fd()), &b) != nil || a.Dev != b.Dev || a.Ino != b.Ino {
		f.Close()
		return
	}
	d.direct, d.directFd = f, int(f.Fd())
}

// SetDirect says whether large aligned writes go direct (see above): on
// for a disk whose writes nobody reads soon, a resync target's.
func (d *Disk) SetDirect(on bool) { d.directOn.Store(on) }

// DirectWrites is how many writes went through O_DIRECT.
func (d *Disk) DirectWrites() uint64 { return d.directs.Load() }

// canDirect reports whether a write of n bytes at off goes direct.
func (d *Disk) canDirect(n, off int64) bool {
	return d.direct != nil && n >= directMin && (off|n)%directAlign == 0 &&
		d.directOn.Load() && !d.noDirect.Load()
}

// writeDirect writes p at off through the O_DIRECT descriptor, from p
// itself if it is aligned in memory, else through a pooled aligned buffer,
// chunk by chunk. It returns the bytes written: with a nil error, fewer
// than len(p) leaves the rest to pwrite (direct writes were refused, or a
// short write left an unaligned rest).
func (d *Disk) writeDirect(p []byte, off int64) (int, error) {
	var buf *[]byte
	if uintptr(unsafe.Pointer(unsafe.SliceData(p)))%directAlign != 0 {
		buf = alignedPool.Get().(*[]byte)
		defer alignedPool.Put(buf)
	}
	n := 0
	for n < len(p) {
		src := p[n:]
		if buf != nil {
			src = (*buf)[:copy(*buf, src)]
		}
		m, err := pwriteDirect(d.directFd, src, off+int64(n))
		switch {
		case err == unix.EINTR:
			continue
		case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP):
			d.noDirect.Store(true)
			return n, nil
		case err != nil:
			return n, fmt.Errorf("filedisk: direct write at %d: %w", off+int64(n), err)
		}
		n += m
		if m%directAlign != 0 || m == 0 {
			break // a short write: pwrite does the rest
		}
	}
	if n > 0 {
		d.directs.Add(1)
		d.uncached(off, int64(n))
	}
	return n, nil
}

// alignedPool holds directChunk-byte buffers aligned to directAlign.
var alignedPool = sync.Pool{New: func() any {
	b := make([]byte, directChunk+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	b = b[skip : skip+directChunk : skip+directChunk]
	return &b
}}
