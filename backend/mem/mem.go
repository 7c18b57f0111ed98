// Package mem is an in-memory backend.Backend for tests.
//
// The image is kept sparse: only chunks of ChunkSize bytes that were written
// or zeroed without punching are stored, so a 32 GiB image holding little
// data costs little memory. Extents in the zero context report chunks never
// stored as holes, chunks zeroed without punch as allocated zeros, and
// written chunks as data. When the backend is created with ContextDirty in
// its Caps, every chunk written or zeroed since creation is reported dirty.
//
// A Backend is safe for concurrent use; it also counts the operations done on
// it (Stats), so tests can check what a caller did.
package mem

import (
	"context"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/imageio/imageio/backend"
)

// ChunkSize is the allocation unit of the sparse image and the granularity
// of its extents.
const ChunkSize = 64 << 10

var _ backend.Backend = (*Backend)(nil)

// DefaultCaps are the capabilities of a backend made by New: writable,
// efficient zero, flush, zero extents, 8 readers and 8 writers.
func DefaultCaps() backend.Caps {
	return backend.Caps{
		CanZero:    true,
		CanFlush:   true,
		Extents:    []string{backend.ContextZero},
		MaxReaders: 8,
		MaxWriters: 8,
		BlockSize:  1,
	}
}

// Stats counts the operations done on a Backend.
type Stats struct {
	Reads, Writes, Zeros, Flushes, Extents int
	ReadBytes, WriteBytes, ZeroBytes       int64
}

// chunk is one stored chunk; data == nil means allocated zeros.
type chunk struct {
	data []byte
}

// Backend is an in-memory image.
type Backend struct {
	size int64
	caps backend.Caps

	// mu guards the fields that follow.
	mu     sync.RWMutex
	chunks map[int64]*chunk // by chunk index
	dirty  map[int64]bool   // by chunk index; nil unless ContextDirty
	stats  Stats            // all but the read counters
	closed bool

	reads, readBytes atomic.Int64
}

// New returns an image of size bytes that reads as zeros (all holes) with
// DefaultCaps.
func New(size int64) *Backend {
	return NewWithCaps(size, DefaultCaps())
}

// NewWithCaps returns an empty image of size bytes with the given
// capabilities. ReadOnly makes writes fail with backend.ErrReadOnly;
// Extents selects the contexts Extents accepts (ContextDirty turns on dirty
// tracking). A zero BlockSize is taken as 1.
func NewWithCaps(size int64, caps backend.Caps) *Backend {
	if caps.BlockSize == 0 {
		caps.BlockSize = 1
	}
	caps.Extents = slices.Clone(caps.Extents)
	b := &Backend{size: size, caps: caps, chunks: make(map[int64]*chunk)}
	if caps.HasExtents(backend.ContextDirty) {
		b.dirty = make(map[int64]bool)
	}
	return b
}

// NewWithData returns an image holding a copy of data, with DefaultCaps.
// Chunks of data that are all zeros are not stored, so they read back as
// holes, like a sparse file.
func NewWithData(data []byte) *Backend {
	b := New(int64(len(data)))
	b.load(data)
	return b
}

// NewWithDataCaps is NewWithData with the given capabilities. The initial
// data is not dirty.
func NewWithDataCaps(data []byte, caps backend.Caps) *Backend {
	b := NewWithCaps(int64(len(data)), caps)
	b.load(data)
	return b
}

func (b *Backend) load(data []byte) {
	for off := 0; off < len(data); off += ChunkSize {
		p := data[off:min(off+ChunkSize, len(data))]
		if isZero(p) {
			continue
		}
		c := &chunk{data: make([]byte, ChunkSize)}
		copy(c.data, p)
		b.chunks[int64(off/ChunkSize)] = c
	}
}

// Size returns the image size.
func (b *Backend) Size() int64 { return b.size }

// Caps returns the capabilities given at creation.
func (b *Backend) Caps() backend.Caps {
	c := b.caps
	c.Extents = slices.Clone(c.Extents)
	return c
}

// check validates a request; it must be called with mu held.
func (b *Backend) check(ctx context.Context, off, length int64, write bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
	}
	if b.closed {
		return os.ErrClosed
	}
	if write && b.caps.ReadOnly {
		return backend.ErrReadOnly
	}
	if off < 0 || length < 0 || off > b.size || length > b.size-off {
		return fmt.Errorf("range [%d, %d+%d) of image of size %d: %w", off, off, length, b.size, backend.ErrOutOfRange)
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if err := b.check(ctx, off, int64(len(p)), false); err != nil {
		return fmt.Errorf("reading: %w", err)
	}
	b.reads.Add(1)
	b.readBytes.Add(int64(len(p)))
	for len(p) > 0 {
		idx, in := off/ChunkSize, int(off%ChunkSize)
		n := min(len(p), ChunkSize-in)
		if c := b.chunks[idx]; c != nil && c.data != nil {
			copy(p[:n], c.data[in:in+n])
		} else {
			clear(p[:n])
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// WriteAt writes p at off.
func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(ctx, off, int64(len(p)), true); err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	b.stats.Writes++
	b.stats.WriteBytes += int64(len(p))
	for len(p) > 0 {
		idx, in := off/ChunkSize, int(off%ChunkSize)
		n := min(len(p), ChunkSize-in)
		c := b.chunks[idx]
		if c == nil {
			c = &chunk{}
			b.chunks[idx] = c
		}
		if c.data == nil {
			c.data = make([]byte, ChunkSize)
		}
		copy(c.data[in:in+n], p[:n])
		b.markDirty(idx)
		p, off = p[n:], off+int64(n)
	}
	return nil
}

func (b *Backend) markDirty(idx int64) {
	if b.dirty != nil {
		b.dirty[idx] = true
	}
}

// Zero makes [off, off+length) read as zeros. With punch, whole chunks in
// the range become holes; without it they stay allocated as zeros.
func (b *Backend) Zero(ctx context.Context, off, length int64, punch bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(ctx, off, length, true); err != nil {
		return fmt.Errorf("zeroing: %w", err)
	}
	b.stats.Zeros++
	b.stats.ZeroBytes += length
	for length > 0 {
		idx, in := off/ChunkSize, off%ChunkSize
		n := min(length, ChunkSize-in)
		c := b.chunks[idx]
		whole := in == 0 && (n == ChunkSize || off+n == b.size)
		switch {
		case whole && punch:
			delete(b.chunks, idx)
		case whole:
			b.chunks[idx] = &chunk{}
		case c != nil && c.data != nil:
			clear(c.data[in : in+n])
		case c == nil && !punch:
			b.chunks[idx] = &chunk{}
		}
		b.markDirty(idx)
		off, length = off+n, length-n
	}
	return nil
}

// Flush does nothing but count the call; it fails only on a canceled
// context or a closed backend.
func (b *Backend) Flush(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(ctx, 0, 0, false); err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	b.stats.Flushes++
	return nil
}

// Extents describes the whole image in ContextZero, or in ContextDirty when
// the backend was made with it.
func (b *Backend) Extents(ctx context.Context, name string) ([]backend.Extent, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.check(ctx, 0, 0, false); err != nil {
		return nil, fmt.Errorf("reading extents: %w", err)
	}
	if !b.caps.HasExtents(name) {
		return nil, fmt.Errorf("reading %q extents: %w", name, backend.ErrNotSupported)
	}
	b.stats.Extents++
	idxs := make([]int64, 0, len(b.chunks)+len(b.dirty))
	for i := range b.chunks {
		idxs = append(idxs, i)
	}
	if name == backend.ContextDirty {
		for i := range b.dirty {
			if b.chunks[i] == nil {
				idxs = append(idxs, i)
			}
		}
	}
	slices.Sort(idxs)

	var out []backend.Extent
	add := func(e backend.Extent) {
		if e.Length <= 0 {
			return
		}
		if n := len(out); n > 0 {
			last := &out[n-1]
			if last.Zero == e.Zero && last.Hole == e.Hole && last.Dirty == e.Dirty {
				last.Length += e.Length
				return
			}
		}
		out = append(out, e)
	}
	hole := backend.Extent{Zero: true, Hole: name == backend.ContextZero}
	var pos int64
	for _, i := range idxs {
		start := i * ChunkSize
		end := min(start+ChunkSize, b.size)
		gap := hole
		gap.Start, gap.Length = pos, start-pos
		add(gap)
		c := b.chunks[i]
		e := backend.Extent{Start: start, Length: end - start, Zero: c == nil || c.data == nil}
		if name == backend.ContextZero {
			e.Hole = c == nil
		} else {
			e.Dirty = b.dirty[i]
		}
		add(e)
		pos = end
	}
	gap := hole
	gap.Start, gap.Length = pos, b.size-pos
	add(gap)
	return out, nil
}

// Close releases the image; later calls fail.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	b.chunks = nil
	b.dirty = nil
	return nil
}

// Stats returns the operation counts so far.
func (b *Backend) Stats() Stats {
	b.mu.RLock()
	defer b.mu.RUnlock()
	s := b.stats
	s.Reads = int(b.reads.Load())
	s.ReadBytes = b.readBytes.Load()
	return s
}

// Bytes returns a copy of the whole image content. It is meant for small
// test images.
func (b *Backend) Bytes() []byte {
	b.mu.RLock()
	defer b.mu.RUnlock()
	out := make([]byte, b.size)
	for i, c := range b.chunks {
		if c.data != nil {
			start := i * ChunkSize
			copy(out[start:], c.data[:min(ChunkSize, b.size-start)])
		}
	}
	return out
}

// ClearDirty marks every chunk clean, like starting a new dirty bitmap.
func (b *Backend) ClearDirty() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dirty != nil {
		clear(b.dirty)
	}
}

func isZero(p []byte) bool {
	for _, c := range p {
		if c != 0 {
			return false
		}
	}
	return true
}
