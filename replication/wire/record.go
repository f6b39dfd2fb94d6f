package wire

import (
	"encoding/binary"

	"github.com/klauspost/compress/s2"
	"github.com/nbdmirror/nbdmirror/journal"
)

// A Records frame's body is records back to back, each the journal record's
// stored payload, exactly as compressed once on the Primary, behind a
// compact header. The journal frame's own checksum and seq stay home: the
// frame's CRC covers everything, and a record's seq follows from the one
// before it on the link.
//
//	0       4       8               16  17  18
//	+-------+-------+---------------+---+---+-----------+--------------------
//	| len   | rawlen|    offset     |knd|cdc| seq delta | payload: len bytes
//	+-------+-------+---------------+---+---+-----------+--------------------
//
// Integers are little endian (this layout is frozen: existing peers speak
// it); knd and cdc are the journal's Kind and Codec; the seq delta is a
// uvarint, the record's seq less the seq of the record before it on the
// link (from 0 on a new link), so usually one byte. The receiver journals
// the record under that seq: both nodes number their records alike.
//
// RecordHeaderSize is the fixed part of a record, before the seq delta (1 to
// binary.MaxVarintLen64 bytes) and the payload.
const RecordHeaderSize = 18

// AppendRecord appends rec in link form to dst; prevSeq is the seq of the
// record before it on the link (0 for the first). rec.Seq must exceed it.
func AppendRecord(dst []byte, rec *journal.Record, prevSeq uint64) []byte {
	return append(AppendRecordHead(dst, rec, prevSeq), rec.Payload...)
}

// AppendRecordHead appends what AppendRecord does but the payload: a
// sender that writes the payload from where it is follows it with that.
func AppendRecordHead(dst []byte, rec *journal.Record, prevSeq uint64) []byte {
	le := binary.LittleEndian
	dst = le.AppendUint32(dst, uint32(len(rec.Payload)))
	dst = le.AppendUint32(dst, rec.RawLen)
	dst = le.AppendUint64(dst, uint64(rec.Offset))
	dst = append(dst, byte(rec.Kind), byte(rec.Codec))
	return binary.AppendUvarint(dst, rec.Seq-prevSeq)
}

// ParseRecord decodes the record at the start of b (a Records frame's body,
// or what is left of it), checks it against a disk of diskSize bytes, and
// returns it with its length in b; prevSeq is the seq of the record before
// it on the link. A write's payload is decompressed here, once: the raw
// bytes are attached for the journal to apply, so a payload that does not
// decode is refused before it is journaled, as is anything the journal
// would refuse to replay. The record owns copies of what it needs; b may be
// reused. A write's payload and raw data are in pooled buffers: Release
// gives them back once the record is done with (or the garbage collector
// takes them).
func ParseRecord(b []byte, diskSize int64, prevSeq uint64) (journal.Record, int, error) {
	rec, head, n, err := parseHead(b, prevSeq)
	if err != nil {
		return rec, 0, err
	}
	if uint64(len(b)-head) < n {
		return rec, 0, malformed(TypeRecords, "record payload cut short: %d of %d bytes", len(b)-head, n)
	}
	payload := b[head : head+int(n)]
	if err := complete(&rec, payload, diskSize, func() { rec.CopyPayload(payload) }); err != nil {
		return rec, 0, err
	}
	return rec, head + int(n), nil
}

// complete checks rec, whose stored payload is payload, as the journal
// would replay it, and for a write has attach give rec its payload and
// decodes the raw data from it. A write's s2 payload must announce RawLen
// bytes before anything is allocated for it, so a few bytes cannot claim
// gigabytes.
func complete(rec *journal.Record, payload []byte, diskSize int64, attach func()) error {
	if err := checkRecord(rec, len(payload), diskSize); err != nil || rec.Kind != journal.KindWrite {
		return err
	}
	if rec.Codec == journal.CodecS2 {
		if n, err := s2.DecodedLen(payload); err != nil || n != int(rec.RawLen) {
			return malformed(TypeRecords, "s2 payload of %d bytes announced for a write of %d", n, rec.RawLen)
		}
	}
	attach()
	raw, err := rec.DecodeRaw() // stored raw, the payload is the raw data too
	if err != nil || len(raw) != int(rec.RawLen) {
		rec.Release()
		return malformed(TypeRecords, "record payload does not decode to %d bytes: %v", rec.RawLen, err)
	}
	return nil
}

// parseHead decodes the head of the record at the start of b (its fixed
// header and seq delta): the record without its payload, the head's length
// and the payload's.
func parseHead(b []byte, prevSeq uint64) (rec journal.Record, head int, n uint64, err error) {
	if len(b) < RecordHeaderSize {
		return rec, 0, 0, malformed(TypeRecords, "record header cut short: %d bytes", len(b))
	}
	le := binary.LittleEndian
	n = uint64(le.Uint32(b))
	rec = journal.Record{RawLen: le.Uint32(b[4:]), Offset: int64(le.Uint64(b[8:])),
		Kind: journal.Kind(b[16]), Codec: journal.Codec(b[17])}
	delta, k := binary.Uvarint(b[RecordHeaderSize:])
	if k <= 0 || delta == 0 || prevSeq+delta < prevSeq || k != uvarintLen(delta) {
		return rec, 0, 0, malformed(TypeRecords, "record with a bad seq delta")
	}
	rec.Seq = prevSeq + delta
	return rec, RecordHeaderSize + k, n, nil
}

// checkRecord refuses a record of stored length n that the journal would
// not replay, or that reaches outside the disk.
func checkRecord(rec *journal.Record, n int, diskSize int64) error {
	write := rec.Kind == journal.KindWrite
	switch {
	case rec.Kind < journal.KindWrite || rec.Kind > journal.KindZeroNoHole || rec.Codec > journal.CodecZstd:
		return malformed(TypeRecords, "record of unknown kind %d or codec %d", rec.Kind, rec.Codec)
	case rec.Offset < 0 || rec.Offset > diskSize || int64(rec.RawLen) > diskSize-rec.Offset:
		return malformed(TypeRecords, "record writes [%d, +%d) outside a %d-byte disk", rec.Offset, rec.RawLen, diskSize)
	case !write && (n != 0 || rec.Codec != journal.CodecNone):
		return malformed(TypeRecords, "%s record with a payload or a codec", rec.Kind)
	case write && (rec.RawLen > journal.MaxRawLen || n > int(rec.RawLen)):
		return malformed(TypeRecords, "write of %d bytes stored in %d", rec.RawLen, n)
	}
	return nil
}

func uvarintLen(v uint64) int {
	var b [binary.MaxVarintLen64]byte
	return len(binary.AppendUvarint(b[:0], v))
}
