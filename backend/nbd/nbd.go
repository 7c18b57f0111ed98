// Package nbd is a backend.Backend over an NBD server (qemu-nbd, nbdkit or
// any other), built on the pure-Go client in package
// github.com/imageio/imageio/nbd.
//
// One Backend holds one NBD connection, shared by all goroutines that use
// it: the client pipelines requests, so several readers and writers keep
// the server busy over that one connection and no pool is needed. Callers
// that want more connections open more Backends.
//
// Zero sends NBD_CMD_WRITE_ZEROES with NO_HOLE unless the caller asks to
// punch and the backend is sparse; when the server lacks WRITE_ZEROES it
// writes zeros from a shared zero buffer. Flush is skipped when the server
// does not advertise it. Extents in the zero context come from
// base:allocation merged with qemu:allocation-depth (depth 0 is a hole), or
// are one data extent when the server has no block status; in the dirty
// context they come from base:allocation merged with the dirty bitmap.
//
// Errors carry the backend sentinels: an NBD error reply EPERM is
// backend.ErrReadOnly, ENOTSUP backend.ErrNotSupported and ENOSPC (the
// server's storage is full) backend.ErrNoSpace.
package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imageio/imageio/backend"
	nbdc "github.com/imageio/imageio/nbd"
)

var _ backend.Backend = (*Backend)(nil)

// Options say how to open an export.
type Options struct {
	// ReadOnly refuses writes even when the export allows them.
	ReadOnly bool
	// Sparse allows Zero with punch to deallocate (a sparse ticket).
	Sparse bool
	// Dirty negotiates a dirty bitmap for ContextDirty extents: the one
	// named by Bitmap, or the export's only bitmap when Bitmap is "".
	Dirty bool
	// Bitmap names the dirty bitmap; it implies Dirty.
	Bitmap string
	// HolesFromDepth reports Hole only where qemu:allocation-depth says a
	// range is unallocated in the top layer, as the reference daemon does:
	// without that context (a raw export) no extent is a hole, because a
	// client may leave holes to a backing file of its own.
	HolesFromDepth bool
	// StreamConns opens this many more connections for WriteStream and
	// ReadStream, one per stream at a time: a streamed request holds its
	// connection while its payload or reply moves, so concurrent streams
	// need their own. 0 streams on the main connection.
	StreamConns int
}

// Backend is an open NBD export.
type Backend struct {
	url    string
	opts   Options
	client *nbdc.Client
	// streamConns are the connections of Options.StreamConns, idle ones
	// in idle.
	streamConns []*nbdc.Client
	idle        chan *nbdc.Client
}

// Open connects to the export at url (any form nbd.ParseURL takes).
func Open(ctx context.Context, url string, opts Options) (*Backend, error) {
	addr, err := nbdc.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("opening NBD backend: %w", err)
	}
	if opts.Bitmap != "" {
		opts.Dirty = true
	}
	contexts := []string{nbdc.ContextBaseAllocation, nbdc.ContextAllocationDepth}
	if opts.Bitmap != "" {
		contexts = append(contexts, nbdc.DirtyBitmapPrefix+opts.Bitmap)
	}
	c, err := nbdc.Dial(ctx, addr, nbdc.Options{
		MetaContexts: contexts,
		DirtyBitmap:  opts.Dirty && opts.Bitmap == "",
	})
	if err != nil {
		return nil, fmt.Errorf("opening NBD backend %s: %w", addr.URL(), mapError(err))
	}
	b := &Backend{url: addr.URL(), opts: opts, client: c}
	if opts.StreamConns > 0 {
		b.idle = make(chan *nbdc.Client, opts.StreamConns)
		for range opts.StreamConns {
			sc, err := nbdc.Dial(ctx, addr, nbdc.Options{})
			if err != nil {
				b.Close()
				return nil, fmt.Errorf("opening NBD backend %s: stream connection: %w", addr.URL(), mapError(err))
			}
			b.streamConns = append(b.streamConns, sc)
			b.idle <- sc
		}
	}
	return b, nil
}

// Client returns the NBD connection, for callers that need more than the
// Backend interface.
func (b *Backend) Client() *nbdc.Client { return b.client }

// Size returns the export size.
func (b *Backend) Size() int64 { return b.client.Size() }

// Caps reports the capabilities: 8 readers and writers; zero and flush as
// the server advertises them; zero extents always (one data extent without
// block status) and dirty extents when a bitmap was negotiated. BlockSize
// is the server's minimum block size.
func (b *Backend) Caps() backend.Caps {
	f := b.client.Flags()
	c := backend.Caps{
		ReadOnly:   b.readOnly(),
		CanZero:    f.CanZero(),
		CanFlush:   f.CanFlush(),
		Extents:    []string{backend.ContextZero},
		MaxReaders: 8,
		MaxWriters: 8,
		BlockSize:  max(int(b.client.BlockSize().Min), 1),
	}
	if b.client.DirtyBitmap() != "" {
		c.Extents = append(c.Extents, backend.ContextDirty)
	}
	return c
}

func (b *Backend) readOnly() bool {
	return b.opts.ReadOnly || b.client.Flags().ReadOnly()
}

func (b *Backend) check(ctx context.Context, off, length int64, write bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
	}
	if write && b.readOnly() {
		return backend.ErrReadOnly
	}
	size := b.client.Size()
	if off < 0 || length < 0 || off > size || length > size-off {
		return fmt.Errorf("range [%d, %d+%d) of export of size %d: %w", off, off, length, size, backend.ErrOutOfRange)
	}
	return nil
}

// mapError adds the backend sentinel matching an NBD client error.
func mapError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
	case errors.Is(err, nbdc.ErrOutOfRange):
		return fmt.Errorf("%w: %w", backend.ErrOutOfRange, err)
	case errors.Is(err, nbdc.ErrReadOnly):
		return fmt.Errorf("%w: %w", backend.ErrReadOnly, err)
	case errors.Is(err, nbdc.ErrNotSupported):
		return fmt.Errorf("%w: %w", backend.ErrNotSupported, err)
	case errors.Is(err, nbdc.ErrNoSpace):
		return fmt.Errorf("%w: %w", backend.ErrNoSpace, err)
	}
	return err
}

// ReadAt reads len(p) bytes at off.
func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := b.check(ctx, off, int64(len(p)), false); err != nil {
		return fmt.Errorf("reading %s: %w", b.url, err)
	}
	if len(p) == 0 {
		return nil
	}
	if err := b.client.ReadAt(ctx, p, off); err != nil {
		return fmt.Errorf("reading %s: %w", b.url, mapError(err))
	}
	return nil
}

// WriteAt writes p at off.
func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := b.check(ctx, off, int64(len(p)), true); err != nil {
		return fmt.Errorf("writing %s: %w", b.url, err)
	}
	if len(p) == 0 {
		return nil
	}
	if err := b.client.WriteAt(ctx, p, off); err != nil {
		return fmt.Errorf("writing %s: %w", b.url, mapError(err))
	}
	return nil
}

// WriteStream writes length bytes read from r at off as NBD requests of
// up to step bytes, each payload relayed from r through buf while it is
// read (see nbd.Client.WriteFrom, also for what a short r leaves behind).
// acked gets the bytes of each request the server acknowledged, in order.
// r is read without regard to ctx: a reader that may block should end
// when ctx does.
func (b *Backend) WriteStream(ctx context.Context, r io.Reader, off, length, step int64, buf []byte, acked func(int64)) error {
	if err := b.check(ctx, off, length, true); err != nil {
		return fmt.Errorf("writing %s: %w", b.url, err)
	}
	c, put, err := b.streamConn(ctx)
	if err != nil {
		return fmt.Errorf("writing %s: %w", b.url, err)
	}
	defer put()
	if err := c.WriteFrom(ctx, r, off, length, step, buf, acked); err != nil {
		return fmt.Errorf("writing %s: %w", b.url, mapError(err))
	}
	return nil
}

// ReadStream writes [off, off+length) to w as NBD reads of up to step
// bytes, each reply relayed to w through buf as it arrives (see
// nbd.Client.ReadTo). It returns the bytes written to w; w's own error is
// returned unwrapped, so the caller can tell it from a source failure.
func (b *Backend) ReadStream(ctx context.Context, w io.Writer, off, length, step int64, buf []byte) (int64, error) {
	if err := b.check(ctx, off, length, false); err != nil {
		return 0, fmt.Errorf("reading %s: %w", b.url, err)
	}
	c, put, err := b.streamConn(ctx)
	if err != nil {
		return 0, fmt.Errorf("reading %s: %w", b.url, err)
	}
	defer put()
	ew := &writeErr{w: w}
	n, err := c.ReadTo(ctx, ew, off, length, step, buf)
	switch {
	case err == nil:
		return n, nil
	case ew.err != nil && err == ew.err:
		return n, err
	}
	return n, fmt.Errorf("reading %s: %w", b.url, mapError(err))
}

// writeErr remembers the error of its writer.
type writeErr struct {
	w   io.Writer
	err error
}

func (e *writeErr) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// streamConn takes a connection for a stream: an idle stream connection
// when the backend has them (put gives it back), else the main one.
func (b *Backend) streamConn(ctx context.Context) (c *nbdc.Client, put func(), err error) {
	if b.idle == nil {
		return b.client, func() {}, nil
	}
	select {
	case c = <-b.idle:
		return c, func() { b.idle <- c }, nil
	case <-ctx.Done():
		return nil, nil, fmt.Errorf("%w: %w", backend.ErrCanceled, ctx.Err())
	}
}

// zeroBuffer is written when the server cannot zero; it is never changed.
var zeroBuffer = make([]byte, 4<<20)

// Zero makes [off, off+length) read as zeros. The range stays allocated
// unless punch is set and the backend is sparse.
func (b *Backend) Zero(ctx context.Context, off, length int64, punch bool) error {
	if err := b.check(ctx, off, length, true); err != nil {
		return fmt.Errorf("zeroing %s: %w", b.url, err)
	}
	if length == 0 {
		return nil
	}
	if b.client.Flags().CanZero() {
		var flags nbdc.ZeroFlags
		if !punch || !b.opts.Sparse {
			flags |= nbdc.ZeroNoHole
		}
		if err := b.client.Zero(ctx, off, length, flags); err != nil {
			return fmt.Errorf("zeroing %s: %w", b.url, mapError(err))
		}
		return nil
	}
	for length > 0 {
		n := min(length, int64(len(zeroBuffer)))
		if err := b.client.WriteAt(ctx, zeroBuffer[:n], off); err != nil {
			return fmt.Errorf("zeroing %s by writing zeros: %w", b.url, mapError(err))
		}
		off, length = off+n, length-n
	}
	return nil
}

// Flush makes completed writes durable; it does nothing when the server
// does not advertise NBD_CMD_FLUSH.
func (b *Backend) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flushing %s: %w: %w", b.url, backend.ErrCanceled, err)
	}
	if !b.client.Flags().CanFlush() {
		return nil
	}
	// Writes completed on one connection are not promised durable by a
	// flush on another: flush each.
	for _, c := range append([]*nbdc.Client{b.client}, b.streamConns...) {
		if err := c.Flush(ctx); err != nil {
			return fmt.Errorf("flushing %s: %w", b.url, mapError(err))
		}
	}
	return nil
}

// Extents describes the whole export in ContextZero ({zero, hole}) or, when
// a dirty bitmap was negotiated, ContextDirty ({dirty, zero}).
func (b *Backend) Extents(ctx context.Context, name string) ([]backend.Extent, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading extents of %s: %w: %w", b.url, backend.ErrCanceled, err)
	}
	switch name {
	case backend.ContextZero:
	case backend.ContextDirty:
		if b.client.DirtyBitmap() == "" {
			return nil, fmt.Errorf("reading dirty extents of %s: %w: no dirty bitmap", b.url, backend.ErrNotSupported)
		}
	default:
		return nil, fmt.Errorf("reading %q extents of %s: %w", name, b.url, backend.ErrNotSupported)
	}
	size := b.client.Size()
	if size == 0 {
		return nil, nil
	}
	ext, err := b.client.Extents(ctx, 0, size)
	if err != nil {
		return nil, fmt.Errorf("reading extents of %s: %w", b.url, mapError(err))
	}
	depth := b.client.HasMetaContext(nbdc.ContextAllocationDepth)
	out := make([]backend.Extent, 0, len(ext))
	for _, e := range ext {
		x := backend.Extent{Start: e.Start, Length: e.Length, Zero: e.Zero || e.Hole}
		if name == backend.ContextZero {
			x.Hole = e.Hole && (!b.opts.HolesFromDepth || depth)
		} else {
			x.Dirty = e.Dirty
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Zero == x.Zero && last.Hole == x.Hole && last.Dirty == x.Dirty && last.End() == x.Start {
				last.Length += x.Length
				continue
			}
		}
		out = append(out, x)
	}
	return out, nil
}

// Close disconnects from the server.
func (b *Backend) Close() error {
	var first error
	for _, c := range append([]*nbdc.Client{b.client}, b.streamConns...) {
		if err := c.Close(); err != nil && first == nil {
			first = fmt.Errorf("closing %s: %w", b.url, err)
		}
	}
	return first
}
