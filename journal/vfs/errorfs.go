package vfs

import (
	"errors"
	"os"
)

// Op names an FS or File operation for an Injector.
type Op uint8

const (
	OpCreate   Op = iota + 1 // Create, or OpenFile with O_CREATE
	OpOpen                   // Open, or OpenFile without O_CREATE
	OpRead                   // File.ReadAt
	OpWrite                  // File.Write, WriteAt, WritevAt
	OpSync                   // File.Sync
	OpTruncate               // File.Truncate
	OpClose                  // File.Close
	OpStat                   // FS.Stat, File.Stat, File.Size
	OpRename                 // FS.Rename (path is the old name)
	OpRemove                 // FS.Remove
	OpReadDir                // FS.ReadDir
	OpMkdirAll               // FS.MkdirAll
	OpSyncDir                // FS.SyncDir
)

var opNames = [...]string{"?", "create", "open", "read", "write", "sync", "truncate",
	"close", "stat", "rename", "remove", "readdir", "mkdirall", "syncdir"}

func (op Op) String() string {
	if int(op) < len(opNames) {
		return opNames[op]
	}
	return "?"
}

// Injector decides whether an operation fails: a nil result lets it run, an
// error is returned in its place (wrapped in an *os.PathError) and the
// operation is not performed. It is called from many goroutines.
type Injector func(op Op, path string) error

// Inject wraps fs so that every operation first asks inj.
func Inject(fs FS, inj Injector) FS { return &errorFS{fs: fs, inj: inj} }

type errorFS struct {
	fs  FS
	inj Injector
}

func (e *errorFS) fail(op Op, path string) error {
	if err := e.inj(op, path); err != nil {
		return &os.PathError{Op: op.String(), Path: path, Err: err}
	}
	return nil
}

func (e *errorFS) Create(name string) (File, error) {
	return e.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

// BootID is the wrapped file system's.
func (e *errorFS) BootID() (string, error) {
	if id := BootID(e.fs); id != "" {
		return id, nil
	}
	return "", errors.New("vfs: the file system names no boot")
}

func (e *errorFS) Open(name string) (File, error) { return e.OpenFile(name, os.O_RDONLY, 0) }

func (e *errorFS) OpenFile(name string, flag int, perm os.FileMode) (File, error) {
	op := OpOpen
	if flag&os.O_CREATE != 0 {
		op = OpCreate
	}
	if err := e.fail(op, name); err != nil {
		return nil, err
	}
	f, err := e.fs.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return &errorFile{f: f, e: e, name: name}, nil
}

func (e *errorFS) Rename(oldname, newname string) error {
	if err := e.fail(OpRename, oldname); err != nil {
		return err
	}
	return e.fs.Rename(oldname, newname)
}

func (e *errorFS) Remove(name string) error {
	if err := e.fail(OpRemove, name); err != nil {
		return err
	}
	return e.fs.Remove(name)
}

func (e *errorFS) ReadDir(dir string) ([]string, error) {
	if err := e.fail(OpReadDir, dir); err != nil {
		return nil, err
	}
	return e.fs.ReadDir(dir)
}

func (e *errorFS) MkdirAll(dir string, perm os.FileMode) error {
	if err := e.fail(OpMkdirAll, dir); err != nil {
		return err
	}
	return e.fs.MkdirAll(dir, perm)
}

func (e *errorFS) SyncDir(dir string) error {
	if err := e.fail(OpSyncDir, dir); err != nil {
		return err
	}
	return e.fs.SyncDir(dir)
}

func (e *errorFS) Stat(name string) (os.FileInfo, error) {
	if err := e.fail(OpStat, name); err != nil {
		return nil, err
	}
	return e.fs.Stat(name)
}

type errorFile struct {
	f    File
	e    *errorFS
	name string
}

func (f *errorFile) Write(p []byte) (int, error) {
	if err := f.e.fail(OpWrite, f.name); err != nil {
		return 0, err
	}
	return f.f.Write(p)
}

func (f *errorFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.e.fail(OpWrite, f.name); err != nil {
		return 0, err
	}
	return f.f.WriteAt(p, off)
}

func (f *errorFile) WritevAt(bufs [][]byte, off int64) (int, error) {
	if err := f.e.fail(OpWrite, f.name); err != nil {
		return 0, err
	}
	return WriteBuffersAt(f.f, bufs, off)
}

func (f *errorFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.e.fail(OpRead, f.name); err != nil {
		return 0, err
	}
	return f.f.ReadAt(p, off)
}

func (f *errorFile) Sync() error {
	if err := f.e.fail(OpSync, f.name); err != nil {
		return err
	}
	return f.f.Sync()
}

func (f *errorFile) Truncate(size int64) error {
	if err := f.e.fail(OpTruncate, f.name); err != nil {
		return err
	}
	return f.f.Truncate(size)
}

func (f *errorFile) Close() error {
	if err := f.e.fail(OpClose, f.name); err != nil {
		f.f.Close()
		return err
	}
	return f.f.Close()
}

func (f *errorFile) Stat() (os.FileInfo, error) {
	if err := f.e.fail(OpStat, f.name); err != nil {
		return nil, err
	}
	return f.f.Stat()
}

func (f *errorFile) Size() (int64, error) {
	if err := f.e.fail(OpStat, f.name); err != nil {
		return 0, err
	}
	return f.f.Size()
}
