package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

func TestReadFramesRoundTrip(t *testing.T) {
	data := bytes.Repeat([]byte("block "), 700)[:4096]
	reqs := []ReadRequest{
		{ID: 1, Offset: 0, Length: 1},
		{ID: 1<<64 - 1, Offset: 1<<63 + 4096, Length: MaxReadLength},
	}
	var b []byte
	for _, r := range reqs {
		b = AppendReadRequest(b, r)
	}
	b = AppendReadReply(b, 42, ReadOK, data)
	b = AppendReadReply(b, 43, ReadIOError, data) // data dropped: not ReadOK
	b = AppendReadReply(b, 44, ReadStatus(99), nil)
	fs := readAll(t, b)
	if len(fs) != 5 {
		t.Fatalf("%d frames", len(fs))
	}
	for i, want := range reqs {
		if r, err := ParseReadRequest(fs[i].Body); err != nil || r != want || fs[i].Type != TypeReadRequest {
			t.Errorf("request %d: %+v, %v, want %+v", i, r, err, want)
		}
	}
	if r, err := ParseReadReply(fs[2].Body); err != nil || r.ID != 42 || r.Status != ReadOK || !bytes.Equal(r.Data, data) {
		t.Errorf("reply ok: id %d status %v %d bytes, %v", r.ID, r.Status, len(r.Data), err)
	}
	if r, err := ParseReadReply(fs[3].Body); err != nil || r.ID != 43 || r.Status != ReadIOError || len(r.Data) != 0 {
		t.Errorf("reply I/O error: %+v, %v", r, err)
	}
	if r, err := ParseReadReply(fs[4].Body); err != nil || r.Status != ReadStatus(99) || r.Status.String() != "ReadStatus(99)" {
		t.Errorf("reply of an unknown status: %+v, %v", r, err)
	}
}

func TestReadFramesMalformed(t *testing.T) {
	req := func(length uint32) []byte {
		b := make([]byte, 16)
		return binary.BigEndian.AppendUint32(b, length)
	}
	for _, tc := range []struct {
		name string
		body []byte
		typ  Type
	}{
		{"request short", req(1)[:19], TypeReadRequest},
		{"request long", append(req(1), 0), TypeReadRequest},
		{"request length 0", req(0), TypeReadRequest},
		{"request too long", req(MaxReadLength + 1), TypeReadRequest},
		{"reply short", make([]byte, 8), TypeReadReply},
		{"reply ok without data", make([]byte, 9), TypeReadReply},
		{"reply error with data", append(append(make([]byte, 8), byte(ReadIOError)), 1), TypeReadReply},
		{"reply too long", make([]byte, 9+MaxReadLength+1), TypeReadReply},
	} {
		var err error
		if tc.typ == TypeReadRequest {
			_, err = ParseReadRequest(tc.body)
		} else {
			_, err = ParseReadReply(tc.body)
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: got %v, want ErrMalformed", tc.name, err)
		}
	}
}

// TestReadReplyFitsAFrame: the longest reply is a frame a Reader accepts.
func TestReadReplyFitsAFrame(t *testing.T) {
	b := AppendReadReply(nil, 1, ReadOK, make([]byte, MaxReadLength))
	f := mustRead(t, b)
	if r, err := ParseReadReply(f.Body); err != nil || len(r.Data) != MaxReadLength {
		t.Fatalf("%d bytes, %v", len(r.Data), err)
	}
}

func TestServesReadsFlagRoundTrip(t *testing.T) {
	h := testHello(3)
	h.Flags |= ServesReads
	b, err := AppendHello(nil, &h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseHello(mustRead(t, b).Body)
	if err != nil || got.Flags&ServesReads == 0 {
		t.Fatalf("flags %b, %v", got.Flags, err)
	}
}
