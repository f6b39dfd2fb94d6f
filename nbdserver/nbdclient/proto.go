package nbdclient

import "github.com/pojntfx/go-nbd/pkg/protocol"

// Wire constants of the NBD protocol (NetworkBlockDevice/nbd doc/proto.md);
// go-nbd's values are reused where it has them.
const (
	nbdMagic         = protocol.NEGOTIATION_MAGIC_OLDSTYLE
	optMagic         = protocol.NEGOTIATION_MAGIC_OPTION
	repMagic         = protocol.NEGOTIATION_MAGIC_REPLY
	requestMagic     = protocol.TRANSMISSION_MAGIC_REQUEST
	simpleReplyMagic = protocol.TRANSMISSION_MAGIC_REPLY

	flagFixedNewstyle  = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	flagNoZeroes       = uint16(1 << 1)
	flagCFixedNewstyle = uint32(1 << 0)
	flagCNoZeroes      = uint32(1 << 1)

	optExportName = uint32(1)
	optStartTLS   = uint32(5)
	optGo         = protocol.NEGOTIATION_ID_OPTION_GO
	repAck        = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repInfo       = protocol.NEGOTIATION_TYPE_REPLY_INFO
	repErrUnsup   = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	infoExport    = protocol.NEGOTIATION_TYPE_INFO_EXPORT

	cmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	cmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	cmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	cmdFlush       = uint16(3)
	cmdTrim        = uint16(4)
	cmdCache       = uint16(5)
	cmdWriteZeroes = uint16(6)

	requestHeaderSize = 28
	replyHeaderSize   = 16
	maxOptionReply    = 64 << 10
)

// TransmissionFlags are the export's flags as the server sent them.
type TransmissionFlags uint16

// Transmission flags.
const (
	FlagHasFlags        TransmissionFlags = 1 << 0
	FlagReadOnly        TransmissionFlags = 1 << 1
	FlagSendFlush       TransmissionFlags = 1 << 2
	FlagSendFUA         TransmissionFlags = 1 << 3
	FlagRotational      TransmissionFlags = 1 << 4
	FlagSendTrim        TransmissionFlags = 1 << 5
	FlagSendWriteZeroes TransmissionFlags = 1 << 6
	FlagSendDF          TransmissionFlags = 1 << 7
	FlagCanMultiConn    TransmissionFlags = 1 << 8
	FlagSendResize      TransmissionFlags = 1 << 9
	FlagSendCache       TransmissionFlags = 1 << 10
	FlagSendFastZero    TransmissionFlags = 1 << 11
)

// CmdFlags are the flags of one request.
type CmdFlags uint16

// Command flags.
const (
	FlagFUA    CmdFlags = 1 << 0 // NBD_CMD_FLAG_FUA: durable before the reply
	FlagNoHole CmdFlags = 1 << 1 // NBD_CMD_FLAG_NO_HOLE, WRITE_ZEROES only
)
