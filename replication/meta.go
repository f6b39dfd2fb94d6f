package replication

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
	"github.com/nbdmirror/nbdmirror/replication/wire"
)

// GenZero is the generation id of a device created empty by serve --size:
// two such devices hold the same bytes (zeros) and need no initial sync.
const GenZero uint64 = 1

// meta is what a node keeps about itself in META-DIR/meta.json on the
// resource's file system (Config.FS), replaced atomically (temp file,
// fsync, rename, fsync of the directory).
type meta struct {
	NodeID  uint64      `json:"node_id"`
	Gen     wire.GenIDs `json:"gen"`
	Disk    string      `json:"disk"` // UpToDate, Inconsistent or Outdated
	Created bool        `json:"created"`
	// DiscardMyData: after a split brain this node gives up its changes
	// and becomes the SyncTarget of its peer (resolve --discard-my-data).
	DiscardMyData bool `json:"discard_my_data,omitempty"`
	// LostFrom is the first journal seq this node may have lost: its last
	// seq plus one when it started, until a resync with its peer ended
	// (see wire.Hello.LostFrom). Saved before the node hands out a seq.
	LostFrom uint64 `json:"lost_from,omitempty"`
	// TailFrom is the first seq a journal-tail resync from this node may
	// send: recovery marked regions (see recoverExtents) where the disk
	// may hold bytes that no record before it holds, and a tail sending
	// those records would clear the marks of regions whose bytes differ
	// from theirs. Later records are what the disk holds.
	TailFrom uint64 `json:"tail_from,omitempty"`
	// DoneSent: this node, a resync's source, sent SyncDone in generation
	// Gen.Current and has no answer yet: its target may have recorded
	// itself UpToDate in that generation (State.DoneSent). Saved before
	// the SyncDone goes out, so that a restart, which cannot ask the
	// target, still knows to move on at its first write apart.
	DoneSent bool `json:"sync_done_sent,omitempty"`
}

// parseDiskState reads a disk state's name.
func parseDiskState(s string) (wire.DiskState, error) {
	for _, d := range []wire.DiskState{wire.UpToDate, wire.Inconsistent, wire.Outdated, wire.Diskless, wire.Consistent} {
		if d.String() == s {
			return d, nil
		}
	}
	return 0, fmt.Errorf("replication: unknown disk state %q", s)
}

const metaFile = "meta.json"

// loadMeta reads dir's metadata from fs; a missing file gives a new node:
// created says whether the disk was made empty by this daemon (GenZero) or
// holds data nobody has vouched for (a random generation).
func loadMeta(fs vfs.FS, dir string, created bool) (meta, error) {
	raw, err := vfs.ReadFile(fs, filepath.Join(dir, metaFile))
	if errors.Is(err, os.ErrNotExist) {
		m := meta{NodeID: randomID(), Disk: wire.UpToDate.String(), Created: created}
		m.Gen.Current = randomID()
		if created {
			m.Gen.Current = GenZero
		}
		return m, writeMeta(fs, dir, m)
	}
	if err != nil {
		return meta{}, fmt.Errorf("replication: read %s: %w", metaFile, err)
	}
	var m meta
	if err := json.Unmarshal(raw, &m); err != nil || m.NodeID == 0 {
		return meta{}, fmt.Errorf("replication: %s in %s is damaged: %v", metaFile, dir, err)
	}
	return m, nil
}

// saveMeta makes r.meta durable. Requires r.mu.
// Nothing is saved while the disk is out: the metadata is part of it.
func (r *Resource) saveMeta() error {
	if r.health.out() {
		return nil
	}
	err := writeMeta(r.cfg.FS, r.cfg.MetaDir, r.meta)
	r.health.fault(OpMeta, err)
	return err
}

// writeMeta replaces dir's meta.json on fs with m.
func writeMeta(fs vfs.FS, dir string, m meta) error {
	raw, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(fs, dir, metaFile, append(raw, '\n'))
}

// randomID is a non-zero random id that is not GenZero.
func randomID() uint64 {
	var b [8]byte
	for {
		rand.Read(b[:])
		if id := binary.LittleEndian.Uint64(b[:]); id > GenZero {
			return id
		}
	}
}
