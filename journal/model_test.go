package journal

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
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
}

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
}

func newHistory() *history { return &history{ops: map[uint64]op{}} }

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
	}
}

func (h *history) acked() (durable, completed uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.durable, h.completed
}

// image is the disk after applying seqs 1..k in order to a zeroed disk.
func (h *history) image(t *testing.T, size int64, k uint64) []byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	img := make([]byte, size)
	for s := uint64(1); s <= k; s++ {
		o, ok := h.ops[s]
		if !ok {
			t.Fatalf("seq %d was never appended but is in the journal", s)
		}
		o.applyTo(img)
	}
	return img
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
}

// randomOp makes a random write (compressible or not), trim or zero inside a
// disk of size bytes; ranges overlap often.
func randomOp(rnd *rand.Rand, c *Compressor, size int64) (Record, op) {
	sectors := size / 512
	n := int64(1 + rnd.IntN(16))
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
	want := h.image(t, size, k)
	if got := disk.Bytes(); !bytes.Equal(got, want) {
		t.Fatalf("disk after recovery is not the image of seqs 1..%d (first difference at %d)", k, firstDiff(got, want))
	}
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
		raw, err := rec.Raw(nil)
		if err != nil || rec.Kind != o.kind || rec.Offset != o.off || !bytes.Equal(raw, o.data) {
			t.Fatalf("reader: seq %d differs from what was appended (%v)", rec.Seq, err)
		}
	}
	if want != last+1 && want > j.OldestRetainedSeq() {
		t.Fatalf("reader stopped at seq %d, journal ends at %d", want-1, last)
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
