package journal

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/nbdmirror/nbdmirror/internal/bufpool"
)

func TestCompressRoundTrip(t *testing.T) {
	rnd := rand.New(rand.NewPCG(3, 3))
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		c := NewCompressor(codec)
		for _, n := range []int{0, 1, 100, 4096, 65536, 1 << 20} {
			for _, data := range [][]byte{compressible(rnd, n), randomBytes(rnd, n)} {
				r := c.Write(99, data)
				if r.Kind != KindWrite || r.Offset != 99 || r.RawLen != uint32(n) {
					t.Fatalf("%v: bad record %+v", codec, r)
				}
				if len(r.Payload) > n {
					t.Fatalf("%v: %d bytes stored in %d: grown", codec, n, len(r.Payload))
				}
				raw, err := r.Raw([]byte("prefix"))
				if err != nil || !bytes.Equal(raw, append([]byte("prefix"), data...)) {
					t.Fatalf("%v n=%d: Raw: %v", codec, n, err)
				}
				r.Release()
			}
		}
	}
}

func TestCompressShrinksOrStoresRaw(t *testing.T) {
	rnd := rand.New(rand.NewPCG(4, 4))
	for _, codec := range []Codec{CodecS2, CodecZstd} {
		c := NewCompressor(codec)
		text := compressible(rnd, 4096)
		r := c.Write(0, text)
		if r.Codec != codec || len(r.Payload) > len(text)/2 {
			t.Errorf("%v: compressible 4096 bytes stored as %v in %d", codec, r.Codec, len(r.Payload))
		}
		noise := randomBytes(rnd, 4096)
		r = c.Write(0, noise)
		if r.Codec != CodecNone || !bytes.Equal(r.Payload, noise) {
			t.Errorf("%v: random data stored as %v in %d, want raw", codec, r.Codec, len(r.Payload))
		}
	}
}

func TestCompressorOwnsPayload(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 4096)
	for _, codec := range []Codec{CodecNone, CodecS2} {
		r := NewCompressor(codec).Write(0, data)
		data[0] = 8 // the caller reuses its buffer
		raw, _ := r.Raw(nil)
		if raw[0] != 7 {
			t.Fatalf("%v: record shares the caller's buffer", codec)
		}
		data[0] = 7
	}
}

func TestCompressConcurrent(t *testing.T) {
	c := NewCompressor(CodecZstd)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(g), 5))
			for range 50 {
				data := compressible(rnd, rnd.IntN(20000))
				r := c.Write(0, data)
				if raw, err := r.Raw(nil); err != nil || !bytes.Equal(raw, data) {
					t.Error("concurrent round trip failed", err)
					return
				}
				r.Release()
			}
		}()
	}
	wg.Wait()
}

func TestRawRejectsBadPayload(t *testing.T) {
	r := NewCompressor(CodecS2).Write(0, bytes.Repeat([]byte("ab"), 2048))
	r.Payload = append([]byte(nil), r.Payload...)
	r.Payload[len(r.Payload)/2] ^= 0xff
	r.RawLen++
	if _, err := r.Raw(nil); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("bad payload: %v, want corrupt", err)
	}
}

func TestParseCodec(t *testing.T) {
	for _, c := range []Codec{CodecNone, CodecS2, CodecZstd} {
		if got, err := ParseCodec(c.String()); err != nil || got != c {
			t.Fatalf("ParseCodec(%q) = %v, %v", c, got, err)
		}
	}
	if _, err := ParseCodec("lz4"); err == nil {
		t.Fatal("ParseCodec accepted lz4")
	}
}

func TestWriteLent(t *testing.T) {
	rnd := rand.New(rand.NewPCG(10, 10))
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		c := NewCompressor(codec)
		noise := randomBytes(rnd, 8192)
		r := c.WriteLent(0, noise)
		if &r.Payload[0] != &noise[0] {
			t.Errorf("%v: incompressible lent data was copied", codec)
		}
		text := compressible(rnd, 8192)
		r = c.WriteLent(0, text)
		raw, err := r.Raw(nil)
		if err != nil || !bytes.Equal(raw, text) {
			t.Fatalf("%v: lent round trip: %v", codec, err)
		}
		if got, _ := r.rawData(nil); &got[0] != &text[0] {
			t.Errorf("%v: the journal would decompress lent data", codec)
		}
		r.Release()
	}
}

// slightlyCompressible is random data with 8 zero bytes in every 64, like
// fio's default buffers: s2 saves a few percent of it, at full cost.
func slightlyCompressible(rnd *rand.Rand, n int) []byte {
	b := randomBytes(rnd, n)
	for i := 0; i+64 <= n; i += 64 {
		clear(b[i+56 : i+64])
	}
	return b
}

// halfCompressible is like fio's buffer_compress_percentage=50: every 512
// bytes, 256 random ones and 256 zeros.
func halfCompressible(rnd *rand.Rand, n int) []byte {
	b := randomBytes(rnd, n)
	for i := 0; i < n; i += 512 {
		clear(b[min(i+256, n):min(i+512, n)])
	}
	return b
}

func TestCompressSkipsDataThatBarelyShrinks(t *testing.T) {
	rnd := rand.New(rand.NewPCG(6, 6))
	c := NewCompressor(CodecS2)
	for _, n := range []int{4096, 65536, 1 << 20} {
		slight := slightlyCompressible(rnd, n)
		if r := c.Write(0, slight); r.Codec != CodecNone {
			t.Errorf("%d bytes that shrink by a few percent stored as %v, want raw", n, r.Codec)
		}
		half := halfCompressible(rnd, n)
		r := c.Write(0, half)
		if r.Codec != CodecS2 || len(r.Payload) > n*6/10 {
			t.Errorf("%d half-compressible bytes stored as %v in %d, want s2 in <= 60%%", n, r.Codec, len(r.Payload))
		}
		raw, err := r.Raw(nil)
		if err != nil || !bytes.Equal(raw, half) {
			t.Fatalf("round trip of %d bytes: %v", n, err)
		}
		// Compressible data at the start only still gets compressed when a
		// sample falls on it.
		mixed := append(compressible(rnd, n/2), randomBytes(rnd, n-n/2)...)
		if r := c.Write(0, mixed); r.Codec != CodecS2 {
			t.Errorf("%d bytes, half text: stored as %v, want s2", n, r.Codec)
		}
	}
}

// TestCopyPayloadSum: a payload copied piece by piece carries the CRC32C of
// the whole, as a record that computes it afresh does, whatever its length
// against the piece.
func TestCopyPayloadSum(t *testing.T) {
	for _, n := range []int{1, copyPiece - 1, copyPiece, copyPiece + 1, 3*copyPiece + 17, 1 << 20} {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(i*7 + i>>9)
		}
		var r Record
		r.Kind, r.RawLen = KindWrite, uint32(n)
		r.CopyPayload(p)
		if !bytes.Equal(r.Payload, p) {
			t.Fatalf("%d bytes: the copy differs", n)
		}
		fresh := Record{Kind: KindWrite, RawLen: uint32(n), Payload: p}
		if got, want := r.payloadSum(), fresh.payloadSum(); got != want {
			t.Fatalf("%d bytes: sum %08x, want %08x", n, got, want)
		}
		r.Release()
	}
}

// TestDecodeRawAttaches: a compressed payload decodes into a pooled buffer
// that the record then applies from; one that does not decode to RawLen
// bytes is refused.
func TestDecodeRawAttaches(t *testing.T) {
	data := bytes.Repeat([]byte("nbdmirror "), 100<<10)
	for _, codec := range []Codec{CodecNone, CodecS2, CodecZstd} {
		c := NewCompressor(codec)
		rec := c.Write(0, data)
		raw, err := rec.DecodeRaw()
		if err != nil || !bytes.Equal(raw, data) || !bytes.Equal(rec.raw, data) {
			t.Fatalf("%v: DecodeRaw %d bytes, %v; want the data, attached", codec, len(raw), err)
		}
		rec.Release()
		if rec.raw != nil {
			t.Fatalf("%v: raw data kept after Release", codec)
		}
	}
	bad := NewCompressor(CodecS2).Write(0, data)
	bad.RawLen--
	if _, err := bad.DecodeRaw(); !errors.Is(err, ErrCorruptRecord) {
		t.Fatalf("a payload one byte longer than RawLen: %v, want ErrCorruptRecord", err)
	}
}

// TestWriteToSendSumsLater: a record made only to be sent takes no CRC32C
// at once, and still has the right one if something asks for it; Release
// gives its data's buffer back.
func TestWriteToSendSumsLater(t *testing.T) {
	for _, codec := range []Codec{CodecNone, CodecS2} {
		data := bytes.Repeat([]byte("to send "), 16<<10)
		bp := bufpool.Get(len(data))
		copy(*bp, data)
		c := NewCompressor(codec)
		sent, kept := c.WriteToSend(0, bp), c.WriteLent(0, data)
		if sent.hasSum {
			t.Fatalf("%v: the record to send took its CRC", codec)
		}
		if !bytes.Equal(sent.Payload, kept.Payload) || sent.payloadSum() != kept.payloadSum() {
			t.Fatalf("%v: the record to send differs from WriteLent's", codec)
		}
		sent.Release()
		if sent.rawBuf != nil || sent.Payload != nil {
			t.Fatalf("%v: the data's buffer kept after Release", codec)
		}
		kept.Release()
	}
}
