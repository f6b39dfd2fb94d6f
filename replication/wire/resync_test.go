package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"slices"
	"testing"
)

// The resync bodies, byte for byte as existing peers send them.
func TestResyncBodiesFrozen(t *testing.T) {
	sums, _ := AppendSums(nil, Sums{First: 0x0102, Sums: bytes.Repeat([]byte{0xee}, SumSize)})
	chunk, _ := AppendBitmapChunk(nil, BitmapChunk{First: 3, Words: []uint64{1, 1 << 63}})
	for _, tc := range []struct {
		name  string
		frame []byte
		typ   Type
		flags uint8
		body  string
	}{
		{"tail", AppendSyncStart(nil, SyncStart{Mode: SyncTail}), TypeSyncStart, 0, "0200"},
		{"bitmap", AppendSyncStart(nil, SyncStart{Mode: SyncBitmap}), TypeSyncStart, 0, "0100"},
		{"full", AppendSyncStart(nil, SyncStart{Mode: SyncBitmap, Full: true}), TypeSyncStart, 0, "0101"},
		{"tail in place", AppendSyncStart(nil, SyncStart{Mode: SyncTail, InPlace: true}), TypeSyncStart, SyncInPlace, "0200"},
		{"sum request", AppendSumRequest(nil, SumRequest{First: 0x0102, Count: 1024}), TypeSumRequest, 0,
			"0201000000000000" + "00040000"},
		{"sums", sums, TypeSums, 0, "0201000000000000" + "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"},
		{"chunk", chunk, TypeBitmapChunk, 0, "0300000000000000" + "0100000000000000" + "0000000000000080"},
		{"bitmap end", AppendBitmapEnd(nil), TypeBitmapChunk, BitmapEnd, ""},
	} {
		f := mustRead(t, tc.frame)
		if f.Type != tc.typ || f.Flags != tc.flags || hex.EncodeToString(f.Body) != tc.body {
			t.Errorf("%s: %s flags %d body %x; want %s flags %d body %s",
				tc.name, f.Type, f.Flags, f.Body, tc.typ, tc.flags, tc.body)
		}
	}
}

func TestResyncBodiesRoundTrip(t *testing.T) {
	for _, want := range []SyncStart{{Mode: SyncTail}, {Mode: SyncTail, InPlace: true}, {Mode: SyncBitmap}, {Mode: SyncBitmap, Full: true}} {
		f := mustRead(t, AppendSyncStart(nil, want))
		if got, err := ParseSyncStart(f.Flags, f.Body); err != nil || got != want {
			t.Errorf("sync start %+v: %+v, %v", want, got, err)
		}
	}
	req := SumRequest{First: 1 << 40, Count: 1 << 31}
	if got, err := ParseSumRequest(mustRead(t, AppendSumRequest(nil, req)).Body); err != nil || got != req {
		t.Errorf("sum request: %+v, %v", got, err)
	}
	sums := Sums{First: 9, Sums: bytes.Repeat([]byte("0123456789abcdef"), 3)}
	b, err := AppendSums(nil, sums)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSums(mustRead(t, b).Body)
	if err != nil || got.First != 9 || len(got.Sums) != 3*SumSize || string(got.Sum(2)) != "0123456789abcdef" {
		t.Errorf("sums: %+v, %v", got, err)
	}
	chunk := BitmapChunk{First: 1 << 20, Words: []uint64{0, 5, 1 << 63}}
	if b, err = AppendBitmapChunk(nil, chunk); err != nil {
		t.Fatal(err)
	}
	c, err := ParseBitmapChunk(mustRead(t, b).Body)
	if err != nil || c.First != chunk.First || !slices.Equal(c.Words, chunk.Words) {
		t.Errorf("bitmap chunk: %+v, %v", c, err)
	}
}

func TestResyncBodiesMalformed(t *testing.T) {
	for _, tc := range []struct {
		name  string
		parse func() error
	}{
		{"sync start short", func() error { _, err := ParseSyncStart(0, []byte{1}); return err }},
		{"sync start long", func() error { _, err := ParseSyncStart(0, []byte{1, 0, 0}); return err }},
		{"sync start mode 0", func() error { _, err := ParseSyncStart(0, []byte{0, 0}); return err }},
		{"sync start mode 3", func() error { _, err := ParseSyncStart(0, []byte{3, 0}); return err }},
		{"sync start full 2", func() error { _, err := ParseSyncStart(0, []byte{1, 2}); return err }},
		{"sync start bitmap in place", func() error { _, err := ParseSyncStart(SyncInPlace, []byte{1, 0}); return err }},
		{"sync start flag 2", func() error { _, err := ParseSyncStart(2, []byte{2, 0}); return err }},
		{"sum request short", func() error { _, err := ParseSumRequest(make([]byte, 11)); return err }},
		{"sum request long", func() error { _, err := ParseSumRequest(make([]byte, 13)); return err }},
		{"sums short", func() error { _, err := ParseSums(make([]byte, 7)); return err }},
		{"sums ragged", func() error { _, err := ParseSums(make([]byte, 8+SumSize+1)); return err }},
		{"chunk empty", func() error { _, err := ParseBitmapChunk(nil); return err }},
		{"chunk short", func() error { _, err := ParseBitmapChunk(make([]byte, 7)); return err }},
		{"chunk ragged", func() error { _, err := ParseBitmapChunk(make([]byte, 12)); return err }},
	} {
		if err := tc.parse(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", tc.name, err)
		}
	}
	if _, err := AppendSums(nil, Sums{Sums: make([]byte, SumSize-1)}); err == nil {
		t.Error("sums of a partial block encoded")
	}
	if _, err := AppendBitmapChunk(nil, BitmapChunk{Words: make([]uint64, maxChunkWords+1)}); !errors.Is(err, ErrFrameTooLarge) {
		t.Errorf("oversized chunk: %v", err)
	}
}
