package nbd

import "strconv"

// Wire constants of the NBD protocol (doc/proto.md of the NBD project).
const (
	magicNBD        = 0x4e42444d41474943 // "NBDMAGIC"
	magicIHaveOpt   = 0x49484156454f5054 // "IHAVEOPT"
	magicOptReply   = 0x3e889045565a9
	magicRequest    = 0x25609513
	magicSimple     = 0x67446698
	magicStructured = 0x668e33ef

	// Handshake flags (server) and client flags.
	flagFixedNewstyle  = 1 << 0
	flagNoZeroes       = 1 << 1
	flagCFixedNewstyle = 1 << 0
	flagCNoZeroes      = 1 << 1

	// Options.
	optExportName      = 1
	optAbort           = 2
	optGo              = 7
	optStructuredReply = 8
	optListMetaContext = 9
	optSetMetaContext  = 10

	// Option reply types.
	repAck          = 1
	repServer       = 2
	repInfo         = 3
	repMetaContext  = 4
	repErrBit       = 1 << 31
	repErrUnsup     = repErrBit + 1
	repErrPolicy    = repErrBit + 2
	repErrInvalid   = repErrBit + 3
	repErrPlatform  = repErrBit + 4
	repErrTLSReqd   = repErrBit + 5
	repErrUnknown   = repErrBit + 6
	repErrShutdown  = repErrBit + 7
	repErrBlockSize = repErrBit + 8
	repErrTooBig    = repErrBit + 9

	// NBD_OPT_GO information types.
	infoExport    = 0
	infoName      = 1
	infoDesc      = 2
	infoBlockSize = 3

	// Commands.
	cmdRead        = 0
	cmdWrite       = 1
	cmdDisc        = 2
	cmdFlush       = 3
	cmdTrim        = 4
	cmdWriteZeroes = 6
	cmdBlockStatus = 7

	// Command flags.
	cmdFlagFUA      = 1 << 0
	cmdFlagNoHole   = 1 << 1
	cmdFlagDF       = 1 << 2
	cmdFlagFastZero = 1 << 4

	// Structured reply flags and chunk types.
	replyFlagDone       = 1 << 0
	chunkNone           = 0
	chunkOffsetData     = 1
	chunkOffsetHole     = 2
	chunkBlockStatus    = 5
	chunkErrBit         = 1 << 15
	chunkError          = chunkErrBit + 1
	chunkErrorOffset    = chunkErrBit + 2
	requestHeaderLen    = 28
	simpleHeaderLen     = 16
	structuredHeaderLen = 20

	// base:allocation and qemu:dirty-bitmap flags.
	stateHole  = 1 << 0
	stateZero  = 1 << 1
	stateDirty = 1 << 0
)

// Meta context names.
const (
	ContextBaseAllocation  = "base:allocation"
	ContextAllocationDepth = "qemu:allocation-depth"
	DirtyBitmapPrefix      = "qemu:dirty-bitmap:"
)

// Flags are the transmission flags the server sent for the export.
type Flags uint16

// Transmission flag bits.
const (
	FlagHasFlags        Flags = 1 << 0
	FlagReadOnly        Flags = 1 << 1
	FlagSendFlush       Flags = 1 << 2
	FlagSendFUA         Flags = 1 << 3
	FlagRotational      Flags = 1 << 4
	FlagSendTrim        Flags = 1 << 5
	FlagSendWriteZeroes Flags = 1 << 6
	FlagSendDF          Flags = 1 << 7
	FlagCanMultiConn    Flags = 1 << 8
	FlagSendResize      Flags = 1 << 9
	FlagSendCache       Flags = 1 << 10
	FlagSendFastZero    Flags = 1 << 11
)

// ReadOnly reports whether the export refuses writes.
func (f Flags) ReadOnly() bool { return f&FlagReadOnly != 0 }

// CanFlush reports whether the server takes NBD_CMD_FLUSH.
func (f Flags) CanFlush() bool { return f&FlagSendFlush != 0 }

// CanFUA reports whether the server honours the FUA command flag.
func (f Flags) CanFUA() bool { return f&FlagSendFUA != 0 }

// CanTrim reports whether the server takes NBD_CMD_TRIM.
func (f Flags) CanTrim() bool { return f&FlagSendTrim != 0 }

// CanZero reports whether the server takes NBD_CMD_WRITE_ZEROES.
func (f Flags) CanZero() bool { return f&FlagSendWriteZeroes != 0 }

// CanFastZero reports whether the server takes the FAST_ZERO flag.
func (f Flags) CanFastZero() bool { return f&FlagSendFastZero != 0 }

// CanMultiConn reports whether several connections to the export see each
// other's writes after a flush.
func (f Flags) CanMultiConn() bool { return f&FlagCanMultiConn != 0 }

// ZeroFlags modify Zero.
type ZeroFlags uint8

// Zero flags.
const (
	// ZeroNoHole keeps the range allocated (NBD_CMD_FLAG_NO_HOLE).
	ZeroNoHole ZeroFlags = 1 << iota
	// ZeroFast fails with an error wrapping ErrNotSupported unless the
	// server can zero the range faster than writing zeros
	// (NBD_CMD_FLAG_FAST_ZERO).
	ZeroFast
)

// BlockSize holds the server's block size constraints.
type BlockSize struct {
	Min, Preferred, Max uint32
}

// Defaults when the server sends no NBD_INFO_BLOCK_SIZE.
var defaultBlockSize = BlockSize{Min: 1, Preferred: 4096, Max: 32 << 20}

// Extent is a run of the export with the same status.
//
// Zero means the run reads as zeros. Hole means it is not allocated: from
// qemu:allocation-depth (depth 0) when that context is in use, else from
// the base:allocation hole flag unless a dirty bitmap is in use. A hole
// always reads as zeros. Dirty means the run is set in the dirty bitmap.
type Extent struct {
	Start  int64
	Length int64
	Zero   bool
	Hole   bool
	Dirty  bool
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Start + e.Length }

func optionName(opt uint32) string {
	switch opt {
	case optExportName:
		return "NBD_OPT_EXPORT_NAME"
	case optAbort:
		return "NBD_OPT_ABORT"
	case optGo:
		return "NBD_OPT_GO"
	case optStructuredReply:
		return "NBD_OPT_STRUCTURED_REPLY"
	case optListMetaContext:
		return "NBD_OPT_LIST_META_CONTEXT"
	case optSetMetaContext:
		return "NBD_OPT_SET_META_CONTEXT"
	}
	return "option " + strconv.FormatUint(uint64(opt), 10)
}

func commandName(cmd uint16) string {
	switch cmd {
	case cmdRead:
		return "NBD_CMD_READ"
	case cmdWrite:
		return "NBD_CMD_WRITE"
	case cmdDisc:
		return "NBD_CMD_DISC"
	case cmdFlush:
		return "NBD_CMD_FLUSH"
	case cmdTrim:
		return "NBD_CMD_TRIM"
	case cmdWriteZeroes:
		return "NBD_CMD_WRITE_ZEROES"
	case cmdBlockStatus:
		return "NBD_CMD_BLOCK_STATUS"
	}
	return "command " + strconv.FormatUint(uint64(cmd), 10)
}
