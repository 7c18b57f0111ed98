// Package checksum computes the block checksum of an image, the same value
// the reference imageio daemon returns from GET /images/ID/checksum and its
// client's checksum() (its blkhash module).
//
// The image is split into blocks of BlockSize bytes (the last one may be
// shorter). Each block is hashed on its own, digest_i = H(block_i), and the
// result is H(digest_0 || digest_1 || ...), in hex. blake2b and blake2s use
// 32-byte digests for both steps; every other algorithm its default size.
//
// Compute reads an image through a backend.Backend with a few goroutines in
// parallel, keeping the digests in block order. Areas the backend reports as
// zero are not read, and blocks read as all zeros are not hashed: both use
// the hash of a zero block, computed once per algorithm and size.
package checksum

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha3"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
	"strings"
	"sync"
	"unsafe"

	"github.com/imageio/imageio/backend"
	"golang.org/x/crypto/blake2b"
	"golang.org/x/crypto/blake2s"
	"golang.org/x/sync/errgroup"
)

// Defaults and limits, as in the reference daemon.
const (
	DefaultAlgorithm = "blake2b"
	DefaultBlockSize = 4 << 20
	MinBlockSize     = 1 << 20
	MaxBlockSize     = 16 << 20
	BlockAlignment   = 4096
)

// DefaultWorkers is how many blocks Compute reads and hashes at once unless
// told otherwise.
const DefaultWorkers = 4

// ErrInvalid is matched (errors.Is) by the errors Validate returns.
var ErrInvalid = errors.New("invalid checksum parameters")

// InvalidError is a bad algorithm or block size. Msg is the reference
// daemon's text for the client (for example "Block size is not aligned to
// 4096").
type InvalidError struct {
	Msg string
}

func (e *InvalidError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrInvalid) true.
func (e *InvalidError) Is(target error) bool { return target == ErrInvalid }

// Result is the JSON object of the checksum endpoint.
type Result struct {
	Algorithm string `json:"algorithm"`
	BlockSize int    `json:"block_size"`
	Checksum  string `json:"checksum"`
}

var algorithms = map[string]func() hash.Hash{
	"blake2b":    newBlake2b,
	"blake2s":    newBlake2s,
	"md5":        md5.New,
	"sha1":       sha1.New,
	"sha224":     sha256.New224,
	"sha256":     sha256.New,
	"sha384":     sha512.New384,
	"sha512":     sha512.New,
	"sha512_224": sha512.New512_224,
	"sha512_256": sha512.New512_256,
	"sha3_224":   func() hash.Hash { return sha3.New224() },
	"sha3_256":   func() hash.Hash { return sha3.New256() },
	"sha3_384":   func() hash.Hash { return sha3.New384() },
	"sha3_512":   func() hash.Hash { return sha3.New512() },
}

func newBlake2b() hash.Hash {
	h, _ := blake2b.New256(nil) // fails only for keys over 64 bytes
	return h
}

func newBlake2s() hash.Hash {
	h, _ := blake2s.New256(nil) // fails only for keys over 32 bytes
	return h
}

// Algorithms returns the supported algorithm names, sorted.
func Algorithms() []string {
	names := make([]string, 0, len(algorithms))
	for n := range algorithms {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Validate checks an algorithm name and a block size. Its errors are
// *InvalidError with the reference daemon's messages.
func Validate(algorithm string, blockSize int) error {
	if _, ok := algorithms[algorithm]; !ok {
		quoted := make([]string, 0, len(algorithms))
		for _, n := range Algorithms() {
			quoted = append(quoted, "'"+n+"'")
		}
		return &InvalidError{Msg: fmt.Sprintf("Unsupported value '%s' for 'algorithm', expecting one of [%s]",
			algorithm, strings.Join(quoted, ", "))}
	}
	if blockSize < MinBlockSize || blockSize > MaxBlockSize {
		return &InvalidError{Msg: fmt.Sprintf("Block size out of allowed range: %d-%d", MinBlockSize, MaxBlockSize)}
	}
	if blockSize%BlockAlignment != 0 {
		return &InvalidError{Msg: fmt.Sprintf("Block size is not aligned to %d", BlockAlignment)}
	}
	return nil
}

// zeroDigests caches H(zero block) by algorithm and block size.
var zeroDigests = struct {
	// mu guards m.
	mu sync.Mutex
	m  map[zeroKey][]byte
}{m: make(map[zeroKey][]byte)}

type zeroKey struct {
	alg  string
	size int
}

// zeroChunk is hashed repeatedly to hash a zero block.
var zeroChunk [64 << 10]byte

// zeroDigest returns H(size zero bytes), cached for full blocks.
func zeroDigest(alg string, size int, cache bool) []byte {
	k := zeroKey{alg, size}
	if cache {
		zeroDigests.mu.Lock()
		d, ok := zeroDigests.m[k]
		zeroDigests.mu.Unlock()
		if ok {
			return d
		}
	}
	h := algorithms[alg]()
	for n := size; n > 0; n -= len(zeroChunk) {
		h.Write(zeroChunk[:min(n, len(zeroChunk))])
	}
	d := h.Sum(nil)
	if cache {
		zeroDigests.mu.Lock()
		zeroDigests.m[k] = d
		zeroDigests.mu.Unlock()
	}
	return d
}

// IsZero reports whether p holds only zero bytes. It runs at memory speed.
func IsZero(p []byte) bool {
	if len(p) == 0 {
		return true
	}
	if p[0] != 0 || p[len(p)-1] != 0 {
		return false
	}
	// Every byte equals the one before it and the first is zero. The
	// overlapping compare uses the runtime's vectorised memequal.
	return string(p[1:]) == string(p[:len(p)-1])
}

// Options tune ComputeWithOptions.
type Options struct {
	Algorithm string // default DefaultAlgorithm
	BlockSize int    // default DefaultBlockSize
	// Workers is how many blocks are read and hashed at once; default
	// DefaultWorkers, capped by the backend's MaxReaders.
	Workers int
	// Progress, if set, is called from the workers with the number of
	// bytes done (read or known to be zero).
	Progress func(n int64)
}

// Compute returns the block checksum of the whole image b.
func Compute(ctx context.Context, b backend.Backend, algorithm string, blockSize int) (Result, error) {
	return ComputeWithOptions(ctx, b, Options{Algorithm: algorithm, BlockSize: blockSize})
}

// span is a range of a block that must be read; offsets are in the image.
type span struct{ off, len int64 }

// slot is the state of one worker: a block buffer and a block hasher.
type slot struct {
	buf []byte
	h   hash.Hash
}

// ComputeWithOptions returns the block checksum of the whole image b.
func ComputeWithOptions(ctx context.Context, b backend.Backend, opts Options) (Result, error) {
	if opts.Algorithm == "" {
		opts.Algorithm = DefaultAlgorithm
	}
	if opts.BlockSize == 0 {
		opts.BlockSize = DefaultBlockSize
	}
	if err := Validate(opts.Algorithm, opts.BlockSize); err != nil {
		return Result{}, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = DefaultWorkers
	}
	if m := b.Caps().MaxReaders; m > 0 {
		workers = min(workers, m)
	}
	extents, err := zeroExtents(ctx, b)
	if err != nil {
		return Result{}, err
	}

	newHash := algorithms[opts.Algorithm]
	bs := int64(opts.BlockSize)
	size := b.Size()
	nblocks := int((size + bs - 1) / bs)
	zd := zeroDigest(opts.Algorithm, opts.BlockSize, true)
	dsize := len(zd)
	digests := make([]byte, nblocks*dsize)
	slots := make(chan *slot, workers)
	for range workers {
		slots <- &slot{h: newHash()}
	}

	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(workers)
	ei := 0 // first extent that may overlap the current block
	for i := range nblocks {
		start := int64(i) * bs
		end := min(start+bs, size)
		var spans []span
		for ei < len(extents) && extents[ei].End() <= start {
			ei++
		}
		for j := ei; j < len(extents) && extents[j].Start < end; j++ {
			e := extents[j]
			if e.Zero {
				continue
			}
			s, t := max(e.Start, start), min(e.End(), end)
			if n := len(spans); n > 0 && spans[n-1].off+spans[n-1].len == s {
				spans[n-1].len += t - s
			} else {
				spans = append(spans, span{s, t - s})
			}
		}
		out := digests[i*dsize : (i+1)*dsize]
		if len(spans) == 0 {
			if end-start == bs {
				copy(out, zd)
			} else {
				copy(out, zeroDigest(opts.Algorithm, int(end-start), false))
			}
			if opts.Progress != nil {
				opts.Progress(end - start)
			}
			continue
		}
		if gctx.Err() != nil {
			break
		}
		g.Go(func() error {
			s := <-slots
			defer func() { slots <- s }()
			if s.buf == nil {
				s.buf = alignedBuffer(opts.BlockSize)
			}
			p := s.buf[:end-start]
			pos := start
			for _, sp := range spans {
				clear(p[pos-start : sp.off-start])
				if err := b.ReadAt(gctx, p[sp.off-start:sp.off-start+sp.len], sp.off); err != nil {
					return fmt.Errorf("reading block %d: %w", i, err)
				}
				pos = sp.off + sp.len
			}
			clear(p[pos-start:])
			switch {
			case !IsZero(p):
				s.h.Reset()
				s.h.Write(p)
				s.h.Sum(out[:0])
			case end-start == bs:
				copy(out, zd)
			default:
				copy(out, zeroDigest(opts.Algorithm, len(p), false))
			}
			if opts.Progress != nil {
				opts.Progress(end - start)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Result{}, fmt.Errorf("computing checksum: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return Result{}, fmt.Errorf("computing checksum: %w: %w", backend.ErrCanceled, err)
	}
	h := newHash()
	h.Write(digests)
	return Result{Algorithm: opts.Algorithm, BlockSize: opts.BlockSize, Checksum: hex.EncodeToString(h.Sum(nil))}, nil
}

// zeroExtents returns b's zero extents, or nil (all data) when b has none.
func zeroExtents(ctx context.Context, b backend.Backend) ([]backend.Extent, error) {
	all := []backend.Extent{{Start: 0, Length: b.Size()}}
	if !b.Caps().HasExtents(backend.ContextZero) {
		return all, nil
	}
	ext, err := b.Extents(ctx, backend.ContextZero)
	if errors.Is(err, backend.ErrNotSupported) {
		return all, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading extents for checksum: %w", err)
	}
	return ext, nil
}

// alignedBuffer returns a buffer of n bytes aligned to 4096 bytes, so a
// backend using direct I/O can read into it without a bounce buffer.
func alignedBuffer(n int) []byte {
	const align = 4096
	b := make([]byte, n+align)
	off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) & (align - 1))
	if off != 0 {
		off = align - off
	}
	return b[off : off+n : off+n]
}

// Sum returns the block checksum of everything r yields until EOF, read in
// one goroutine. It is the plain form of Compute, for streams and tests.
func Sum(r io.Reader, algorithm string, blockSize int) (Result, error) {
	if algorithm == "" {
		algorithm = DefaultAlgorithm
	}
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if err := Validate(algorithm, blockSize); err != nil {
		return Result{}, err
	}
	newHash := algorithms[algorithm]
	outer, block := newHash(), newHash()
	buf := make([]byte, blockSize)
	var digest []byte
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			if IsZero(buf[:n]) {
				outer.Write(zeroDigest(algorithm, n, n == blockSize))
			} else {
				block.Reset()
				block.Write(buf[:n])
				digest = block.Sum(digest[:0])
				outer.Write(digest)
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return Result{}, fmt.Errorf("reading for checksum: %w", err)
		}
	}
	return Result{Algorithm: algorithm, BlockSize: blockSize, Checksum: hex.EncodeToString(outer.Sum(nil))}, nil
}
