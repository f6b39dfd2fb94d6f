package wire

import (
	"testing"
)

// BenchmarkEncodeRecordFrame4K is the sender's cost per 4 KiB record: the
// header and the checksum over the payload, which is then written as is.
func BenchmarkEncodeRecordFrame4K(b *testing.B) {
	payload := make([]byte, 4096)
	buf := make([]byte, 0, 64)
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		seq++
		var err error
		if buf, err = AppendRecordHeader(buf[:0], seq, payload); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRecordFrame4K is the receiver's cost per 4 KiB record:
// reading the frame, checking it and parsing the body.
func BenchmarkDecodeRecordFrame4K(b *testing.B) {
	frame, _ := AppendRecord(nil, 1, make([]byte, 4096))
	r := NewReader(&loopReader{b: frame})
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if _, p, err := ParseRecord(f.Body); err != nil || len(p) != 4096 {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeAck(b *testing.B) {
	buf := make([]byte, 0, 64)
	b.ReportAllocs()
	var seq uint64
	for b.Loop() {
		seq++
		buf = AppendAck(buf[:0], Ack{Kind: Journaled, Seq: seq})
	}
}
