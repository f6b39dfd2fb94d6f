package replication

import (
	"bytes"
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
)

func TestWireRecordRoundTripAndRefusals(t *testing.T) {
	comp := journal.NewCompressor(journal.CodecS2)
	data := bytes.Repeat([]byte("compressible "), 400)[:4096]
	w := comp.Write(8192, data)
	defer w.Release()
	trim := journal.Trim(0, 65536)
	w.Seq, trim.Seq = 1000, 1001
	var b []byte
	b = appendWireRecord(b, &w, 0)
	b = appendWireRecord(b, &trim, w.Seq)

	got, n, err := parseWireRecord(b, 1<<20, 0)
	if err != nil || got.Kind != journal.KindWrite || got.Offset != 8192 || got.Codec != journal.CodecS2 || got.Seq != 1000 {
		t.Fatalf("write record: %+v %v", got, err)
	}
	if raw, _ := got.Raw(nil); !bytes.Equal(raw, data) {
		t.Fatal("write payload does not round trip")
	}
	got, _, err = parseWireRecord(b[n:], 1<<20, 1000)
	if err != nil || got.Kind != journal.KindTrim || got.RawLen != 65536 || got.Seq != 1001 {
		t.Fatalf("trim record: %+v %v", got, err)
	}

	for name, mutate := range map[string]func([]byte){
		"cut short":        func(b []byte) {},
		"outside the disk": func(b []byte) { b[8] = 0xff; b[15] = 0x7f },
		"unknown kind":     func(b []byte) { b[16] = 9 },
		"bad payload":      func(b []byte) { b[wireRecordHeader+2] ^= 0xff; b[wireRecordHeader+3] ^= 0xff },
		"zero seq delta":   func(b []byte) { b[wireRecordHeader] = 0 },
	} {
		c := bytes.Clone(b[:n])
		mutate(c)
		if name == "cut short" {
			c = c[:n-1]
		}
		if _, _, err := parseWireRecord(c, 1<<20, 0); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
