package replication

import (
	"encoding/binary"
	"errors"
	"flag"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

var (
	bitmapSchedules = flag.Int("bitmap.schedules", 0, "random crash schedules of the bitmap file to run (0: 300, 50 with -short)")
	bitmapSeed      = flag.Uint64("bitmap.seed", 0, "seed of the first bitmap schedule (0: from the clock)")
)

// bmWords is the bitmap of the tests: three full pages of words and part of
// a fourth, its last word partly past the disk, its last region short.
const (
	bmWords   = 3*pageWords + 100
	bmRegions = bmWords*64 - 7
	bmSize    = bmRegions*RegionSize - 1000
	bmDir     = "/meta"
)

var bmPath = path.Join(bmDir, bitmapFile)

func newTestFS(t *testing.T) *vfs.MemFS {
	t.Helper()
	fs := vfs.NewMem()
	if err := fs.MkdirAll(bmDir, 0o755); err != nil {
		t.Fatal(err)
	}
	return fs
}

// loadTest loads the bitmap file of fs into a new bitmap.
func loadTest(t *testing.T, fs vfs.FS) (*bitmap, bitmapLoad) {
	t.Helper()
	b := newBitmap(bmSize)
	ld, err := loadBitmapFile(fs, bmPath, b)
	if err != nil {
		t.Fatal(err)
	}
	return b, ld
}

// TestBitmapCrashSchedules runs random marks, clears and saves (some
// with seqs older than the file's, some failing once), crashing the file
// system (a power loss keeping a random prefix, or a random subset, of the
// unsynced writes, some torn) at a random operation, for several process
// lifetimes. After each crash the loaded bitmap holds every region marked
// at the last completed save and not cleared since (more is allowed), the
// header is that save's or the one in flight, and a crash between saves
// loads exactly what the last save saw.
func TestBitmapCrashSchedules(t *testing.T) {
	seed := *bitmapSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	n := *bitmapSchedules
	if n == 0 {
		n = 300
		if testing.Short() {
			n = 50
		}
	}
	var sum bitmapModel
	for i := range uint64(n) {
		m := runBitmapSchedule(t, seed+i)
		if t.Failed() {
			t.Fatalf("rerun with -run TestBitmapCrashSchedules -bitmap.seed=%d -bitmap.schedules=1", seed+i)
		}
		sum.nextPeer += m.nextPeer
		sum.inflights += m.inflights
		sum.damaged += m.damaged
		sum.failures += m.failures
	}
	t.Logf("%d saves, %d crashes during a save, %d failed saves, %d pages loaded damaged",
		sum.nextPeer, sum.inflights, sum.failures, sum.damaged)
}

// bitmapModel is what a schedule knows the file must hold.
type bitmapModel struct {
	required *bitmap // marked at the last completed save, minus clears since
	saved    []uint64
	donePeer uint64 // peerSeq of the last completed save (0: none)
	// tried holds, for each save a crash cut short since, what it saw
	// minus clears since: what the file must hold if its header landed.
	tried     map[uint64]*bitmap
	nextPeer  uint64
	damaged   int // pages loaded as damaged, over all crashes
	inflights int // crashes that hit a save
	failures  int // saves that failed without a crash
}

var (
	errCrashed = errors.New("crashed")
	errFailed  = errors.New("failed") // once, and the process goes on
)

func runBitmapSchedule(t *testing.T, seed uint64) *bitmapModel {
	t.Helper()
	rnd := rand.New(rand.NewPCG(seed, seed>>32))
	fs := newTestFS(t)
	m := &bitmapModel{required: newBitmap(bmSize), tried: map[uint64]*bitmap{}}
	for range 1 + rnd.IntN(5) {
		b, ld := loadTest(t, fs)
		if !m.check(t, b, ld) {
			return m
		}
		fs = m.live(t, rnd, fs, b)
	}
	b, ld := loadTest(t, fs)
	m.check(t, b, ld)
	return m
}

// live runs one process lifetime on fs and returns what the crash that
// ends it leaves.
func (m *bitmapModel) live(t *testing.T, rnd *rand.Rand, fs *vfs.MemFS, b *bitmap) *vfs.MemFS {
	t.Helper()
	ops, crashAt, failAt := 0, 1+rnd.IntN(80), 1+rnd.IntN(80)
	crash := fs.CrashClone // a disk that writes in order
	if rnd.IntN(2) == 0 {
		crash = fs.CrashCloneAnyOrder
	}
	var crashed *vfs.MemFS
	store := &bitmapStore{dir: bmDir, fs: vfs.Inject(fs, func(vfs.Op, string) error {
		if ops++; ops == crashAt {
			crashed = crash(rnd)
		}
		switch {
		case ops >= crashAt:
			return errCrashed
		case ops == failAt:
			return errFailed
		}
		return nil
	})}
	for range 40 {
		switch k := rnd.IntN(8); {
		case k < 4:
			r := rnd.Int64N(bmRegions)
			b.mark(r*RegionSize, (1+rnd.Int64N(min(600, bmRegions-r)))*RegionSize)
		case k < 6:
			if r := b.next(rnd.Int64N(bmRegions)); r >= 0 {
				b.clear(r)
				m.required.clear(r)
				for _, req := range m.tried {
					req.clear(r)
				}
			}
		default:
			m.nextPeer++
			last := m.nextPeer
			if rnd.IntN(8) == 0 {
				last = 1 // min(peerSeq, lastSeq) goes back
			}
			snap := b.snapshot()
			if err := store.save(b, m.nextPeer, last); err != nil {
				if !errors.Is(err, errCrashed) && !errors.Is(err, errFailed) {
					t.Fatal(err)
				}
				m.tried[m.nextPeer] = newBitmap(bmSize)
				m.tried[m.nextPeer].loadAt(0, snap)
				if errors.Is(err, errFailed) {
					m.failures++
					continue
				}
				m.inflights++
				return crashed
			}
			m.required = newBitmap(bmSize)
			m.required.loadAt(0, snap)
			m.saved, m.donePeer = snap, m.nextPeer
			clear(m.tried)
		}
	}
	return crash(rnd)
}

// check compares a loaded bitmap with the model.
func (m *bitmapModel) check(t *testing.T, b *bitmap, ld bitmapLoad) bool {
	t.Helper()
	m.damaged += ld.damaged
	switch h := ld.header; {
	case m.donePeer == 0 && len(m.tried) == 0 && ld.found:
		t.Errorf("a bitmap file with no save: %+v", ld)
	case m.donePeer != 0 && h.save == 0:
		t.Errorf("no valid header after save %d: %+v", m.donePeer, ld)
	case ld.found && h.peer != m.donePeer && m.tried[h.peer] == nil:
		t.Errorf("header of peerSeq %d: the last save was %d, and no save cut short had it", h.peer, m.donePeer)
	}
	for _, req := range []*bitmap{m.required, m.tried[ld.header.peer]} {
		if r := firstMissing(req, b); r >= 0 {
			t.Errorf("region %d was marked when the save of the header (peerSeq %d) or the last save (%d) began and never cleared, but is not after the crash",
				r, ld.header.peer, m.donePeer)
			return false
		}
	}
	if len(m.tried) == 0 && m.donePeer != 0 && !slices.Equal(b.snapshot(), m.saved) {
		t.Errorf("a crash between saves loads %d bytes marked, not the %d saved", b.bytes(), m.required.bytes())
	}
	if last := b.words[len(b.words)-1]; last>>(bmRegions%64) != 0 {
		t.Errorf("bits past the last region: %#x", last)
	}
	return !t.Failed()
}

// firstMissing is the first region marked in want (nil: none) and not in got, or -1.
func firstMissing(want, got *bitmap) int64 {
	for r := int64(0); want != nil; r++ {
		if r = want.next(r); r < 0 || !got.isSet(r) {
			return r
		}
	}
	return -1
}

// TestBitmapDamagedPageMarksItsRegions breaks one page of words and the
// last (short) page: their regions load marked, the others as saved.
func TestBitmapDamagedPageMarksItsRegions(t *testing.T) {
	fs := newTestFS(t)
	b := newBitmap(bmSize)
	b.mark(10*RegionSize, 5*RegionSize)
	b.mark((pageWords*64+7)*RegionSize, RegionSize)
	store := &bitmapStore{fs: fs, dir: bmDir}
	if err := store.save(b, 1, 1); err != nil {
		t.Fatal(err)
	}
	f, err := fs.OpenFile(bmPath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte{0xff}, (headerPages+1)*bitmapPageSize+100)
	f.WriteAt([]byte{0xff}, (headerPages+3)*bitmapPageSize+4000) // past the page's last word
	f.Close()

	got, ld := loadTest(t, fs)
	if ld.damaged != 2 || ld.header.peer != 1 {
		t.Fatalf("load: %+v, want 2 damaged pages and the header", ld)
	}
	want := newBitmap(bmSize)
	want.mark(10*RegionSize, 5*RegionSize)
	want.markWords(pageWords, pageWords)
	want.markWords(3*pageWords, 100)
	if !slices.Equal(got.snapshot(), want.snapshot()) {
		t.Fatalf("loaded %d bytes marked, want %d", got.bytes(), want.bytes())
	}
	if got.bytes() != want.bytes() || got.next(bmRegions) != -1 {
		t.Fatalf("marks past the disk: %d bytes", got.bytes())
	}
}

// TestBitmapTornHeaderFallsBackToTheOtherSlot breaks the newest header:
// the one before it is read, with the pages written since.
func TestBitmapTornHeaderFallsBackToTheOtherSlot(t *testing.T) {
	fs := newTestFS(t)
	b := newBitmap(bmSize)
	store := &bitmapStore{fs: fs, dir: bmDir}
	for peer := range uint64(3) {
		b.mark(int64(peer)*RegionSize, RegionSize)
		if err := store.save(b, peer+1, peer+1); err != nil {
			t.Fatal(err)
		}
	}
	f, _ := fs.OpenFile(bmPath, os.O_RDWR, 0)
	f.WriteAt([]byte{0xff}, int64(store.last.save%headerPages)*bitmapPageSize+10)
	f.Close()
	got, ld := loadTest(t, fs)
	if ld.header.peer != 2 || ld.header.save != store.last.save-1 {
		t.Fatalf("header %+v, want the save before the last (%d)", ld.header, store.last.save-1)
	}
	if got.bytes() != 3*RegionSize {
		t.Fatalf("%d bytes marked, want 3 regions", got.bytes())
	}
}

// TestBitmapNoValidHeader: a file that is not a bitmap loads nothing and
// says so (the resource marks the whole disk).
func TestBitmapNoValidHeader(t *testing.T) {
	badCRC := encodeBitmapV1(1, 2, []uint64{1})
	badCRC[len(badCRC)-1] ^= 1
	for _, raw := range [][]byte{nil, []byte("NBMB"), make([]byte, 3*bitmapPageSize), badCRC[1:], badCRC} {
		fs := newTestFS(t)
		if err := writeAtomic(fs, bmDir, bitmapFile, raw); err != nil {
			t.Fatal(err)
		}
		got, ld := loadTest(t, fs)
		if !ld.found || ld.header.save != 0 || got.bytes() != 0 {
			t.Fatalf("%d bytes: %+v, %d bytes marked", len(raw), ld, got.bytes())
		}
	}
}

// encodeBitmapV1 is a version 1 file, as earlier releases wrote it.
func encodeBitmapV1(peer, last uint64, words []uint64) []byte {
	le := binary.LittleEndian
	b := le.AppendUint32(nil, bitmapMagic)
	b = le.AppendUint32(b, 1)
	b = le.AppendUint64(b, peer)
	b = le.AppendUint64(b, last)
	b = le.AppendUint64(b, uint64(len(words)))
	for _, w := range words {
		b = le.AppendUint64(b, w)
	}
	return le.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// TestBitmapVersion1Upgrades loads a version 1 file, saves it as version 2
// and loads that: the same words and seqs.
func TestBitmapVersion1Upgrades(t *testing.T) {
	fs := newTestFS(t)
	old := newBitmap(bmSize)
	old.mark(0, 3*RegionSize)
	old.mark(int64(bmRegions-2)*RegionSize, 2*RegionSize)
	old.mark(int64(2*pageWords*64+5)*RegionSize, 70*RegionSize)
	if err := writeAtomic(fs, bmDir, bitmapFile, encodeBitmapV1(7, 9, old.snapshot())); err != nil {
		t.Fatal(err)
	}
	got, ld := loadTest(t, fs)
	if ld.header.peer != 7 || ld.header.last != 9 || !slices.Equal(got.snapshot(), old.snapshot()) {
		t.Fatalf("version 1: %+v, %d bytes marked, want %d", ld, got.bytes(), old.bytes())
	}
	store := &bitmapStore{fs: fs, dir: bmDir}
	if err := store.save(got, 7, 9); err != nil {
		t.Fatal(err)
	}
	again, ld := loadTest(t, fs)
	raw, _ := vfs.ReadFile(fs, bmPath)
	if len(raw) != (headerPages+4)*bitmapPageSize || ld.header.peer != 7 || !slices.Equal(again.snapshot(), old.snapshot()) {
		t.Fatalf("saved again: %d bytes of file, %+v, %d bytes marked", len(raw), ld, again.bytes())
	}
}

// countFS records the writes and syncs of files opened through it.
type countFS struct {
	vfs.FS
	writes *[][2]int64 // offset, length
	syncs  *int
}

func (c countFS) Create(name string) (vfs.File, error) {
	return c.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
}

func (c countFS) OpenFile(name string, flag int, perm os.FileMode) (vfs.File, error) {
	f, err := c.FS.OpenFile(name, flag, perm)
	return countFile{File: f, c: c}, err
}

type countFile struct {
	vfs.File
	c countFS
}

func (f countFile) WriteAt(p []byte, off int64) (int, error) {
	*f.c.writes = append(*f.c.writes, [2]int64{off, int64(len(p))})
	return f.File.WriteAt(p, off)
}

func (f countFile) Write(p []byte) (int, error) {
	*f.c.writes = append(*f.c.writes, [2]int64{-1, int64(len(p))})
	return f.File.Write(p)
}

func (f countFile) Sync() error {
	*f.c.syncs++
	return f.File.Sync()
}

// TestBitmapSaveWritesChangedPagesOnly: after the first save (the whole
// file), one changed word costs one page and the header, each synced; an
// unchanged bitmap with a new peerSeq costs the header; nothing changed,
// nothing written; seqs older than the file's replace it whole.
func TestBitmapSaveWritesChangedPagesOnly(t *testing.T) {
	var writes [][2]int64
	var syncs int
	fs := countFS{FS: newTestFS(t), writes: &writes, syncs: &syncs}
	b := newBitmap(bmSize)
	b.mark(RegionSize, RegionSize)
	store := &bitmapStore{fs: fs, dir: bmDir}
	if err := store.save(b, 1, 1); err != nil {
		t.Fatal(err)
	}
	if len(writes) != 1 || writes[0] != [2]int64{-1, (headerPages + 4) * bitmapPageSize} {
		t.Fatalf("the first save: writes %v, want the whole file in one", writes)
	}
	steps := []struct {
		mark       int64 // region to mark, -1 for none
		peer       uint64
		writes     [][2]int64
		wantSyncs  int
		whatWeMean string
	}{
		{2*pageWords*64 + 3*64 + 5, 2, [][2]int64{{(headerPages + 2) * bitmapPageSize, bitmapPageSize}, {0, bitmapPageSize}}, 2, "one word changed"},
		{-1, 3, [][2]int64{{bitmapPageSize, bitmapPageSize}}, 1, "a new peerSeq"},
		{-1, 3, nil, 0, "nothing changed"},
		{2, 3, [][2]int64{{headerPages * bitmapPageSize, bitmapPageSize}, {0, bitmapPageSize}}, 2, "a word of page 0, same peerSeq"},
		{-1, 2, [][2]int64{{-1, (headerPages + 4) * bitmapPageSize}}, 1, "seqs gone back: the file replaced whole"},
	}
	for _, s := range steps {
		writes, syncs = nil, 0
		if s.mark >= 0 {
			b.mark(s.mark*RegionSize, 1)
		}
		if err := store.save(b, s.peer, s.peer); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(writes, s.writes) || syncs != s.wantSyncs {
			t.Errorf("%s: writes %v and %d syncs, want %v and %d", s.whatWeMean, writes, syncs, s.writes, s.wantSyncs)
		}
	}
	got, _ := loadTest(t, fs)
	if !slices.Equal(got.snapshot(), b.snapshot()) {
		t.Fatalf("loaded %d bytes marked, saved %d", got.bytes(), b.bytes())
	}
}
