package journal

import (
	"log/slog"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// FS is the file system the journal runs on; see package vfs.
type FS = vfs.FS

// NewMemFS returns an in-memory FS that can simulate a power loss
// (vfs.MemFS.CrashClone).
func NewMemFS() *vfs.MemFS { return vfs.NewMem() }

// Disk is the backing disk the journal applies records to.
// internal/filedisk.Disk satisfies it.
type Disk interface {
	WriteAt(p []byte, off int64) (int, error)
	Trim(off, length int64) error
	Zero(off, length int64, noHole bool) error
	Sync() error
}

// Defaults of Options.
const (
	defaultSegmentSize        = 64 << 20
	defaultRetainBytes        = 256 << 20
	defaultMaxBytes           = 1 << 30
	defaultCheckpointInterval = 5 * time.Second
)

// DefaultDataMax is the default of Options.DataMax: writes of this size or
// more are made in place. Measured with BenchmarkDataMax on a buffered
// disk file (ext4 on NVMe, 2 cores): see the README's Performance section.
const DefaultDataMax = 256 << 10

// Options tune a Journal. The zero value takes every default.
type Options struct {
	// RetainBytes is how much of the journal before the checkpoint is kept for
	// replay to a peer (NewReader): default 256 MiB, at most MaxBytes/2,
	// negative keeps nothing. A journal past half its MaxBytes keeps less.
	RetainBytes int64
	// MaxBytes bounds the journal's size on disk (default 1 GiB, 64 KiB at
	// least; spare files come on top). Past three quarters of it a checkpoint
	// is forced; at it AppendLater waits until a checkpoint frees space.
	MaxBytes int64
	// CheckpointInterval is the time between periodic checkpoints (default
	// 5s). Negative disables them: checkpoints then happen on Close and when
	// the journal fills up.
	CheckpointInterval time.Duration
	// Logger receives recovery and failure reports; nil means slog.Default().
	Logger *slog.Logger
	// Observe, if set, is told how long each step of a Stage took. It runs
	// on the journal's goroutines and must not block.
	Observe func(Stage, time.Duration)
	// DataMax is the size from which a write is made in place: its data
	// goes to the disk directly, behind an extent record in the journal
	// (see the package doc). Zero is DefaultDataMax; negative journals
	// every write whole.
	DataMax int64
	// MarkExtents says the caller marks the extents that recovery found
	// torn (RecoveredExtents) somewhere durable and then calls
	// ExtentsMarked: until then checkpoints stay before them, so that a
	// crash in between finds them again. Without it they are reported
	// and the checkpoint passes them at once.
	MarkExtents bool
	// OnFailure, if set, hears every failure of the journal's files or
	// disk that no appender is told of: the one that makes the journal
	// fail for good (a failed sync or apply, once), and each failed
	// checkpoint. It may run with the journal's locks held: it must not
	// block nor call the journal.
	OnFailure func(err error)

	// Knobs that only tests turn:
	//
	// segmentSize is the size at which the journal starts a new segment file
	// (default 64 MiB, at most MaxBytes/4).
	segmentSize int64
	// spares is how many zero-filled spare segments Open prepares in the
	// background when the journal has none (a fresh journal): writing into a
	// file's existing blocks makes FUA writes cheaper. Zero means 2; negative
	// none. Later, retired segments are recycled as spares.
	spares int
	// activityExtent is the size of an extent of the activity set (see
	// activity.go; default 4 MiB), activityMax the most extents it holds
	// (default 1024).
	activityExtent int64
	activityMax    int
}

func (o Options) withDefaults() Options {
	if o.segmentSize <= 0 {
		o.segmentSize = defaultSegmentSize
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = defaultMaxBytes
	}
	o.MaxBytes = max(o.MaxBytes, 64<<10)
	if o.RetainBytes == 0 {
		o.RetainBytes = defaultRetainBytes
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = defaultCheckpointInterval
	}
	if o.spares == 0 {
		o.spares = 2
	}
	if o.activityExtent <= 0 {
		o.activityExtent = defaultActivityExtent
	}
	if o.activityMax <= 0 {
		o.activityMax = defaultActivityMax
	}
	if o.DataMax == 0 {
		o.DataMax = DefaultDataMax
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	// Keep room for a checkpoint to free: segments of at most a quarter of
	// the journal, retention of at most half.
	o.segmentSize = max(min(o.segmentSize, o.MaxBytes/4), 1024)
	o.RetainBytes = min(max(o.RetainBytes, 0), o.MaxBytes/2)
	return o
}

// highWater is the size past which a checkpoint is forced.
func (o *Options) highWater() int64 { return o.MaxBytes / 4 * 3 }

// inPlace says whether a record of kind k covering n bytes is made in place.
func (o *Options) inPlace(k Kind, n uint32) bool {
	return k == KindWrite && o.DataMax > 0 && int64(n) >= o.DataMax
}

// maxBatchBytes bounds one write to the segment.
func (o *Options) maxBatchBytes() int64 { return min(o.segmentSize/2, 4<<20) }
