package replication

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// Disk is the backing disk a Resource reads and the journal applies to.
type Disk interface {
	io.ReaderAt
	journal.Disk
	Size() (int64, error)
}

// Config describes a resource to open.
type Config struct {
	Name    string
	Disk    Disk
	MetaDir string // the journal lives in MetaDir/journal
	Codec   journal.Codec
	// JournalSize bounds the journal (journal.Options.MaxBytes); 0 is the default.
	JournalSize int64
	// JournalRetain is kept after a checkpoint for resync; 0 is the default.
	JournalRetain int64
	// CheckpointInterval is the time between checkpoints; 0 is the default.
	CheckpointInterval time.Duration
	Logger             *slog.Logger
	// FS is where the journal lives; nil is the real file system.
	FS journal.FS
}

// Resource is one replicated device. Its methods are safe for concurrent use.
type Resource struct {
	name    string
	disk    Disk
	size    int64
	journal *journal.Journal
	comp    *journal.Compressor
	log     *slog.Logger

	writes       atomic.Uint64 // write, trim and zero records acknowledged
	bytesWritten atomic.Uint64 // raw bytes those records covered
}

// Open recovers the resource's journal onto its disk and makes it ready for I/O.
func Open(c Config) (*Resource, error) {
	size, err := c.Disk.Size()
	if err != nil {
		return nil, fmt.Errorf("replication: size of %s: %w", c.Name, err)
	}
	if c.FS == nil {
		c.FS = vfs.Default
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	j, err := journal.Open(c.FS, filepath.Join(c.MetaDir, "journal"), c.Disk, journal.Options{
		MaxBytes:           c.JournalSize,
		RetainBytes:        c.JournalRetain,
		CheckpointInterval: c.CheckpointInterval,
		Logger:             c.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("replication: open %s: %w", c.Name, err)
	}
	return &Resource{name: c.Name, disk: c.Disk, size: size, journal: j,
		comp: journal.NewCompressor(c.Codec), log: c.Logger}, nil
}

// Size is the device size in bytes.
func (r *Resource) Size() (int64, error) { return r.size, nil }

// ReadAt reads from the disk: a write is applied there before it is
// acknowledged.
func (r *Resource) ReadAt(p []byte, off int64) (int, error) { return r.disk.ReadAt(p, off) }

// WriteAt journals and applies p at off.
func (r *Resource) WriteAt(p []byte, off int64) (int, error) { return r.writeData(p, off, false) }

// WriteAtFUA is WriteAt whose record is durable in the journal before it returns.
func (r *Resource) WriteAtFUA(p []byte, off int64) (int, error) { return r.writeData(p, off, true) }

func (r *Resource) writeData(p []byte, off int64, fua bool) (int, error) {
	rec := r.comp.Write(off, p)
	rec.AttachRaw(p)
	err := r.append(rec, fua)
	rec.Release()
	if err != nil {
		return 0, err
	}
	return len(p), nil
}

// Trim discards a range: a record without payload.
func (r *Resource) Trim(off, length int64) error { return r.append(journal.Trim(off, length), false) }

// Zero writes zeros over a range: a record without payload.
func (r *Resource) Zero(off, length int64, noHole bool) error {
	return r.append(journal.Zero(off, length, noHole), false)
}

func (r *Resource) append(rec journal.Record, fua bool) error {
	if _, err := r.journal.Write(rec, fua); err != nil {
		return fmt.Errorf("replication: %s: %w", r.name, err)
	}
	r.writes.Add(1)
	r.bytesWritten.Add(uint64(rec.RawLen))
	return nil
}

// Sync makes every write acknowledged before it durable: one journal sync
// (group commit) covers them all; the disk itself is synced at checkpoints.
func (r *Resource) Sync() error {
	if err := r.journal.SyncWait(); err != nil {
		return fmt.Errorf("replication: %s: sync: %w", r.name, err)
	}
	return nil
}

// Stats counts what the resource has done since it opened.
type Stats struct {
	Writes       uint64
	BytesWritten uint64
	Journal      journal.Stats
}

// Stats returns the resource's counters.
func (r *Resource) Stats() Stats {
	return Stats{Writes: r.writes.Load(), BytesWritten: r.bytesWritten.Load(), Journal: r.journal.Stats()}
}

// Close drains the journal, checkpoints (the disk is synced) and closes it.
// The disk itself stays open: it belongs to the caller.
func (r *Resource) Close() error { return r.journal.Close() }
