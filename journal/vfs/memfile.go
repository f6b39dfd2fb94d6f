package vfs

import (
	"io"
	"math/rand/v2"
	"os"
	"path"
	"time"
)

// memFile is an open MemFS file. It keeps its inode after the name is removed
// or replaced, as an open descriptor does.
type memFile struct {
	fs       *MemFS
	ino      *memInode
	name     string
	writable bool
	pos      int64 // offset of the next Write; owned by the file's user
	closed   bool  // owned by the file's user
}

func (f *memFile) check(op string, write bool) error {
	if f.closed {
		return &os.PathError{Op: op, Path: f.name, Err: os.ErrClosed}
	}
	if write && !f.writable {
		return &os.PathError{Op: op, Path: f.name, Err: os.ErrPermission}
	}
	return nil
}

func (f *memFile) Write(p []byte) (int, error) {
	n, err := f.WriteAt(p, f.pos)
	f.pos += int64(n)
	return n, err
}

func (f *memFile) WriteAt(p []byte, off int64) (int, error) {
	if err := f.check("write", true); err != nil {
		return 0, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.writeAt(p, off)
	return len(p), nil
}

// WritevAt writes bufs as one change, so a crash can tear it anywhere.
func (f *memFile) WritevAt(bufs [][]byte, off int64) (int, error) {
	var all []byte
	for _, b := range bufs {
		all = append(all, b...)
	}
	return f.WriteAt(all, off)
}

func (f *memFile) ReadAt(p []byte, off int64) (int, error) {
	if err := f.check("read", false); err != nil {
		return 0, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.ino.data)) {
		return 0, io.EOF
	}
	n := copy(p, f.ino.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (f *memFile) Sync() error {
	if err := f.check("sync", false); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.sync()
	return nil
}

func (f *memFile) Truncate(size int64) error {
	if err := f.check("truncate", true); err != nil {
		return err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	f.ino.truncate(size)
	return nil
}

func (f *memFile) Close() error {
	if err := f.check("close", false); err != nil {
		return err
	}
	f.closed = true
	return nil
}

func (f *memFile) Size() (int64, error) {
	if err := f.check("size", false); err != nil {
		return 0, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.ino.data)), nil
}

func (f *memFile) Stat() (os.FileInfo, error) {
	if err := f.check("stat", false); err != nil {
		return nil, err
	}
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return memInfo{name: path.Base(f.name), size: int64(len(f.ino.data)), mod: f.ino.modTime}, nil
}

// memInfo is the os.FileInfo of a MemFS file or directory.
type memInfo struct {
	name string
	size int64
	mod  time.Time
	dir  bool
}

func (i memInfo) Name() string       { return i.name }
func (i memInfo) Size() int64        { return i.size }
func (i memInfo) ModTime() time.Time { return i.mod }
func (i memInfo) IsDir() bool        { return i.dir }
func (i memInfo) Sys() any           { return nil }
func (i memInfo) Mode() os.FileMode {
	if i.dir {
		return os.ModeDir | 0o755
	}
	return 0o644
}

// CrashClone returns the file system as a power loss at this moment would
// leave it; fs itself is unchanged and its open files keep working.
//
// With rnd nil everything not synced is dropped: file contents revert to their
// last Sync and directory entries to their last SyncDir. With rnd, each file
// keeps a random prefix of its unsynced changes, the last kept write possibly
// torn (a random prefix of its bytes), and each directory keeps a random
// prefix of its unsynced creates, renames and removes: the disk wrote things
// in order and stopped somewhere.
func (fs *MemFS) CrashClone(rnd *rand.Rand) *MemFS { return fs.crashClone(rnd, false) }

// CrashCloneAnyOrder is CrashClone(rnd) for a disk that writes back in any
// order between syncs: each file keeps a random subset of its unsynced
// changes (applied in their order), each kept write possibly torn; each
// directory still keeps a prefix of its unsynced changes. It shows what a
// missing Sync between two writes that must reach the disk in order costs.
func (fs *MemFS) CrashCloneAnyOrder(rnd *rand.Rand) *MemFS { return fs.crashClone(rnd, true) }

func (fs *MemFS) crashClone(rnd *rand.Rand, anyOrder bool) *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := &MemFS{dirs: map[string]*memDir{}, boot: boots.Add(1)}
	inodes := map[*memInode]*memInode{}
	for p, d := range fs.dirs {
		entries := cloneEntries(d.durable)
		keep := 0
		if rnd != nil {
			keep = rnd.IntN(len(d.pending) + 1)
		}
		for _, op := range d.pending[:keep] {
			op.apply(entries)
		}
		nd := newMemDir()
		for name, ino := range entries {
			ci := inodes[ino]
			if ci == nil {
				ci = ino.crashCopy(rnd, anyOrder)
				inodes[ino] = ci
			}
			nd.entries[name] = ci
			nd.durable[name] = ci
		}
		c.dirs[p] = nd
	}
	return c
}

// Clone returns a copy of the file system with everything kept, synced or not:
// what a process crash leaves (the kernel still has it). What was durable
// stays durable in the copy.
func (fs *MemFS) Clone() *MemFS {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	c := &MemFS{dirs: map[string]*memDir{}, boot: fs.boot}
	inodes := map[*memInode]*memInode{}
	copyOf := func(ino *memInode) *memInode {
		if ci := inodes[ino]; ci != nil {
			return ci
		}
		ci := &memInode{
			data:    append([]byte(nil), ino.data...),
			synced:  append([]byte(nil), ino.synced...),
			ops:     append([]memWrite(nil), ino.ops...),
			modTime: ino.modTime,
		}
		inodes[ino] = ci
		return ci
	}
	for p, d := range fs.dirs {
		nd := newMemDir()
		for name, ino := range d.entries {
			nd.entries[name] = copyOf(ino)
		}
		for name, ino := range d.durable {
			nd.durable[name] = copyOf(ino)
		}
		for _, op := range d.pending {
			if op.inode != nil {
				op.inode = copyOf(op.inode)
			}
			nd.pending = append(nd.pending, op)
		}
		c.dirs[p] = nd
	}
	return c
}

// crashCopy is the inode as a power loss leaves it. Requires MemFS.mu.
func (ino *memInode) crashCopy(rnd *rand.Rand, anyOrder bool) *memInode {
	data := append([]byte(nil), ino.synced...)
	if rnd != nil && anyOrder {
		for _, w := range ino.ops {
			if rnd.IntN(2) == 0 {
				continue
			}
			if !w.truncate && len(w.data) > 1 && rnd.IntN(4) == 0 {
				w.data = w.data[:1+rnd.IntN(len(w.data)-1)]
			}
			data = w.apply(data)
		}
	} else if rnd != nil && len(ino.ops) > 0 {
		keep := rnd.IntN(len(ino.ops) + 1)
		for _, w := range ino.ops[:keep] {
			data = w.apply(data)
		}
		if keep < len(ino.ops) {
			if w := ino.ops[keep]; !w.truncate && len(w.data) > 1 {
				if n := rnd.IntN(len(w.data)); n > 0 {
					w.data = w.data[:n]
					data = w.apply(data)
				}
			}
		}
	}
	return &memInode{data: data, synced: append([]byte(nil), data...), modTime: ino.modTime}
}
