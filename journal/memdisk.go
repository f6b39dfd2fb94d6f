package journal

import (
	"bytes"
	"fmt"
	"sync"
)

// MemDisk is an in-memory Disk for tests. Like a disk with a volatile write
// cache, its writes survive a power loss (crash) only once synced.
type MemDisk struct {
	mu     sync.Mutex // guards everything below
	data   []byte     // what reads see
	synced []byte     // what a power loss keeps
	syncs  int
	writes int
	// Fail, when set, is asked before every operation ("write", "trim",
	// "zero", "sync"); an error fails it without effect.
	Fail func(op string) error
	// syncDelay, when set, runs at the start of Sync, unlocked: writes made
	// meanwhile are made durable by that Sync, as a slow sync may do.
	syncDelay func()
}

// NewMemDisk returns a zeroed disk of size bytes.
func NewMemDisk(size int64) *MemDisk {
	return &MemDisk{data: make([]byte, size), synced: make([]byte, size)}
}

func (d *MemDisk) check(op string, off, n int64) error {
	if off < 0 || n < 0 || off+n > int64(len(d.data)) {
		return fmt.Errorf("memdisk: %s [%d, %d) out of range (size %d)", op, off, off+n, len(d.data))
	}
	if d.Fail != nil {
		return d.Fail(op)
	}
	return nil
}

func (d *MemDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check("write", off, int64(len(p))); err != nil {
		return 0, err
	}
	d.writes++
	return copy(d.data[off:], p), nil
}

func (d *MemDisk) ReadAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off < 0 || off+int64(len(p)) > int64(len(d.data)) {
		return 0, fmt.Errorf("memdisk: read [%d, %d) out of range", off, off+int64(len(p)))
	}
	return copy(p, d.data[off:]), nil
}

func (d *MemDisk) Trim(off, n int64) error { return d.zero("trim", off, n) }

func (d *MemDisk) Zero(off, n int64, _ bool) error { return d.zero("zero", off, n) }

func (d *MemDisk) zero(op string, off, n int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check(op, off, n); err != nil {
		return err
	}
	clear(d.data[off : off+n])
	return nil
}

func (d *MemDisk) Sync() error {
	if d.syncDelay != nil {
		d.syncDelay()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if err := d.check("sync", 0, 0); err != nil {
		return err
	}
	copy(d.synced, d.data)
	d.syncs++
	return nil
}

// syncCount is the number of successful Syncs.
func (d *MemDisk) syncCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.syncs
}

// writeCount is the number of successful WriteAt calls.
func (d *MemDisk) writeCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.writes
}

// Bytes returns a copy of the disk's contents.
func (d *MemDisk) Bytes() []byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]byte(nil), d.data...)
}

// Crash returns the disk as a power loss leaves it: only synced data.
func (d *MemDisk) Crash() *MemDisk { return d.CrashWith(nil) }

// CrashWith is Crash, running also (if not nil) at the same instant: no disk
// operation runs in between. A test crashes a MemFS in also to take both at
// one moment.
func (d *MemDisk) CrashWith(also func()) *MemDisk { return d.CrashWriteback(nil, also) }

// CrashWriteback is CrashWith, keeping also each 4 KiB block not synced
// for which keep (if not nil) says so: the kernel may write dirty pages
// back on its own before a power loss, in any order.
func (d *MemDisk) CrashWriteback(keep func() bool, also func()) *MemDisk {
	d.mu.Lock()
	defer d.mu.Unlock()
	if also != nil {
		also()
	}
	kept := append([]byte(nil), d.synced...)
	for b := 0; keep != nil && b < len(kept); b += 4096 {
		end := min(b+4096, len(kept))
		if !bytes.Equal(d.data[b:end], d.synced[b:end]) && keep() {
			copy(kept[b:end], d.data[b:end])
		}
	}
	return &MemDisk{data: kept, synced: append([]byte(nil), kept...)}
}

// Clone returns a copy with everything kept, synced or not: what a process
// crash leaves.
func (d *MemDisk) Clone() *MemDisk { return d.CloneWith(nil) }

// CloneWith is Clone, running also (if not nil) at the same instant: no
// disk operation runs in between. A process crash copies a MemFS in also:
// the file system and the disk as the kernel held them at one moment.
func (d *MemDisk) CloneWith(also func()) *MemDisk {
	d.mu.Lock()
	defer d.mu.Unlock()
	if also != nil {
		also()
	}
	return &MemDisk{data: append([]byte(nil), d.data...), synced: append([]byte(nil), d.synced...)}
}
