package replication

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/nbdmirror/nbdmirror/journal"
	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// The out-of-sync bitmap is saved in META-DIR/bitmap, on the resource's
// file system, as pages of 4 KiB (version 2), little endian:
//
//	page 0, 1     header slots: magic "NBMB" | version u32 (2) | save u64 | peerSeq u64 | lastSeq u64 | words u64 | zeros
//	page 2+i      words [511i, 511i+511) of the bitmap, u64 each (zeros past the last)
//	every page    ends with its page number u32 | crc32c u32 of the 4092 bytes before it
//
// peerSeq is the journal seq up to which the peer held what this node held
// when the header was written; lastSeq the journal's last seq then. The
// words were read after both, so every record up to min(peerSeq, lastSeq)
// that the peer may lack is marked in them. At start the marks of every
// journal record after that are added again: what a crash kept the file
// from holding is recovered from the journal.
//
// A save writes only the pages whose words changed since the last save,
// syncs them, then writes the header into the slot the last save did not
// use (save counts the headers; the higher valid one wins at load) and
// syncs it. A crash leaves every page either old, new, or torn: old and new
// pages are both right for the older header (min(peerSeq, lastSeq) only
// grows within a process, and a bit is cleared only when the peer holds its
// region), and a torn page (its CRC fails) counts as all ones, so its
// regions are resynced. A torn header leaves the other slot. The first save
// of a process, the first after a failed one and one whose
// min(peerSeq, lastSeq) is below the file's replace the file whole (temp
// file, rename): the file never mixes pages of two processes, nor pages
// with a header they are not right for.
//
// Version 1, still read, is one piece replaced whole by every save:
//
//	magic "NBMB" | version u32 (1) | peerSeq u64 | lastSeq u64 | words u64 | word... | crc32c u32
const (
	bitmapFile    = "bitmap"
	bitmapMagic   = 0x424d424e // "NBMB"
	bitmapVersion = 2
	// bitmapPageSize is the size of a page of the bitmap file.
	bitmapPageSize = 4 << 10
	// pageWords is how many bitmap words a page holds, before its trailer.
	pageWords = (bitmapPageSize - 8) / 8
	// headerPages is the number of header slots before the first page of words.
	headerPages = 2
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// bitmapPage is a page of bitmap words: index counts pages of words from
// the first (file page headerPages+index).
type bitmapPage struct {
	index int
	words []uint64
}

// bitmapHeader is what a header slot holds.
type bitmapHeader struct {
	save, peer, last, words uint64
}

// sealPage writes the trailer of page, the file's page number n.
func sealPage(page []byte, n int) {
	le := binary.LittleEndian
	le.PutUint32(page[bitmapPageSize-8:], uint32(n))
	le.PutUint32(page[bitmapPageSize-4:], crc32.Checksum(page[:bitmapPageSize-4], castagnoli))
}

// pageOK says whether page is whole and is the file's page number n.
func pageOK(page []byte, n int) bool {
	le := binary.LittleEndian
	return len(page) == bitmapPageSize && le.Uint32(page[bitmapPageSize-8:]) == uint32(n) &&
		le.Uint32(page[bitmapPageSize-4:]) == crc32.Checksum(page[:bitmapPageSize-4], castagnoli)
}

// appendHeader appends h as the header page of slot h.save%headerPages.
func appendHeader(dst []byte, h bitmapHeader) []byte {
	le := binary.LittleEndian
	page := make([]byte, bitmapPageSize)
	le.PutUint32(page, bitmapMagic)
	le.PutUint32(page[4:], bitmapVersion)
	le.PutUint64(page[8:], h.save)
	le.PutUint64(page[16:], h.peer)
	le.PutUint64(page[24:], h.last)
	le.PutUint64(page[32:], h.words)
	sealPage(page, int(h.save%headerPages))
	return append(dst, page...)
}

// parseHeader reads header slot n.
func parseHeader(page []byte, n int) (bitmapHeader, bool) {
	le := binary.LittleEndian
	if !pageOK(page, n) || le.Uint32(page) != bitmapMagic || le.Uint32(page[4:]) != bitmapVersion {
		return bitmapHeader{}, false
	}
	h := bitmapHeader{save: le.Uint64(page[8:]), peer: le.Uint64(page[16:]), last: le.Uint64(page[24:]), words: le.Uint64(page[32:])}
	return h, h.save%headerPages == uint64(n)
}

// appendWordsPage appends the page of words of index p.
func appendWordsPage(dst []byte, p int, words []uint64) []byte {
	page := make([]byte, bitmapPageSize)
	for i, w := range words {
		binary.LittleEndian.PutUint64(page[8*i:], w)
	}
	sealPage(page, headerPages+p)
	return append(dst, page...)
}

// encodeBitmapFile is a whole file: h in its slot, the other slot empty
// (not a valid header), then the pages of words.
func encodeBitmapFile(h bitmapHeader, words []uint64) []byte {
	b := make([]byte, 0, (headerPages+len(words)/pageWords+1)*bitmapPageSize)
	if h.save%headerPages == 1 {
		b = append(b, make([]byte, bitmapPageSize)...)
	}
	b = appendHeader(b, h)
	if h.save%headerPages == 0 {
		b = append(b, make([]byte, bitmapPageSize)...)
	}
	for p := 0; p*pageWords < len(words); p++ {
		b = appendWordsPage(b, p, words[p*pageWords:min((p+1)*pageWords, len(words))])
	}
	return b
}

// bitmapStore saves a Resource's bitmap into its file (see above). Its
// methods are safe for concurrent use; saves run one at a time.
type bitmapStore struct {
	fs  vfs.FS
	dir string

	mu sync.Mutex // held by a save; guards the fields below
	// last is the header last written; its save is 0 while the file has
	// not been replaced whole by this process (or a save failed since).
	last bitmapHeader
}

// save makes b durable with the seqs peer and last, read before b's
// words. It writes nothing when no word changed and peer did not move.
func (s *bitmapStore) save(b *bitmap, peer, last uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h := bitmapHeader{save: s.last.save + 1, peer: peer, last: last, words: uint64(len(b.words))}
	if s.last.save == 0 || min(peer, last) < min(s.last.peer, s.last.last) {
		s.last, h.save = bitmapHeader{}, 1 // until the file is whole again
		if err := writeAtomic(s.fs, s.dir, bitmapFile, encodeBitmapFile(h, b.takeAll())); err != nil {
			return err
		}
		s.last = h
		return nil
	}
	pages := b.takeDirty()
	if len(pages) == 0 && peer == s.last.peer {
		return nil
	}
	if err := s.writePages(pages, h); err != nil {
		s.last = bitmapHeader{} // the next save replaces the file whole
		return fmt.Errorf("replication: write %s: %w", bitmapFile, err)
	}
	s.last = h
	return nil
}

// writePages writes pages, syncs them, then writes h and syncs it.
func (s *bitmapStore) writePages(pages []bitmapPage, h bitmapHeader) error {
	f, err := s.fs.OpenFile(filepath.Join(s.dir, bitmapFile), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err = writeRuns(f, pages); err == nil && len(pages) > 0 {
		err = f.Sync()
	}
	if err == nil {
		_, err = f.WriteAt(appendHeader(nil, h), int64(h.save%headerPages)*bitmapPageSize)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// writeRuns writes pages (in index order) with one write per run of
// consecutive pages.
func writeRuns(f vfs.File, pages []bitmapPage) error {
	for i := 0; i < len(pages); {
		var buf []byte
		j := i
		for ; j < len(pages) && pages[j].index == pages[i].index+(j-i); j++ {
			buf = appendWordsPage(buf, pages[j].index, pages[j].words)
		}
		if _, err := f.WriteAt(buf, int64(headerPages+pages[i].index)*bitmapPageSize); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// bitmapLoad is what loading the bitmap file found.
type bitmapLoad struct {
	found bool // the file exists
	// header is the newest valid header; its save is 0 when none was
	// read (the file is damaged: the caller marks everything).
	header  bitmapHeader
	damaged int // pages of words that did not read back: their regions are marked
}

// loadBitmapFile ORs the bitmap file at path into b. A damaged page marks
// every region it covers; a file with no valid header loads nothing and
// says so. Only an error reading the file is an error.
func loadBitmapFile(fs vfs.FS, path string, b *bitmap) (bitmapLoad, error) {
	raw, err := vfs.ReadFile(fs, path)
	if errors.Is(err, os.ErrNotExist) {
		return bitmapLoad{}, nil
	}
	if err != nil {
		return bitmapLoad{}, fmt.Errorf("replication: read the bitmap: %w", err)
	}
	le := binary.LittleEndian
	if len(raw) >= 8 && le.Uint32(raw) == bitmapMagic && le.Uint32(raw[4:]) == 1 {
		return loadBitmapV1(raw, b), nil
	}
	ld := bitmapLoad{found: true}
	for n := range headerPages {
		if len(raw) < (n+1)*bitmapPageSize {
			break
		}
		if h, ok := parseHeader(raw[n*bitmapPageSize:(n+1)*bitmapPageSize], n); ok && h.save > ld.header.save {
			ld.header = h
		}
	}
	if ld.header.save == 0 {
		return ld, nil
	}
	words := min(ld.header.words, uint64(len(b.words)))
	for p := 0; uint64(p*pageWords) < words; p++ {
		n := min(pageWords, int(words)-p*pageWords)
		off := (headerPages + p) * bitmapPageSize
		if len(raw) < off+bitmapPageSize || !pageOK(raw[off:off+bitmapPageSize], headerPages+p) {
			b.markWords(p*pageWords, n)
			ld.damaged++
			continue
		}
		page := make([]uint64, n)
		for i := range page {
			page[i] = le.Uint64(raw[off+8*i:])
		}
		b.loadAt(p*pageWords, page)
	}
	return ld, nil
}

// loadBitmapV1 reads a version 1 file (written whole) into b.
func loadBitmapV1(raw []byte, b *bitmap) bitmapLoad {
	le := binary.LittleEndian
	ld := bitmapLoad{found: true}
	if len(raw) < 36 || le.Uint32(raw[len(raw)-4:]) != crc32.Checksum(raw[:len(raw)-4], castagnoli) {
		return ld
	}
	peer, last, n := le.Uint64(raw[8:]), le.Uint64(raw[16:]), le.Uint64(raw[24:])
	if uint64(len(raw)) != 32+8*n+4 {
		return ld
	}
	words := make([]uint64, n)
	for i := range words {
		words[i] = le.Uint64(raw[32+8*i:])
	}
	b.loadAt(0, words)
	ld.header = bitmapHeader{save: 1, peer: peer, last: last, words: n}
	return ld
}

// saveBitmap saves the bitmap when it or peerSeq changed since the last
// save (see bitmapStore.save).
func (r *Resource) saveBitmap() error {
	if r.health.out() { // nothing is saved while the disk is out (detach.go)
		return nil
	}
	peer, last := r.peerSeq.Load(), r.journal.LastSeq()
	err := r.bitmapFile.save(r.oos, peer, last)
	r.health.fault(OpMeta, err)
	return err
}

// loadBitmap reads the bitmap file into r.oos and returns the journal seq
// after which records must be marked again. A node without the file
// crashed before its first save (within tune.bitmapSave of its first
// write): any record its journal still holds may be one the peer lacks,
// whether the node was apart from its peer or in sync with it (a write in
// flight to the peer when it crashed is replayed here, as DRBD resyncs its
// activity log's extents after a Primary's crash).
func (r *Resource) loadBitmap() (uint64, error) {
	ld, err := loadBitmapFile(r.cfg.FS, filepath.Join(r.cfg.MetaDir, bitmapFile), r.oos)
	switch {
	case err != nil:
		return 0, err
	case !ld.found:
		return max(r.journal.OldestRetainedSeq(), 1) - 1, nil
	case ld.header.save == 0:
		r.log.Warn("the bitmap file is damaged: marking the whole disk", "dir", r.cfg.MetaDir)
		r.oos.mark(0, r.size)
		return r.journal.LastSeq(), nil
	case ld.damaged > 0:
		r.log.Warn("pages of the bitmap file are damaged: marking their regions", "pages", ld.damaged)
	}
	r.peerSeq.Store(ld.header.peer)
	return min(ld.header.peer, ld.header.last), nil
}

// recoverMarks marks the regions of every journal record after seq. When
// the journal no longer holds them, the whole disk is marked: a full sync
// (comparing checksums) is the only safe answer.
func (r *Resource) recoverMarks(seq uint64) error {
	return r.markRange(r.journal, seq, r.journal.LastSeq())
}

// markRange marks the regions of the records of j in (from, to].
func (r *Resource) markRange(j *journal.Journal, seq, to uint64) error {
	if seq >= min(to, j.LastSeq()) {
		return nil
	}
	rd, err := j.NewReader(seq + 1)
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
		rec.Release()
		r.oos.mark(rec.Offset, int64(rec.RawLen))
		marked++
	}
	if marked > 0 {
		r.log.Info("marked the regions of journal records the peer may lack", "records", marked,
			"out_of_sync_bytes", r.oos.bytes())
	}
	return nil
}

// bitmapLoop saves the bitmap every tune.bitmapSave until stop.
func (r *Resource) bitmapLoop() {
	t := time.NewTicker(tune.bitmapSave)
	defer t.Stop()
	for {
		select {
		case <-r.stop:
			return
		case <-t.C:
		}
		if err := r.saveBitmap(); err != nil {
			r.log.Error("saving the bitmap", "err", err)
		}
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
