package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"slices"
)

const (
	// Magic opens every frame: "NBMF" in network byte order.
	Magic uint32 = 0x4E424D46
	// HeaderSize is the size of the fixed frame header.
	HeaderSize = 16
	// MaxBodySize bounds a frame body: a journal record of up to 32 MiB of
	// payload plus its header fits with room to spare. A longer length is
	// refused before anything is allocated.
	MaxBodySize = 33 << 20

	crcOffset = 12 // the CRC covers header[:crcOffset] and the body
	// firstChunk is what a frame whose length exceeds the reader's buffer
	// may allocate before that many body bytes have arrived; the buffer
	// then at most doubles per chunk read, so a peer claiming a large body
	// it never sends costs little memory.
	firstChunk = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Errors of the framing layer. A frame that yields one of them was not acted
// on; the link should be dropped, except after ErrUnknownType, where the
// stream is still in step and the caller may skip the frame.
var (
	ErrBadMagic      = errors.New("wire: bad magic")
	ErrFrameTooLarge = errors.New("wire: frame too large")
	ErrBadChecksum   = errors.New("wire: bad checksum")
	ErrUnknownType   = errors.New("wire: unknown frame type")
	// ErrMalformed reports a frame body that does not parse as its type.
	ErrMalformed = errors.New("wire: malformed frame body")
)

// Frame is one decoded frame. Body aliases the Reader's buffer.
type Frame struct {
	Type  Type
	Flags uint8 // per type: BitmapEnd on a BitmapChunk, SyncInPlace on a SyncStart; zero on the others
	Body  []byte
	// Records are a Records frame's records as a data Reader reads them
	// (NewDataReader; Body is then nil), in order. The slice is the
	// Reader's until the next call; each part's payload is the caller's
	// (ParseRecordPart, or Release).
	Records []RecordPart
}

// beginFrame reserves room for a header; endFrame fills it in once the body
// has been appended after it.
func beginFrame(dst []byte) ([]byte, int) {
	start := len(dst)
	return append(dst, make([]byte, HeaderSize)...), start
}

func endFrame(dst []byte, start int, t Type, flags uint8) []byte {
	h := dst[start : start+HeaderSize]
	body := dst[start+HeaderSize:]
	putHeader(h, t, flags, len(body))
	crc := crc32.Update(crc32.Update(0, castagnoli, h[:crcOffset]), castagnoli, body)
	binary.BigEndian.PutUint32(h[crcOffset:], crc)
	return dst
}

// putHeader writes everything of the header but its CRC.
func putHeader(h []byte, t Type, flags uint8, n int) {
	binary.BigEndian.PutUint32(h[0:4], Magic)
	h[4] = byte(t)
	h[5] = flags
	h[6], h[7] = 0, 0
	binary.BigEndian.PutUint32(h[8:12], uint32(n))
}

// Reader decodes frames from a stream. Give it a bufio.Reader on the data
// path; the handshake gives it the bare connection so that it never reads
// past its own last frame. A Reader is not safe for concurrent use.
type Reader struct {
	r       io.Reader
	maxBody uint32 // MaxBodySize, or less in the handshake
	hdr     [HeaderSize]byte
	buf     []byte // reused for every body
	// splitRecords: a data Reader, which reads a Records frame into parts.
	splitRecords bool
	parts        []RecordPart // reused for every Records frame
}

// NewReader returns a Reader that reads frames from r.
func NewReader(r io.Reader) *Reader {
	return &Reader{r: r, maxBody: MaxBodySize}
}

// Next reads one frame. Its Body is valid until the next call. At a clean
// end of stream between frames Next returns io.EOF itself; a stream cut
// inside a frame gives an error wrapping io.ErrUnexpectedEOF. A frame whose
// checksum holds but whose type this version does not know is returned
// together with an error wrapping ErrUnknownType.
func (r *Reader) Next() (Frame, error) {
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		if err == io.EOF {
			return Frame{}, io.EOF
		}
		return Frame{}, fmt.Errorf("wire: read frame header: %w", err)
	}
	h := r.hdr[:]
	if m := binary.BigEndian.Uint32(h[0:4]); m != Magic {
		return Frame{}, fmt.Errorf("%w %#08x", ErrBadMagic, m)
	}
	f := Frame{Type: Type(h[4]), Flags: h[5]}
	n := binary.BigEndian.Uint32(h[8:12])
	if n > r.maxBody {
		return Frame{}, fmt.Errorf("%w: %s body of %d bytes, max %d", ErrFrameTooLarge, f.Type, n, r.maxBody)
	}
	if f.Type == TypeRecords && r.splitRecords {
		return r.readRecords(f, h, int(n))
	}
	body, err := r.readBody(int(n))
	if err != nil {
		return Frame{}, fmt.Errorf("wire: read %s body of %d bytes: %w", f.Type, n, err)
	}
	crc := crc32.Update(crc32.Update(0, castagnoli, h[:crcOffset]), castagnoli, body)
	if want := binary.BigEndian.Uint32(h[crcOffset:]); crc != want {
		return Frame{}, fmt.Errorf("%w: %s frame of %d bytes", ErrBadChecksum, f.Type, n)
	}
	f.Body = body
	if !f.Type.known() {
		return f, fmt.Errorf("%w %d", ErrUnknownType, uint8(f.Type))
	}
	return f, nil
}

// readBody reads n bytes into the reused buffer. When the buffer is too
// small it grows as the bytes arrive rather than all at once.
func (r *Reader) readBody(n int) ([]byte, error) {
	if n <= cap(r.buf) {
		b := r.buf[:n]
		if _, err := io.ReadFull(r.r, b); err != nil {
			return nil, noEOF(err)
		}
		return b, nil
	}
	b := r.buf[:0]
	for len(b) < n {
		step := min(n-len(b), max(len(b), firstChunk))
		m := len(b)
		b = slices.Grow(b, step)[:m+step]
		if _, err := io.ReadFull(r.r, b[m:]); err != nil {
			r.buf = b[:0]
			return nil, noEOF(err)
		}
	}
	r.buf = b
	return b, nil
}

// noEOF turns an end of stream inside a frame into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
