// Package filedisk is the backing disk of a resource: a regular file or a
// block device, read and written with pread/pwrite through golang.org/x/sys/unix.
//
// It satisfies nbdserver.Backend and the journal's Disk:
//
//	d, err := filedisk.Open("/var/lib/nbdmirror/r0.img", 1<<30) // creates a sparse 1 GiB file if missing
//	if err != nil { ... }
//	defer d.Close()
//	d.WriteAt(buf, 4096)
//	d.Sync() // fdatasync
package filedisk

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// Disk is an open backing file or block device of a fixed size.
type Disk struct {
	f       *os.File
	fd      int
	size    int64
	isBlock bool

	syncs     atomic.Uint64 // fdatasync calls that succeeded
	noPunch   atomic.Bool   // FALLOC_FL_PUNCH_HOLE unsupported: write zeros instead
	noZeroRng atomic.Bool   // FALLOC_FL_ZERO_RANGE unsupported: write zeros instead

	writeOnly atomic.Bool     // the node does not read the disk (see SetWriteOnly)
	dropped   []atomic.Uint64 // a bit per cacheRegion: dropped since its last large write or read
	drops     atomic.Uint64   // regions dropped before a small write

	direct   *os.File      // the disk opened again with O_DIRECT (see direct.go); nil if refused
	directFd int           // direct's descriptor
	directOn atomic.Bool   // large aligned writes go direct (see SetDirect)
	noDirect atomic.Bool   // a direct write was refused: pwrite from then on
	directs  atomic.Uint64 // writes made direct
}

// Stat reports whether path exists and, if so, its size in bytes (the device
// size for a block device). It creates nothing.
func Stat(path string) (exists bool, size int64, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("filedisk: %w", err)
	}
	if fi.Mode()&os.ModeDevice == 0 {
		if !fi.Mode().IsRegular() {
			return true, 0, fmt.Errorf("filedisk: %s is neither a regular file nor a block device", path)
		}
		return true, fi.Size(), nil
	}
	f, err := os.Open(path)
	if err != nil {
		return true, 0, fmt.Errorf("filedisk: %w", err)
	}
	defer f.Close()
	size, err = blockDeviceSize(int(f.Fd()))
	if err != nil {
		return true, 0, fmt.Errorf("filedisk: size of %s: %w", path, err)
	}
	return true, size, nil
}

// Open opens the disk at path. If path does not exist and size > 0 it is
// created as a sparse file of that size. An existing disk whose size differs
// from a non-zero size is an error; it is never truncated or grown.
func Open(path string, size int64) (*Disk, error) {
	exists, have, err := Stat(path)
	if err != nil {
		return nil, err
	}
	switch {
	case !exists && size <= 0:
		return nil, fmt.Errorf("filedisk: %s does not exist and no size was given", path)
	case exists && size > 0 && have != size:
		return nil, fmt.Errorf("filedisk: %s is %d bytes, not the %d asked for", path, have, size)
	}
	flags := os.O_RDWR
	if !exists {
		flags |= os.O_CREATE | os.O_EXCL
	}
	f, err := os.OpenFile(path, flags, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filedisk: %w", err)
	}
	d := &Disk{f: f, fd: int(f.Fd()), size: have}
	if !exists {
		if err := f.Truncate(size); err != nil {
			f.Close()
			os.Remove(path)
			return nil, fmt.Errorf("filedisk: create %s: %w", path, err)
		}
		d.size = size
	}
	d.dropped = make([]atomic.Uint64, (d.size+64*cacheRegion-1)/(64*cacheRegion))
	fi, err := f.Stat()
	if err == nil {
		d.isBlock = fi.Mode()&os.ModeDevice != 0
	}
	d.openDirect(path)
	return d, nil
}

// Size is the disk's size in bytes.
func (d *Disk) Size() (int64, error) { return d.size, nil }

// Syncs is the number of successful fdatasync calls so far.
func (d *Disk) Syncs() uint64 { return d.syncs.Load() }

// ReadAt reads len(p) bytes at off with pread. Reading past the end is an error.
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	d.cached(off, int64(len(p)))
	n := 0
	for n < len(p) {
		m, err := unix.Pread(d.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("filedisk: read at %d: %w", off+int64(n), err)
		}
		if m == 0 {
			return n, io.ErrUnexpectedEOF
		}
		n += m
	}
	return n, nil
}

// WriteAt writes p at off with pwrite, or, on a write-only disk, a large
// aligned p with O_DIRECT (see direct.go). Writing past the end is an
// error: the disk never grows.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	if err := d.check(off, int64(len(p))); err != nil {
		return 0, err
	}
	n := 0
	if d.canDirect(int64(len(p)), off) {
		var err error
		if n, err = d.writeDirect(p, off); err != nil || n == len(p) {
			return n, err
		}
	}
	d.beforeWrite(off+int64(n), int64(len(p)-n))
	for n < len(p) {
		m, err := unix.Pwrite(d.fd, p[n:], off+int64(n))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("filedisk: write at %d: %w", off+int64(n), err)
		}
		n += m
	}
	return n, nil
}

// Sync makes every completed write durable (fdatasync), direct ones too:
// fdatasync works on the inode, not on the descriptor. It writes back the
// inode's dirty pages (one page cache serves both descriptors), commits
// the metadata a direct write changed (ext4 notes the transaction in the
// inode, e.g. for an unwritten extent converted at the write's end) and
// flushes the device's cache, which holds the direct writes that
// completed, as a block device's fdatasync does. A direct write's own
// error is its write's; none is left for an fdatasync on the O_DIRECT
// descriptor to report.
func (d *Disk) Sync() error {
	for {
		err := unix.Fdatasync(d.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("filedisk: fdatasync: %w", err)
		}
		d.syncs.Add(1)
		return nil
	}
}

// Close closes the disk without syncing it.
func (d *Disk) Close() error {
	var err error
	if d.direct != nil {
		err = d.direct.Close()
	}
	return errors.Join(d.f.Close(), err)
}

func (d *Disk) check(off, length int64) error {
	if off < 0 || length < 0 || off > d.size || length > d.size-off {
		return fmt.Errorf("filedisk: range [%d, +%d) outside a %d-byte disk: %w", off, length, d.size, unix.EINVAL)
	}
	return nil
}
