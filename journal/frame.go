package journal

import (
	"errors"
	"fmt"
	"io"
	"net"
)

// zeroPad is the padding after a payload, zeroHeader room for a header;
// neither is ever written to.
var (
	zeroPad    [frameAlign]byte
	zeroHeader [HeaderSize]byte
)

// AppendEncoded appends the record's frame (header, payload, padding) to dst.
// The frame is the wire form too: replication sends exactly these bytes.
func (r *Record) AppendEncoded(dst []byte) []byte {
	n := len(dst)
	dst = append(dst, zeroHeader[:]...)
	r.putHeader((*[HeaderSize]byte)(dst[n:])) // in place: a local header would escape
	dst = append(dst, r.Payload...)
	return append(dst, zeroPad[:align(len(r.Payload))-len(r.Payload)]...)
}

// WriteTo writes the record's frame to w, with one writev where w is a
// net.Conn. It implements io.WriterTo.
func (r *Record) WriteTo(w io.Writer) (int64, error) {
	var h [HeaderSize]byte
	r.putHeader(&h)
	bufs := net.Buffers{h[:], r.Payload, zeroPad[:align(len(r.Payload))-len(r.Payload)]}
	return bufs.WriteTo(w)
}

// DecodeRecord decodes the frame at the start of b and returns the record and
// the frame's length. The record's Payload aliases b. A b shorter than the
// frame gives ErrTornRecord; a bad header or checksum gives ErrCorruptRecord.
func DecodeRecord(b []byte) (Record, int, error) {
	if len(b) < HeaderSize {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, header needs %d", ErrTornRecord, len(b), HeaderSize)
	}
	h, err := parseHeader(b)
	if err != nil {
		return Record{}, 0, err
	}
	n := HeaderSize + align(int(h.length))
	if len(b) < n {
		return Record{}, 0, fmt.Errorf("%w: %d bytes, frame needs %d", ErrTornRecord, len(b), n)
	}
	r, err := h.finish(b[:HeaderSize], b[HeaderSize:HeaderSize+int(h.length)])
	return r, n, err
}

// Encoder writes frames to an io.Writer.
type Encoder struct {
	w io.Writer
}

// NewEncoder returns an Encoder writing to w. Wrap a socket in a bufio.Writer
// (or use Record.WriteTo) to keep system calls few.
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: w} }

// Encode writes r's frame. r.Seq must be set.
func (e *Encoder) Encode(r *Record) error {
	if r.Seq == 0 {
		return errors.New("journal: encode: record has no seq")
	}
	_, err := r.WriteTo(e.w)
	return err
}

// Decoder reads frames from an io.Reader.
type Decoder struct {
	r   io.Reader
	hdr [HeaderSize]byte
	n   int64 // bytes consumed by whole frames
}

// NewDecoder returns a Decoder reading from r. It reads exactly the frames'
// bytes, so r may be a socket carrying other messages in between.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: r} }

// Offset is the number of bytes of whole frames decoded so far.
func (d *Decoder) Offset() int64 { return d.n }

// Decode reads the next frame. It returns io.EOF at a clean end between
// frames, ErrTornRecord when the stream ends inside a frame and
// ErrCorruptRecord for a bad header or checksum. The payload is freshly
// allocated and owned by the record.
func (d *Decoder) Decode() (Record, error) {
	if _, err := io.ReadFull(d.r, d.hdr[:]); err != nil {
		if err == io.EOF {
			return Record{}, io.EOF
		}
		return Record{}, wrapShort(err)
	}
	h, err := parseHeader(d.hdr[:])
	if err != nil {
		return Record{}, err
	}
	frame := align(int(h.length))
	buf := make([]byte, frame)
	if _, err := io.ReadFull(d.r, buf); err != nil {
		return Record{}, wrapShort(err)
	}
	r, err := h.finish(d.hdr[:], buf[:h.length])
	if err != nil {
		return Record{}, err
	}
	d.n += int64(HeaderSize + frame)
	return r, nil
}

func wrapShort(err error) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("%w: %v", ErrTornRecord, io.ErrUnexpectedEOF)
	}
	return err
}
