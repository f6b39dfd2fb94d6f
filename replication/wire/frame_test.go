package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"strings"
	"testing"
)

// readAll decodes every frame in b.
func readAll(t *testing.T, b []byte) []Frame {
	t.Helper()
	r := NewReader(bytes.NewReader(b))
	var fs []Frame
	for {
		f, err := r.Next()
		if err == io.EOF {
			return fs
		}
		if err != nil {
			t.Fatalf("Next after %d frames: %v", len(fs), err)
		}
		f.Body = bytes.Clone(f.Body)
		fs = append(fs, f)
	}
}

// appendFrame appends a frame of any type with any body, as no encoder of
// this package would.
func appendFrame(dst []byte, t Type, flags uint8, body []byte) ([]byte, error) {
	if len(body) > MaxBodySize {
		return dst, fmt.Errorf("%w: %s body of %d bytes, max %d", ErrFrameTooLarge, t, len(body), MaxBodySize)
	}
	dst, start := beginFrame(dst)
	dst = append(dst, body...)
	return endFrame(dst, start, t, flags), nil
}

func mustRead(t *testing.T, b []byte) Frame {
	t.Helper()
	fs := readAll(t, b)
	if len(fs) != 1 {
		t.Fatalf("got %d frames, want 1", len(fs))
	}
	return fs[0]
}

func TestFrameRoundTrip(t *testing.T) {
	for _, body := range [][]byte{nil, {1}, bytes.Repeat([]byte("x"), 100_000)} {
		b, err := appendFrame(nil, TypeRecords, 7, body)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != HeaderSize+len(body) {
			t.Fatalf("frame of %d bytes for a body of %d", len(b), len(body))
		}
		f := mustRead(t, b)
		if f.Type != TypeRecords || f.Flags != 7 || !bytes.Equal(f.Body, body) {
			t.Fatalf("got type %v flags %d body %d bytes", f.Type, f.Flags, len(f.Body))
		}
	}
}

func TestFrameCoalesced(t *testing.T) {
	var b []byte
	b = AppendPing(b, 1)
	b, _ = appendFrame(b, TypeRecords, 0, []byte("records"))
	b = AppendAck(b, Ack{Kind: Synced, Seq: 2})
	b = AppendBye(b)
	fs := readAll(t, b)
	want := []Type{TypePing, TypeRecords, TypeAck, TypeBye}
	if len(fs) != len(want) {
		t.Fatalf("got %d frames, want %d", len(fs), len(want))
	}
	for i, f := range fs {
		if f.Type != want[i] {
			t.Errorf("frame %d is %v, want %v", i, f.Type, want[i])
		}
	}
}

// Every single flipped bit of a frame is caught before the frame is used.
func TestFrameCorruptionDetected(t *testing.T) {
	frame, _ := appendFrame(nil, TypeRecords, 0, []byte("some journal record bytes"))
	for i := range frame {
		for bit := range 8 {
			b := bytes.Clone(frame)
			b[i] ^= 1 << bit
			_, err := NewReader(bytes.NewReader(b)).Next()
			if err == nil {
				t.Fatalf("flip of byte %d bit %d went unnoticed", i, bit)
			}
		}
	}
}

func TestReaderErrors(t *testing.T) {
	good := AppendPing(nil, 1)
	tooLarge := bytes.Clone(good)
	binary.BigEndian.PutUint32(tooLarge[8:], MaxBodySize+1)
	badCRC := bytes.Clone(good)
	badCRC[len(badCRC)-1]++
	unknown, _ := appendFrame(nil, Type(200), 0, []byte("future"))
	for _, tc := range []struct {
		name string
		in   []byte
		want error
	}{
		{"http", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ErrBadMagic},
		{"too large", tooLarge, ErrFrameTooLarge},
		{"bad crc", badCRC, ErrBadChecksum},
		{"unknown type", unknown, ErrUnknownType},
		{"truncated header", good[:10], io.ErrUnexpectedEOF},
		{"truncated body", good[:HeaderSize+3], io.ErrUnexpectedEOF},
		{"empty", nil, io.EOF},
	} {
		_, err := NewReader(bytes.NewReader(tc.in)).Next()
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
		if err != nil && err != io.EOF && !strings.HasPrefix(err.Error(), "wire: ") {
			t.Errorf("%s: error %q lacks the package prefix", tc.name, err)
		}
	}
}

// After an unknown type the stream is still in step.
func TestReaderSkipsUnknownType(t *testing.T) {
	b, _ := appendFrame(nil, Type(40), 0, []byte("resync to come"))
	b = AppendPong(b, 77)
	r := NewReader(bytes.NewReader(b))
	if f, err := r.Next(); !errors.Is(err, ErrUnknownType) || f.Type != 40 {
		t.Fatalf("got %v, %v", f.Type, err)
	}
	f, err := r.Next()
	if err != nil || f.Type != TypePong {
		t.Fatalf("after unknown: %v, %v", f.Type, err)
	}
	if tok, err := ParsePing(f.Body); err != nil || tok != 77 {
		t.Fatalf("token %d, %v", tok, err)
	}
}

// A header claiming a huge body that never comes costs little memory.
func TestReaderGrowsWithData(t *testing.T) {
	h := make([]byte, HeaderSize)
	putHeader(h, TypeRecords, 0, MaxBodySize)
	r := NewReader(io.MultiReader(bytes.NewReader(h), strings.NewReader("short")))
	if _, err := r.Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want unexpected EOF", err)
	}
	if cap(r.buf) > 2*firstChunk {
		t.Fatalf("buffer grew to %d bytes for 5 bytes of body", cap(r.buf))
	}
}

// The body buffer is reused: a second frame of the same size allocates nothing.
func TestReaderReusesBuffer(t *testing.T) {
	one, _ := appendFrame(nil, TypeRecords, 0, make([]byte, 4096))
	src := &loopReader{b: one}
	r := NewReader(src)
	r.Next()
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := r.Next(); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame", allocs)
	}
}

// loopReader yields b over and over.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

func TestMessagesRoundTrip(t *testing.T) {
	var proof [ProofSize]byte
	for i := range proof {
		proof[i] = byte(i)
	}
	var b []byte
	b = AppendAuth(b, proof)
	b = AppendRefuse(b, ReasonSplitBrain, "both were primary")
	b = AppendReady(b)
	b = AppendPing(b, 1<<63)
	b = AppendPong(b, 3)
	b = AppendBarrier(b, 1e12)
	b = AppendAck(b, Ack{Kind: Received, Seq: 10})
	b = AppendAck(b, Ack{Kind: Journaled, Seq: 11})
	b = AppendAck(b, Ack{Kind: Synced, Seq: 12})
	b = AppendBye(b)
	fs := readAll(t, b)
	if len(fs) != 10 {
		t.Fatalf("%d frames", len(fs))
	}
	if p, err := ParseAuth(fs[0].Body); err != nil || p != proof {
		t.Errorf("auth: %x, %v", p, err)
	}
	if r, err := ParseRefuse(fs[1].Body); err != nil || r != (Refuse{ReasonSplitBrain, "both were primary"}) {
		t.Errorf("refuse: %+v, %v", r, err)
	}
	if fs[2].Type != TypeReady || len(fs[2].Body) != 0 {
		t.Errorf("ready: %v %d bytes", fs[2].Type, len(fs[2].Body))
	}
	if v, err := ParsePing(fs[3].Body); err != nil || v != 1<<63 || fs[3].Type != TypePing {
		t.Errorf("ping: %d, %v", v, err)
	}
	if v, err := ParsePing(fs[4].Body); err != nil || v != 3 || fs[4].Type != TypePong {
		t.Errorf("pong: %d, %v", v, err)
	}
	if v, err := ParseBarrier(fs[5].Body); err != nil || v != 1e12 {
		t.Errorf("barrier: %d, %v", v, err)
	}
	for i, want := range []Ack{{Received, 10}, {Journaled, 11}, {Synced, 12}} {
		if a, err := ParseAck(fs[6+i].Body); err != nil || a != want {
			t.Errorf("ack: %+v, %v, want %+v", a, err, want)
		}
	}
	if fs[9].Type != TypeBye || len(fs[9].Body) != 0 {
		t.Errorf("bye: %v %d bytes", fs[9].Type, len(fs[9].Body))
	}
}

func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parse func() error
	}{
		{"auth short", func() error { _, err := ParseAuth(make([]byte, 31)); return err }},
		{"refuse empty", func() error { _, err := ParseRefuse(nil); return err }},
		{"refuse long", func() error { _, err := ParseRefuse(make([]byte, 2+MaxRefuseText+1)); return err }},
		{"record short", func() error { _, _, err := ParseRecord(make([]byte, 7), 1<<20, 0); return err }},
		{"barrier long", func() error { _, err := ParseBarrier(make([]byte, 9)); return err }},
		{"ack kind 0", func() error { _, err := ParseAck(make([]byte, 9)); return err }},
		{"ack kind 4", func() error { _, err := ParseAck(append(make([]byte, 8), 4)); return err }},
		{"ping short", func() error { _, err := ParsePing(nil); return err }},
	} {
		if err := tc.parse(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestRefuseTextCut(t *testing.T) {
	text := strings.Repeat("é", MaxRefuseText) // 2 bytes a rune
	text = "x" + text                          // so the cut falls inside a rune
	r, err := ParseRefuse(mustRead(t, AppendRefuse(nil, ReasonBusy, text)).Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Text) != MaxRefuseText-1 || !strings.HasPrefix(text, r.Text) {
		t.Fatalf("cut to %d bytes", len(r.Text))
	}
}

func TestRecordsFrameRoundTrip(t *testing.T) {
	parts := [][]byte{[]byte("first record"), {}, bytes.Repeat([]byte{7}, 5000)}
	hdr, err := AppendRecordsHeader(nil, parts)
	if err != nil {
		t.Fatal(err)
	}
	stream := append(hdr, bytes.Join(parts, nil)...)
	f, err := NewReader(bytes.NewReader(stream)).Next()
	if err != nil || f.Type != TypeRecords || !bytes.Equal(f.Body, bytes.Join(parts, nil)) {
		t.Fatalf("frame %v %d bytes, err %v", f.Type, len(f.Body), err)
	}
	stream[len(stream)-1] ^= 1
	if _, err := NewReader(bytes.NewReader(stream)).Next(); !errors.Is(err, ErrBadChecksum) {
		t.Fatalf("corrupt records frame: %v", err)
	}
}

// Parts whose checksums are given make the header their bytes make; a
// wrong sum makes a frame that fails its checksum.
func TestRecordsHeaderSums(t *testing.T) {
	parts := [][]byte{[]byte("head"), bytes.Repeat([]byte{9}, 70000), {}, []byte("head 2"), []byte("payload 2")}
	want, err := AppendRecordsHeader(nil, parts)
	if err != nil {
		t.Fatal(err)
	}
	sums := []PartSum{{}, {Sum: crc32.Checksum(parts[1], castagnoli), Known: true}, {Known: true}, {},
		{Sum: crc32.Checksum(parts[4], castagnoli), Known: true}}
	got, err := AppendRecordsHeaderSums(nil, parts, sums)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("header %x, err %v; want %x", got, err, want)
	}
	sums[1].Sum ^= 1
	bad, _ := AppendRecordsHeaderSums(nil, parts, sums)
	if _, err := NewReader(bytes.NewReader(append(bad, bytes.Join(parts, nil)...))).Next(); !errors.Is(err, ErrBadChecksum) {
		t.Fatalf("a frame summed from a wrong part sum: %v, want ErrBadChecksum", err)
	}
}

func TestRecordsHeaderTooLarge(t *testing.T) {
	half := make([]byte, MaxBodySize/2+1)
	if _, err := AppendRecordsHeader(nil, [][]byte{half, half}); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("records body past MaxBodySize: %v, want ErrFrameTooLarge", err)
	}
	if _, err := AppendRecordsHeader(nil, [][]byte{half, half[:MaxBodySize-len(half)]}); err != nil {
		t.Errorf("largest records body: %v", err)
	}
}
