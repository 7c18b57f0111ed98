// Package backendtest is the conformance suite for backend.Backend
// implementations. Every backend's tests call Run with a function that makes
// a fresh, writable image of a given size that reads as zeros:
//
//	func TestConformance(t *testing.T) {
//		backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
//			return mem.New(size)
//		})
//	}
//
// The suite checks the contract written in package backend: reads and writes
// at aligned and unaligned offsets, partial reads, ranges past the end
// (ErrOutOfRange, nothing written), Zero with and without punch, Flush,
// canceled contexts, concurrent readers and writers (run it with -race),
// concurrent unaligned writers sharing a block, and extents that cover
// [0, Size) in order, merged, and agree with the content (a run flagged zero
// reads as zeros, a hole is zero, written data is never reported zero).
//
// Sizes used are multiples of 512 so that servers that round sizes to
// sectors (qemu) can serve them.
package backendtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	"golang.org/x/sync/errgroup"
)

// Size is the image size used by most of the suite's tests.
const Size = 8 << 20

// OddSize is a size that is a multiple of 512 but not of 4096.
const OddSize = 1<<20 + 3*512

// Opener makes a fresh writable image of size bytes that reads as zeros.
// The suite closes it.
type Opener func(t *testing.T, size int64) backend.Backend

// Run runs the conformance suite against the backends made by open.
func Run(t *testing.T, open Opener) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, open Opener)
	}{
		{"Size", testSize},
		{"Caps", testCaps},
		{"ReadNew", testReadNew},
		{"WriteRead", testWriteRead},
		{"PartialReads", testPartialReads},
		{"OddSize", testOddSize},
		{"OutOfRange", testOutOfRange},
		{"Zero", testZero},
		{"ZeroPunch", testZeroPunch},
		{"ExtentsNew", testExtentsNew},
		{"ExtentsAfterWrites", testExtentsAfterWrites},
		{"DirtyExtents", testDirtyExtents},
		{"Flush", testFlush},
		{"Canceled", testCanceled},
		{"ConcurrentReadersWriters", testConcurrent},
		{"ConcurrentUnalignedWriters", testConcurrentUnaligned},
		{"RandomOps", testRandomOps},
		{"Close", testClose},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

// openClosed opens an image and closes it when the test ends.
func openClosed(t *testing.T, open Opener, size int64) backend.Backend {
	t.Helper()
	b := open(t, size)
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("closing: %v", err)
		}
	})
	return b
}

// openWritable is openClosed that skips the test for read-only backends.
func openWritable(t *testing.T, open Opener, size int64) backend.Backend {
	t.Helper()
	b := openClosed(t, open, size)
	if b.Caps().ReadOnly {
		t.Skip("backend is read-only")
	}
	return b
}

// randomBytes returns n bytes from a generator seeded with seed.
func randomBytes(n int, seed uint64) []byte {
	var s [32]byte
	for i := range 8 {
		s[i] = byte(seed >> (8 * i))
	}
	p := make([]byte, n)
	r := rand.NewChaCha8(s)
	_, _ = r.Read(p)
	for i := range p {
		if p[i] == 0 {
			p[i] = 1 // no zero bytes, so data is never mistaken for zeros
		}
	}
	return p
}

// model is the expected content of an image.
type model []byte

func (m model) write(p []byte, off int64) { copy(m[off:], p) }
func (m model) zero(off, n int64)         { clear(m[off : off+n]) }

// verify reads the whole image in pieces of 1 MiB and compares it with m.
func verify(t *testing.T, b backend.Backend, m model) {
	t.Helper()
	ctx := context.Background()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(m)); off += int64(len(buf)) {
		p := buf[:min(int64(len(buf)), int64(len(m))-off)]
		if err := b.ReadAt(ctx, p, off); err != nil {
			t.Fatalf("reading %d bytes at %d: %v", len(p), off, err)
		}
		if i := firstDiff(p, m[off:off+int64(len(p))]); i >= 0 {
			t.Fatalf("content at %d: got %#x, want %#x", off+int64(i), p[i], m[off+int64(i)])
		}
	}
}

func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return len(a)
}

func mustWrite(t *testing.T, b backend.Backend, m model, p []byte, off int64) {
	t.Helper()
	if err := b.WriteAt(context.Background(), p, off); err != nil {
		t.Fatalf("writing %d bytes at %d: %v", len(p), off, err)
	}
	m.write(p, off)
}

func mustZero(t *testing.T, b backend.Backend, m model, off, n int64, punch bool) {
	t.Helper()
	if err := b.Zero(context.Background(), off, n, punch); err != nil {
		t.Fatalf("zeroing %d bytes at %d (punch=%v): %v", n, off, punch, err)
	}
	m.zero(off, n)
}

func testSize(t *testing.T, open Opener) {
	for _, size := range []int64{Size, OddSize} {
		b := openClosed(t, open, size)
		if got := b.Size(); got != size {
			t.Errorf("Size: got %d, want %d", got, size)
		}
	}
}

func testCaps(t *testing.T, open Opener) {
	c := openClosed(t, open, Size).Caps()
	if c.MaxReaders < 1 || c.MaxWriters < 1 {
		t.Errorf("MaxReaders %d, MaxWriters %d: want both >= 1", c.MaxReaders, c.MaxWriters)
	}
	if c.BlockSize < 1 {
		t.Errorf("BlockSize: got %d, want >= 1", c.BlockSize)
	}
	for _, e := range c.Extents {
		if e != backend.ContextZero && e != backend.ContextDirty {
			t.Errorf("unknown extents context %q", e)
		}
	}
}

func testReadNew(t *testing.T, open Opener) {
	b := openClosed(t, open, Size)
	verify(t, b, make(model, Size))
}

func testWriteRead(t *testing.T, open Opener) {
	b := openWritable(t, open, Size)
	m := make(model, Size)
	writes := []struct {
		off int64
		n   int
	}{
		{0, 4096},
		{1 << 20, 1 << 20},      // aligned MiB
		{3<<20 + 1, 100},        // unaligned, inside one block
		{4<<20 - 10, 20},        // crosses a block boundary
		{5<<20 + 511, 70000},    // unaligned start and end, many blocks
		{Size - 4096, 4096},     // last block
		{Size - 1, 1},           // last byte
		{6 << 20, 0},            // empty write
		{2<<20 + 4095, 4097},    // ends aligned
		{7<<20 + 4096, 2 << 10}, // aligned start, unaligned end
	}
	for i, w := range writes {
		mustWrite(t, b, m, randomBytes(w.n, uint64(i)+1), w.off)
	}
	verify(t, b, m)
}

func testPartialReads(t *testing.T, open Opener) {
	ctx := context.Background()
	b := openWritable(t, open, Size)
	m := make(model, Size)
	mustWrite(t, b, m, randomBytes(2<<20, 7), 1<<20)
	reads := []struct {
		off int64
		n   int
	}{
		{0, 1}, {1<<20 - 1, 2}, {1<<20 + 3, 5000}, {2<<20 + 4096, 4096},
		{3<<20 - 100, 200}, {Size - 1, 1}, {Size, 0}, {0, 0}, {12345, 1 << 20},
	}
	for _, r := range reads {
		p := make([]byte, r.n)
		if err := b.ReadAt(ctx, p, r.off); err != nil {
			t.Fatalf("reading %d bytes at %d: %v", r.n, r.off, err)
		}
		if i := firstDiff(p, m[r.off:r.off+int64(r.n)]); i >= 0 {
			t.Errorf("reading %d bytes at %d: differs at %d", r.n, r.off, r.off+int64(i))
		}
	}
}

func testOddSize(t *testing.T, open Opener) {
	b := openWritable(t, open, OddSize)
	m := make(model, OddSize)
	mustWrite(t, b, m, randomBytes(1000, 3), OddSize-1000)
	mustWrite(t, b, m, randomBytes(3, 4), OddSize-3)
	mustWrite(t, b, m, randomBytes(5000, 5), OddSize-6000)
	verify(t, b, m)
	mustZero(t, b, m, OddSize-700, 700, false)
	verify(t, b, m)
	mustZero(t, b, m, OddSize-5000, 5000, true)
	verify(t, b, m)
	checkExtents(t, b, m, backend.ContextZero)
}

func testOutOfRange(t *testing.T, open Opener) {
	ctx := context.Background()
	b := openClosed(t, open, Size)
	m := make(model, Size)
	for _, r := range []struct {
		off int64
		n   int
	}{{Size, 1}, {Size - 1, 2}, {Size + 4096, 4096}, {-1, 1}, {Size - 4096, 8192}} {
		err := b.ReadAt(ctx, make([]byte, r.n), r.off)
		if !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("reading %d bytes at %d: got %v, want ErrOutOfRange", r.n, r.off, err)
		}
		if b.Caps().ReadOnly {
			continue
		}
		err = b.WriteAt(ctx, randomBytes(r.n, 9), r.off)
		if !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("writing %d bytes at %d: got %v, want ErrOutOfRange", r.n, r.off, err)
		}
		err = b.Zero(ctx, r.off, int64(r.n), false)
		if !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("zeroing %d bytes at %d: got %v, want ErrOutOfRange", r.n, r.off, err)
		}
	}
	if !b.Caps().ReadOnly {
		if err := b.Zero(ctx, 0, -1, false); !errors.Is(err, backend.ErrOutOfRange) {
			t.Errorf("zeroing -1 bytes: got %v, want ErrOutOfRange", err)
		}
	}
	verify(t, b, m) // nothing written
}

func testZero(t *testing.T, open Opener) {
	testZeroWith(t, open, false)
}

func testZeroPunch(t *testing.T, open Opener) {
	testZeroWith(t, open, true)
}

func testZeroWith(t *testing.T, open Opener, punch bool) {
	b := openWritable(t, open, Size)
	m := make(model, Size)
	mustWrite(t, b, m, randomBytes(Size, 11), 0)
	zeros := []struct{ off, n int64 }{
		{0, 4096},
		{1 << 20, 1 << 20},
		{3<<20 + 1, 100},
		{4<<20 - 10, 20},
		{5<<20 + 511, 70000},
		{6 << 20, 0},
		{Size - 1, 1},
	}
	for _, z := range zeros {
		mustZero(t, b, m, z.off, z.n, punch)
	}
	verify(t, b, m)
	checkExtents(t, b, m, backend.ContextZero)
	// Zero over an area that was never written.
	b2 := openWritable(t, open, Size)
	m2 := make(model, Size)
	mustZero(t, b2, m2, 1<<20, 2<<20, punch)
	mustWrite(t, b2, m2, randomBytes(100, 12), 2<<20)
	verify(t, b2, m2)
	checkExtents(t, b2, m2, backend.ContextZero)
}

func testExtentsNew(t *testing.T, open Opener) {
	b := openClosed(t, open, Size)
	m := make(model, Size)
	for _, name := range b.Caps().Extents {
		checkExtents(t, b, m, name)
	}
}

func testExtentsAfterWrites(t *testing.T, open Opener) {
	b := openWritable(t, open, Size)
	if !b.Caps().HasExtents(backend.ContextZero) {
		t.Skip("no zero extents")
	}
	m := make(model, Size)
	mustWrite(t, b, m, randomBytes(1<<20, 21), 1<<20)
	mustWrite(t, b, m, randomBytes(4096, 22), 4<<20)
	mustZero(t, b, m, 5<<20, 1<<20, false)
	mustWrite(t, b, m, randomBytes(1<<20, 23), Size-1<<20)
	mustZero(t, b, m, Size-512<<10, 256<<10, true)
	checkExtents(t, b, m, backend.ContextZero)
	// A region written with data must never be reported as zero.
	ext, err := b.Extents(context.Background(), backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.Zero && e.Start < 2<<20 && e.End() > 1<<20 {
			t.Errorf("extent %+v overlaps written data at [1 MiB, 2 MiB) but is zero", e)
		}
	}
}

func testDirtyExtents(t *testing.T, open Opener) {
	b := openClosed(t, open, Size)
	if !b.Caps().HasExtents(backend.ContextDirty) {
		if _, err := b.Extents(context.Background(), backend.ContextDirty); err == nil {
			t.Error("dirty extents without ContextDirty in Caps: got no error")
		}
		t.Skip("no dirty extents")
	}
	m := make(model, Size)
	checkExtents(t, b, m, backend.ContextDirty)
	if b.Caps().ReadOnly {
		return
	}
	mustWrite(t, b, m, randomBytes(4096, 31), 2<<20)
	checkExtents(t, b, m, backend.ContextDirty)
	ext, err := b.Extents(context.Background(), backend.ContextDirty)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ext {
		if e.Start <= 2<<20 && e.End() > 2<<20 && !e.Dirty {
			t.Errorf("extent %+v covers a write but is not dirty", e)
		}
	}
}

// checkExtents checks the extents of context name against the contract and
// against the expected content m.
func checkExtents(t *testing.T, b backend.Backend, m model, name string) {
	t.Helper()
	if !b.Caps().HasExtents(name) {
		return
	}
	ext, err := b.Extents(context.Background(), name)
	if err != nil {
		t.Fatalf("reading %s extents: %v", name, err)
	}
	if err := CheckExtents(ext, int64(len(m))); err != nil {
		t.Fatalf("%s extents: %v", name, err)
	}
	for _, e := range ext {
		if e.Hole && !e.Zero {
			t.Errorf("%s extent %+v is a hole but not zero", name, e)
		}
		if name == backend.ContextZero && e.Dirty {
			t.Errorf("zero extent %+v is dirty", e)
		}
		if name == backend.ContextDirty && e.Hole {
			t.Errorf("dirty extent %+v is a hole", e)
		}
		if e.Zero {
			p := m[e.Start:e.End()]
			if i := bytes.IndexFunc(p, func(r rune) bool { return r != 0 }); i >= 0 {
				t.Errorf("%s extent %+v is zero but the image has data at %d", name, e, e.Start+int64(i))
			}
		}
	}
}

// CheckExtents reports whether ext covers [0, size) in order, without gaps
// or empty extents, with equal neighbours merged. Backends' own tests may use
// it too.
func CheckExtents(ext []backend.Extent, size int64) error {
	var pos int64
	for i, e := range ext {
		if e.Start != pos {
			return fmt.Errorf("extent %d %+v starts at %d, want %d", i, e, e.Start, pos)
		}
		if e.Length <= 0 {
			return fmt.Errorf("extent %d %+v is empty", i, e)
		}
		if i > 0 {
			p := ext[i-1]
			if p.Zero == e.Zero && p.Hole == e.Hole && p.Dirty == e.Dirty {
				return fmt.Errorf("extents %d %+v and %d %+v are not merged", i-1, p, i, e)
			}
		}
		pos = e.End()
	}
	if pos != size {
		return fmt.Errorf("extents end at %d, want %d", pos, size)
	}
	return nil
}

func testFlush(t *testing.T, open Opener) {
	b := openClosed(t, open, Size)
	err := b.Flush(context.Background())
	if b.Caps().CanFlush && err != nil {
		t.Errorf("flush: %v", err)
	}
	if !b.Caps().CanFlush && err != nil && !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("flush without CanFlush: got %v, want nil or ErrNotSupported", err)
	}
	if b.Caps().ReadOnly {
		return
	}
	m := make(model, Size)
	mustWrite(t, b, m, randomBytes(8192, 41), 4096)
	if err := b.Flush(context.Background()); b.Caps().CanFlush && err != nil {
		t.Errorf("flush after write: %v", err)
	}
	verify(t, b, m)
}

func testCanceled(t *testing.T, open Opener) {
	b := openClosed(t, open, Size)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	isCanceled := func(err error) bool {
		return errors.Is(err, backend.ErrCanceled) || errors.Is(err, context.Canceled)
	}
	if err := b.ReadAt(ctx, make([]byte, 4096), 0); !isCanceled(err) {
		t.Errorf("read with canceled context: got %v, want ErrCanceled or context.Canceled", err)
	}
	if b.Caps().ReadOnly {
		return
	}
	if err := b.WriteAt(ctx, randomBytes(4096, 51), 0); !isCanceled(err) {
		t.Errorf("write with canceled context: got %v, want ErrCanceled or context.Canceled", err)
	}
	verify(t, b, make(model, Size))
}

// testConcurrent runs MaxWriters writers on disjoint areas and MaxReaders
// readers at the same time, then checks the content.
func testConcurrent(t *testing.T, open Opener) {
	b := openWritable(t, open, Size)
	caps := b.Caps()
	m := make(model, Size)
	const piece = 64 << 10
	data := randomBytes(Size, 61)
	m.write(data, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	writers := max(caps.MaxWriters, 2)
	var wg sync.WaitGroup
	done := make(chan struct{})
	rg, rctx := errgroup.WithContext(ctx)
	for i := range max(caps.MaxReaders, 2) {
		rg.Go(func() error {
			buf := make([]byte, piece)
			for n := 0; n < 1000; n++ {
				select {
				case <-done:
					return nil
				default:
				}
				off := int64((i*7919+n*104729)%(Size/piece)) * piece
				if err := b.ReadAt(rctx, buf, off); err != nil {
					return fmt.Errorf("reading at %d: %w", off, err)
				}
			}
			return nil
		})
	}
	wg.Add(writers)
	werrs := make(chan error, writers)
	for w := range writers {
		go func() {
			defer wg.Done()
			for off := int64(w) * piece; off < Size; off += int64(writers) * piece {
				if err := b.WriteAt(ctx, data[off:off+piece], off); err != nil {
					werrs <- fmt.Errorf("writing at %d: %w", off, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(done)
	close(werrs)
	for err := range werrs {
		t.Error(err)
	}
	if err := rg.Wait(); err != nil {
		t.Error(err)
	}
	verify(t, b, m)
}

// testConcurrentUnalignedWriters writes disjoint unaligned byte ranges that
// share 4096-byte blocks from several goroutines, so a backend that
// read-modify-writes blocks must serialise them.
func testConcurrentUnaligned(t *testing.T, open Opener) {
	b := openWritable(t, open, Size)
	m := make(model, Size)
	const region = 64 << 10
	const stride = 300 // not a divisor of 512 or 4096
	data := randomBytes(region, 71)
	mustWrite(t, b, m, randomBytes(region, 72), 3<<20)
	writers := max(b.Caps().MaxWriters, 4)
	g, ctx := errgroup.WithContext(context.Background())
	for w := range writers {
		g.Go(func() error {
			for off := int64(w * stride); off < region; off += int64(writers * stride) {
				end := min(off+stride, region)
				if err := b.WriteAt(ctx, data[off:end], 1<<20+off); err != nil {
					return fmt.Errorf("writing at %d: %w", off, err)
				}
				if err := b.Zero(ctx, 3<<20+off, end-off, false); err != nil {
					return fmt.Errorf("zeroing at %d: %w", off, err)
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	m.write(data, 1<<20)
	m.zero(3<<20, region)
	verify(t, b, m)
}

// testRandomOps runs a seeded sequence of writes, zeroes and reads at
// random offsets and lengths against a model of the content.
func testRandomOps(t *testing.T, open Opener) {
	ctx := context.Background()
	b := openWritable(t, open, Size)
	m := make(model, Size)
	rng := rand.New(rand.NewPCG(42, 4242))
	data := randomBytes(256<<10, 81)
	buf := make([]byte, 256<<10+1)
	deadline := time.Now().Add(time.Minute)
	for i := 0; i < 400 && time.Now().Before(deadline); i++ {
		n := rng.Int64N(int64(len(data)))
		if rng.IntN(4) == 0 {
			n = rng.Int64N(4096) // small ones often
		}
		off := rng.Int64N(Size - n + 1)
		switch rng.IntN(3) {
		case 0:
			// A sub-slice at a random start, so buffer addresses vary.
			k := rng.Int64N(int64(len(data)) - n + 1)
			mustWrite(t, b, m, data[k:k+n], off)
		case 1:
			mustZero(t, b, m, off, n, rng.IntN(2) == 0)
		case 2:
			k := rng.Int64N(int64(len(buf)) - n)
			p := buf[k : k+n]
			if err := b.ReadAt(ctx, p, off); err != nil {
				t.Fatalf("op %d: reading %d bytes at %d: %v", i, n, off, err)
			}
			if j := firstDiff(p, m[off:off+n]); j >= 0 {
				t.Fatalf("op %d: reading %d bytes at %d: differs at %d", i, n, off, off+int64(j))
			}
		}
	}
	verify(t, b, m)
	checkExtents(t, b, m, backend.ContextZero)
}

func testClose(t *testing.T, open Opener) {
	b := open(t, Size)
	if !b.Caps().ReadOnly {
		if err := b.WriteAt(context.Background(), []byte("x"), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
}
