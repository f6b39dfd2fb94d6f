package wire

import "encoding/binary"

// DiskStateMsg is the body of a DiskState frame: a Primary's disk went out
// (Diskless) or came back (UpToDate) while the link stays up. Gen is the
// generation id the Primary moved to (Diskless: a new one, which its old
// disk does not hold), or its current one (UpToDate: the peer's data, all
// of it, is now on its new disk).
type DiskStateMsg struct {
	Disk DiskState
	Gen  uint64
}

const diskStateSize = 9

// AppendDiskState appends a DiskState frame.
func AppendDiskState(dst []byte, m DiskStateMsg) []byte {
	dst, start := beginFrame(dst)
	dst = append(dst, byte(m.Disk))
	dst = binary.BigEndian.AppendUint64(dst, m.Gen)
	return endFrame(dst, start, TypeDiskState, 0)
}

// ParseDiskState parses the body of a DiskState frame.
func ParseDiskState(body []byte) (DiskStateMsg, error) {
	if len(body) != diskStateSize {
		return DiskStateMsg{}, malformed(TypeDiskState, "%d bytes, want %d", len(body), diskStateSize)
	}
	m := DiskStateMsg{Disk: DiskState(body[0]), Gen: binary.BigEndian.Uint64(body[1:])}
	if m.Disk != Diskless && m.Disk != UpToDate {
		return DiskStateMsg{}, malformed(TypeDiskState, "disk state %d", body[0])
	}
	return m, nil
}
