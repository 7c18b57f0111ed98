// Package backend defines the storage interface shared by the transfer
// daemon (imageiod) and the client copy engine (transfer): an image is a
// fixed-size byte range that can be read, written, zeroed, flushed and
// described by extents.
//
// Contract for every implementation:
//   - All methods are safe for concurrent use by several goroutines unless
//     the implementation documents otherwise; the number of concurrent
//     readers/writers that make sense is given by Caps.
//   - ReadAt fills p completely or returns an error; a read past Size is
//     ErrOutOfRange. WriteAt writes all of p or returns an error; a write
//     past Size is ErrOutOfRange and writes nothing.
//   - Errors wrapping ErrOutOfRange, ErrNotSupported, ErrReadOnly,
//     ErrCanceled and ErrNoSpace are permanent; other errors may be
//     transient (I/O, network).
//   - A write, zero or flush that fails because the storage behind the
//     image is full returns an error for which errors.Is(err, ErrNoSpace)
//     holds (ENOSPC or EDQUOT from a file, NBD errno ENOSPC, a 507 from
//     an imageio daemon).
//   - Extents covers [0, Size) with no gaps, in order, neighbours with equal
//     flags merged.
package backend

import (
	"context"
	"errors"
	"io"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	ErrOutOfRange   = errors.New("range out of bounds")
	ErrNotSupported = errors.New("operation not supported")
	ErrReadOnly     = errors.New("backend is read-only")
	ErrCanceled     = errors.New("operation canceled")
	// ErrNoSpace means the storage behind the image is full (or a quota
	// is exhausted): retrying the same write will fail the same way.
	ErrNoSpace = errors.New("no space left on the storage")
)

// Extent contexts, as in the images API (?context=zero|dirty).
const (
	ContextZero  = "zero"
	ContextDirty = "dirty"
)

// Extent describes a run of an image. For ContextZero, Zero means the run
// reads as zeros and Hole means it is not allocated in the top layer (a
// hole implies zero). For ContextDirty, Dirty means the run changed since
// the bitmap was created, and Zero as above.
type Extent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Zero   bool  `json:"zero"`
	Hole   bool  `json:"hole"`
	Dirty  bool  `json:"dirty"`
}

// End returns the offset just past the extent.
func (e Extent) End() int64 { return e.Start + e.Length }

// Caps describes what a backend can do.
type Caps struct {
	ReadOnly bool
	CanZero  bool // Zero is efficient (not emulated by writing zeros)
	CanFlush bool
	// Extents lists the supported extent contexts (ContextZero, ContextDirty).
	Extents []string
	// MaxReaders and MaxWriters are how many concurrent connections or
	// goroutines make sense for reading and writing.
	MaxReaders int
	MaxWriters int
	// BlockSize is the minimum I/O alignment the backend prefers (1 if any).
	BlockSize int
}

// HasExtents reports whether the backend supports the extent context name.
func (c Caps) HasExtents(name string) bool {
	for _, n := range c.Extents {
		if n == name {
			return true
		}
	}
	return false
}

// Backend is an image that can be read and written at offsets.
type Backend interface {
	// Size is the image size in bytes.
	Size() int64
	// Caps reports the backend's capabilities.
	Caps() Caps
	// ReadAt reads len(p) bytes at off.
	ReadAt(ctx context.Context, p []byte, off int64) error
	// WriteAt writes p at off.
	WriteAt(ctx context.Context, p []byte, off int64) error
	// Zero makes [off, off+length) read as zeros. With punch, the range may
	// be deallocated (a hole); without it the storage stays allocated.
	Zero(ctx context.Context, off, length int64, punch bool) error
	// Flush makes completed writes durable.
	Flush(ctx context.Context) error
	// Extents describes the whole image in the given context.
	Extents(ctx context.Context, context string) ([]Extent, error)
	// Close releases the backend's resources.
	Close() error
}

// StreamWriter is implemented by backends that can take a long range from a
// reader in one request (the HTTP backend: one PUT with Content-Range).
type StreamWriter interface {
	WriteFrom(ctx context.Context, r io.Reader, off, length int64) error
}

// ChunkWriter is implemented by backends that take a range from a reader
// as requests of up to step bytes, each payload relayed from r through buf
// while it is read (backend/nbd): the server gets large writes without the
// caller holding them in memory. acked gets the bytes of each request the
// server acknowledged, in order.
type ChunkWriter interface {
	WriteStream(ctx context.Context, r io.Reader, off, length, step int64, buf []byte, acked func(int64)) error
}

// ChunkReader is implemented by backends that send a range to a writer as
// requests of up to step bytes, each reply relayed to w through buf as it
// arrives (backend/nbd): large reads without the caller holding them in
// memory. It returns the bytes written to w; when w fails, its error is
// returned as it is.
type ChunkReader interface {
	ReadStream(ctx context.Context, w io.Writer, off, length, step int64, buf []byte) (int64, error)
}

// StreamReader is implemented by backends that can send a long range to a
// writer in one request (the HTTP backend: one GET with Range).
type StreamReader interface {
	ReadTo(ctx context.Context, w io.Writer, off, length int64) error
}
