package wire

import (
	"bufio"
	"bytes"
	"errors"
	"hash/crc32"
	"io"
	"strings"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
)

// recordsFrame is body framed as a Records frame, its checksum right.
func recordsFrame(t testing.TB, body []byte) []byte {
	t.Helper()
	hdr, err := AppendRecordsHeader(nil, [][]byte{body})
	if err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

// compareWithParseRecord checks what a data Reader makes of body, framed,
// against ParseRecord walking body as the receiver did before there were
// parts: the same records, or the same refusal.
func compareWithParseRecord(t *testing.T, body []byte, diskSize int64) {
	t.Helper()
	f, err := NewDataReader(bytes.NewReader(recordsFrame(t, body))).Next()
	if err != nil {
		if !errors.Is(err, ErrMalformed) || !strings.HasPrefix(err.Error(), "wire: ") {
			t.Fatalf("data reader: unexpected error %v", err)
		}
		// The body does not split into records: ParseRecord must stop
		// short of its end too.
		rest, prev := body, uint64(0)
		for len(rest) > 0 {
			rec, n, err := ParseRecord(rest, diskSize, prev)
			if err != nil {
				return
			}
			rec.Release()
			prev, rest = rec.Seq, rest[n:]
		}
		t.Fatalf("data reader refused a body ParseRecord walks to its end: %v", err)
	}
	if f.Body != nil {
		t.Fatalf("data reader returned a body of %d bytes for a Records frame", len(f.Body))
	}
	rest, prev := body, uint64(0)
	for i := range f.Records {
		p := &f.Records[i]
		if want := crc32.Checksum(p.payload(), castagnoli); p.sum != want {
			t.Fatalf("part %d: payload sum %08x, want %08x", i, p.sum, want)
		}
		got, gerr := ParseRecordPart(p, diskSize, prev)
		if p.buf != nil {
			t.Fatalf("part %d still holds its payload after ParseRecordPart", i)
		}
		want, n, werr := ParseRecord(rest, diskSize, prev)
		if (gerr == nil) != (werr == nil) {
			t.Fatalf("record %d: ParseRecordPart %v, ParseRecord %v", i, gerr, werr)
		}
		if gerr != nil {
			if gerr.Error() != werr.Error() {
				t.Fatalf("record %d: ParseRecordPart %q, ParseRecord %q", i, gerr, werr)
			}
			for j := i + 1; j < len(f.Records); j++ {
				f.Records[j].Release()
			}
			return
		}
		graw, _ := got.Raw(nil)
		wraw, _ := want.Raw(nil)
		if got.Kind != want.Kind || got.Seq != want.Seq || got.Offset != want.Offset || got.RawLen != want.RawLen ||
			got.Codec != want.Codec || !bytes.Equal(got.Payload, want.Payload) || !bytes.Equal(graw, wraw) {
			t.Fatalf("record %d: ParseRecordPart %+v, ParseRecord %+v", i, got, want)
		}
		got.Release()
		want.Release()
		prev, rest = want.Seq, rest[n:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes of the body after the last part", len(rest))
	}
}

func TestDataReaderRecords(t *testing.T) {
	seeds := recordSeeds()
	for i, s := range seeds {
		compareWithParseRecord(t, s, fuzzDiskSize)
		compareWithParseRecord(t, bytes.Join(seeds[:i+1], nil), fuzzDiskSize)
	}
	compareWithParseRecord(t, nil, fuzzDiskSize)
	// A payload past a bufio.Reader's buffer, and one past sumPiece.
	big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
	rec := journal.NewCompressor(journal.CodecNone).Write(0, big)
	rec.Seq = 1
	body := AppendRecord(nil, &rec, 0)
	compareWithParseRecord(t, body, fuzzDiskSize)
	f, err := NewDataReader(bufio.NewReaderSize(bytes.NewReader(recordsFrame(t, body)), 64<<10)).Next()
	if err != nil || len(f.Records) != 1 {
		t.Fatalf("through a bufio.Reader: %d parts, %v", len(f.Records), err)
	}
	if got, err := ParseRecordPart(&f.Records[0], fuzzDiskSize, 0); err != nil || !bytes.Equal(got.Payload, big) {
		t.Fatalf("through a bufio.Reader: %d bytes, %v", len(got.Payload), err)
	}
}

// Whatever a Records frame holds, a data Reader returns nothing of it
// unless its checksum holds, and says which it was: a frame damaged on the
// way (ErrBadChecksum) or one sent malformed (ErrMalformed).
func TestDataReaderChecksumFirst(t *testing.T) {
	body := bytes.Join(recordSeeds(), nil)
	frame := recordsFrame(t, body)
	for i := HeaderSize; i < len(frame); i++ {
		for _, bit := range []byte{1, 0x80} {
			damaged := bytes.Clone(frame)
			damaged[i] ^= bit
			f, err := NewDataReader(bytes.NewReader(damaged)).Next()
			if !errors.Is(err, ErrBadChecksum) || f.Records != nil {
				t.Fatalf("byte %d ^ %#x: %d parts, %v; want ErrBadChecksum", i, bit, len(f.Records), err)
			}
		}
	}
	cut := body[:len(body)-1] // the last record's payload one byte short
	if _, err := NewDataReader(bytes.NewReader(recordsFrame(t, cut))).Next(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a body cut inside its last record: %v, want ErrMalformed", err)
	}
	// A stream that ends inside the frame.
	for _, n := range []int{HeaderSize + 3, HeaderSize + RecordHeaderSize + 1, len(frame) - 1} {
		_, err := NewDataReader(bytes.NewReader(frame[:n])).Next()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("stream cut at %d of %d: %v, want io.ErrUnexpectedEOF", n, len(frame), err)
		}
	}
}

// The data Reader reads every other frame as NewReader does, and the
// frames after a Records frame too.
func TestDataReaderOtherFrames(t *testing.T) {
	var stream []byte
	for _, f := range validFrames() {
		var err error
		if stream, err = appendFrame(stream, f.Type, f.Flags, f.Body); err != nil {
			t.Fatal(err)
		}
	}
	plain, data := NewReader(bytes.NewReader(stream)), NewDataReader(bytes.NewReader(stream))
	for {
		pf, perr := plain.Next()
		df, derr := data.Next()
		if perr == io.EOF && derr == io.EOF {
			return
		}
		if (perr == nil) != (derr == nil) || pf.Type != df.Type {
			t.Fatalf("plain %v %v, data %v %v", pf.Type, perr, df.Type, derr)
		}
		if pf.Type != TypeRecords {
			if !bytes.Equal(pf.Body, df.Body) {
				t.Fatalf("%v: bodies differ", pf.Type)
			}
			continue
		}
		var joined []byte
		for i := range df.Records {
			p := &df.Records[i]
			joined = append(append(joined, p.head[:p.headLen]...), p.payload()...)
			p.Release()
		}
		if !bytes.Equal(joined, pf.Body) {
			t.Fatalf("records: parts join to %d bytes, body %d", len(joined), len(pf.Body))
		}
	}
}

// FuzzDataReader frames its input as a Records body and reads it with a
// data Reader, against ParseRecord walking the body.
func FuzzDataReader(f *testing.F) {
	addRecordsSeeds(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > 1<<20 {
			return
		}
		compareWithParseRecord(t, body, fuzzDiskSize)
	})
}
