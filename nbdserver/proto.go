package nbdserver

import "github.com/pojntfx/go-nbd/pkg/protocol"

// Protocol constants. Where go-nbd's protocol package has a value it is
// reused; the rest are taken from the NBD protocol specification
// (NetworkBlockDevice/nbd doc/proto.md).
const (
	nbdMagic         = protocol.NEGOTIATION_MAGIC_OLDSTYLE // "NBDMAGIC"
	optMagic         = protocol.NEGOTIATION_MAGIC_OPTION   // "IHAVEOPT"
	repMagic         = protocol.NEGOTIATION_MAGIC_REPLY
	requestMagic     = protocol.TRANSMISSION_MAGIC_REQUEST
	simpleReplyMagic = protocol.TRANSMISSION_MAGIC_REPLY
)

// Handshake flags (server) and client flags.
const (
	flagFixedNewstyle  = protocol.NEGOTIATION_HANDSHAKE_FLAG_FIXED_NEWSTYLE
	flagNoZeroes       = uint16(1 << 1)
	flagCFixedNewstyle = uint32(1 << 0)
	flagCNoZeroes      = uint32(1 << 1)
)

// Options.
const (
	optExportName        = uint32(1)
	optAbort             = protocol.NEGOTIATION_ID_OPTION_ABORT
	optList              = protocol.NEGOTIATION_ID_OPTION_LIST
	optStartTLS          = uint32(5)
	optInfo              = protocol.NEGOTIATION_ID_OPTION_INFO
	optGo                = protocol.NEGOTIATION_ID_OPTION_GO
	optStructuredReply   = uint32(8)
	optListMetaContext   = uint32(9)
	optSetMetaContext    = uint32(10)
	optExtendedHeaders   = uint32(11)
	repAck               = protocol.NEGOTIATION_TYPE_REPLY_ACK
	repServer            = protocol.NEGOTIATION_TYPE_REPLY_SERVER
	repInfo              = protocol.NEGOTIATION_TYPE_REPLY_INFO
	repErrUnsup          = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNSUPPORTED
	repErrPolicy         = uint32(1<<31 | 2)
	repErrInvalid        = uint32(1<<31 | 3)
	repErrTLSReqd        = uint32(1<<31 | 5)
	repErrUnknown        = protocol.NEGOTIATION_TYPE_REPLY_ERR_UNKNOWN
	repErrShutdown       = uint32(1<<31 | 7)
	repErrTooBig         = uint32(1<<31 | 9)
	infoExport           = protocol.NEGOTIATION_TYPE_INFO_EXPORT
	infoName             = protocol.NEGOTIATION_TYPE_INFO_NAME
	infoDescription      = protocol.NEGOTIATION_TYPE_INFO_DESCRIPTION
	infoBlockSize        = protocol.NEGOTIATION_TYPE_INFO_BLOCKSIZE
	exportNameZeroesSize = 124
)

// Transmission flags.
const (
	flagHasFlags        = protocol.NEGOTIATION_REPLY_FLAGS_HAS_FLAGS
	flagSendFlush       = uint16(1 << 2)
	flagSendFUA         = uint16(1 << 3)
	flagSendTrim        = uint16(1 << 5)
	flagSendWriteZeroes = uint16(1 << 6)
	flagCanMultiConn    = protocol.NEGOTIATION_REPLY_FLAGS_CAN_MULTI_CONN

	// transmissionFlags is what every export advertises: nothing else (no
	// READ_ONLY, no ROTATIONAL, no DF since structured replies are not
	// offered).
	transmissionFlags = flagHasFlags | flagSendFlush | flagSendFUA |
		flagSendTrim | flagSendWriteZeroes | flagCanMultiConn
)

// Commands and command flags.
const (
	cmdRead        = protocol.TRANSMISSION_TYPE_REQUEST_READ
	cmdWrite       = protocol.TRANSMISSION_TYPE_REQUEST_WRITE
	cmdDisc        = protocol.TRANSMISSION_TYPE_REQUEST_DISC
	cmdFlush       = uint16(3)
	cmdTrim        = uint16(4)
	cmdCache       = uint16(5)
	cmdWriteZeroes = uint16(6)

	cmdFlagFUA    = uint16(1 << 0)
	cmdFlagNoHole = uint16(1 << 1)
)

// Error values sent in simple replies.
const (
	errnoPerm     = protocol.TRANSMISSION_ERROR_EPERM
	errnoIO       = uint32(5)
	errnoNoMem    = uint32(12)
	errnoInval    = protocol.TRANSMISSION_ERROR_EINVAL
	errnoNoSpc    = uint32(28)
	errnoOverflow = uint32(75)
	errnoShutdown = uint32(108)
)

// Block size constraints advertised with NBD_INFO_BLOCK_SIZE. READ and WRITE
// longer than maxBlockSize are refused with EINVAL; commands without a
// payload (TRIM, WRITE_ZEROES, CACHE) may cover any 32-bit length.
const (
	minBlockSize       = 1
	preferredBlockSize = 4096
	maxBlockSize       = 32 << 20
)

// Wire sizes.
const (
	requestHeaderSize = 28
	replyHeaderSize   = 16
	optHeaderSize     = 16
	repHeaderSize     = 20
)
