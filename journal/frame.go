package journal

import "fmt"

// zeroPad is the padding after a payload; it is never written to.
var zeroPad [frameAlign]byte

// decodeRecord decodes the frame at the start of b and returns the record and
// the frame's length. The record's Payload aliases b. A b shorter than the
// frame gives ErrTornRecord; a bad header or checksum gives ErrCorruptRecord.
func decodeRecord(b []byte) (Record, int, error) {
	if len(b) < headerSize {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, header needs %d", ErrTornRecord, len(b), headerSize)
	}
	h, err := parseHeader(b)
	if err != nil {
		return Record{}, 0, err
	}
	n := headerSize + align(int(h.length))
	if len(b) < n {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, frame needs %d", ErrTornRecord, len(b), n)
	}
	r, err := h.finish(b[:headerSize], b[headerSize:headerSize+int(h.length)])
	return r, n, err
}
