package journal

import (
	"math/rand/v2"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal/vfs"
)

// TestTailBytes: the bytes a journal tail writes, counted from headers
// alone, equal what a Reader finds, from every retained seq, across
// segments, padding and records of every kind and size.
func TestTailBytes(t *testing.T) {
	o := Options{segmentSize: 16 << 10, RetainBytes: 1 << 20, CheckpointInterval: -1, Logger: quiet}
	j, err := Open(vfs.NewMem(), testDir, NewMemDisk(crashDiskSize), o)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	rnd := rand.New(rand.NewPCG(5, 6))
	c := NewCompressor(CodecS2)
	for i := range 200 {
		var rec Record
		switch i % 7 {
		case 3:
			rec = Trim(rnd.Int64N(48)*1024, 8192)
		case 5:
			rec = Zero(rnd.Int64N(48)*1024, 4096, false)
		default: // compressible and not, 1 byte to 9 KiB
			data := randomBytes(rnd, 1+rnd.IntN(9<<10))
			if i%2 == 0 {
				clear(data[len(data)/2:])
			}
			rec = c.Write(rnd.Int64N(48)*1024, data)
		}
		if _, err := j.write(rec, i%11 == 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := j.checkpoint(); err != nil {
		t.Fatal(err)
	}
	last := j.LastSeq()
	for from := j.OldestRetainedSeq(); from <= last+1; from++ {
		want, wantLast := readerBytes(t, j, from)
		got, gotLast, err := j.TailBytes(from)
		if err != nil || got != want || gotLast != wantLast {
			t.Fatalf("TailBytes(%d) = %d, last %d, %v; the reader finds %d, last %d", from, got, gotLast, err, want, wantLast)
		}
	}
	if _, _, err := j.TailBytes(j.OldestRetainedSeq() - 1); j.OldestRetainedSeq() > 1 && err == nil {
		t.Fatal("TailBytes from a seq no longer retained did not fail")
	}
}

// readerBytes sums the RawLen of the records a Reader returns from seq.
func readerBytes(t *testing.T, j *Journal, from uint64) (bytes int64, last uint64) {
	t.Helper()
	rd, err := j.NewReader(from)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	last = from - 1
	for {
		rec, err := rd.Next()
		if err != nil {
			return bytes, last
		}
		bytes += int64(rec.RawLen)
		last = rec.Seq
	}
}
