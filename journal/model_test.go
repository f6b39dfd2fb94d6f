package journal

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

var quiet = testLogger()

// op is what the model knows of an appended record: enough to apply it.
type op struct {
	kind Kind
	off  int64
	n    int64
	data []byte // raw data of a write
	torn bool   // a torn extent: data is what recovery found on the disk
}

// sum is the CRC32C of the data, as an extent record holds it.
func (o op) sum() uint32 { return crc32.Checksum(o.data, castagnoli) }

func (o op) applyTo(img []byte) {
	if o.kind == KindWrite {
		copy(img[o.off:], o.data)
	} else {
		clear(img[o.off : o.off+o.n])
	}
}

// history is every record appended across the journal's lives, by seq, and
// what was acknowledged. Appends come from many goroutines.
type history struct {
	mu        sync.Mutex // guards everything below
	ops       map[uint64]op
	durable   uint64 // highest seq acknowledged durable (FUA, Sync, Checkpoint)
	completed uint64 // highest seq completed at all (in the journal file)
	errs      []error
	// dataMax is the journal's Options.DataMax: writes of it or more are
	// made in place. flushed is the highest seq a Sync or a checkpoint
	// acknowledged (every record up to it, data written in place too, is
	// durable); fua the FUA records acknowledged.
	dataMax int64
	flushed uint64
	fua     map[uint64]bool
	// atCrash is flushed and fua as they were at the last crash: what was
	// promised durable before it (completions may come after it).
	atCrash struct {
		flushed uint64
		fua     map[uint64]bool
	}
	// patches are what recoveries found on the disk over the extents of
	// an open activity set, in the order found.
	patches []patch
}

// patch is bytes of the disk at off that replace the image after seq after.
type patch struct {
	after uint64
	off   int64
	data  []byte
}

// crashed notes what was promised durable when the crash came.
func (h *history) crashed() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.atCrash.flushed, h.atCrash.fua = h.flushed, maps.Clone(h.fua)
}

func newHistory() *history { return &history{ops: map[uint64]op{}, fua: map[uint64]bool{}} }

// inPlace says whether o may have been written in place: one that
// overlapped a record the synced disk lacked was journaled (unsynced.go).
func (h *history) inPlace(o op) bool {
	return o.kind == KindWrite && h.dataMax > 0 && o.n >= h.dataMax
}

// flush notes that a Sync or a checkpoint covered every seq up to seq.
func (h *history) flush(seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.flushed = max(h.flushed, seq)
}

func (h *history) add(seq uint64, o op) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops[seq] = o
}

func (h *history) ack(seq uint64, durable bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err != nil {
		h.errs = append(h.errs, fmt.Errorf("seq %d: %w", seq, err))
		return
	}
	h.completed = max(h.completed, seq)
	if durable {
		h.durable = max(h.durable, seq)
		h.fua[seq] = true
	}
}

func (h *history) acked() (durable, completed uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.durable, h.completed
}

// image is the disk after applying seqs 1..k in order to a zeroed disk.
func (h *history) image(t *testing.T, size int64, k uint64) []byte {
	return h.imageWithout(t, size, k, nil)
}

// imageWithout is image with the seqs in skip left out: writes in place
// whose data did not land.
func (h *history) imageWithout(t *testing.T, size int64, k uint64, skip map[uint64]bool) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	img := make([]byte, size)
	h.patch(img, 0)
	for s := uint64(1); s <= k; s++ {
		o, ok := h.ops[s]
		if !ok {
			t.Fatalf("seq %d was never appended but is in the journal", s)
		}
		if !skip[s] {
			o.applyTo(img)
		}
		h.patch(img, s)
	}
	return img
}

// tornImages is the images a disk may hold with the torn writes in place
// of torn (not Active) landed or not, each on its own: one per subset of
// them. More than maxTorn of them make it nil (the check is skipped).
func (h *history) tornImages(t *testing.T, size int64, k uint64, torn []Extent) [][]byte {
	const maxTorn = 3
	var seqs []uint64
	for _, e := range torn {
		if !e.Active {
			seqs = append(seqs, e.Seq)
		}
	}
	if len(seqs) > maxTorn {
		return nil
	}
	var imgs [][]byte
	for set := 0; set < 1<<len(seqs); set++ {
		skip := map[uint64]bool{}
		for i, s := range seqs {
			if set&(1<<i) != 0 {
				skip[s] = true
			}
		}
		imgs = append(imgs, h.imageWithout(t, size, k, skip))
	}
	return imgs
}

// patch lays the patches made after seq s over img. Requires mu.
func (h *history) patch(img []byte, s uint64) {
	for _, p := range h.patches {
		if p.after == s {
			copy(img[p.off:], p.data)
		}
	}
}

// forget drops the seqs above k: the crash took them.
func (h *history) forget(k uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for s := range h.ops {
		if s > k {
			delete(h.ops, s)
		}
	}
	h.durable = min(h.durable, k)
	h.completed = min(h.completed, k)
	h.flushed = min(h.flushed, k)
	for s := range h.fua {
		if s > k {
			delete(h.fua, s)
		}
	}
}

// randomOp makes a random write (compressible or not), trim or zero inside a
// disk of size bytes; ranges overlap often.
func randomOp(rnd *rand.Rand, c *Compressor, size int64) (Record, op) {
	return randomOpOf(rnd, c, size, 16)
}

// randomMixedOp is randomOp drawing one write in four of up to 32 KiB, which
// the crash schedules' journals write in place (Options.DataMax).
func randomMixedOp(rnd *rand.Rand, c *Compressor, size int64) (Record, op) {
	if rnd.IntN(4) == 0 {
		return randomOpOf(rnd, c, size, 64)
	}
	return randomOpOf(rnd, c, size, 16)
}

// randomOpOf is randomOp of 1 to maxSectors sectors.
func randomOpOf(rnd *rand.Rand, c *Compressor, size int64, maxSectors int) (Record, op) {
	sectors := size / 512
	n := int64(1 + rnd.IntN(maxSectors))
	off := rnd.Int64N(sectors-n+1) * 512
	n *= 512
	switch rnd.IntN(8) {
	case 0:
		return Trim(off, n), op{kind: KindTrim, off: off, n: n}
	case 1:
		noHole := rnd.IntN(2) == 0
		k := KindZero
		if noHole {
			k = KindZeroNoHole
		}
		return Zero(off, n, noHole), op{kind: k, off: off, n: n}
	}
	var data []byte
	if rnd.IntN(2) == 0 {
		data = compressible(rnd, int(n))
	} else {
		data = randomBytes(rnd, int(n))
	}
	return c.Write(off, data), op{kind: KindWrite, off: off, n: n, data: data}
}

// checkRecovered checks a freshly opened journal against the history: the disk
// is the image of a prefix of the appended records that holds every durable
// one, and the retained records read back as appended.
func checkRecovered(t *testing.T, j *Journal, disk *MemDisk, h *history, size int64, mustHave uint64) uint64 {
	t.Helper()
	k := j.LastSeq()
	if k < mustHave {
		t.Fatalf("recovered up to seq %d, but seq %d was acknowledged", k, mustHave)
	}
	torn := j.RecoveredExtents()
	h.checkTorn(t, torn, k)
	if slices.ContainsFunc(torn, func(e Extent) bool { return !e.Active }) {
		seen.torn.Add(1)
	}
	if slices.ContainsFunc(torn, func(e Extent) bool { return e.Active }) {
		seen.active.Add(1)
	}
	if j.LastExtentSeq() > 0 {
		seen.extents.Add(1)
	}
	want := h.image(t, size, k)
	got := disk.Bytes()
	// A torn write in place holds, sector by sector, its own data or what
	// came before it: never less than the records before it, which the
	// synced disk held when it was appended (unsynced.go). Any sector of
	// an open activity set's extent may hold anything.
	imgs := h.tornImages(t, size, k, torn)
	anything := func(sec int64) bool { // inside an extent of an open activity set
		return slices.ContainsFunc(torn, func(e Extent) bool { return e.Active && e.Offset <= sec && sec < e.Offset+e.Len })
	}
	for _, e := range torn {
		end := min(e.Offset+e.Len, size) // an active extent may lie past the end
		for sec := e.Offset; sec < end && !e.Active && imgs != nil; sec += 512 {
			s := got[sec:min(sec+512, end)]
			ok := anything(sec)
			for _, img := range imgs {
				ok = ok || bytes.Equal(s, img[sec:sec+int64(len(s))])
			}
			if !ok {
				t.Fatalf("sector at %d of torn extent %+v holds neither its data nor what came before it", sec, e)
			}
		}
		if end > e.Offset {
			copy(want[e.Offset:end], got[e.Offset:end])
		}
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("disk after recovery is not the image of seqs 1..%d outside %d torn extents (first difference at %d)",
			k, len(torn), firstDiff(got, want))
	}
	h.settleTorn(torn, got, k)
	h.forget(k)
	checkReader(t, j, h, k)
	return k
}

// checkReader reads the retained journal and compares it with the history.
func checkReader(t *testing.T, j *Journal, h *history, last uint64) {
	t.Helper()
	r, err := j.NewReader(0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	want := j.OldestRetainedSeq()
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if rec.Seq < want || rec.Seq > last {
			t.Fatalf("reader gave seq %d, want %d..%d", rec.Seq, want, last)
		}
		want = rec.Seq + 1
		h.mu.Lock()
		o := h.ops[rec.Seq]
		h.mu.Unlock()
		if rec.Kind == KindExtent {
			if !h.inPlace(o) || rec.Offset != o.off || int64(rec.RawLen) != o.n || !o.torn && rec.DataSum != o.sum() {
				t.Fatalf("reader: extent of seq %d differs from what was appended", rec.Seq)
			}
			continue
		}
		raw, err := rec.Raw(nil)
		if err != nil || rec.Kind != o.kind || rec.Offset != o.off || !bytes.Equal(raw, o.data) {
			t.Fatalf("reader: seq %d differs from what was appended (%v)", rec.Seq, err)
		}
	}
	if want != last+1 && want > j.OldestRetainedSeq() {
		t.Fatalf("reader stopped at seq %d, journal ends at %d", want-1, last)
	}
}

// checkTorn checks the torn extents recovery reported, of the records up
// to k: each is a write made in place, and none is one that was durable (a
// FUA extent acknowledged, or one a Sync or a checkpoint covered) and that
// no later record overlaps: its data was on the synced disk, so a replay
// that put older data over it would make it torn.
func (h *history) checkTorn(t *testing.T, torn []Extent, k uint64) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range torn {
		if e.Active {
			continue // an extent of an open activity set: anything may be there
		}
		o, ok := h.ops[e.Seq]
		if !ok || e.Seq > k || !h.inPlace(o) || o.off != e.Offset || o.n != e.Len {
			t.Fatalf("recovery reported torn extent %+v, not an extent appended up to seq %d", e, k)
		}
		if o.torn || !(e.Seq <= h.atCrash.flushed || h.atCrash.fua[e.Seq]) {
			continue // torn before, or never promised durable
		}
		overlapped := false
		for s := e.Seq + 1; s <= k && !overlapped; s++ {
			l := h.ops[s]
			overlapped = l.off < e.Offset+e.Len && e.Offset < l.off+l.n
		}
		for _, a := range torn { // a later record the crash took may be on the disk there
			overlapped = overlapped || a.Active && a.Offset < e.Offset+e.Len && e.Offset < a.Offset+a.Len
		}
		if !overlapped {
			t.Fatalf("durable extent of seq %d (flushed up to %d) reported torn: older data replayed over it?", e.Seq, h.flushed)
		}
	}
}

// settleTorn makes the model hold what the disk holds over the torn
// extents: the data of each becomes the disk's bytes there (later records
// over it were replayed, so the image stays the disk). Over an extent of
// an open activity set, the disk's bytes become a patch laid over the
// image after seq k.
func (h *history) settleTorn(torn []Extent, disk []byte, k uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, e := range torn {
		if e.Active {
			end := min(e.Offset+e.Len, int64(len(disk)))
			if end <= e.Offset {
				continue // past the end of the disk
			}
			h.patches = append(h.patches, patch{after: k, off: e.Offset, data: bytes.Clone(disk[e.Offset:end])})
			continue
		}
		o := h.ops[e.Seq]
		o.data = append([]byte(nil), disk[e.Offset:e.Offset+e.Len]...)
		o.torn = true
		h.ops[e.Seq] = o
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func testLogger() *slog.Logger {
	if os.Getenv("JOURNAL_DEBUG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// dumpFS lists the journal directory to stderr when JOURNAL_DEBUG is set.
func dumpFS(tag string, fs *vfs.MemFS) {
	if os.Getenv("JOURNAL_DEBUG") == "" {
		return
	}
	names, _ := fs.ReadDir("/meta/journal")
	fmt.Fprint(os.Stderr, tag, ":")
	for _, n := range names {
		fi, err := fs.Stat("/meta/journal/" + n)
		if err != nil {
			continue
		}
		fmt.Fprintf(os.Stderr, " %s=%d", n, fi.Size())
	}
	fmt.Fprintln(os.Stderr)
}
