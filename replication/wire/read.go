package wire

import (
	"encoding/binary"
	"fmt"
)

// Remote reads: a node asks its peer for a range of the peer's disk
// (ReadRequest) and the peer answers it (ReadReply), both on the link,
// between the records. Only a peer whose Hello carries ServesReads is
// asked. The peer reads after applying every record it read off the link
// before the request, so the reply holds every write sent before it.
//
//	ReadRequest 20  id u64, offset u64, length u32; be
//	ReadReply   21  id u64, status u8, data (length bytes if status is
//	                ReadOK, none otherwise); be

const (
	// MaxReadLength bounds the length of one ReadRequest: its reply fits
	// in a frame with room to spare.
	MaxReadLength = 32 << 20

	readRequestSize = 20 // id + offset + length
	readReplyFixed  = 9  // id + status
)

// ReadStatus says how a ReadRequest ended on the peer.
type ReadStatus uint8

const (
	ReadOK ReadStatus = 0 // the data follows
	// ReadIOError: the disk or the journal failed the read.
	ReadIOError ReadStatus = 1
	// ReadNotUpToDate: the peer's disk is not UpToDate (resync target,
	// Outdated, Diskless): its data may be older than the asker's.
	ReadNotUpToDate ReadStatus = 2
	// ReadOutOfRange: the range is not on the disk.
	ReadOutOfRange ReadStatus = 3
)

func (s ReadStatus) String() string {
	switch s {
	case ReadOK:
		return "ok"
	case ReadIOError:
		return "I/O error"
	case ReadNotUpToDate:
		return "disk not UpToDate"
	case ReadOutOfRange:
		return "out of range"
	}
	return fmt.Sprintf("ReadStatus(%d)", uint8(s))
}

// ReadRequest is the body of a ReadRequest frame: send me Length bytes of
// your disk from Offset, and answer with ID.
type ReadRequest struct {
	ID     uint64
	Offset uint64
	Length uint32 // 1 to MaxReadLength
}

// AppendReadRequest appends a ReadRequest frame.
func AppendReadRequest(dst []byte, r ReadRequest) []byte {
	dst, start := beginFrame(dst)
	dst = binary.BigEndian.AppendUint64(dst, r.ID)
	dst = binary.BigEndian.AppendUint64(dst, r.Offset)
	dst = binary.BigEndian.AppendUint32(dst, r.Length)
	return endFrame(dst, start, TypeReadRequest, 0)
}

// ParseReadRequest parses the body of a ReadRequest frame. Whether the
// range lies on the disk is the receiver's to check (it answers
// ReadOutOfRange).
func ParseReadRequest(body []byte) (ReadRequest, error) {
	if len(body) != readRequestSize {
		return ReadRequest{}, malformed(TypeReadRequest, "%d bytes, want %d", len(body), readRequestSize)
	}
	be := binary.BigEndian
	r := ReadRequest{ID: be.Uint64(body), Offset: be.Uint64(body[8:]), Length: be.Uint32(body[16:])}
	if r.Length == 0 || r.Length > MaxReadLength {
		return ReadRequest{}, malformed(TypeReadRequest, "length %d, want 1 to %d", r.Length, MaxReadLength)
	}
	return r, nil
}

// ReadReply is the body of a ReadReply frame. Data aliases the frame body
// it was parsed from.
type ReadReply struct {
	ID     uint64
	Status ReadStatus
	Data   []byte // the bytes asked for when Status is ReadOK, else empty
}

// AppendReadReply appends a ReadReply frame; data is ignored unless the
// status is ReadOK.
func AppendReadReply(dst []byte, id uint64, status ReadStatus, data []byte) []byte {
	dst, start := beginFrame(dst)
	dst = binary.BigEndian.AppendUint64(dst, id)
	dst = append(dst, byte(status))
	if status == ReadOK {
		dst = append(dst, data...)
	}
	return endFrame(dst, start, TypeReadReply, 0)
}

// ParseReadReply parses the body of a ReadReply frame. Status codes this
// version does not know are kept as they are (a failed read). Whether the
// data is as long as the request asked is the asker's to check.
func ParseReadReply(body []byte) (ReadReply, error) {
	if len(body) < readReplyFixed || len(body)-readReplyFixed > MaxReadLength {
		return ReadReply{}, malformed(TypeReadReply, "%d bytes, want %d to %d", len(body), readReplyFixed, readReplyFixed+MaxReadLength)
	}
	r := ReadReply{ID: binary.BigEndian.Uint64(body), Status: ReadStatus(body[8]), Data: body[readReplyFixed:]}
	switch {
	case r.Status == ReadOK && len(r.Data) == 0:
		return ReadReply{}, malformed(TypeReadReply, "no data")
	case r.Status != ReadOK && len(r.Data) != 0:
		return ReadReply{}, malformed(TypeReadReply, "%d bytes of data with status %s", len(r.Data), r.Status)
	}
	return r, nil
}
