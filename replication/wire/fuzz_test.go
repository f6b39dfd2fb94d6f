package wire

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the fuzz seed corpus in testdata/fuzz")

// FuzzFrameReader feeds arbitrary bytes to a Reader and parses every frame
// it yields: nothing may panic, every error must come from this package,
// and every body that parses must encode back to the same bytes. The input
// is also parsed as a body of every type, since mutations rarely get past
// the checksum.
func FuzzFrameReader(f *testing.F) {
	for _, s := range frameSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for typ := range typeNames {
			checkBody(t, Frame{Type: typ, Body: data})
		}
		r := NewReader(bytes.NewReader(data))
		for range 64 {
			fr, err := r.Next()
			if err == io.EOF {
				return
			}
			if err != nil && !strings.HasPrefix(err.Error(), "wire: ") {
				t.Fatalf("error without prefix: %v", err)
			}
			if errors.Is(err, ErrUnknownType) {
				continue
			}
			if err != nil {
				return
			}
			if len(fr.Body) > MaxBodySize || len(fr.Body) > len(data) {
				t.Fatalf("body of %d bytes from %d bytes of input", len(fr.Body), len(data))
			}
			checkBody(t, fr)
		}
	})
}

// checkBody parses a frame body by its type and encodes the result again.
func checkBody(t *testing.T, f Frame) {
	var again []byte
	var err error
	switch f.Type {
	case TypeHello:
		var h Hello
		if h, err = ParseHello(f.Body); err == nil {
			checkHelloAgain(t, h)
			return
		}
	case TypeAuth:
		var p [ProofSize]byte
		p, err = ParseAuth(f.Body)
		again = AppendAuth(nil, p)
	case TypeRefuse:
		var r Refuse
		r, err = ParseRefuse(f.Body)
		again = AppendRefuse(nil, r.Reason, r.Text)
	case TypeRecord:
		seq, p, perr := ParseRecord(f.Body)
		err = perr
		again, _ = AppendRecord(nil, seq, p)
	case TypeBarrier:
		seq, perr := ParseBarrier(f.Body)
		err = perr
		again = AppendBarrier(nil, seq)
	case TypeAck:
		var a Ack
		a, err = ParseAck(f.Body)
		again = AppendAck(nil, a)
	case TypePing, TypePong:
		tok, perr := ParsePing(f.Body)
		err = perr
		again = appendUint64Frame(nil, f.Type, tok)
	default:
		return
	}
	if err != nil {
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
			t.Fatalf("%s: unexpected error %v", f.Type, err)
		}
		return
	}
	if !bytes.Equal(again[HeaderSize:], f.Body) {
		t.Fatalf("%s: body %x encodes back as %x", f.Type, f.Body, again[HeaderSize:])
	}
}

// checkHelloAgain checks that a parsed Hello encodes and parses to itself.
func checkHelloAgain(t *testing.T, h Hello) {
	b, err := AppendHello(nil, &h)
	if err != nil {
		t.Fatalf("parsed hello does not encode: %v", err)
	}
	h2, err := ParseHello(b[HeaderSize:])
	if err != nil || h2 != h {
		t.Fatalf("hello round trip: %+v, %v; want %+v", h2, err, h)
	}
	CheckHello(h, h2)
}

// FuzzHello parses arbitrary Hello bodies: no panic, and what parses
// survives a round trip.
func FuzzHello(f *testing.F) {
	for _, s := range helloSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		h, err := ParseHello(body)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnknownVersion) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		checkHelloAgain(t, h)
	})
}

func frameSeeds() [][]byte {
	h := testHello(7)
	hello, _ := AppendHello(nil, &h)
	rec, _ := AppendRecord(nil, 1, []byte("journal record"))
	var stream []byte
	stream = AppendPing(stream, 1)
	stream = append(stream, rec...)
	stream = AppendAck(stream, Ack{Kind: Journaled, Seq: 1})
	stream = AppendBarrier(stream, 1)
	stream = AppendAck(stream, Ack{Kind: Synced, Seq: 1})
	stream = AppendBye(stream)
	badCRC := bytes.Clone(rec)
	badCRC[HeaderSize] ^= 1
	huge := make([]byte, HeaderSize)
	putHeader(huge, TypeRecord, 0, MaxBodySize+1)
	unknown, _ := AppendFrame(nil, Type(33), 0, []byte("checksums"))
	return [][]byte{
		hello, stream, badCRC, huge, unknown,
		AppendAuth(nil, [ProofSize]byte{1, 2, 3}),
		AppendRefuse(nil, ReasonSplitBrain, "both were primary"),
		AppendReady(nil),
		AppendPong(nil, 9),
		hello[:HeaderSize+30],
		[]byte("GET / HTTP/1.1\r\nHost: peer\r\n\r\n"),
		{},
	}
}

func helloSeeds() [][]byte {
	h := testHello(7)
	body := appendHelloBody(nil, &h)
	h.Resource = strings.Repeat("r", MaxResourceName)
	long := appendHelloBody(nil, &h)
	h.Version = Version + 1
	v2 := appendHelloBody(nil, &h)
	return [][]byte{body, long, v2, body[:helloFixed], body[:6], []byte("NBMH")}
}

// TestFuzzSeeds keeps testdata/fuzz in step with the encoders; run it with
// -update-seeds after a change of layout.
func TestFuzzSeeds(t *testing.T) {
	if !*updateSeeds {
		t.Skip("run with -update-seeds to rewrite testdata/fuzz")
	}
	for name, seeds := range map[string][][]byte{
		"FuzzFrameReader": frameSeeds(),
		"FuzzHello":       helloSeeds(),
	} {
		dir := filepath.Join("testdata", "fuzz", name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for i, s := range seeds {
			data := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed%02d", i)), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
