package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
)

// pattern describes a sample source image: data runs, allocated zero runs,
// everything else holes.
type pattern struct {
	size        int64
	data, zeros [][2]int64 // [offset, length]
}

func randomBytes(n int64, seed uint64) []byte {
	p := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, ^seed))
	for i := range p {
		p[i] = byte(r.Uint32()) | 1
	}
	return p
}

// build makes the source image and returns its expected content.
func (p pattern) build(t testing.TB, caps backend.Caps) (*mem.Backend, []byte) {
	t.Helper()
	want := make([]byte, p.size)
	b := mem.NewWithCaps(p.size, caps)
	ctx := context.Background()
	for i, r := range p.data {
		d := randomBytes(r[1], uint64(i+1))
		copy(want[r[0]:], d)
		if err := b.WriteAt(ctx, d, r[0]); err != nil {
			t.Fatal(err)
		}
	}
	for _, r := range p.zeros {
		clear(want[r[0] : r[0]+r[1]])
		if err := b.Zero(ctx, r[0], r[1], false); err != nil {
			t.Fatal(err)
		}
	}
	return b, want
}

var mixed = pattern{
	size:  5<<20 + 123, // not a multiple of 4 KiB
	data:  [][2]int64{{0, 100000}, {1 << 20, 2 << 20}, {5 << 20, 123}},
	zeros: [][2]int64{{3 << 20, 1 << 20}},
}

// streamWriter adds backend.StreamWriter to a backend; it reads the stream
// in odd-sized pieces and rewinds-and-resends the first request, like the
// HTTP backend after a transient failure.
type streamWriter struct {
	backend.Backend
	calls atomic.Int64
}

func (s *streamWriter) WriteFrom(ctx context.Context, r io.Reader, off, length int64) error {
	if s.calls.Add(1) == 1 {
		sk := r.(io.Seeker)
		start, _ := sk.Seek(0, io.SeekCurrent)
		if _, err := io.CopyN(io.Discard, r, length/2); err != nil {
			return err
		}
		if _, err := sk.Seek(start, io.SeekStart); err != nil {
			return err
		}
	}
	buf := make([]byte, 10007)
	for done := int64(0); done < length; {
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), length-done)])
		if err != nil {
			return err
		}
		if err := s.WriteAt(ctx, buf[:n], off+done); err != nil {
			return err
		}
		done += int64(n)
	}
	return nil
}

// streamReader adds backend.StreamReader to a backend; it delivers the
// range in two calls to ReadFrom, the first cut short, like the HTTP
// backend resuming a GET.
type streamReader struct{ backend.Backend }

func (s streamReader) ReadTo(ctx context.Context, w io.Writer, off, length int64) error {
	p := make([]byte, length)
	if err := s.ReadAt(ctx, p, off); err != nil {
		return err
	}
	half := length / 3
	rf := w.(io.ReaderFrom)
	if _, err := rf.ReadFrom(iotest{bytes.NewReader(p[:half])}); err != nil {
		return err
	}
	_, err := rf.ReadFrom(iotest{bytes.NewReader(p[half:])})
	return err
}

// iotest returns at most 7777 bytes per Read.
type iotest struct{ r io.Reader }

func (r iotest) Read(p []byte) (int, error) { return r.r.Read(p[:min(len(p), 7777)]) }

func TestCopy(t *testing.T) {
	tests := []struct {
		name     string
		opts     Options
		dirtyDst bool // the target starts with other data
		wrapDst  func(backend.Backend) backend.Backend
		wrapSrc  func(backend.Backend) backend.Backend
	}{
		{name: "defaults"},
		{name: "zero target", opts: Options{ZeroTarget: true}},
		{name: "dirty target", dirtyDst: true},
		{name: "dirty target keep holes", dirtyDst: true, opts: Options{KeepHoles: true}},
		{name: "small pieces", dirtyDst: true, opts: Options{BufferSize: 4096 + 17, MaxRequest: 100003, Workers: 8}},
		{name: "one worker", opts: Options{Workers: 1}},
		{name: "stream writer", dirtyDst: true, opts: Options{BufferSize: 65536 + 5, MaxRequest: 1 << 20},
			wrapDst: func(b backend.Backend) backend.Backend { return &streamWriter{Backend: b} }},
		{name: "stream reader", dirtyDst: true, opts: Options{BufferSize: 65536 + 5, MaxRequest: 1 << 20},
			wrapSrc: func(b backend.Backend) backend.Backend { return streamReader{b} }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, want := mixed.build(t, mem.DefaultCaps())
			dst := mem.New(mixed.size)
			if tc.dirtyDst {
				dst = mem.NewWithData(randomBytes(mixed.size, 99))
			}
			var s, d backend.Backend = src, dst
			if tc.wrapSrc != nil {
				s = tc.wrapSrc(s)
			}
			if tc.wrapDst != nil {
				d = tc.wrapDst(d)
			}
			var last Progress
			var calls int
			opts := tc.opts
			opts.Phase = "testing"
			opts.Progress = func(p Progress) {
				calls++
				if p.Phase == "testing" {
					if p.Done < last.Done || p.Total != mixed.size {
						t.Errorf("progress %+v after %+v", p, last)
					}
					last = p
				}
			}
			stats, err := Copy(context.Background(), d, s, opts)
			if err != nil {
				t.Fatal(err)
			}
			if got := dst.Bytes(); !bytes.Equal(got, want) {
				t.Fatalf("target differs from source at %d", firstDiff(got, want))
			}
			if last.Done != mixed.size {
				t.Errorf("progress done %d, want %d", last.Done, mixed.size)
			}
			if sum := stats.Copied + stats.Zeroed + stats.Skipped; sum != mixed.size {
				t.Errorf("stats %+v add up to %d, want %d", stats, sum, mixed.size)
			}
			if tc.opts.ZeroTarget && stats.Zeroed != 0 {
				t.Errorf("zero target: zeroed %d bytes, want 0", stats.Zeroed)
			}
			if !tc.opts.ZeroTarget && stats.Skipped != 0 {
				t.Errorf("skipped %d bytes, want 0", stats.Skipped)
			}
			if dst.Stats().Flushes != 1 {
				t.Errorf("flushes: got %d, want 1", dst.Stats().Flushes)
			}
			if tc.opts.KeepHoles {
				checkHolesKept(t, src, dst)
			}
		})
	}
}

// checkHolesKept checks that every hole of src is a hole in dst.
func checkHolesKept(t *testing.T, src, dst backend.Backend) {
	t.Helper()
	ctx := context.Background()
	se, err := src.Extents(ctx, backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	de, err := dst.Extents(ctx, backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	isHole := func(ext []backend.Extent, off int64) bool {
		for _, e := range ext {
			if off >= e.Start && off < e.End() {
				return e.Hole
			}
		}
		return false
	}
	for _, e := range se {
		if e.Hole && !isHole(de, e.Start) {
			t.Errorf("hole at %d of the source is not a hole in the target", e.Start)
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

func TestCopyDirty(t *testing.T) {
	caps := mem.DefaultCaps()
	caps.Extents = []string{backend.ContextZero, backend.ContextDirty}
	base := randomBytes(2<<20, 7)
	src := mem.NewWithDataCaps(base, caps)
	dst := mem.NewWithData(base)
	ctx := context.Background()
	want := bytes.Clone(base)
	// Change 64 KiB of data and zero 128 KiB.
	change := randomBytes(64<<10, 8)
	if err := src.WriteAt(ctx, change, 256<<10); err != nil {
		t.Fatal(err)
	}
	copy(want[256<<10:], change)
	if err := src.Zero(ctx, 1<<20, 128<<10, false); err != nil {
		t.Fatal(err)
	}
	clear(want[1<<20 : 1<<20+128<<10])
	stats, err := Copy(ctx, dst, src, Options{Dirty: true})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want) {
		t.Fatal("target differs")
	}
	if stats.Copied != 64<<10 || stats.Zeroed != 128<<10 {
		t.Errorf("stats %+v: want 64 KiB copied and 128 KiB zeroed", stats)
	}
	if _, err := Copy(ctx, dst, mem.New(2<<20), Options{Dirty: true}); !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("dirty copy from a backend without dirty extents: got %v, want ErrNotSupported", err)
	}
}

func TestCopyWorkersCapped(t *testing.T) {
	caps := mem.DefaultCaps()
	caps.MaxWriters = 1
	src, _ := mixed.build(t, mem.DefaultCaps())
	dst := mem.NewWithCaps(mixed.size, caps)
	stats, err := Copy(context.Background(), dst, src, Options{Workers: 8})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Workers != 1 {
		t.Errorf("workers: got %d, want 1", stats.Workers)
	}
}

func TestCopySizeMismatch(t *testing.T) {
	_, err := Copy(context.Background(), mem.New(100), mem.New(200), Options{})
	if !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("got %v, want ErrSizeMismatch", err)
	}
}

// blocking is a backend whose reads or writes after the first few wait for
// the context to end, or fail.
type blocking struct {
	backend.Backend
	calls   atomic.Int64
	after   int64
	fail    error // returned by call number after+1; others block
	started chan struct{}
	once    sync.Once
	waiting atomic.Int64
}

func (b *blocking) WriteAt(ctx context.Context, p []byte, off int64) error {
	n := b.calls.Add(1)
	if n <= b.after {
		return b.Backend.WriteAt(ctx, p, off)
	}
	b.once.Do(func() { close(b.started) })
	if n == b.after+1 && b.fail != nil {
		// Let the other workers reach their blocking write first.
		deadline := time.Now().Add(5 * time.Second)
		for b.waiting.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		return b.fail
	}
	b.waiting.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

func TestCopyErrorCancelsOthers(t *testing.T) {
	src := mem.NewWithData(randomBytes(8<<20, 3))
	boom := errors.New("boom")
	dst := &blocking{Backend: mem.New(8 << 20), after: 2, fail: boom, started: make(chan struct{})}
	done := make(chan error, 1)
	go func() {
		_, err := Copy(context.Background(), dst, src, Options{Workers: 4, BufferSize: 256 << 10, MaxRequest: 256 << 10})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, boom) {
			t.Errorf("got %v, want boom", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Copy did not return after a worker failed")
	}
	if dst.waiting.Load() < 1 {
		t.Error("no other worker was waiting; the test did not exercise canceling")
	}
}

func TestCopyCancel(t *testing.T) {
	src := mem.NewWithData(randomBytes(8<<20, 4))
	dst := &blocking{Backend: mem.New(8 << 20), after: 3, started: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, dst, src, Options{BufferSize: 256 << 10, MaxRequest: 256 << 10})
		done <- err
	}()
	select {
	case <-dst.started:
	case <-time.After(20 * time.Second):
		t.Fatal("copy did not start")
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Copy did not return after cancel")
	}
}

// noExtents hides extents support.
type noExtents struct{ backend.Backend }

func (noExtents) Extents(context.Context, string) ([]backend.Extent, error) {
	return nil, fmt.Errorf("no extents: %w", backend.ErrNotSupported)
}

func TestCopyWithoutExtents(t *testing.T) {
	src, want := mixed.build(t, mem.DefaultCaps())
	dst := mem.NewWithData(randomBytes(mixed.size, 5))
	stats, err := Copy(context.Background(), dst, noExtents{src}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want) {
		t.Fatal("target differs")
	}
	if stats.Copied != mixed.size {
		t.Errorf("copied %d, want %d", stats.Copied, mixed.size)
	}
}

func BenchmarkCopy(b *testing.B) {
	const size = 256 << 20
	src := mem.NewWithData(randomBytes(size, 1))
	dst := mem.New(size)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Copy(context.Background(), dst, src, Options{}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCopyTargetZeros checks that zero requests are sent only where the
// target does not read as zeros already.
func TestCopyTargetZeros(t *testing.T) {
	ctx := context.Background()
	src, want := mixed.build(t, mem.DefaultCaps())
	dst := mem.New(mixed.size)
	old := bytes.Repeat([]byte{0xff}, 3<<20+512<<10)
	if err := dst.WriteAt(ctx, old, 0); err != nil {
		t.Fatal(err)
	}
	ext, err := dst.Extents(ctx, backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	stats, err := Copy(ctx, dst, src, Options{TargetZeros: ext, MaxRequest: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want) {
		t.Fatal("target differs from source")
	}
	// Zeroed: the hole after the first data run (from 128 KiB: mem keeps
	// 64 KiB chunks) and the first half of the zero run, where the old
	// data was; the rest already read as zeros.
	wantZeroed := int64(1<<20-128<<10) + 512<<10
	if stats.Zeroed != wantZeroed {
		t.Errorf("zeroed %d bytes, want %d (stats %+v)", stats.Zeroed, wantZeroed, stats)
	}
}

func TestZeroRanges(t *testing.T) {
	ext := []backend.Extent{
		{Start: 8, Length: 4, Zero: true},
		{Start: 0, Length: 4, Zero: true},
		{Start: 4, Length: 4},
		{Start: 12, Length: 4, Zero: true, Hole: true},
	}
	got := zeroRanges(ext)
	want := []zeroRange{{0, 4}, {8, 16}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("zeroRanges = %v, want %v", got, want)
	}
}

// TestProduceTailSplit checks the request sizes of one large data extent:
// at most MaxRequest, smaller towards the end, never below the floor
// (except the very last piece), covering the extent exactly.
func TestProduceTailSplit(t *testing.T) {
	const size = 1 << 30
	c := &copier{opts: Options{Workers: 4, MaxRequest: DefaultMaxRequest}}
	jobs := make(chan job, 1000)
	if err := c.produce(context.Background(), []backend.Extent{{Start: 0, Length: size}}, size, jobs); err != nil {
		t.Fatal(err)
	}
	close(jobs)
	var sizes []int64
	var pos int64
	for j := range jobs {
		if j.op != opCopy || j.off != pos {
			t.Fatalf("job %+v, want a copy at %d", j, pos)
		}
		sizes = append(sizes, j.length)
		pos += j.length
	}
	if pos != size {
		t.Fatalf("jobs cover %d bytes, want %d", pos, size)
	}
	for i, n := range sizes {
		if n > DefaultMaxRequest || (n < minTailRequest && i != len(sizes)-1) {
			t.Errorf("request %d is %d bytes (sizes %v)", i, n, sizes)
		}
		if i > 0 && n > sizes[i-1] {
			t.Errorf("request %d (%d bytes) is larger than the one before (sizes %v)", i, n, sizes)
		}
	}
	if last := sizes[len(sizes)-1]; last > minTailRequest {
		t.Errorf("last request is %d bytes, want at most %d (sizes %v)", last, minTailRequest, sizes)
	}
}

// releaseOrder records reads of the source, the SourceDone call and the
// flush of the target, and what overlapped.
type releaseOrder struct {
	mu                     sync.Mutex
	reading                int
	released, flushed      bool
	readAfter, flushBefore bool
	releasedWhileReading   bool
	releases               int
}

type watchedSource struct {
	backend.Backend
	o *releaseOrder
}

func (s watchedSource) ReadAt(ctx context.Context, p []byte, off int64) error {
	s.o.mu.Lock()
	s.o.reading++
	s.o.readAfter = s.o.readAfter || s.o.released
	s.o.mu.Unlock()
	defer func() {
		s.o.mu.Lock()
		s.o.reading--
		s.o.mu.Unlock()
	}()
	return s.Backend.ReadAt(ctx, p, off)
}

type watchedTarget struct {
	backend.Backend
	o *releaseOrder
}

func (t watchedTarget) Flush(ctx context.Context) error {
	t.o.mu.Lock()
	t.o.flushed = true
	t.o.flushBefore = !t.o.released
	t.o.mu.Unlock()
	return t.Backend.Flush(ctx)
}

// TestCopySourceDone checks that SourceDone comes once, after the last
// read of the source and before the target's flush, and not at all when
// the copy fails.
func TestCopySourceDone(t *testing.T) {
	src, want := mixed.build(t, mem.DefaultCaps())
	o := &releaseOrder{}
	dst := mem.New(mixed.size)
	done := func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.releases++
		o.released = true
		o.releasedWhileReading = o.reading > 0
	}
	_, err := Copy(context.Background(), watchedTarget{dst, o}, watchedSource{src, o},
		Options{Workers: 4, BufferSize: 256 << 10, SourceDone: done})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.Bytes(), want) {
		t.Fatal("target differs")
	}
	if o.releases != 1 || o.releasedWhileReading || o.readAfter || !o.flushed || o.flushBefore {
		t.Errorf("releases %d, while reading %v, read after %v, flushed %v, flush before release %v; want one release, after every read, before the flush",
			o.releases, o.releasedWhileReading, o.readAfter, o.flushed, o.flushBefore)
	}

	calls := 0
	if _, err := Copy(context.Background(), failingWrites{mem.New(mixed.size)}, src, Options{SourceDone: func() { calls++ }}); err == nil {
		t.Fatal("copy to a failing target succeeded")
	}
	if calls != 0 {
		t.Errorf("SourceDone called %d times after a failed copy, want 0", calls)
	}
}

// failingWrites is a target whose writes fail.
type failingWrites struct{ backend.Backend }

func (failingWrites) WriteAt(context.Context, []byte, int64) error {
	return errors.New("write failed")
}
