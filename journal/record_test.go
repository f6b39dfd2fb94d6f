package journal

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"testing"
)

func randomBytes(rnd *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rnd.Uint32())
	}
	return b
}

// compressible is n bytes of text-like data that s2 and zstd shrink.
func compressible(rnd *rand.Rand, n int) []byte {
	words := []string{"block ", "device ", "journal ", "mirror ", "peer ", "seq "}
	var b []byte
	for len(b) < n {
		b = append(b, words[rnd.IntN(len(words))]...)
	}
	return b[:n]
}

func sampleRecords(rnd *rand.Rand) []Record {
	c := NewCompressor(CodecS2)
	recs := []Record{
		c.Write(4096, compressible(rnd, 4096)),
		c.Write(0, randomBytes(rnd, 1000)), // not a multiple of 8: padding
		Trim(1<<20, 65536),
		Zero(8192, 512, false),
		Zero(8192, 512, true),
		NewCompressor(CodecZstd).Write(12345, compressible(rnd, 3000)),
		NewCompressor(CodecNone).Write(7, nil),
	}
	for i := range recs {
		recs[i].Seq = uint64(i + 1)
	}
	return recs
}

func sameRecord(t *testing.T, got, want Record) {
	t.Helper()
	if got.Kind != want.Kind || got.Seq != want.Seq || got.Offset != want.Offset ||
		got.RawLen != want.RawLen || got.Codec != want.Codec || !bytes.Equal(got.Payload, want.Payload) {
		t.Fatalf("record mismatch:\n got  %v seq %d off %d raw %d %v %d bytes\n want %v seq %d off %d raw %d %v %d bytes",
			got.Kind, got.Seq, got.Offset, got.RawLen, got.Codec, len(got.Payload),
			want.Kind, want.Seq, want.Offset, want.RawLen, want.Codec, len(want.Payload))
	}
}

func TestFrameRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 1))
	recs := sampleRecords(rnd)
	var flat []byte
	for i := range recs {
		flat = appendFrame(flat, &recs[i])
		if len(flat)%8 != 0 {
			t.Fatalf("frame %d leaves length %d unaligned", i, len(flat))
		}
	}
	for i := range recs {
		got, n, err := decodeRecord(flat)
		if err != nil || n != recs[i].encodedLen() {
			t.Fatalf("decodeRecord: %d %v", n, err)
		}
		sameRecord(t, got, recs[i])
		flat = flat[n:]
	}
	if len(flat) != 0 {
		t.Fatalf("%d bytes left after the frames", len(flat))
	}
}

func TestFrameErrors(t *testing.T) {
	rnd := rand.New(rand.NewPCG(2, 2))
	r := NewCompressor(CodecNone).Write(0, randomBytes(rnd, 100))
	r.Seq = 9
	frame := appendFrame(nil, &r)
	for cut := 1; cut < len(frame); cut += 7 {
		if _, _, err := decodeRecord(frame[:cut]); !errors.Is(err, ErrTornRecord) {
			t.Fatalf("cut at %d: %v, want torn", cut, err)
		}
	}
	for _, pos := range []int{0, 5, 9, 17, 30, 40, 131} {
		bad := append([]byte(nil), frame...)
		bad[pos] ^= 0x10
		_, _, err := decodeRecord(bad)
		if !errors.Is(err, ErrCorruptRecord) {
			t.Fatalf("flip at %d: %v, want corrupt", pos, err)
		}
	}
	if _, _, err := decodeRecord(make([]byte, 64)); !errors.Is(err, ErrTornRecord) {
		t.Fatalf("zeros: %v, want torn", err)
	}
	ce := &CorruptionError{Segment: "x.seg", Offset: 8, Err: ErrCorruptRecord}
	if !errors.Is(ce, ErrCorruptRecord) {
		t.Fatal("CorruptionError does not unwrap")
	}
}

func TestFrameLayoutFrozen(t *testing.T) {
	r := Record{Kind: KindWrite, Seq: 0x0102030405060708, Offset: 0x1000, RawLen: 3, Payload: []byte("abc")}
	got := appendFrame(nil, &r)
	want := []byte{
		0, 0, 0, 0, 3, 0, 0, 0, // crc (checked below), len 3
		1, 0, 0, 0, 3, 0, 0, 0, // kind write, codec none, reserved, rawlen 3
		8, 7, 6, 5, 4, 3, 2, 1, // seq
		0, 0x10, 0, 0, 0, 0, 0, 0, // offset
		'a', 'b', 'c', 0, 0, 0, 0, 0, // payload, padding
	}
	copy(want[:4], got[:4])
	if !bytes.Equal(got, want) {
		t.Fatalf("frame layout changed:\n got  %x\n want %x", got, want)
	}
	if crc := [4]byte(got[:4]); crc != [4]byte{0xa9, 0x0d, 0x90, 0x7e} {
		t.Fatalf("checksum changed: %x", crc)
	}
}
