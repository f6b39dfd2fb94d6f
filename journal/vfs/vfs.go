// Package vfs is the small file system seam under the journal: the real one
// (os plus fdatasync and pwritev from golang.org/x/sys/unix), an in-memory one
// that can simulate a power loss, and a wrapper that injects errors.
//
// The journal only ever touches files through FS, so a test can run it on
// NewMem, crash the memory file system at any moment with CrashClone, and
// reopen the journal on what a power loss would have left:
//
//	fs := vfs.NewMem()
//	f, _ := fs.Create("/j/a")
//	f.Write([]byte("lost"))          // not synced
//	after := fs.CrashClone(nil)       // "/j/a" is gone: its create was never made durable
//
// Inject wraps any FS so that a chosen operation fails:
//
//	faulty := vfs.Inject(fs, func(op vfs.Op, path string) error {
//		if op == vfs.OpSync { return syscall.EIO }
//		return nil
//	})
package vfs

import (
	"io"
	"os"
)

// FS is the file system the journal runs on. Paths are slash-separated and
// used as given; directories are plain paths.
type FS interface {
	// Create creates or truncates name and opens it for reading and writing.
	Create(name string) (File, error)
	// Open opens name read-only.
	Open(name string) (File, error)
	// OpenFile opens name with os.O_* flags (O_RDONLY, O_RDWR, O_CREATE, O_TRUNC, O_EXCL).
	OpenFile(name string, flag int, perm os.FileMode) (File, error)
	// Rename renames oldname to newname, replacing newname if it exists.
	Rename(oldname, newname string) error
	// Remove removes a file.
	Remove(name string) error
	// ReadDir lists the names (not paths) in dir, sorted.
	ReadDir(dir string) ([]string, error)
	// MkdirAll creates dir and its parents.
	MkdirAll(dir string, perm os.FileMode) error
	// SyncDir makes the entries of dir (creates, renames, removes) durable.
	SyncDir(dir string) error
	// Stat describes name.
	Stat(name string) (os.FileInfo, error)
}

// File is an open file.
type File interface {
	io.Writer
	io.WriterAt
	io.ReaderAt
	io.Closer
	// Sync makes the file's data durable (fdatasync).
	Sync() error
	// Truncate changes the size of the file.
	Truncate(size int64) error
	// Stat describes the file.
	Stat() (os.FileInfo, error)
	// Size is the current size of the file.
	Size() (int64, error)
}

// VectorWriter is implemented by files that write several buffers with one
// system call (pwritev). WriteBuffersAt uses it when present.
type VectorWriter interface {
	WritevAt(bufs [][]byte, off int64) (int, error)
}

// WritebackStarter is implemented by files that can start writing a range
// back to the device without waiting for it (sync_file_range), so that a
// later Sync has less to do.
type WritebackStarter interface {
	StartWriteback(off, n int64) error
}

// SpaceReporter is implemented by file systems that can tell how many bytes
// are free under a directory (statfs), for work that may be skipped when
// space is short.
type SpaceReporter interface {
	Free(dir string) (int64, error)
}

// BootReporter is implemented by file systems that can name the boot of
// the machine they live on. A file's data written and not synced survives a
// crash of the process that wrote it (the kernel holds it), not a new boot.
type BootReporter interface {
	BootID() (string, error)
}

// BootID is the boot fs lives in, "" if fs cannot tell.
func BootID(fs FS) string {
	br, ok := fs.(BootReporter)
	if !ok {
		return ""
	}
	id, err := br.BootID()
	if err != nil {
		return ""
	}
	return id
}

// WriteBuffersAt writes bufs one after another at off, with one pwritev where
// f supports it. It returns the number of bytes written and the first error.
func WriteBuffersAt(f File, bufs [][]byte, off int64) (int, error) {
	if vw, ok := f.(VectorWriter); ok {
		return vw.WritevAt(bufs, off)
	}
	total := 0
	for _, b := range bufs {
		n, err := f.WriteAt(b, off+int64(total))
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}
