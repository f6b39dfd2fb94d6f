package nbdserver

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// optionReply appends one option reply:
//
//	magic u64 | option u32 | reply type u32 | length u32 | data
func (c *conn) optionReply(opt, typ uint32, data []byte) {
	b := binary.BigEndian.AppendUint64(c.hbuf, repMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	c.hbuf = append(b, data...)
}

// list answers NBD_OPT_LIST with the one export.
func (c *conn) list(data []byte) {
	if len(data) != 0 {
		c.optionReply(optList, repErrInvalid, []byte("NBD_OPT_LIST takes no data"))
		return
	}
	name := c.srv.name
	p := binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(name)), uint32(len(name)))
	c.optionReply(optList, repServer, append(p, name...))
	c.optionReply(optList, repAck, nil)
}

// infoOrGo answers NBD_OPT_INFO and NBD_OPT_GO; it returns true when a GO
// succeeded and transmission begins.
func (c *conn) infoOrGo(opt uint32, data []byte) bool {
	name, reqs, ok := parseInfoRequest(data)
	if !ok {
		c.optionReply(opt, repErrInvalid, []byte("malformed info request"))
		return false
	}
	size, err := c.srv.exportFor(name)
	if err != nil {
		if errors.Is(err, errUnknownExport) {
			err = fmt.Errorf("%w %q", err, name)
		}
		c.optionReply(opt, repErrUnknown, []byte(err.Error()))
		return false
	}
	c.optionReply(opt, repInfo, infoExportData(size))
	c.optionReply(opt, repInfo, infoBlockSizeData())
	for _, t := range reqs {
		if t == infoName {
			c.optionReply(opt, repInfo, append(binary.BigEndian.AppendUint16(nil, infoName), c.srv.name...))
		}
	}
	c.optionReply(opt, repAck, nil)
	if opt != optGo {
		return false
	}
	c.size = size
	return true
}

// parseInfoRequest parses the data of NBD_OPT_INFO and NBD_OPT_GO:
//
//	name length u32 | name | count u16 | count x info type u16
func parseInfoRequest(data []byte) (name string, reqs []uint16, ok bool) {
	if len(data) < 6 {
		return "", nil, false
	}
	n := binary.BigEndian.Uint32(data[0:4])
	if uint64(n) > uint64(len(data)-6) {
		return "", nil, false
	}
	name = string(data[4 : 4+n])
	rest := data[4+n:]
	count := int(binary.BigEndian.Uint16(rest[0:2]))
	rest = rest[2:]
	if len(rest) != 2*count {
		return "", nil, false
	}
	reqs = make([]uint16, count)
	for i := range reqs {
		reqs[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	return name, reqs, true
}

// infoExportData is NBD_INFO_EXPORT: type u16 | size u64 | flags u16.
func infoExportData(size uint64) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 12), infoExport)
	b = binary.BigEndian.AppendUint64(b, size)
	return binary.BigEndian.AppendUint16(b, transmissionFlags)
}

// infoBlockSizeData is NBD_INFO_BLOCK_SIZE: type u16 | min u32 | preferred
// u32 | max u32.
func infoBlockSizeData() []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 14), infoBlockSize)
	b = binary.BigEndian.AppendUint32(b, minBlockSize)
	b = binary.BigEndian.AppendUint32(b, preferredBlockSize)
	return binary.BigEndian.AppendUint32(b, maxBlockSize)
}

// exportName handles NBD_OPT_EXPORT_NAME, the old way to end negotiation: it
// cannot carry an error, so a refusal closes the connection.
func (c *conn) exportName(name string) (bool, error) {
	size, err := c.srv.exportFor(name)
	if err != nil {
		return false, fmt.Errorf("nbdserver: NBD_OPT_EXPORT_NAME %q refused: %w", name, err)
	}
	b := binary.BigEndian.AppendUint64(c.hbuf, size)
	b = binary.BigEndian.AppendUint16(b, transmissionFlags)
	if !c.noZero {
		b = append(b, make([]byte, exportNameZeroesSize)...)
	}
	c.hbuf = b
	c.size = size
	return true, nil
}
