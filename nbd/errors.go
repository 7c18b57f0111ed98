package nbd

import (
	"errors"
	"fmt"
	"strconv"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrNotSupported: the server does not offer the operation or flag.
	ErrNotSupported = errors.New("operation not supported by the NBD server")
	// ErrReadOnly: a write, zero or trim on a read-only export.
	ErrReadOnly = errors.New("NBD export is read-only")
	// ErrOutOfRange: a request past the end of the export.
	ErrOutOfRange = errors.New("range out of bounds of the NBD export")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("NBD client is closed")
	// ErrProtocol: the server broke the protocol; the connection is closed.
	ErrProtocol = errors.New("NBD protocol violation")
	// ErrUnknownExport: the server has no export of that name.
	ErrUnknownExport = errors.New("unknown NBD export")
	// ErrNoSpace: the server's storage is full (errno ENOSPC on a write,
	// zero or flush).
	ErrNoSpace = errors.New("no space left on the NBD export")
)

// Errno values used by NBD (they travel on the wire, independent of the
// local operating system).
const (
	EPERM     = 1
	EIO       = 5
	ENOMEM    = 12
	EINVAL    = 22
	ENOSPC    = 28
	EOVERFLOW = 75
	ENOTSUP   = 95
	ESHUTDOWN = 108
)

var errnoNames = map[uint32]string{
	EPERM:     "EPERM",
	EIO:       "EIO",
	ENOMEM:    "ENOMEM",
	EINVAL:    "EINVAL",
	ENOSPC:    "ENOSPC",
	EOVERFLOW: "EOVERFLOW",
	ENOTSUP:   "ENOTSUP",
	ESHUTDOWN: "ESHUTDOWN",
}

var errnoText = map[uint32]string{
	EPERM:     "operation not permitted",
	EIO:       "input/output error",
	ENOMEM:    "cannot allocate memory",
	EINVAL:    "invalid argument",
	ENOSPC:    "no space left on device",
	EOVERFLOW: "value too large",
	ENOTSUP:   "operation not supported",
	ESHUTDOWN: "server is shutting down",
}

// Error is an error reply from the server to a command.
type Error struct {
	Errno   uint32 // NBD errno (EIO, ENOSPC, EINVAL, ...)
	Message string // optional text from a structured error chunk
}

// ErrnoName returns the symbolic name of an NBD errno ("EIO").
func ErrnoName(errno uint32) string {
	if n, ok := errnoNames[errno]; ok {
		return n
	}
	return "errno " + strconv.FormatUint(uint64(errno), 10)
}

func (e *Error) Error() string {
	s := "NBD server error " + ErrnoName(e.Errno)
	if t, ok := errnoText[e.Errno]; ok {
		s += " (" + t + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrNotSupported) true for ENOTSUP,
// errors.Is(err, ErrReadOnly) true for EPERM and errors.Is(err, ErrNoSpace)
// true for ENOSPC.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotSupported:
		return e.Errno == ENOTSUP
	case ErrReadOnly:
		return e.Errno == EPERM
	case ErrNoSpace:
		return e.Errno == ENOSPC
	}
	return false
}

// OptionError is an error reply to an option during the handshake.
type OptionError struct {
	Option  string // e.g. "NBD_OPT_GO"
	Reply   uint32 // NBD_REP_ERR_* value
	Message string // optional text from the server
}

var repErrNames = map[uint32]string{
	repErrUnsup:     "unsupported option",
	repErrPolicy:    "forbidden by server policy",
	repErrInvalid:   "invalid option",
	repErrPlatform:  "not supported on the server's platform",
	repErrTLSReqd:   "TLS required",
	repErrUnknown:   "unknown export",
	repErrShutdown:  "server is shutting down",
	repErrBlockSize: "block size negotiation required",
	repErrTooBig:    "request too big",
}

func (e *OptionError) Error() string {
	what, ok := repErrNames[e.Reply]
	if !ok {
		what = fmt.Sprintf("error reply %#x", e.Reply)
	}
	s := "NBD server refused " + e.Option + ": " + what
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Is makes errors.Is(err, ErrUnknownExport) true for NBD_REP_ERR_UNKNOWN
// and errors.Is(err, ErrNotSupported) true for NBD_REP_ERR_UNSUP.
func (e *OptionError) Is(target error) bool {
	switch target {
	case ErrUnknownExport:
		return e.Reply == repErrUnknown
	case ErrNotSupported:
		return e.Reply == repErrUnsup
	}
	return false
}

// protocolError returns an error wrapping ErrProtocol.
func protocolError(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrProtocol}, args...)...)
}
