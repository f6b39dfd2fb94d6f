package wire

import (
	"testing"

	"github.com/nbdmirror/nbdmirror/journal"
)

// BenchmarkEncodeRecordsFrame4K is the sender's cost per 4 KiB record sent
// alone: the record in link form and the frame header's checksum over it.
func BenchmarkEncodeRecordsFrame4K(b *testing.B) {
	rec := journal.Record{Kind: journal.KindWrite, Offset: 4096, RawLen: 4096, Payload: make([]byte, 4096)}
	buf := make([]byte, 0, 8192)
	hdr := make([]byte, 0, HeaderSize)
	parts := make([][]byte, 1)
	b.SetBytes(int64(len(rec.Payload)))
	b.ReportAllocs()
	for b.Loop() {
		rec.Seq++
		buf = AppendRecord(buf[:0], &rec, rec.Seq-1)
		parts[0] = buf
		var err error
		if hdr, err = AppendRecordsHeader(hdr[:0], parts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRecordsFrame4K is the receiver's cost per 4 KiB record:
// reading the frame, checking it and parsing the record, payload copied.
func BenchmarkDecodeRecordsFrame4K(b *testing.B) {
	rec := journal.Record{Kind: journal.KindWrite, Seq: 1, Offset: 4096, RawLen: 4096, Payload: make([]byte, 4096)}
	frame, _ := appendFrame(nil, TypeRecords, 0, AppendRecord(nil, &rec, 0))
	r := NewReader(&loopReader{b: frame})
	b.SetBytes(4096)
	b.ReportAllocs()
	for b.Loop() {
		f, err := r.Next()
		if err != nil {
			b.Fatal(err)
		}
		if got, _, err := ParseRecord(f.Body, 1<<20, 0); err != nil || got.RawLen != 4096 {
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
