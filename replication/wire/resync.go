package wire

import (
	"encoding/binary"
	"fmt"
)

// The resync bodies. Their integers are little endian, unlike the frame
// header's; the layouts are frozen as they are.
//
//	SyncStart    mode u8 (1 bitmap, 2 journal tail), full u8 (0 or 1);
//	             flag SyncInPlace: the journal tail holds writes made in place
//	SumRequest   first block u64, count u32
//	Sums         first block u64, SumSize bytes per block
//	BitmapChunk  first word index u64, words u64...; the last frame of an
//	             exchange has flag BitmapEnd and no body
//	SyncDone     generation id u64 (big endian, see AppendSyncDone)

// SyncMode is how a source brings its target up to date.
type SyncMode uint8

const (
	// SyncBitmap sends the regions of the bitmap: the target is
	// Inconsistent until the end.
	SyncBitmap SyncMode = 1
	// SyncTail replays the journal's tail in order: the target stays
	// Consistent, unless the tail holds writes made in place (SyncInPlace).
	SyncTail SyncMode = 2
)

func (m SyncMode) String() string {
	switch m {
	case SyncBitmap:
		return "bitmap"
	case SyncTail:
		return "journal tail"
	}
	return fmt.Sprintf("SyncMode(%d)", uint8(m))
}

// SyncStart is the body of a SyncStart frame: how the source syncs. Full
// (with SyncBitmap) says the source's bitmap does not cover the target's
// changes: the target forgets its bitmap generation. InPlace (with
// SyncTail, sent as the frame's flag SyncInPlace) says the tail holds
// writes made in place, whose data the source reads from its disk as it is
// when sent, maybe newer than the write: the target holds no state the
// source ever had until the end, and is Inconsistent.
type SyncStart struct {
	Mode    SyncMode
	Full    bool
	InPlace bool
}

const syncStartSize = 2

// SyncInPlace is the flag of a SyncStart frame whose journal tail holds
// writes made in place (SyncStart.InPlace).
const SyncInPlace = 1

// AppendSyncStart appends a SyncStart frame.
func AppendSyncStart(dst []byte, s SyncStart) []byte {
	dst, start := beginFrame(dst)
	full, flags := byte(0), uint8(0)
	if s.Full {
		full = 1
	}
	if s.InPlace {
		flags = SyncInPlace
	}
	dst = append(dst, byte(s.Mode), full)
	return endFrame(dst, start, TypeSyncStart, flags)
}

// ParseSyncStart parses a SyncStart frame's flags and body.
func ParseSyncStart(flags uint8, body []byte) (SyncStart, error) {
	if len(body) != syncStartSize {
		return SyncStart{}, malformed(TypeSyncStart, "%d bytes, want %d", len(body), syncStartSize)
	}
	s := SyncStart{Mode: SyncMode(body[0]), Full: body[1] == 1, InPlace: flags&SyncInPlace != 0}
	switch {
	case s.Mode != SyncBitmap && s.Mode != SyncTail:
		return SyncStart{}, malformed(TypeSyncStart, "unknown mode %d", body[0])
	case body[1] > 1:
		return SyncStart{}, malformed(TypeSyncStart, "full byte %d, want 0 or 1", body[1])
	case flags&^SyncInPlace != 0 || s.InPlace && s.Mode != SyncTail:
		return SyncStart{}, malformed(TypeSyncStart, "flags %#x on a %s sync", flags, s.Mode)
	}
	return s, nil
}

// SumRequest is the body of a SumRequest frame: send the checksums of
// Count blocks from block First.
type SumRequest struct {
	First uint64
	Count uint32
}

// SumRequestSize is the size of a SumRequest body.
const SumRequestSize = 12

// AppendSumRequest appends a SumRequest frame.
func AppendSumRequest(dst []byte, r SumRequest) []byte {
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, r.First)
	dst = binary.LittleEndian.AppendUint32(dst, r.Count)
	return endFrame(dst, start, TypeSumRequest, 0)
}

// ParseSumRequest parses the body of a SumRequest frame. Whether the blocks
// lie on the disk is the caller's to check.
func ParseSumRequest(body []byte) (SumRequest, error) {
	if len(body) != SumRequestSize {
		return SumRequest{}, malformed(TypeSumRequest, "%d bytes, want %d", len(body), SumRequestSize)
	}
	le := binary.LittleEndian
	return SumRequest{First: le.Uint64(body), Count: le.Uint32(body[8:])}, nil
}

// SumSize is the size of one block's checksum in a Sums frame: the first
// bytes of its SHA-256.
const SumSize = 16

// Sums is the body of a Sums frame: the checksums of consecutive blocks
// from block First, SumSize bytes each.
type Sums struct {
	First uint64
	Sums  []byte // len is a multiple of SumSize
}

// Sum returns block First+i's checksum.
func (s Sums) Sum(i int) []byte { return s.Sums[i*SumSize : (i+1)*SumSize] }

// AppendSums appends a Sums frame. len(s.Sums) must be a multiple of
// SumSize and s must fit a frame.
func AppendSums(dst []byte, s Sums) ([]byte, error) {
	if len(s.Sums)%SumSize != 0 {
		return dst, fmt.Errorf("wire: %d bytes of checksums, not a multiple of %d", len(s.Sums), SumSize)
	}
	if 8+len(s.Sums) > MaxBodySize {
		return dst, fmt.Errorf("%w: %d bytes of checksums", ErrFrameTooLarge, len(s.Sums))
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, s.First)
	dst = append(dst, s.Sums...)
	return endFrame(dst, start, TypeSums, 0), nil
}

// ParseSums parses the body of a Sums frame. s.Sums aliases body.
func ParseSums(body []byte) (Sums, error) {
	if len(body) < 8 || (len(body)-8)%SumSize != 0 {
		return Sums{}, malformed(TypeSums, "%d bytes, want 8 + a multiple of %d", len(body), SumSize)
	}
	return Sums{First: binary.LittleEndian.Uint64(body), Sums: body[8:]}, nil
}

// BitmapEnd is the flag of the BitmapChunk frame that ends a bitmap
// exchange; its body is empty and carries no chunk.
const BitmapEnd = 1

// maxChunkWords is the most bitmap words one BitmapChunk frame can carry.
const maxChunkWords = (MaxBodySize - 8) / 8

// BitmapChunk is the body of a BitmapChunk frame: bitmap words from word
// index First, bit i of word w standing for region 64*w+i.
type BitmapChunk struct {
	First uint64
	Words []uint64
}

// AppendBitmapChunk appends a BitmapChunk frame carrying c.
func AppendBitmapChunk(dst []byte, c BitmapChunk) ([]byte, error) {
	if len(c.Words) > maxChunkWords {
		return dst, fmt.Errorf("%w: bitmap chunk of %d words, max %d", ErrFrameTooLarge, len(c.Words), maxChunkWords)
	}
	dst, start := beginFrame(dst)
	dst = binary.LittleEndian.AppendUint64(dst, c.First)
	for _, w := range c.Words {
		dst = binary.LittleEndian.AppendUint64(dst, w)
	}
	return endFrame(dst, start, TypeBitmapChunk, 0), nil
}

// AppendBitmapEnd appends the BitmapChunk frame that ends an exchange.
func AppendBitmapEnd(dst []byte) []byte {
	dst, start := beginFrame(dst)
	return endFrame(dst, start, TypeBitmapChunk, BitmapEnd)
}

// ParseBitmapChunk parses the body of a BitmapChunk frame without the flag
// BitmapEnd. The words are copied out of body. Whether they lie in the
// bitmap is the caller's to check.
func ParseBitmapChunk(body []byte) (BitmapChunk, error) {
	if len(body) < 8 || len(body)%8 != 0 {
		return BitmapChunk{}, malformed(TypeBitmapChunk, "%d bytes, want 8 + a multiple of 8", len(body))
	}
	c := BitmapChunk{First: binary.LittleEndian.Uint64(body), Words: make([]uint64, len(body)/8-1)}
	for i := range c.Words {
		c.Words[i] = binary.LittleEndian.Uint64(body[8+8*i:])
	}
	return c, nil
}
