package vfs

import (
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// MemFS is an in-memory FS that remembers what is durable, so a test can ask
// what a power loss would leave (CrashClone). Directories are created durable
// by MkdirAll; file entries become durable with SyncDir of their directory,
// file contents with File.Sync.
type MemFS struct {
	mu sync.Mutex // guards dirs, every memDir and every memInode reached from them
	// dirs maps a clean directory path to its entries.
	dirs map[string]*memDir
	// boot names the boot the file system lives in: NewMem and CrashClone
	// start a new one, Clone (a crash of the process alone) keeps it.
	boot uint64
}

// boots numbers the boots of every MemFS.
var boots atomic.Uint64

// BootID names the boot fs lives in.
func (fs *MemFS) BootID() (string, error) { return fmt.Sprintf("mem-%d", fs.boot), nil }

// memDir is one directory. Guarded by MemFS.mu.
type memDir struct {
	entries map[string]*memInode // current names
	durable map[string]*memInode // names as of the last SyncDir
	pending []nsOp               // namespace changes since the last SyncDir, in order
}

// nsOp is one unsynced change of a directory: a create (name linked to
// inode), a remove (inode nil) or a rename (from unlinked, name linked), each
// atomic.
type nsOp struct {
	name  string
	inode *memInode // nil for a remove
	from  string    // the old name of a rename
}

func (op nsOp) apply(entries map[string]*memInode) {
	if op.from != "" {
		delete(entries, op.from)
	}
	if op.inode == nil {
		delete(entries, op.name)
	} else {
		entries[op.name] = op.inode
	}
}

// memInode is a file's contents. Guarded by MemFS.mu.
type memInode struct {
	data    []byte     // current contents
	synced  []byte     // contents as of the last Sync
	ops     []memWrite // changes since the last Sync, in order
	modTime time.Time
}

// memWrite is one unsynced change: data written at off, or (truncate) the
// file cut or extended to size.
type memWrite struct {
	off      int64
	data     []byte
	truncate bool
	size     int64
}

// NewMem returns an empty memory file system with a root directory "/".
func NewMem() *MemFS {
	fs := &MemFS{dirs: map[string]*memDir{}, boot: boots.Add(1)}
	fs.dirs["/"] = newMemDir()
	fs.dirs["."] = newMemDir()
	return fs
}

func newMemDir() *memDir {
	return &memDir{entries: map[string]*memInode{}, durable: map[string]*memInode{}}
}

func splitPath(name string) (dir, base string) {
	name = path.Clean(name)
	return path.Dir(name), path.Base(name)
}

// lookupDir returns the directory of name. Requires fs.mu.
func (fs *MemFS) lookupDir(name, op string) (*memDir, string, error) {
	dir, base := splitPath(name)
	d := fs.dirs[dir]
	if d == nil {
		return nil, "", &os.PathError{Op: op, Path: name, Err: os.ErrNotExist}
	}
	return d, base, nil
}

func (fs *MemFS) Create(name string) (File, error) {
	return fs.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

func (fs *MemFS) Open(name string) (File, error) {
	return fs.OpenFile(name, os.O_RDONLY, 0)
}

func (fs *MemFS) OpenFile(name string, flag int, _ os.FileMode) (File, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, base, err := fs.lookupDir(name, "open")
	if err != nil {
		return nil, err
	}
	ino := d.entries[base]
	switch {
	case ino != nil && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrExist}
	case ino == nil && flag&os.O_CREATE == 0:
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrNotExist}
	case ino == nil:
		ino = &memInode{modTime: time.Now()}
		d.entries[base] = ino
		d.pending = append(d.pending, nsOp{name: base, inode: ino})
	}
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	if flag&os.O_TRUNC != 0 && writable {
		ino.truncate(0)
	}
	return &memFile{fs: fs, ino: ino, name: path.Clean(name), writable: writable}, nil
}

func (fs *MemFS) Rename(oldname, newname string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	od, obase, err := fs.lookupDir(oldname, "rename")
	if err != nil {
		return err
	}
	nd, nbase, err := fs.lookupDir(newname, "rename")
	if err != nil {
		return err
	}
	if od != nd {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: fmt.Errorf("memfs: rename across directories")}
	}
	ino := od.entries[obase]
	if ino == nil {
		return &os.LinkError{Op: "rename", Old: oldname, New: newname, Err: os.ErrNotExist}
	}
	delete(od.entries, obase)
	od.entries[nbase] = ino
	od.pending = append(od.pending, nsOp{name: nbase, inode: ino, from: obase})
	return nil
}

func (fs *MemFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, base, err := fs.lookupDir(name, "remove")
	if err != nil {
		return err
	}
	if d.entries[base] == nil {
		return &os.PathError{Op: "remove", Path: name, Err: os.ErrNotExist}
	}
	delete(d.entries, base)
	d.pending = append(d.pending, nsOp{name: base})
	return nil
}

func (fs *MemFS) ReadDir(dir string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	dir = path.Clean(dir)
	d := fs.dirs[dir]
	if d == nil {
		return nil, &os.PathError{Op: "readdir", Path: dir, Err: os.ErrNotExist}
	}
	var names []string
	for n := range d.entries {
		names = append(names, n)
	}
	for p := range fs.dirs {
		if p != dir && path.Dir(p) == dir {
			names = append(names, path.Base(p))
		}
	}
	sort.Strings(names)
	return names, nil
}

func (fs *MemFS) MkdirAll(dir string, _ os.FileMode) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for p := path.Clean(dir); fs.dirs[p] == nil; p = path.Dir(p) {
		fs.dirs[p] = newMemDir()
	}
	return nil
}

func (fs *MemFS) SyncDir(dir string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d := fs.dirs[path.Clean(dir)]
	if d == nil {
		return &os.PathError{Op: "syncdir", Path: dir, Err: os.ErrNotExist}
	}
	d.durable = cloneEntries(d.entries)
	d.pending = nil
	return nil
}

func (fs *MemFS) Stat(name string) (os.FileInfo, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	name = path.Clean(name)
	if fs.dirs[name] != nil {
		return memInfo{name: path.Base(name), dir: true}, nil
	}
	d, base, err := fs.lookupDir(name, "stat")
	if err != nil {
		return nil, err
	}
	ino := d.entries[base]
	if ino == nil {
		return nil, &os.PathError{Op: "stat", Path: name, Err: os.ErrNotExist}
	}
	return memInfo{name: base, size: int64(len(ino.data)), mod: ino.modTime}, nil
}

func cloneEntries(m map[string]*memInode) map[string]*memInode {
	c := make(map[string]*memInode, len(m))
	for k, v := range m {
		c[k] = v
	}
	return c
}

// truncate sets the size of the file. Requires MemFS.mu.
func (ino *memInode) truncate(size int64) {
	ino.data = resize(ino.data, size)
	ino.ops = append(ino.ops, memWrite{truncate: true, size: size})
	ino.modTime = time.Now()
}

// writeAt writes p at off. Requires MemFS.mu.
func (ino *memInode) writeAt(p []byte, off int64) {
	ino.data = applyWrite(ino.data, p, off)
	ino.ops = append(ino.ops, memWrite{off: off, data: append([]byte(nil), p...)})
	ino.modTime = time.Now()
}

// sync makes the current contents durable. Requires MemFS.mu.
func (ino *memInode) sync() {
	for _, w := range ino.ops {
		ino.synced = w.apply(ino.synced)
	}
	ino.ops = nil
}

func (w memWrite) apply(b []byte) []byte {
	if w.truncate {
		return resize(b, w.size)
	}
	return applyWrite(b, w.data, w.off)
}

func resize(b []byte, size int64) []byte {
	if int64(len(b)) >= size {
		return b[:size]
	}
	return append(b, make([]byte, size-int64(len(b)))...)
}

func applyWrite(b, p []byte, off int64) []byte {
	if end := off + int64(len(p)); end > int64(len(b)) {
		b = resize(b, end)
	}
	copy(b[off:], p)
	return b
}

var _ io.ReaderAt = (*memFile)(nil)
