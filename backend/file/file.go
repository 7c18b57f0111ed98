// Package file is a backend.Backend over a regular file or a block device.
//
// The image is opened with O_DIRECT when the file system allows it, so
// transfers do not fill the page cache. Direct I/O needs the offset, length
// and memory address of each request aligned to the device's block size,
// which Open probes with 1, 512 and 4096-byte reads (4096 when all fail).
// Requests that are not aligned go through pooled aligned bounce buffers;
// an unaligned write read-modify-writes its partial first and last blocks
// under a per-block lock, so concurrent writers of disjoint bytes in one
// block cannot undo each other. The last partial page of an image whose
// size is not a multiple of 4096 is read and written through a second,
// buffered descriptor, so no direct write ever extends the file. When
// O_DIRECT is refused, all I/O is buffered.
//
// Zero uses fallocate: ZERO_RANGE, else PUNCH_HOLE then allocate, else
// writing zeros; with punch on a sparse backend, PUNCH_HOLE. Block devices
// use fallocate ZERO_RANGE, else the BLKZEROOUT ioctl. Flush is fsync.
// Extents reports the whole image as one data extent.
//
// A write, zero or flush that fails with ENOSPC or EDQUOT returns an error
// matching backend.ErrNoSpace.
//
// A Backend is safe for concurrent use. Caps advise 8 readers and, for a
// regular file, 1 writer (8 for a block device), as the reference daemon.
package file

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/imageio/imageio/backend"
)

var _ backend.Backend = (*Backend)(nil)

const (
	// pageSize is the alignment unit used for direct I/O when the device
	// needs any alignment. It is a multiple of every probed block size and
	// keeps buffered and direct I/O on different pages.
	pageSize = 4096
	// bounceSize is the size of pooled bounce buffers.
	bounceSize = 1 << 20
	// lockStripes is the number of per-block locks for read-modify-write.
	lockStripes = 256
)

// Options say how to open an image.
type Options struct {
	// ReadOnly opens the image for reading only; writes fail with
	// backend.ErrReadOnly.
	ReadOnly bool
	// Sparse allows Zero with punch to deallocate storage (a sparse
	// ticket). Without it, Zero keeps the storage allocated.
	Sparse bool

	noDirect bool // tests: open without O_DIRECT
}

// Backend is an open image file or block device.
type Backend struct {
	path      string
	opts      Options
	size      int64
	blockDev  bool
	direct    bool  // f uses O_DIRECT
	blockSize int   // probed device block size; 1 when buffered
	unit      int64 // alignment of direct I/O: pageSize, or 1 when buffered
	directEnd int64 // [0, directEnd) uses f, [directEnd, size) uses tail

	f    *os.File // O_DIRECT when direct
	tail *os.File // buffered; == f when not direct

	locks [lockStripes]sync.Mutex // read-modify-write locks by block

	noZeroRange atomic.Bool // fallocate ZERO_RANGE is not supported
	noPunch     atomic.Bool // fallocate PUNCH_HOLE is not supported
	noAllocate  atomic.Bool // plain fallocate is not supported
	noZeroOut   atomic.Bool // BLKZEROOUT is not supported
}

// Open opens the image at path.
func Open(path string, opts Options) (*Backend, error) {
	flag := os.O_RDWR
	if opts.ReadOnly {
		flag = os.O_RDONLY
	}
	b := &Backend{path: path, opts: opts}
	f, direct, err := openFile(path, flag, !opts.noDirect)
	if err != nil {
		return nil, fmt.Errorf("opening %q: %w", path, err)
	}
	b.f, b.direct = f, direct
	if err := b.init(flag); err != nil {
		b.Close()
		return nil, fmt.Errorf("opening %q: %w", path, err)
	}
	return b, nil
}

func (b *Backend) init(flag int) error {
	fi, err := b.f.Stat()
	if err != nil {
		return err
	}
	switch mode := fi.Mode(); {
	case mode.IsRegular():
		b.size = fi.Size()
	case mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0:
		b.blockDev = true
		if b.size, err = b.f.Seek(0, io.SeekEnd); err != nil {
			return fmt.Errorf("finding the size of the block device: %w", err)
		}
	default:
		return fmt.Errorf("not a regular file or block device (%s)", mode.Type())
	}
	b.blockSize, b.unit, b.tail = 1, 1, b.f
	if b.direct {
		// Even when the probe finds no alignment needed (it cannot see
		// through holes on every file system), page-aligned direct I/O
		// is always safe.
		b.blockSize = probeBlockSize(b.f, b.size)
		b.unit = pageSize
	}
	b.directEnd = b.size
	if b.unit > 1 {
		b.directEnd = b.size &^ (b.unit - 1)
	}
	if b.directEnd < b.size {
		if b.tail, err = os.OpenFile(b.path, flag, 0); err != nil {
			b.tail = nil
			return fmt.Errorf("opening for buffered I/O: %w", err)
		}
	}
	return nil
}

// Path returns the path the image was opened with.
func (b *Backend) Path() string { return b.path }

// Direct reports whether the image uses direct I/O.
func (b *Backend) Direct() bool { return b.direct }

// Size returns the image size: the file size, or the block device size.
func (b *Backend) Size() int64 { return b.size }

// Caps reports the capabilities: zero, flush, zero extents (one data
// extent), 8 readers, 1 writer for regular files and 8 for block devices.
func (b *Backend) Caps() backend.Caps {
	writers := 1
	if b.blockDev {
		writers = 8
	}
	return backend.Caps{
		ReadOnly:   b.opts.ReadOnly,
		CanZero:    true,
		CanFlush:   true,
		Extents:    []string{backend.ContextZero},
		MaxReaders: 8,
		MaxWriters: writers,
		BlockSize:  b.blockSize,
	}
}

func (b *Backend) check(ctx context.Context, off, length int64, write bool) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
	}
	if write && b.opts.ReadOnly {
		return backend.ErrReadOnly
	}
	if off < 0 || length < 0 || off > b.size || length > b.size-off {
		return fmt.Errorf("range [%d, %d+%d) of image of size %d: %w", off, off, length, b.size, backend.ErrOutOfRange)
	}
	return nil
}

// ReadAt reads len(p) bytes at off.
func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := b.check(ctx, off, int64(len(p)), false); err != nil {
		return fmt.Errorf("reading %q: %w", b.path, err)
	}
	if n := b.directEnd - off; n > 0 {
		k := min(int64(len(p)), n)
		if err := b.readDirect(ctx, p[:k], off); err != nil {
			return fmt.Errorf("reading %q at %d: %w", b.path, off, err)
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		if _, err := b.tail.ReadAt(p, off); err != nil {
			return fmt.Errorf("reading %q at %d: %w", b.path, off, err)
		}
	}
	return nil
}

// WriteAt writes p at off.
func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := b.check(ctx, off, int64(len(p)), true); err != nil {
		return fmt.Errorf("writing %q: %w", b.path, err)
	}
	if n := b.directEnd - off; n > 0 {
		k := min(int64(len(p)), n)
		if err := b.writeDirect(ctx, p[:k], off); err != nil {
			return fmt.Errorf("writing %q at %d: %w", b.path, off, noSpace(err))
		}
		p, off = p[k:], off+k
	}
	if len(p) > 0 {
		if _, err := b.tail.WriteAt(p, off); err != nil {
			return fmt.Errorf("writing %q at %d: %w", b.path, off, noSpace(err))
		}
	}
	return nil
}

func (b *Backend) aligned(off int64) bool { return off&(b.unit-1) == 0 }
func (b *Backend) alignDown(off int64) int64 {
	return off &^ (b.unit - 1)
}

// sameAlignment reports whether p's address and off are equally
// misaligned, so that p[k:] is aligned exactly where off+k is.
func (b *Backend) sameAlignment(p []byte, off int64) bool {
	addr := int64(uintptr(unsafe.Pointer(unsafe.SliceData(p))))
	return (addr-off)&(b.unit-1) == 0
}

// split cuts [off, off+n) into a partial head block, aligned middle blocks
// and a partial tail block; lengths may be zero.
func (b *Backend) split(off, n int64) (head, mid, tail int64) {
	end := off + n
	if b.alignDown(off) == b.alignDown(end-1) && (!b.aligned(off) || !b.aligned(end)) {
		return n, 0, 0 // inside one block, partial
	}
	if !b.aligned(off) {
		head = b.unit - off&(b.unit-1)
	}
	tail = end & (b.unit - 1)
	return head, n - head - tail, tail
}

// readDirect reads from the direct region, through bounce buffers where p,
// off or the length are not aligned.
func (b *Backend) readDirect(ctx context.Context, p []byte, off int64) error {
	if b.unit == 1 || (b.aligned(off) && b.aligned(int64(len(p))) && b.sameAlignment(p, off)) {
		return readFull(b.f, p, off)
	}
	head, mid, _ := b.split(off, int64(len(p)))
	if b.sameAlignment(p, off) && mid > 0 {
		// Bounce only the partial blocks.
		if head > 0 {
			if err := b.readBounce(ctx, p[:head], off); err != nil {
				return err
			}
		}
		if err := readFull(b.f, p[head:head+mid], off+head); err != nil {
			return err
		}
		if rest := p[head+mid:]; len(rest) > 0 {
			return b.readBounce(ctx, rest, off+head+mid)
		}
		return nil
	}
	return b.readBounce(ctx, p, off)
}

func (b *Backend) readBounce(ctx context.Context, p []byte, off int64) error {
	buf := getBounce()
	defer putBounce(buf)
	for len(p) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
		}
		start := b.alignDown(off)
		in := off - start
		n := min(int64(len(p)), bounceSize-in)
		stop := (off + n + b.unit - 1) &^ (b.unit - 1)
		if err := readFull(b.f, (*buf)[:stop-start], start); err != nil {
			return err
		}
		copy(p[:n], (*buf)[in:])
		p, off = p[n:], off+n
	}
	return nil
}

// writeDirect writes to the direct region: partial blocks by
// read-modify-write under the block's lock, full blocks directly or through
// a bounce buffer.
func (b *Backend) writeDirect(ctx context.Context, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	if b.unit == 1 || (b.aligned(off) && b.aligned(int64(len(p))) && b.sameAlignment(p, off)) {
		return writeFull(b.f, p, off)
	}
	head, mid, tail := b.split(off, int64(len(p)))
	if head > 0 {
		if err := b.modifyBlock(off, p[:head]); err != nil {
			return err
		}
	}
	if mid > 0 {
		q, qoff := p[head:head+mid], off+head
		if b.sameAlignment(q, qoff) {
			if err := writeFull(b.f, q, qoff); err != nil {
				return err
			}
		} else if err := b.writeBounce(ctx, q, qoff); err != nil {
			return err
		}
	}
	if tail > 0 {
		return b.modifyBlock(off+head+mid, p[head+mid:])
	}
	return nil
}

// writeBounce writes whole aligned blocks from an unaligned buffer.
func (b *Backend) writeBounce(ctx context.Context, p []byte, off int64) error {
	buf := getBounce()
	defer putBounce(buf)
	for len(p) > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
		}
		n := copy(*buf, p)
		if err := writeFull(b.f, (*buf)[:n], off); err != nil {
			return err
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// modifyBlock writes data (nil: zeros) at off, inside one block, by
// reading the block, changing it and writing it back under its lock.
func (b *Backend) modifyBlock(off int64, data []byte) error {
	return b.modifyBlockN(off, int64(len(data)), data)
}

func (b *Backend) modifyBlockN(off, n int64, data []byte) error {
	start := b.alignDown(off)
	mu := &b.locks[(start/b.unit)%lockStripes]
	buf := getBlock()
	defer putBlock(buf)
	blk := (*buf)[:b.unit]
	mu.Lock()
	defer mu.Unlock()
	if err := readFull(b.f, blk, start); err != nil {
		return fmt.Errorf("reading block at %d for read-modify-write: %w", start, err)
	}
	if data == nil {
		clear(blk[off-start : off-start+n])
	} else {
		copy(blk[off-start:], data)
	}
	if err := writeFull(b.f, blk, start); err != nil {
		return fmt.Errorf("writing block at %d for read-modify-write: %w", start, err)
	}
	return nil
}

// Zero makes [off, off+length) read as zeros. With punch on a sparse
// backend the range is deallocated where the file system allows it.
func (b *Backend) Zero(ctx context.Context, off, length int64, punch bool) error {
	if err := b.check(ctx, off, length, true); err != nil {
		return fmt.Errorf("zeroing %q: %w", b.path, err)
	}
	punch = punch && b.opts.Sparse
	if err := b.zero(ctx, off, length, punch); err != nil {
		return fmt.Errorf("zeroing %q at %d length %d: %w", b.path, off, length, noSpace(err))
	}
	return nil
}

func (b *Backend) zero(ctx context.Context, off, length int64, punch bool) error {
	if n := b.directEnd - off; n > 0 && length > 0 {
		k := min(length, n)
		if b.unit == 1 {
			if err := b.zeroRange(ctx, b.f, off, k, punch); err != nil {
				return err
			}
		} else {
			head, mid, tail := b.split(off, k)
			if head > 0 {
				if err := b.modifyBlockN(off, head, nil); err != nil {
					return err
				}
			}
			if mid > 0 {
				if err := b.zeroRange(ctx, b.f, off+head, mid, punch); err != nil {
					return err
				}
			}
			if tail > 0 {
				if err := b.modifyBlockN(off+head+mid, tail, nil); err != nil {
					return err
				}
			}
		}
		off, length = off+k, length-k
	}
	if length > 0 {
		// The buffered tail is less than a page: write zeros.
		return writeZeros(ctx, b.tail, off, length)
	}
	return nil
}

// zeroRange zeroes an aligned range of f, trying the cheapest way first
// and remembering which ways the file system refused.
func (b *Backend) zeroRange(ctx context.Context, f *os.File, off, length int64, punch bool) error {
	if b.blockDev {
		return b.zeroBlockDevice(ctx, f, off, length, punch)
	}
	if punch {
		if done, err := attempt(&b.noPunch, func() error { return punchHole(f, off, length) }); done || err != nil {
			return err
		}
	}
	if done, err := attempt(&b.noZeroRange, func() error { return zeroRange(f, off, length) }); done || err != nil {
		return err
	}
	if !b.noAllocate.Load() {
		done, err := attempt(&b.noPunch, func() error { return punchHole(f, off, length) })
		if err != nil {
			return err
		}
		if done {
			if _, err := attempt(&b.noAllocate, func() error { return allocate(f, off, length) }); err != nil {
				return err
			}
			return nil // allocated, or a hole, which reads as zeros
		}
	}
	return writeZeros(ctx, f, off, length)
}

func (b *Backend) zeroBlockDevice(ctx context.Context, f *os.File, off, length int64, punch bool) error {
	if punch {
		if done, err := attempt(&b.noPunch, func() error { return punchHole(f, off, length) }); done || err != nil {
			return err
		}
	}
	if done, err := attempt(&b.noZeroRange, func() error { return zeroRange(f, off, length) }); done || err != nil {
		return err
	}
	if done, err := attempt(&b.noZeroOut, func() error { return zeroOut(f, off, length) }); done || err != nil {
		return err
	}
	return writeZeros(ctx, f, off, length)
}

// attempt runs one way of zeroing unless the file system refused it
// before (refused set). It reports whether that way did the work; an
// errUnsupported sets refused and is not an error.
func attempt(refused *atomic.Bool, zero func() error) (done bool, err error) {
	if refused.Load() {
		return false, nil
	}
	err = zero()
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, errUnsupported) {
		return false, err
	}
	refused.Store(true)
	return false, nil
}

// Flush makes completed writes durable (fsync).
func (b *Backend) Flush(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("flushing %q: %w: %w", b.path, backend.ErrCanceled, err)
	}
	if err := b.f.Sync(); err != nil {
		return fmt.Errorf("flushing %q: %w", b.path, noSpace(err))
	}
	return nil
}

// Extents returns one data extent covering the image; the file backend
// does not look for holes, as the reference daemon.
func (b *Backend) Extents(ctx context.Context, name string) ([]backend.Extent, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading extents of %q: %w: %w", b.path, backend.ErrCanceled, err)
	}
	if name != backend.ContextZero {
		return nil, fmt.Errorf("reading %q extents of %q: %w", name, b.path, backend.ErrNotSupported)
	}
	if b.size == 0 {
		return nil, nil
	}
	return []backend.Extent{{Start: 0, Length: b.size}}, nil
}

// Close closes the image.
func (b *Backend) Close() error {
	var errs []error
	if b.tail != nil && b.tail != b.f {
		errs = append(errs, b.tail.Close())
	}
	if b.f != nil {
		errs = append(errs, b.f.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("closing %q: %w", b.path, err)
	}
	return nil
}

// noSpace adds backend.ErrNoSpace to an error of the file system being
// full (ENOSPC) or of a disk quota being exhausted (EDQUOT).
func noSpace(err error) error {
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		return fmt.Errorf("%w: %w", backend.ErrNoSpace, err)
	}
	return err
}

// readFull reads len(p) bytes at off; reaching the end of the file first is
// an error.
func readFull(f *os.File, p []byte, off int64) error {
	n, err := f.ReadAt(p, off)
	if err == io.EOF && n == len(p) {
		err = nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

func writeFull(f *os.File, p []byte, off int64) error {
	_, err := f.WriteAt(p, off)
	return err
}

// writeZeros writes zeros over [off, off+length) from the shared zero
// buffer.
func writeZeros(ctx context.Context, f *os.File, off, length int64) error {
	for length > 0 {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%w: %w", backend.ErrCanceled, err)
		}
		n := min(length, int64(len(zeroBuffer)))
		if err := writeFull(f, zeroBuffer[:n], off); err != nil {
			return err
		}
		off, length = off+n, length-n
	}
	return nil
}

// zeroBuffer is never written; it is aligned for direct I/O.
var zeroBuffer = AlignedBuffer(bounceSize)

var (
	bouncePool = sync.Pool{New: func() any { b := AlignedBuffer(bounceSize); return &b }}
	blockPool  = sync.Pool{New: func() any { b := AlignedBuffer(pageSize); return &b }}
)

func getBounce() *[]byte  { return bouncePool.Get().(*[]byte) }
func putBounce(b *[]byte) { bouncePool.Put(b) }
func getBlock() *[]byte   { return blockPool.Get().(*[]byte) }
func putBlock(b *[]byte)  { blockPool.Put(b) }

// AlignedBuffer returns a zeroed buffer of n bytes whose address is aligned
// to 4096 bytes. Callers that read into or write from such buffers at
// aligned offsets get direct I/O without bounce buffers.
func AlignedBuffer(n int) []byte {
	b := make([]byte, n+pageSize)
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (pageSize - 1))
	if off != 0 {
		off = pageSize - off
	}
	return b[off : off+n : off+n]
}
