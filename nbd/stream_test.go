package nbd

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

// TestWriteFromQemuNBD streams random ranges into raw and qcow2 images
// with several request and buffer sizes, through a reader that returns
// odd-sized pieces, and reads everything back.
func TestWriteFromQemuNBD(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			const size = 48 << 20
			c, _ := dialNewImage(t, format, size)
			ctx := testutil.Context(t)
			model := make([]byte, size)
			rng := rand.New(rand.NewPCG(3, 4))
			steps := []int64{0, 1 << 20, 3<<20 + 4096, 64 << 20}
			bufs := []int{4096, 100 << 10, 1 << 20}
			for i := 0; i < 12; i++ {
				n := 1 + rng.IntN(6<<20)
				if i == 0 {
					n = 40<<20 + 12345 // more than the largest request
				}
				off := rng.IntN(size - n + 1)
				step, buf := steps[i%len(steps)], make([]byte, bufs[i%len(bufs)])
				p := randomBytes(rng, n)
				var acked []int64
				r := iotest.HalfReader(bytes.NewReader(p))
				if err := c.WriteFrom(ctx, r, int64(off), int64(n), step, buf, func(k int64) { acked = append(acked, k) }); err != nil {
					t.Fatalf("WriteFrom(%d bytes at %d, step %d): %v", n, off, step, err)
				}
				copy(model[off:], p)
				limit := step
				if limit <= 0 || limit > c.maxIO {
					limit = c.maxIO
				}
				var sum int64
				for _, k := range acked {
					if k <= 0 || k > limit {
						t.Fatalf("acknowledged a request of %d bytes, limit %d", k, limit)
					}
					sum += k
				}
				if sum != int64(n) || len(acked) != int((int64(n)+limit-1)/limit) {
					t.Fatalf("acknowledged %v (%d bytes), want %d bytes in requests of %d", acked, sum, n, limit)
				}
			}
			got := make([]byte, size)
			if err := c.ReadAt(ctx, got, 0); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			if i := firstDiff(got, model); i >= 0 {
				t.Fatalf("content differs at offset %d", i)
			}
		})
	}
}

// TestWriteFromShortReader ends or breaks the reader with 1 MiB requests
// in flight to a slow server: the requests read whole are written and
// acknowledged, nothing of the cut one is. A cut before the request's
// first bytes went out leaves the connection usable; a cut inside its
// payload breaks it.
func TestWriteFromShortReader(t *testing.T) {
	const size, step, whole = 8 << 20, 1 << 20, 3 << 20
	errBroken := errors.New("source broke")
	tests := []struct {
		name     string
		sent     int   // bytes the reader gives
		err      error // what it fails with after them (nil: EOF)
		want     error
		usable   bool
		bufBytes int
	}{
		{"end before the request", whole + 1000, nil, io.ErrUnexpectedEOF, true, 256 << 10},
		{"end inside the payload", whole + 300<<10, nil, io.ErrUnexpectedEOF, false, 256 << 10},
		{"error inside the payload", whole + 600<<10, errBroken, errBroken, false, 256 << 10},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			addr := nbdkit(t, "--filter=delay", "memory", "size=8M", "wdelay=5ms")
			c := dial(t, addr, Options{})
			ctx := testutil.Context(t)
			data := randomBytes(rand.New(rand.NewPCG(5, 6)), tc.sent)
			var r io.Reader = bytes.NewReader(data)
			if tc.err != nil {
				r = io.MultiReader(r, iotest.ErrReader(tc.err))
			}
			var acked int64
			err := c.WriteFrom(ctx, r, 0, size, step, make([]byte, tc.bufBytes), func(k int64) { acked += k })
			if !errors.Is(err, tc.want) {
				t.Fatalf("WriteFrom error = %v, want %v", err, tc.want)
			}
			if acked != whole {
				t.Errorf("acknowledged %d bytes, want %d", acked, whole)
			}
			err = c.WriteAt(ctx, []byte("after"), size-5)
			if tc.usable && err != nil {
				t.Fatalf("connection not usable after a cut between requests: %v", err)
			}
			if !tc.usable && err == nil {
				t.Fatal("WriteAt succeeded on a connection whose request was cut")
			}
			got := make([]byte, whole+step)
			if err := dial(t, addr, Options{}).ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			if i := firstDiff(got[:whole], data[:whole]); i >= 0 {
				t.Errorf("whole requests not written: differs at %d", i)
			}
			if !bytes.Equal(got[whole:], make([]byte, step)) {
				t.Error("the cut request was written")
			}
		})
	}
}

// TestWriteFromServerError writes to a server failing every write with
// ENOSPC: the error says so, nothing is acknowledged, the reader is not
// read to the end, and the connection still serves reads.
func TestWriteFromServerError(t *testing.T) {
	const size, step = 16 << 20, 1 << 20
	c := dial(t, nbdkit(t, "--filter=error", "memory", "size=16M", "error-pwrite=ENOSPC", "error-pwrite-rate=1"), Options{})
	ctx := testutil.Context(t)
	r := &pausingReader{r: bytes.NewReader(make([]byte, size)), after: 2 * step, pause: time.Second}
	acked := 0
	err := c.WriteFrom(ctx, r, 0, size, step, make([]byte, 256<<10), func(int64) { acked++ })
	if !errors.Is(err, ErrNoSpace) || errnoOf(err) != ENOSPC {
		t.Fatalf("WriteFrom error = %v, want ENOSPC", err)
	}
	if acked != 0 {
		t.Errorf("%d requests acknowledged", acked)
	}
	if r.read >= size {
		t.Errorf("read all %d bytes after the server failed the first request", r.read)
	}
	if err := c.ReadAt(ctx, make([]byte, 4096), 0); err != nil {
		t.Fatalf("read after the failed writes: %v", err)
	}
}

// pausingReader reads from r and pauses once, after the first after bytes,
// so that replies to what was sent arrive before more is read.
type pausingReader struct {
	r      io.Reader
	after  int
	pause  time.Duration
	read   int
	paused bool
}

func (p *pausingReader) Read(b []byte) (int, error) {
	if p.read >= p.after && !p.paused {
		p.paused = true
		time.Sleep(p.pause)
	}
	n, err := p.r.Read(b)
	p.read += n
	return n, err
}

// TestWriteFromConcurrent streams two ranges and writes a third on one
// connection at the same time: payloads never interleave on the wire.
func TestWriteFromConcurrent(t *testing.T) {
	const size = 24 << 20
	c, _ := dialNewImage(t, "raw", size)
	ctx := testutil.Context(t)
	data := randomBytes(rand.New(rand.NewPCG(7, 8)), size)
	third := int64(size / 3)
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			off := int64(i) * third
			r := iotest.HalfReader(bytes.NewReader(data[off : off+third]))
			errs <- c.WriteFrom(ctx, r, off, third, 1<<20, make([]byte, 64<<10), nil)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for off := 2 * third; off < size; off += 1 << 20 {
			if err := c.WriteAt(ctx, data[off:off+1<<20], off); err != nil {
				errs <- err
				return
			}
		}
		errs <- nil
	}()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := make([]byte, size)
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, data); i >= 0 {
		t.Fatalf("content differs at offset %d", i)
	}
}

// TestWriteFromCanceled: a context ended before the call sends nothing
// and reads nothing.
func TestWriteFromCanceled(t *testing.T) {
	c := dial(t, nbdkit(t, "memory", "size=4M"), Options{})
	ctx, cancel := context.WithCancel(testutil.Context(t))
	cancel()
	r := &pausingReader{r: bytes.NewReader(make([]byte, 4<<20)), after: 4 << 20}
	err := c.WriteFrom(ctx, r, 0, 4<<20, 0, make([]byte, 64<<10), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error = %v, want context.Canceled", err)
	}
	if r.read != 0 {
		t.Errorf("read %d bytes", r.read)
	}
	if err := c.WriteAt(testutil.Context(t), []byte("x"), 0); err != nil {
		t.Fatalf("connection not usable: %v", err)
	}
}
