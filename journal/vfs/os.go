package vfs

import (
	"fmt"
	"os"
	"runtime"
	"sort"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Default is the real file system: package os, with fdatasync for File.Sync,
// fsync of the directory for SyncDir and pwritev for WritevAt.
var Default FS = osFS{}

type osFS struct{}

func (osFS) Create(name string) (File, error) {
	return osFS{}.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

func (osFS) Open(name string) (File, error) {
	return osFS{}.OpenFile(name, os.O_RDONLY, 0)
}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag|unix.O_CLOEXEC, perm)
	if err != nil {
		return nil, err
	}
	return &osFile{File: f, fd: int(f.Fd())}, nil
}

func (osFS) Rename(oldname, newname string) error     { return os.Rename(oldname, newname) }
func (osFS) Remove(name string) error                 { return os.Remove(name) }
func (osFS) Stat(name string) (os.FileInfo, error)    { return os.Stat(name) }
func (osFS) MkdirAll(dir string, p os.FileMode) error { return os.MkdirAll(dir, p) }

// BootID is the kernel's random boot id, new at every boot.
func (osFS) BootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

func (osFS) ReadDir(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	sort.Strings(names)
	return names, nil
}

// Free is the bytes free in the file system under dir, counting those kept
// for root (the daemon may run as root and write there).
func (osFS) Free(dir string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bfree) * st.Bsize, nil
}

func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	if serr != nil {
		return serr
	}
	return cerr
}

// osFile is an *os.File whose Sync is fdatasync and which writes vectors with
// pwritev. fd is the descriptor, cached once at open.
type osFile struct {
	*os.File
	fd  int
	iov []unix.Iovec // WritevAt's scratch: one writer at a time
}

func (f *osFile) Sync() error {
	for {
		err := unix.Fdatasync(f.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}

// StartWriteback starts writing [off, off+n) back to the device
// (sync_file_range with SYNC_FILE_RANGE_WRITE) and does not wait for it.
func (f *osFile) StartWriteback(off, n int64) error {
	return unix.SyncFileRange(f.fd, off, n, unix.SYNC_FILE_RANGE_WRITE)
}

func (f *osFile) Size() (int64, error) {
	fi, err := f.File.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// iovMax is the most buffers one pwritev takes (IOV_MAX on Linux).
const iovMax = 1024

// WritevAt writes bufs at off with as few pwritev calls as it can, resuming
// after short writes. It may change bufs, and is not for concurrent use on
// one file.
func (f *osFile) WritevAt(bufs [][]byte, off int64) (int, error) {
	total := 0
	for bufs = advance(bufs, 0); len(bufs) > 0; {
		n, err := f.pwritev(bufs[:min(len(bufs), iovMax)], off+int64(total))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return total, &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
		}
		if n == 0 {
			return total, fmt.Errorf("pwritev %s: wrote nothing: %w", f.Name(), os.ErrClosed)
		}
		total += n
		bufs = advance(bufs, n)
	}
	return total, nil
}

// advance drops the first n bytes from bufs. It may shorten the first
// remaining buffer in place (bufs is the caller's scratch slice).
func advance(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n < len(bufs[0]) {
			bufs[0] = bufs[0][n:]
			return bufs
		}
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	for len(bufs) > 0 && len(bufs[0]) == 0 {
		bufs = bufs[1:]
	}
	return bufs
}

// pwritev is unix.Pwritev without allocating the iovec array each time.
func (f *osFile) pwritev(bufs [][]byte, off int64) (int, error) {
	f.iov = f.iov[:0]
	for _, b := range bufs {
		if len(b) > 0 {
			f.iov = append(f.iov, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
		}
	}
	if len(f.iov) == 0 {
		return 0, fmt.Errorf("pwritev %s: only empty buffers", f.Name())
	}
	n, _, errno := unix.Syscall6(unix.SYS_PWRITEV, uintptr(f.fd),
		uintptr(unsafe.Pointer(&f.iov[0])), uintptr(len(f.iov)), uintptr(off), 0, 0)
	clear(f.iov) // drop the references to the buffers
	runtime.KeepAlive(bufs)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}
