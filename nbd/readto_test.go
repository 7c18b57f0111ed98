package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

// limitWriter takes up to left bytes and then fails with errFull.
type limitWriter struct {
	buf  bytes.Buffer
	left int
}

var errFull = errors.New("writer full")

func (w *limitWriter) Write(p []byte) (int, error) {
	if len(p) > w.left {
		n, _ := w.buf.Write(p[:w.left])
		w.left = 0
		return n, errFull
	}
	w.left -= len(p)
	return w.buf.Write(p)
}

// TestReadToQemuNBD streams random ranges of raw and qcow2 images that
// hold data, written zeros and unallocated space, with several request and
// buffer sizes, while other reads share the connection, and compares them
// with the image.
func TestReadToQemuNBD(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			const size = 48 << 20
			c, _ := dialNewImage(t, format, size)
			ctx := testutil.Context(t)
			model := make([]byte, size)
			rng := rand.New(rand.NewPCG(5, 6))
			for off := 0; off < size; off += 4 << 20 {
				switch n := 1 + rng.IntN(3<<20); rng.IntN(3) {
				case 0: // data
					p := randomBytes(rng, n)
					if err := c.WriteAt(ctx, p, int64(off)); err != nil {
						t.Fatal(err)
					}
					copy(model[off:], p)
				case 1: // written zeros
					if err := c.Zero(ctx, int64(off), int64(n), ZeroNoHole); err != nil {
						t.Fatal(err)
					}
				}
			}
			// Plain reads on the same connection while ReadTo holds it.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, 64<<10)
				for i := 0; i < 2000; i++ {
					select {
					case <-stop:
						return
					default:
					}
					off := (i * 1234567) % (size - len(p))
					if err := c.ReadAt(ctx, p, int64(off)); err != nil {
						t.Errorf("ReadAt during ReadTo: %v", err)
						return
					}
					if !bytes.Equal(p, model[off:off+len(p)]) {
						t.Errorf("ReadAt during ReadTo: wrong data at %d", off)
						return
					}
				}
			}()
			steps := []int64{0, 1 << 20, 3<<20 + 4096, 64 << 20}
			bufs := []int{4096, 100 << 10, 1 << 20}
			for i := 0; i < 12; i++ {
				n := 1 + rng.IntN(10<<20)
				if i == 0 {
					n = 40<<20 + 12345 // more than the largest request
				}
				off := rng.IntN(size - n + 1)
				step, buf := steps[i%len(steps)], make([]byte, bufs[i%len(bufs)])
				var w bytes.Buffer
				got, err := c.ReadTo(ctx, &w, int64(off), int64(n), step, buf)
				if err != nil {
					t.Fatalf("ReadTo(%d bytes at %d, step %d): %v", n, off, step, err)
				}
				if got != int64(n) || w.Len() != n {
					t.Fatalf("ReadTo(%d bytes at %d) wrote %d (%d in the writer)", n, off, got, w.Len())
				}
				if d := firstDiff(w.Bytes(), model[off:off+n]); d >= 0 {
					t.Fatalf("ReadTo(%d bytes at %d, step %d): differs at offset %d", n, off, step, off+d)
				}
			}
			close(stop)
			wg.Wait()
		})
	}
}

// TestReadToWriterFails fails the writer inside a request's data: ReadTo
// returns the writer's error and what the writer took, and the connection
// stays usable.
func TestReadToWriterFails(t *testing.T) {
	const size = 16 << 20
	c, _ := dialNewImage(t, "raw", size)
	ctx := testutil.Context(t)
	rng := rand.New(rand.NewPCG(7, 8))
	model := randomBytes(rng, size)
	if err := c.WriteAt(ctx, model, 0); err != nil {
		t.Fatal(err)
	}
	for _, limit := range []int{0, 1, 1<<20 - 1, 1 << 20, 5<<20 + 3} {
		w := &limitWriter{left: limit}
		got, err := c.ReadTo(ctx, w, 4096, 12<<20, 1<<20, make([]byte, 256<<10))
		if !errors.Is(err, errFull) {
			t.Fatalf("limit %d: error = %v, want the writer's", limit, err)
		}
		if got != int64(limit) || !bytes.Equal(w.buf.Bytes(), model[4096:4096+limit]) {
			t.Fatalf("limit %d: wrote %d bytes (%d in the writer)", limit, got, w.buf.Len())
		}
		p := make([]byte, 3<<20)
		if err := c.ReadAt(ctx, p, 8192); err != nil || !bytes.Equal(p, model[8192:8192+len(p)]) {
			t.Fatalf("limit %d: ReadAt after a failed writer: %v", limit, err)
		}
	}
	var w bytes.Buffer
	if _, err := c.ReadTo(ctx, &w, 0, size, 0, make([]byte, 64<<10)); err != nil || !bytes.Equal(w.Bytes(), model) {
		t.Fatalf("ReadTo after failed writers: %v", err)
	}
}

// TestReadToNBDKit streams from nbdkit with structured replies and with
// simple ones (--no-sr).
func TestReadToNBDKit(t *testing.T) {
	for _, args := range [][]string{{"pattern", "size=20M"}, {"--no-sr", "pattern", "size=20M"}} {
		t.Run(args[0], func(t *testing.T) {
			c := dial(t, nbdkit(t, args...), Options{})
			ctx := testutil.Context(t)
			off, n := int64(3<<20+8), int64(15<<20+16)
			var w bytes.Buffer
			if _, err := c.ReadTo(ctx, &w, off, n, 2<<20, make([]byte, 128<<10)); err != nil {
				t.Fatal(err)
			}
			want := make([]byte, 0, n+8)
			for o := off; o < off+n; o += 8 {
				want = binary.BigEndian.AppendUint64(want, uint64(o))
			}
			if d := firstDiff(w.Bytes(), want[:n]); d >= 0 {
				t.Fatalf("differs at offset %d", off+int64(d))
			}
		})
	}
}

// TestReadToFakeServer covers replies that qemu-nbd does not send.
func TestReadToFakeServer(t *testing.T) {
	const size = 4 << 20
	// fragmented answers a read as a hole chunk for its first 512 bytes
	// and the rest as data, in reverse order when backwards is set.
	fragmented := func(c *fakeConn, req fakeRequest, backwards bool) {
		hole := binary.BigEndian.AppendUint64(nil, req.off)
		hole = binary.BigEndian.AppendUint32(hole, 512)
		data := binary.BigEndian.AppendUint64(nil, req.off+512)
		data = append(data, pattern(req.off+512, req.length-512)...)
		if backwards {
			c.chunk(0, chunkOffsetData, req.cookie, data)
			c.chunk(replyFlagDone, chunkOffsetHole, req.cookie, hole)
			return
		}
		c.chunk(0, chunkOffsetHole, req.cookie, hole)
		c.chunk(replyFlagDone, chunkOffsetData, req.cookie, data)
	}
	// holed is pattern with zeros in the first 512 bytes of each request.
	holed := func(off, n, step int64) []byte {
		p := pattern(uint64(off), uint32(n))
		for o := int64(0); o < n; o += step {
			clear(p[o:min(n, o+512)])
		}
		return p
	}
	t.Run("no DF, chunks in any order", func(t *testing.T) {
		fs := &fakeServer{structured: true, size: size, serve: func(c *fakeConn) {
			for i := 0; ; i++ {
				req, ok := c.request()
				if !ok {
					return
				}
				if req.flags&cmdFlagDF != 0 {
					c.simple(EINVAL, req.cookie, nil)
					continue
				}
				fragmented(c, req, i%2 == 1)
			}
		}}
		c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
		var w bytes.Buffer
		// Without DF the pieces are the buffer's size.
		if _, err := c.ReadTo(boundedContext(t, 10*time.Second), &w, 1000, 1<<20, 0, make([]byte, 64<<10)); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(w.Bytes(), holed(1000, 1<<20, 64<<10)) {
			t.Fatal("wrong data")
		}
	})
	for _, backwards := range []bool{false, true} {
		// In order, a hole and data chunk make the reply; out of order
		// they break a promise of DF.
		t.Run(fmt.Sprintf("DF, a hole and data, backwards %v", backwards), func(t *testing.T) {
			fs := &fakeServer{structured: true, size: size, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
				for {
					req, ok := c.request()
					if !ok {
						return
					}
					fragmented(c, req, backwards)
				}
			}}
			c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
			var w bytes.Buffer
			_, err := c.ReadTo(boundedContext(t, 10*time.Second), &w, 0, 3<<20, 1<<20, make([]byte, 100<<10))
			switch {
			case backwards && !isProtocolError(err):
				t.Fatalf("error = %v, want a protocol error", err)
			case !backwards && err != nil:
				t.Fatal(err)
			case !backwards && !bytes.Equal(w.Bytes(), holed(0, 3<<20, 1<<20)):
				t.Fatal("wrong data")
			}
		})
	}
	t.Run("DF, an error for the second request", func(t *testing.T) {
		fs := &fakeServer{structured: true, size: size, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
			for i := 0; ; i++ {
				req, ok := c.request()
				if !ok {
					return
				}
				if i == 1 {
					p := binary.BigEndian.AppendUint32(nil, EIO)
					p = binary.BigEndian.AppendUint16(p, 3)
					c.chunk(replyFlagDone, chunkError, req.cookie, append(p, "bad"...))
					continue
				}
				c.answer(req)
			}
		}}
		c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
		ctx := boundedContext(t, 10*time.Second)
		var w bytes.Buffer
		got, err := c.ReadTo(ctx, &w, 0, 3<<20, 1<<20, make([]byte, 4096))
		if errnoOf(err) != EIO || got != 1<<20 || !bytes.Equal(w.Bytes(), pattern(0, 1<<20)) {
			t.Fatalf("ReadTo = %d, %v; want the first request's data and EIO", got, err)
		}
		// The connection still works.
		p := make([]byte, 8192)
		if err := c.ReadAt(ctx, p, 512); err != nil || !bytes.Equal(p, pattern(512, 8192)) {
			t.Fatalf("ReadAt after the error: %v", err)
		}
	})
	t.Run("silent server, canceled", func(t *testing.T) {
		fs := &fakeServer{structured: true, size: size, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
			for {
				if _, ok := c.request(); !ok {
					return
				}
			}
		}}
		c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
		readToDeadline(t, c, 2<<20, make([]byte, 4096), 10*time.Second)
	})
}

// readToDeadline runs ReadTo of length bytes in 1 MiB requests under a
// 200 ms deadline, and wants the deadline's error within limit.
func readToDeadline(t *testing.T, c *Client, length int64, buf []byte, limit time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.ReadTo(ctx, io.Discard, 0, length, 1<<20, buf)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("error = %v, want the context's", err)
	}
	if d := time.Since(start); d > limit {
		t.Fatalf("ReadTo returned after %v", d)
	}
}

// shortWriter takes at most 100 bytes a call and says nothing of the rest.
type shortWriter struct{ n int }

func (w *shortWriter) Write(p []byte) (int, error) {
	k := min(len(p), 100)
	w.n += k
	return k, nil
}

// cancelWriter cancels a context at its first write and takes everything.
type cancelWriter struct {
	cancel context.CancelFunc
	n      int
}

func (w *cancelWriter) Write(p []byte) (int, error) {
	w.cancel()
	w.n += len(p)
	return len(p), nil
}

// TestReadToFailures covers replies that end badly and callers that go
// away in the middle of a reply.
func TestReadToFailures(t *testing.T) {
	const size = 8 << 20
	errorAt := func(c *fakeConn, req fakeRequest, at uint64) {
		p := binary.BigEndian.AppendUint32(nil, EIO)
		p = binary.BigEndian.AppendUint16(p, 0)
		p = binary.BigEndian.AppendUint64(p, at)
		c.chunk(replyFlagDone, chunkErrorOffset, req.cookie, p)
	}
	for _, bad := range []int{0, 2} {
		t.Run(fmt.Sprintf("data, then an error for request %d of 3", bad), func(t *testing.T) {
			// The spec lets the error chunk follow the data it spoils: the
			// range must never arrive whole.
			fs := &fakeServer{structured: true, size: size, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
				for i := 0; ; i++ {
					req, ok := c.request()
					if !ok {
						return
					}
					if i != bad {
						c.answer(req)
						continue
					}
					data := binary.BigEndian.AppendUint64(nil, req.off)
					c.chunk(0, chunkOffsetData, req.cookie, append(data, pattern(req.off, req.length)...))
					errorAt(c, req, req.off+100)
				}
			}}
			c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
			var w bytes.Buffer
			got, err := c.ReadTo(boundedContext(t, 10*time.Second), &w, 0, 3<<20, 1<<20, make([]byte, 64<<10))
			if errnoOf(err) != EIO {
				t.Fatalf("error = %v, want EIO", err)
			}
			if got >= 3<<20 || int(got) != w.Len() {
				t.Fatalf("wrote %d bytes (%d in the writer) of a range whose reply failed", got, w.Len())
			}
		})
	}
	t.Run("server stalls mid-data, context ends", func(t *testing.T) {
		fs := &fakeServer{structured: true, size: size, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
			req, ok := c.request()
			if !ok {
				return
			}
			// A chunk header for the whole request and only half its data.
			b := chunkBytes(0, chunkOffsetData, req.cookie, nil)
			binary.BigEndian.PutUint32(b[16:], 8+req.length)
			b = binary.BigEndian.AppendUint64(b, req.off)
			c.write(append(b, pattern(req.off, req.length/2)...))
			for {
				if _, ok := c.request(); !ok {
					return
				}
			}
		}}
		c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
		readToDeadline(t, c, 1<<20, make([]byte, 64<<10), abandonGrace+3*time.Second)
	})
	t.Run("canceled mid-reply, connection usable", func(t *testing.T) {
		c, _ := dialNewImage(t, "raw", size)
		rng := rand.New(rand.NewPCG(9, 10))
		model := randomBytes(rng, size)
		ctx := testutil.Context(t)
		if err := c.WriteAt(ctx, model, 0); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		w := &cancelWriter{cancel: cancel}
		if _, err := c.ReadTo(cctx, w, 0, size, 4<<20, make([]byte, 64<<10)); !errors.Is(err, context.Canceled) {
			t.Fatalf("error = %v, want Canceled", err)
		}
		if w.n != 64<<10 {
			t.Errorf("the writer got %d bytes after the cancel, want only the first piece", w.n)
		}
		p := make([]byte, 1<<20)
		if err := c.ReadAt(ctx, p, 4096); err != nil || !bytes.Equal(p, model[4096:4096+len(p)]) {
			t.Fatalf("ReadAt after a canceled ReadTo: %v", err)
		}
	})
	t.Run("short write", func(t *testing.T) {
		c, _ := dialNewImage(t, "raw", size)
		w := &shortWriter{}
		got, err := c.ReadTo(testutil.Context(t), w, 0, 1<<20, 0, make([]byte, 64<<10))
		if !errors.Is(err, io.ErrShortWrite) || got != int64(w.n) {
			t.Fatalf("ReadTo = %d, %v; want io.ErrShortWrite after %d bytes", got, err, w.n)
		}
	})
}

// TestReadToFragmentedDF answers each read with a hole chunk first and its
// data later, and does not send that data until it has waited a while for
// the next request: a client that sent the next request as soon as the
// first chunk arrived would get the next reply before the current one's
// data.
func TestReadToFragmentedDF(t *testing.T) {
	fs := &fakeServer{structured: true, size: 4 << 20, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
		req, ok := c.request()
		for ok {
			hole := binary.BigEndian.AppendUint64(nil, req.off)
			hole = binary.BigEndian.AppendUint32(hole, 512)
			c.chunk(0, chunkOffsetHole, req.cookie, hole)
			c.conn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			early, gotEarly := c.request()
			c.conn.SetReadDeadline(time.Time{})
			if gotEarly {
				c.answer(early)
			}
			data := binary.BigEndian.AppendUint64(nil, req.off+512)
			c.chunk(replyFlagDone, chunkOffsetData, req.cookie, append(data, pattern(req.off+512, req.length-512)...))
			if gotEarly {
				// The early reply went out first: the stream is now
				// wrong for an ordered client, which is what this
				// test is for; stop here.
				return
			}
			req, ok = c.request()
		}
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	var w bytes.Buffer
	if _, err := c.ReadTo(boundedContext(t, 20*time.Second), &w, 0, 3<<20, 1<<20, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	want := pattern(0, 3<<20)
	for o := 0; o < 3<<20; o += 1 << 20 {
		clear(want[o : o+512])
	}
	if !bytes.Equal(w.Bytes(), want) {
		t.Fatal("wrong data")
	}
}

// TestReadToOverflow refuses unfragmented reads over 64 KiB with
// EOVERFLOW, as the spec allows: ReadTo reads the rest without DF.
func TestReadToOverflow(t *testing.T) {
	fs := &fakeServer{structured: true, size: 4 << 20, flags: uint16(FlagSendDF), serve: func(c *fakeConn) {
		for {
			req, ok := c.request()
			if !ok {
				return
			}
			if req.flags&cmdFlagDF != 0 && req.length > 64<<10 {
				c.simple(EOVERFLOW, req.cookie, nil)
				continue
			}
			c.answer(req)
		}
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	var w bytes.Buffer
	got, err := c.ReadTo(boundedContext(t, 10*time.Second), &w, 1000, 2<<20, 1<<20, make([]byte, 64<<10))
	if err != nil || got != 2<<20 || !bytes.Equal(w.Bytes(), pattern(1000, 2<<20)) {
		t.Fatalf("ReadTo = %d, %v; want the range read without DF", got, err)
	}
}
