package replication

import (
	"encoding/binary"
	"fmt"

	"github.com/nbdmirror/nbdmirror/journal"
)

// A record on the peer link is the journal record's stored payload, exactly
// as compressed once on the Primary, behind a compact header. The journal
// frame's own checksum and seq stay home: the Records frame carries a
// checksum over everything, and a record's seq is its position on the link.
//
//	0       4       8               16  17  18
//	+-------+-------+---------------+---+---+-----------+--------------------
//	| len   | rawlen|    offset     |knd|cdc| seq delta | payload: len bytes
//	+-------+-------+---------------+---+---+-----------+--------------------
//
// Integers are little endian; knd and cdc are the journal's Kind and Codec;
// the seq delta is a uvarint, the record's seq less the seq of the record
// before it on the link (from 0 on a new link), so usually one byte. The
// receiver journals the record under that seq: both nodes number their
// records alike.
const wireRecordHeader = 18

// appendWireRecord appends rec in link form; prev is the seq of the record
// before it on the link.
func appendWireRecord(dst []byte, rec *journal.Record, prev uint64) []byte {
	le := binary.LittleEndian
	dst = le.AppendUint32(dst, uint32(len(rec.Payload)))
	dst = le.AppendUint32(dst, rec.RawLen)
	dst = le.AppendUint64(dst, uint64(rec.Offset))
	dst = append(dst, byte(rec.Kind), byte(rec.Codec))
	dst = binary.AppendUvarint(dst, rec.Seq-prev)
	return append(dst, rec.Payload...)
}

// parseWireRecord decodes the record at the start of b, checks it against a
// disk of size bytes, and returns it with its length in b. A write's payload
// is decompressed here, once: the raw bytes are attached for the journal to
// apply, so a payload that does not decode is refused before it is journaled.
// The record owns copies of what it needs; b may be reused.
func parseWireRecord(b []byte, size int64, prev uint64) (journal.Record, int, error) {
	if len(b) < wireRecordHeader {
		return journal.Record{}, 0, fmt.Errorf("record header cut short: %d bytes", len(b))
	}
	le := binary.LittleEndian
	n := int(le.Uint32(b))
	rec := journal.Record{RawLen: le.Uint32(b[4:]), Offset: int64(le.Uint64(b[8:])),
		Kind: journal.Kind(b[16]), Codec: journal.Codec(b[17])}
	delta, k := binary.Uvarint(b[wireRecordHeader:])
	if k <= 0 || delta == 0 || prev+delta < prev {
		return rec, 0, fmt.Errorf("record with a bad seq delta")
	}
	rec.Seq = prev + delta
	head := wireRecordHeader + k
	switch {
	case len(b)-head < n:
		return rec, 0, fmt.Errorf("record payload cut short: %d of %d bytes", len(b)-head, n)
	case rec.Kind < journal.KindWrite || rec.Kind > journal.KindZeroNoHole || rec.Codec > journal.CodecZstd:
		return rec, 0, fmt.Errorf("record of unknown kind %d or codec %d", rec.Kind, rec.Codec)
	case rec.Offset < 0 || rec.Offset > size || int64(rec.RawLen) > size-rec.Offset:
		return rec, 0, fmt.Errorf("record writes [%d, +%d) outside a %d-byte disk", rec.Offset, rec.RawLen, size)
	case rec.Kind != journal.KindWrite && n != 0:
		return rec, 0, fmt.Errorf("%s record with a payload", rec.Kind)
	}
	if rec.Kind == journal.KindWrite {
		rec.Payload = append([]byte(nil), b[head:head+n]...)
		raw, err := rec.Raw(nil)
		if err != nil || len(raw) != int(rec.RawLen) {
			return rec, 0, fmt.Errorf("record payload does not decode to %d bytes: %v", rec.RawLen, err)
		}
		rec.AttachRaw(raw)
	}
	return rec, head + n, nil
}
