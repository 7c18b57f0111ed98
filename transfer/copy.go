package transfer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageio/imageio/backend"
	"golang.org/x/sync/errgroup"
)

// Defaults and limits of Options.
const (
	DefaultWorkers    = 4
	DefaultBufferSize = 4 << 20
	MaxBufferSize     = 32 << 20
	DefaultMaxRequest = 128 << 20
)

// Progress is one progress report: the phase ("uploading", "flushing", ...)
// and the bytes done out of Total for that phase.
type Progress struct {
	Phase       string
	Done, Total int64
}

// Options tune Copy.
type Options struct {
	// Workers is how many requests run at once (default 4), capped by
	// the target's Caps.MaxWriters and the source's Caps.MaxReaders.
	Workers int
	// BufferSize is the size of the pieces data is moved in (default
	// 4 MiB, at most 32 MiB).
	BufferSize int
	// MaxRequest bounds one request (default 128 MiB).
	MaxRequest int64
	// Progress, if set, is called as the copy goes on. Calls come from the
	// workers but never at the same time, and Done never decreases.
	Progress func(Progress)
	// Phase names the copy phase in progress reports (default "copying").
	Phase string
	// ZeroTarget says the target reads as zeros: zero extents and holes
	// need no write.
	ZeroTarget bool
	// TargetZeros, if set, are extents of the target (its zero
	// context, as backend.Backend.Extents returns them): zero requests
	// (for zero extents, and holes unless KeepHoles or SkipHoles) over
	// ranges the target already reads as zeros are skipped.
	TargetZeros []backend.Extent
	// KeepHoles keeps holes on the source as holes on the target: they
	// are zeroed with punch.
	KeepHoles bool
	// SkipHoles leaves the target untouched where the source has holes
	// (a new overlay whose backing file must show through).
	SkipHoles bool
	// Dirty copies only the dirty extents (incremental backup): dirty
	// data is copied, dirty zeros zeroed, clean extents skipped.
	Dirty bool
	// SourceDone, if set, is called once every read of the source has
	// ended, before the target is flushed, so that a caller that needs
	// the source no more can release it while the flush runs.
	SourceDone func()
}

// Stats describe a finished (or failed) copy.
type Stats struct {
	Copied, Zeroed, Skipped int64 // bytes
	Requests                int   // data and zero requests
	Elapsed                 time.Duration
	Workers                 int
}

// ErrSizeMismatch is returned when the target is smaller than the source.
var ErrSizeMismatch = errors.New("target is smaller than source")

// op is what a job does to its range.
type op int

const (
	opCopy op = iota
	opZero
	opPunch
	opSkip
)

type job struct {
	op          op
	off, length int64
}

// copier is one Copy run.
type copier struct {
	dst, src backend.Backend
	opts     Options

	// zeros are the ranges the target reads as zeros (from
	// Options.TargetZeros), sorted and merged.
	zeros []zeroRange

	copied, zeroed, skipped atomic.Int64
	requests                atomic.Int64

	// progressMu serializes progress calls and guards the field that
	// follows.
	progressMu sync.Mutex
	done       int64
	total      int64
}

// Copy copies src to dst (the first src.Size() bytes of it) and flushes
// dst once at the end.
func Copy(ctx context.Context, dst, src backend.Backend, opts Options) (Stats, error) {
	start := time.Now()
	opts = withDefaults(opts, dst, src)
	stats := Stats{Workers: opts.Workers}
	size := src.Size()
	if dst.Size() < size {
		return stats, fmt.Errorf("copying %d bytes to an image of %d bytes: %w", size, dst.Size(), ErrSizeMismatch)
	}
	c := &copier{dst: dst, src: src, opts: opts, total: size, zeros: zeroRanges(opts.TargetZeros)}

	extCtx := backend.ContextZero
	if opts.Dirty {
		extCtx = backend.ContextDirty
	}
	extents, err := src.Extents(ctx, extCtx)
	if errors.Is(err, backend.ErrNotSupported) && !opts.Dirty {
		extents, err = []backend.Extent{{Start: 0, Length: size}}, nil
	}
	if err != nil {
		return stats, fmt.Errorf("reading source extents: %w", err)
	}

	g, gctx := errgroup.WithContext(ctx)
	jobs := make(chan job, 2*opts.Workers)
	g.Go(func() error {
		defer close(jobs)
		return c.produce(gctx, extents, size, jobs)
	})
	for range opts.Workers {
		g.Go(func() error { return c.work(gctx, jobs) })
	}
	err = g.Wait()
	if err == nil {
		if opts.SourceDone != nil {
			opts.SourceDone()
		}
		c.setPhase("flushing")
		if ferr := dst.Flush(ctx); ferr != nil {
			err = fmt.Errorf("flushing target: %w", ferr)
		}
	}
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("copying: %w", ctx.Err())
	}
	stats.Copied, stats.Zeroed, stats.Skipped = c.copied.Load(), c.zeroed.Load(), c.skipped.Load()
	stats.Requests = int(c.requests.Load())
	stats.Elapsed = time.Since(start)
	return stats, err
}

func withDefaults(o Options, dst, src backend.Backend) Options {
	if o.Workers <= 0 {
		o.Workers = DefaultWorkers
	}
	if w := dst.Caps().MaxWriters; w > 0 {
		o.Workers = min(o.Workers, w)
	}
	if r := src.Caps().MaxReaders; r > 0 {
		o.Workers = min(o.Workers, r)
	}
	if o.BufferSize <= 0 {
		o.BufferSize = DefaultBufferSize
	}
	o.BufferSize = min(o.BufferSize, MaxBufferSize)
	if o.MaxRequest <= 0 {
		o.MaxRequest = DefaultMaxRequest
	}
	if o.Phase == "" {
		o.Phase = "copying"
	}
	return o
}

// classify says what to do with an extent.
func (c *copier) classify(e backend.Extent) op {
	o := c.opts
	if o.Dirty {
		switch {
		case !e.Dirty:
			return opSkip
		case !e.Zero:
			return opCopy
		case o.ZeroTarget:
			return opSkip
		}
		return opZero
	}
	switch {
	case !e.Zero:
		return opCopy
	case o.ZeroTarget:
		return opSkip
	case e.Hole && o.SkipHoles:
		return opSkip
	case e.Hole && o.KeepHoles:
		return opPunch
	}
	return opZero
}

// minTailRequest is the smallest data request the tail split makes.
const minTailRequest = 8 << 20

// produce sends the jobs for extents, split to MaxRequest, clipped to size.
//
// Data requests near the end are made smaller (guided scheduling): a
// request is at most 1/(2*workers) of the data left to copy, but not less
// than minTailRequest. Otherwise one large extent split into 128 MiB
// requests leaves the other workers idle while the last requests run.
func (c *copier) produce(ctx context.Context, extents []backend.Extent, size int64, jobs chan<- job) error {
	var left int64 // data bytes not yet given to a worker
	for _, e := range extents {
		if c.classify(e) == opCopy {
			left += max(0, min(e.End(), size)-max(e.Start, 0))
		}
	}
	var pos int64
	for _, e := range extents {
		if e.Start != pos {
			return fmt.Errorf("source extents have a gap at %d (next starts at %d)", pos, e.Start)
		}
		end := min(e.End(), size)
		kind := c.classify(e)
		for off := e.Start; off < end; {
			n := min(end-off, c.opts.MaxRequest)
			k := kind
			switch kind {
			case opSkip:
				n = end - off
			case opCopy:
				n = min(n, max(left/int64(2*c.opts.Workers), minTailRequest))
				left -= n
			case opZero:
				// Nothing to do where the target reads as zeros.
				if z, next := c.zeroRun(off); z > 0 {
					k, n = opSkip, min(z, end-off)
				} else {
					n = min(n, next-off)
				}
			}
			select {
			case jobs <- job{op: k, off: off, length: n}:
			case <-ctx.Done():
				return ctx.Err()
			}
			off += n
		}
		pos = e.End()
		if pos >= size {
			break
		}
	}
	if pos < size {
		return fmt.Errorf("source extents end at %d, before the image size %d", pos, size)
	}
	return nil
}

func (c *copier) work(ctx context.Context, jobs <-chan job) error {
	// Each worker keeps one buffer for the whole copy; every use of it
	// ends before copyRange returns.
	buf, free, err := allocBuffer(c.opts.BufferSize)
	if err != nil {
		return fmt.Errorf("allocating buffer: %w", err)
	}
	defer free()
	for {
		var j job
		var ok bool
		select {
		case j, ok = <-jobs:
			if !ok {
				return nil
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		if err := c.do(ctx, j, buf); err != nil {
			return err
		}
	}
}

func (c *copier) do(ctx context.Context, j job, buf []byte) error {
	switch j.op {
	case opSkip:
		c.skipped.Add(j.length)
		c.progress(j.length)
		return nil
	case opZero, opPunch:
		c.requests.Add(1)
		if err := c.dst.Zero(ctx, j.off, j.length, j.op == opPunch); err != nil {
			return fmt.Errorf("zeroing %d-%d: %w", j.off, j.off+j.length-1, err)
		}
		c.zeroed.Add(j.length)
		c.progress(j.length)
		return nil
	}
	c.requests.Add(1)
	if err := c.copyRange(ctx, j.off, j.length, buf); err != nil {
		return fmt.Errorf("copying %d-%d: %w", j.off, j.off+j.length-1, err)
	}
	c.copied.Add(j.length)
	return nil
}

// copyRange copies data; progress is reported as it goes.
func (c *copier) copyRange(ctx context.Context, off, length int64, buf []byte) error {
	if sw, ok := c.dst.(backend.StreamWriter); ok {
		if cr, ok := c.src.(backend.ChunkReader); ok {
			return sw.WriteFrom(ctx, newRelaySource(ctx, c.src, cr, off, length, buf, c.progress), off, length)
		}
		r := newSourceReader(ctx, c.src, off, length, buf, c.progress)
		defer r.finish()
		return sw.WriteFrom(ctx, r, off, length)
	}
	if sr, ok := c.src.(backend.StreamReader); ok {
		if cs, ok := c.dst.(backend.ChunkWriter); ok {
			return c.streamDownload(ctx, sr, cs, off, length, buf)
		}
		w := newTargetWriter(ctx, c.dst, off, buf, c.progress)
		err := sr.ReadTo(ctx, w, off, length)
		if err == nil {
			err = w.flush()
		}
		if ferr := w.finish(); err == nil {
			err = ferr
		}
		return err
	}
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		p := buf[:n]
		if err := c.src.ReadAt(ctx, p, off+done); err != nil {
			return fmt.Errorf("reading source: %w", err)
		}
		if err := c.dst.WriteAt(ctx, p, off+done); err != nil {
			return fmt.Errorf("writing target: %w", err)
		}
		done += n
		c.progress(n)
	}
	return nil
}

func (c *copier) progress(n int64) {
	if c.opts.Progress == nil || n == 0 {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	c.done += n
	c.opts.Progress(Progress{Phase: c.opts.Phase, Done: c.done, Total: c.total})
}

func (c *copier) setPhase(phase string) {
	if c.opts.Progress == nil {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	c.opts.Progress(Progress{Phase: phase})
}

// zeroRange is [start, end) of the target that reads as zeros.
type zeroRange struct{ start, end int64 }

// zeroRanges returns the zero extents of ext as sorted, merged ranges.
func zeroRanges(ext []backend.Extent) []zeroRange {
	var in []zeroRange
	for _, e := range ext {
		if e.Zero && e.Length > 0 {
			in = append(in, zeroRange{e.Start, e.End()})
		}
	}
	slices.SortFunc(in, func(a, b zeroRange) int { return cmp.Compare(a.start, b.start) })
	var zs []zeroRange
	for _, z := range in {
		if n := len(zs); n > 0 && zs[n-1].end >= z.start {
			zs[n-1].end = max(zs[n-1].end, z.end)
			continue
		}
		zs = append(zs, z)
	}
	return zs
}

// zeroRun says how many bytes from off the target reads as zeros, and when
// that is none, where the next such range starts (max int64 if none).
func (c *copier) zeroRun(off int64) (n, next int64) {
	i := sort.Search(len(c.zeros), func(i int) bool { return c.zeros[i].end > off })
	if i == len(c.zeros) {
		return 0, math.MaxInt64
	}
	if z := c.zeros[i]; z.start <= off {
		return z.end - off, 0
	}
	return 0, c.zeros[i].start
}
