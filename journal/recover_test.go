package journal

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

const testDir = "/meta/journal"

func testOptions() Options {
	return Options{segmentSize: 64 << 10, spares: -1, CheckpointInterval: -1, Logger: quiet}
}

// fixture is a journal directory with n synced records that were never
// checkpointed, crashed: recovery must replay them all.
type fixture struct {
	fs   *vfs.MemFS
	disk *MemDisk
	h    *history
}

func newFixture(t *testing.T, n int, o Options) *fixture {
	t.Helper()
	fs, disk, h := vfs.NewMem(), NewMemDisk(crashDiskSize), newHistory()
	j, err := Open(fs, testDir, disk, o)
	if err != nil {
		t.Fatal(err)
	}
	rnd := rand.New(rand.NewPCG(7, 7))
	c := NewCompressor(CodecS2)
	for range n {
		rec, o := randomOp(rnd, c, crashDiskSize)
		seq, err := j.write(rec, false)
		if err != nil {
			t.Fatal(err)
		}
		h.add(seq, o)
	}
	if err := j.SyncWait(); err != nil {
		t.Fatal(err)
	}
	f := &fixture{disk: disk.CrashWith(func() { fs = fs.CrashClone(nil) }), fs: fs, h: h}
	j.Close()
	return f
}

// segments returns the paths of the segment files, oldest first.
func (f *fixture) segments(t *testing.T) []string {
	t.Helper()
	names, err := f.fs.ReadDir(testDir)
	if err != nil {
		t.Fatal(err)
	}
	var segs []string
	for _, n := range names {
		if _, ok := parseSegmentName(n); ok {
			segs = append(segs, path.Join(testDir, n))
		}
	}
	return segs
}

// lastNonEmpty is the newest segment holding records.
func (f *fixture) lastNonEmpty(t *testing.T) string {
	segs := f.segments(t)
	for i := len(segs) - 1; i >= 0; i-- {
		if len(fileBytes(t, f.fs, segs[i])) > 0 {
			return segs[i]
		}
	}
	t.Fatal("no segment holds records")
	return ""
}

func fileBytes(t *testing.T, fs vfs.FS, name string) []byte {
	t.Helper()
	fl, err := fs.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	n, _ := fl.Size()
	b := make([]byte, n)
	if _, err := fl.ReadAt(b, 0); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	return b
}

// rewrite replaces a file's contents, durably.
func rewrite(t *testing.T, fs vfs.FS, name string, b []byte) {
	t.Helper()
	fl, err := fs.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fl.Close()
	if err := fl.Truncate(0); err != nil {
		t.Fatal(err)
	}
	if _, err := fl.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
	fl.Sync()
}

// frameOffsets returns the offset of every frame in a segment's bytes.
func frameOffsets(t *testing.T, b []byte) []int {
	t.Helper()
	var offs []int
	for off := 0; off < len(b); {
		_, n, err := decodeRecord(b[off:])
		if errors.Is(err, errZeroHeader) {
			break // the rest of a zero-filled spare
		}
		if err != nil {
			t.Fatalf("fixture segment unreadable at %d: %v", off, err)
		}
		offs = append(offs, off)
		off += n
	}
	return offs
}

// snapshot is every file of the journal directory and the disk.
func (f *fixture) snapshot(t *testing.T) map[string][]byte {
	names, _ := f.fs.ReadDir(testDir)
	m := map[string][]byte{"disk": f.disk.Bytes()}
	for _, n := range names {
		m[n] = fileBytes(t, f.fs, path.Join(testDir, n))
	}
	return m
}

func TestRecoverTornTail(t *testing.T) {
	cases := []struct {
		name string
		cut  func(seg []byte, last int) []byte // damages the last frame, which starts at last
		keep int                               // records lost off the end
	}{
		{"truncated header", func(b []byte, last int) []byte { return b[:last+headerSize-9] }, 1},
		{"truncated payload", func(b []byte, last int) []byte { return b[:len(b)-5] }, 1},
		{"bad checksum", func(b []byte, last int) []byte { b[last+1] ^= 0xff; return b }, 1},
		{"bad payload byte", func(b []byte, last int) []byte { b[len(b)-1] ^= 1; return b }, 1},
		{"zero-filled tail", func(b []byte, last int) []byte { return append(b, make([]byte, 8192)...) }, 0},
		{"zeroed last frame", func(b []byte, last int) []byte { clear(b[last:]); return b }, 1},
		{"garbage after zeros", func(b []byte, last int) []byte {
			return append(b, append(make([]byte, 64), 0xde, 0xad, 0xbe, 0xef)...)
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			const n = 12
			f := newFixture(t, n, testOptions())
			seg := f.lastNonEmpty(t)
			b := fileBytes(t, f.fs, seg)
			offs := frameOffsets(t, b)
			wantCut := len(b)
			if tc.keep == 1 {
				wantCut = offs[len(offs)-1]
			}
			b = tc.cut(b, offs[len(offs)-1])
			rewrite(t, f.fs, seg, b)
			j, err := Open(f.fs, testDir, f.disk, testOptions())
			if err != nil {
				t.Fatalf("open with a torn tail: %v", err)
			}
			want := uint64(n - tc.keep)
			if j.LastSeq() != want {
				t.Fatalf("recovered to seq %d, want %d", j.LastSeq(), want)
			}
			checkRecovered(t, j, f.disk, f.h, crashDiskSize, want)
			if cut := len(fileBytes(t, f.fs, seg)); cut != wantCut {
				t.Fatalf("segment cut to %d bytes, want %d", cut, wantCut)
			}
			// Appends go on after the cut, and all of it recovers again.
			seq, err := j.write(Trim(0, 512), true)
			if err != nil || seq != want+1 {
				t.Fatalf("append after recovery: seq %d, %v; want %d", seq, err, want+1)
			}
			f.h.add(seq, op{kind: KindTrim, off: 0, n: 512})
			j.Close()
			j, err = Open(f.fs, testDir, f.disk, testOptions())
			if err != nil {
				t.Fatal(err)
			}
			checkRecovered(t, j, f.disk, f.h, crashDiskSize, want+1)
			j.Close()
		})
	}
}

func TestRecoverRefusesCorruption(t *testing.T) {
	cases := []struct {
		name   string
		damage func(t *testing.T, f *fixture) (seg string, off int)
	}{
		{"bad checksum mid-segment", func(t *testing.T, f *fixture) (string, int) {
			seg := f.lastNonEmpty(t)
			b := fileBytes(t, f.fs, seg)
			offs := frameOffsets(t, b)
			i := len(offs) - 2 // a good frame follows
			b[offs[i]+12] ^= 0x40
			rewrite(t, f.fs, seg, b)
			return seg, offs[i]
		}},
		{"zeroed frame mid-segment", func(t *testing.T, f *fixture) (string, int) {
			seg := f.lastNonEmpty(t)
			b := fileBytes(t, f.fs, seg)
			offs := frameOffsets(t, b)
			i := len(offs) - 2
			clear(b[offs[i]:offs[i+1]])
			rewrite(t, f.fs, seg, b)
			return seg, offs[i]
		}},
		{"torn older segment", func(t *testing.T, f *fixture) (string, int) {
			seg := f.segments(t)[0]
			b := fileBytes(t, f.fs, seg)
			rewrite(t, f.fs, seg, b[:len(b)-3])
			offs := frameOffsets(t, b)
			return seg, offs[len(offs)-1]
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 30, Options{segmentSize: 16 << 10, spares: -1, CheckpointInterval: -1, Logger: quiet})
			if len(f.segments(t)) < 2 {
				t.Fatal("fixture needs two segments")
			}
			seg, off := tc.damage(t, f)
			before := f.snapshot(t)
			_, err := Open(f.fs, testDir, f.disk, testOptions())
			var ce *CorruptionError
			if !errors.As(err, &ce) || !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("open: %v, want a *CorruptionError wrapping ErrCorruptRecord", err)
			}
			if ce.Segment != seg || ce.Offset != int64(off) {
				t.Fatalf("error names %s at %d, want %s at %d", ce.Segment, ce.Offset, seg, off)
			}
			after := f.snapshot(t)
			if len(after) != len(before) {
				t.Fatalf("files changed: %d before, %d after", len(before), len(after))
			}
			for k, v := range before {
				if !bytes.Equal(after[k], v) {
					t.Fatalf("%s changed by a refused open", k)
				}
			}
		})
	}
}

func TestRecoverBadCheckpointFile(t *testing.T) {
	f := newFixture(t, 3, testOptions())
	j, _ := Open(f.fs, testDir, f.disk, testOptions())
	j.Close()
	name := path.Join(testDir, checkpointFile)
	b := fileBytes(t, f.fs, name)
	b[9] ^= 1
	rewrite(t, f.fs, name, b)
	if _, err := Open(f.fs, testDir, f.disk, testOptions()); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("open with a bad checkpoint file: %v, want corrupt", err)
	}
}
