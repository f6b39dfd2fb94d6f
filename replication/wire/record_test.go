package wire

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"runtime"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
)

// The layout existing peers speak, byte for byte.
func TestRecordLayoutFrozen(t *testing.T) {
	w := journal.Record{Kind: journal.KindWrite, Seq: 5, Offset: 0x1000, RawLen: 4, Payload: []byte("abcd")}
	trim := journal.Trim(0x20000, 0x10000)
	trim.Seq = 305
	b := AppendRecord(nil, &w, 3)
	b = AppendRecord(b, &trim, 5)
	want := "04000000" + "04000000" + "0010000000000000" + "01" + "00" + "02" + hex.EncodeToString([]byte("abcd")) +
		"00000000" + "00000100" + "0000020000000000" + "02" + "00" + "ac02"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("records\n got %s\nwant %s", got, want)
	}
	rec, n, err := ParseRecord(b, 1<<20, 3)
	if err != nil || n != RecordHeaderSize+1+4 || rec.Seq != 5 || rec.Offset != 0x1000 || string(rec.Payload) != "abcd" {
		t.Fatalf("write: %+v, %d bytes, %v", rec, n, err)
	}
	rec, m, err := ParseRecord(b[n:], 1<<20, 5)
	if err != nil || m != RecordHeaderSize+2 || rec.Seq != 305 || rec.Kind != journal.KindTrim || rec.RawLen != 0x10000 {
		t.Fatalf("trim: %+v, %d bytes, %v", rec, m, err)
	}
}

func TestRecordRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("compressible "), 400)[:4096]
	for _, codec := range []journal.Codec{journal.CodecNone, journal.CodecS2, journal.CodecZstd} {
		w := journal.NewCompressor(codec).Write(8192, data)
		w.Seq = 1000
		b := AppendRecord([]byte("prefix"), &w, 0)[len("prefix"):]
		w.Release()
		got, n, err := ParseRecord(b, 1<<20, 0)
		if err != nil || n != len(b) || got.Kind != journal.KindWrite || got.Offset != 8192 || got.Codec != codec || got.Seq != 1000 {
			t.Fatalf("%s: %+v, %d of %d bytes, %v", codec, got, n, len(b), err)
		}
		if raw, _ := got.Raw(nil); !bytes.Equal(raw, data) {
			t.Fatalf("%s: payload does not round trip", codec)
		}
		b[RecordHeaderSize+3] ^= 0xff // the parsed record owns its payload
		if raw, _ := got.Raw(nil); !bytes.Equal(raw, data) {
			t.Fatalf("%s: record aliases its input", codec)
		}
	}
}

// Every refusal names the Records frame and wraps ErrMalformed.
func TestRecordRefusals(t *testing.T) {
	comp := journal.NewCompressor(journal.CodecS2)
	data := bytes.Repeat([]byte("compressible "), 400)[:4096]
	w := comp.Write(8192, data)
	defer w.Release()
	w.Seq = 1
	good := AppendRecord(nil, &w, 0)
	le := binary.LittleEndian
	for _, tc := range []struct {
		name   string
		mutate func([]byte) []byte
		prev   uint64
	}{
		{"header cut short", func(b []byte) []byte { return b[:RecordHeaderSize-1] }, 0},
		{"payload cut short", func(b []byte) []byte { return b[:len(b)-1] }, 0},
		{"no seq delta", func(b []byte) []byte { return b[:RecordHeaderSize] }, 0},
		{"zero seq delta", func(b []byte) []byte { b[RecordHeaderSize] = 0; return b }, 0},
		{"seq past 2^64", func(b []byte) []byte { return b }, math.MaxUint64},
		{"non-minimal seq delta", func(b []byte) []byte {
			return append(append(bytes.Clone(b[:RecordHeaderSize]), 0x81, 0x00), b[RecordHeaderSize+1:]...)
		}, 0},
		{"outside the disk", func(b []byte) []byte { b[8] = 0xff; b[15] = 0x7f; return b }, 0},
		{"negative offset", func(b []byte) []byte { b[15] = 0x80; return b }, 0},
		{"past the end", func(b []byte) []byte { le.PutUint64(b[8:], 1<<20-4095); return b }, 0},
		{"kind 0", func(b []byte) []byte { b[16] = 0; return b }, 0},
		{"kind pad", func(b []byte) []byte { b[16] = 5; return b }, 0},
		{"unknown codec", func(b []byte) []byte { b[17] = 3; return b }, 0},
		{"trim with a payload", func(b []byte) []byte { b[16] = byte(journal.KindTrim); return b }, 0},
		{"trim with a codec", func(b []byte) []byte {
			b = b[:RecordHeaderSize+1]
			le.PutUint32(b, 0)
			b[16] = byte(journal.KindTrim)
			return b
		}, 0},
		{"write stored larger than raw", func(b []byte) []byte { le.PutUint32(b[4:], 8); return b }, 0},
		{"bad payload", func(b []byte) []byte { b[len(b)-2] ^= 0xff; b[len(b)-3] ^= 0xff; return b }, 0},
		{"raw length differs", func(b []byte) []byte { le.PutUint32(b[4:], 4000); return b }, 0},
		{"raw write of the wrong length", func(b []byte) []byte { b[17] = 0; return b }, 0},
	} {
		b := tc.mutate(bytes.Clone(good))
		_, n, err := ParseRecord(b, 1<<20, tc.prev)
		if !errors.Is(err, ErrMalformed) || n != 0 {
			t.Errorf("%s: %d bytes, %v; want ErrMalformed", tc.name, n, err)
		}
	}
	if _, _, err := ParseRecord(good, 1<<20, 0); err != nil {
		t.Fatalf("the unmutated record: %v", err)
	}
}

// A few bytes of s2 cannot make the receiver allocate more than the
// record's raw length.
func TestRecordS2LengthAnnounced(t *testing.T) {
	payload := binary.AppendUvarint(nil, 1<<31) // a block claiming 2 GiB
	payload = append(payload, 0)
	w := journal.Record{Kind: journal.KindWrite, Codec: journal.CodecS2, Seq: 1, RawLen: 64, Payload: payload}
	b := AppendRecord(nil, &w, 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, err := ParseRecord(b, 1<<20, 0)
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v, want ErrMalformed", err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Fatalf("%d bytes allocated", n)
	}
}
