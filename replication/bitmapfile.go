package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// The out-of-sync bitmap is saved in META-DIR/bitmap, replaced atomically:
//
//	magic "NBMB" | version u32 | peerSeq u64 | lastSeq u64 | words u64 | word... | crc32c u32
//
// little endian. peerSeq is the journal seq up to which the peer held what
// this node held when the file was written; lastSeq the journal's last seq
// then. The words were read after both, so every record up to
// min(peerSeq, lastSeq) that the peer may lack is marked in them. At start
// the marks of every journal record after that are added again: what a
// crash kept the file from holding is recovered from the journal.
const (
	bitmapFile    = "bitmap"
	bitmapMagic   = 0x424d424e // "NBMB"
	bitmapVersion = 1
	// bitmapSaveInterval is how often a changed bitmap is saved.
	bitmapSaveInterval = time.Second
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// saveBitmap writes the bitmap file.
func (r *Resource) saveBitmap() error {
	peer, last := r.peerSeq.Load(), r.journal.LastSeq()
	words := r.oos.snapshot()
	le := binary.LittleEndian
	b := le.AppendUint32(nil, bitmapMagic)
	b = le.AppendUint32(b, bitmapVersion)
	b = le.AppendUint64(b, peer)
	b = le.AppendUint64(b, last)
	b = le.AppendUint64(b, uint64(len(words)))
	for _, w := range words {
		b = le.AppendUint64(b, w)
	}
	b = le.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return writeAtomic(r.cfg.FS, r.cfg.MetaDir, bitmapFile, b)
}

// loadBitmap reads the bitmap file into r.oos and returns the journal seq
// after which records must be marked again. A node without the file has
// never been apart from its peer: nothing to load, and every record in
// its journal came before any peer.
func (r *Resource) loadBitmap() (uint64, error) {
	b, err := vfs.ReadFile(r.cfg.FS, filepath.Join(r.cfg.MetaDir, bitmapFile))
	if errors.Is(err, os.ErrNotExist) {
		return r.journal.LastSeq(), nil
	}
	if err != nil {
		return 0, fmt.Errorf("replication: read the bitmap: %w", err)
	}
	le := binary.LittleEndian
	if len(b) < 32 || le.Uint32(b) != bitmapMagic || le.Uint32(b[len(b)-4:]) != crc32.Checksum(b[:len(b)-4], castagnoli) {
		return 0, fmt.Errorf("replication: %s in %s is damaged", bitmapFile, r.cfg.MetaDir)
	}
	peer, last, n := le.Uint64(b[8:]), le.Uint64(b[16:]), le.Uint64(b[24:])
	if uint64(len(b)) != 32+8*n+4 {
		return 0, fmt.Errorf("replication: %s in %s is damaged", bitmapFile, r.cfg.MetaDir)
	}
	words := make([]uint64, n)
	for i := range words {
		words[i] = le.Uint64(b[32+8*i:])
	}
	r.oos.load(words)
	r.peerSeq.Store(peer)
	return min(peer, last), nil
}

// recoverMarks marks the regions of every journal record after seq. When
// the journal no longer holds them, the whole disk is marked: a full sync
// (comparing checksums) is the only safe answer.
func (r *Resource) recoverMarks(seq uint64) error {
	return r.markRange(seq, r.journal.LastSeq())
}

// markRange marks the regions of the journal records in (from, to].
func (r *Resource) markRange(seq, to uint64) error {
	if seq >= min(to, r.journal.LastSeq()) {
		return nil
	}
	rd, err := r.journal.NewReader(seq + 1)
	if errors.Is(err, journal.ErrNotRetained) {
		r.log.Warn("the journal no longer holds every write the peer may lack: marking the whole disk", "from_seq", seq+1)
		r.oos.mark(0, r.size)
		return nil
	}
	if err != nil {
		return fmt.Errorf("replication: recover the bitmap: %w", err)
	}
	defer rd.Close()
	marked := 0
	for {
		rec, err := rd.Next()
		if err == io.EOF || err == nil && rec.Seq > to {
			break
		}
		if err != nil {
			return fmt.Errorf("replication: recover the bitmap: %w", err)
		}
		r.oos.mark(rec.Offset, int64(rec.RawLen))
		marked++
	}
	if marked > 0 {
		r.log.Info("marked the regions of journal records the peer may lack", "records", marked,
			"out_of_sync_bytes", r.oos.bytes())
	}
	return nil
}

// bitmapLoop saves the bitmap when it or peerSeq changed, until stop.
func (r *Resource) bitmapLoop() {
	t := time.NewTicker(bitmapSaveInterval)
	defer t.Stop()
	var lastPeer uint64
	var lastBytes int64 = -1
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		peer, bytes := r.peerSeq.Load(), r.oos.bytes()
		if peer == lastPeer && bytes == lastBytes {
			continue
		}
		if err := r.saveBitmap(); err != nil {
			r.log.Error("saving the bitmap", "err", err)
			continue
		}
		lastPeer, lastBytes = peer, bytes
	}
}

// writeAtomic replaces dir/name on fs with b: temp file, fsync, rename,
// fsync of the directory. The metadata lives on the resource's file system
// (Config.FS), next to the journal's directory, so a crash of that file
// system covers all of a node's durable state.
func writeAtomic(fs vfs.FS, dir, name string, b []byte) error {
	if err := vfs.WriteFileAtomic(fs, dir, name, b); err != nil {
		return fmt.Errorf("replication: write %s: %w", name, err)
	}
	return nil
}
