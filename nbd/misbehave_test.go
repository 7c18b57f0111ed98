package nbd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
)

// boundedContext returns a context that ends after d, so a hang shows up
// as a test failure instead of a stuck test.
func boundedContext(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestMisbehavingServer(t *testing.T) {
	tests := []struct {
		name  string
		reply func(c *fakeConn, req fakeRequest)
		want  string // part of the error text
	}{
		{"garbage", func(c *fakeConn, req fakeRequest) {
			c.write([]byte("garbage garbage garbage"))
		}, "bad reply magic"},
		{"unknown chunk type", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, 1234, req.cookie, nil)
		}, "unknown reply chunk type 1234"},
		{"cookie not in flight", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, chunkNone, req.cookie+1000, nil)
		}, "not in flight"},
		{"data outside request", func(c *fakeConn, req fakeRequest) {
			payload := binary.BigEndian.AppendUint64(nil, req.off+1)
			c.chunk(replyFlagDone, chunkOffsetData, req.cookie, append(payload, pattern(req.off, req.length)...))
		}, "outside read"},
		{"data longer than request", func(c *fakeConn, req fakeRequest) {
			payload := binary.BigEndian.AppendUint64(nil, req.off)
			c.chunk(replyFlagDone, chunkOffsetData, req.cookie, append(payload, pattern(req.off, req.length+1)...))
		}, "OFFSET_DATA of"},
		{"hole of wrong length", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, chunkOffsetHole, req.cookie, make([]byte, 8))
		}, "OFFSET_HOLE of 8 bytes"},
		{"none with payload", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, chunkNone, req.cookie, make([]byte, 4))
		}, "NBD_REPLY_TYPE_NONE"},
		{"error chunk with bad message length", func(c *fakeConn, req fakeRequest) {
			p := binary.BigEndian.AppendUint32(nil, EIO)
			p = binary.BigEndian.AppendUint16(p, 100)
			c.chunk(replyFlagDone, chunkError, req.cookie, append(p, "short"...))
		}, "error message of 100 bytes"},
		{"error with errno 0", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, chunkError, req.cookie, make([]byte, 6))
		}, "errno 0"},
		{"simple reply with data", func(c *fakeConn, req fakeRequest) {
			c.simple(0, req.cookie, pattern(req.off, req.length))
		}, "simple reply with data"},
		{"block status to read", func(c *fakeConn, req fakeRequest) {
			c.chunk(replyFlagDone, chunkBlockStatus, req.cookie, make([]byte, 12))
		}, "BLOCK_STATUS to NBD_CMD_READ"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeServer{structured: true, size: 1 << 20, serve: func(c *fakeConn) {
				if req, ok := c.request(); ok {
					tc.reply(c, req)
				}
				for {
					if _, ok := c.request(); !ok {
						return
					}
				}
			}}
			c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
			ctx := boundedContext(t, 10*time.Second)
			err := c.ReadAt(ctx, make([]byte, 4096), 0)
			if !isProtocolError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ReadAt error = %v, want a protocol error with %q", err, tc.want)
			}
			// The connection is closed; later calls fail at once.
			if err := c.ReadAt(ctx, make([]byte, 4096), 0); !isProtocolError(err) {
				t.Fatalf("second ReadAt error = %v, want the protocol error", err)
			}
		})
	}
}

func TestShortReply(t *testing.T) {
	fs := &fakeServer{structured: true, size: 1 << 20, serve: func(c *fakeConn) {
		req, _ := c.request()
		full := chunkBytes(replyFlagDone, chunkOffsetData, req.cookie,
			append(binary.BigEndian.AppendUint64(nil, req.off), pattern(req.off, req.length)...))
		c.write(full[:100])
		c.conn.Close()
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	err := c.ReadAt(boundedContext(t, 10*time.Second), make([]byte, 4096), 0)
	if err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Fatalf("ReadAt error = %v, want unexpected EOF", err)
	}
}

func TestSilentServer(t *testing.T) {
	stop := make(chan struct{})
	fs := &fakeServer{structured: true, size: 64 << 20, serve: func(c *fakeConn) {
		<-stop // read nothing, answer nothing
	}}
	defer close(stop)
	addr := fs.start(t)

	t.Run("deadline", func(t *testing.T) {
		c := dial(t, addr, Options{MetaContexts: []string{}})
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		err := c.ReadAt(ctx, make([]byte, 4096), 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("ReadAt error = %v, want DeadlineExceeded", err)
		}
	})
	t.Run("write blocked", func(t *testing.T) {
		// The server reads nothing, so a large write fills the socket
		// buffers and blocks; the deadline still ends the call.
		c := dial(t, addr, Options{MetaContexts: []string{}})
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		err := c.WriteAt(ctx, make([]byte, 64<<20), 0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WriteAt error = %v, want DeadlineExceeded", err)
		}
		// Part of the request went out: the connection is unusable.
		if err := c.ReadAt(boundedContext(t, 5*time.Second), make([]byte, 1), 0); err == nil {
			t.Fatal("ReadAt after an interrupted write succeeded")
		}
	})
	t.Run("close unblocks", func(t *testing.T) {
		c := dial(t, addr, Options{MetaContexts: []string{}})
		ctx := boundedContext(t, 20*time.Second)
		var g errgroup.Group
		for i := 0; i < 8; i++ {
			g.Go(func() error {
				if i%2 == 0 {
					return c.ReadAt(ctx, make([]byte, 4096), int64(i)*4096)
				}
				return c.WriteAt(ctx, make([]byte, 8<<20), 0)
			})
		}
		time.Sleep(100 * time.Millisecond)
		c.Close()
		err := g.Wait()
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("calls blocked at Close returned %v, want ErrClosed", err)
		}
		if ctx.Err() != nil {
			t.Fatal("calls ended only at the context deadline")
		}
		if err := c.ReadAt(ctx, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
			t.Fatalf("ReadAt after Close = %v, want ErrClosed", err)
		}
	})
	t.Run("dial", func(t *testing.T) {
		fs := &fakeServer{greeting: func(conn net.Conn) { io.Copy(io.Discard, conn) }}
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := Dial(ctx, fs.start(t), Options{})
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Dial error = %v, want DeadlineExceeded", err)
		}
	})
}

func TestBadGreeting(t *testing.T) {
	fs := &fakeServer{greeting: func(conn net.Conn) { conn.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")) }}
	_, err := Dial(boundedContext(t, 10*time.Second), fs.start(t), Options{})
	if !isProtocolError(err) {
		t.Fatalf("Dial error = %v, want a protocol error", err)
	}
}

func TestOutOfOrderReplies(t *testing.T) {
	// The server reads all requests before it answers any, in reverse
	// order. A client without pipelining would wait forever.
	const n = 16
	fs := &fakeServer{structured: true, size: 64 << 20, serve: func(c *fakeConn) {
		var reqs []fakeRequest
		for len(reqs) < n {
			req, ok := c.request()
			if !ok {
				return
			}
			reqs = append(reqs, req)
		}
		for i := len(reqs) - 1; i >= 0; i-- {
			c.answer(reqs[i])
		}
		serveCorrectly(c)
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	ctx := boundedContext(t, 20*time.Second)
	g, ctx := errgroup.WithContext(ctx)
	for i := 0; i < n; i++ {
		g.Go(func() error {
			off, length := uint64(i)*100003, uint32(1000+i*777)
			p := make([]byte, length)
			if err := c.ReadAt(ctx, p, int64(off)); err != nil {
				return err
			}
			if !bytes.Equal(p, pattern(off, length)) {
				return errors.New("wrong data")
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

func TestCanceledReadDiscardsData(t *testing.T) {
	// The first read is answered only after the second request arrives,
	// when its caller has given up: its data must be discarded, not
	// written into the caller's buffer, and the stream must stay in sync.
	gotFirst, second := make(chan struct{}), make(chan struct{})
	fs := &fakeServer{structured: true, size: 1 << 20, serve: func(c *fakeConn) {
		first, ok := c.request()
		if !ok {
			return
		}
		close(gotFirst)
		next, ok := c.request()
		if !ok {
			return
		}
		close(second)
		// A hole and a data chunk for the abandoned read.
		hole := binary.BigEndian.AppendUint64(nil, first.off)
		hole = binary.BigEndian.AppendUint32(hole, 512)
		c.chunk(0, chunkOffsetHole, first.cookie, hole)
		data := binary.BigEndian.AppendUint64(nil, first.off+512)
		c.chunk(replyFlagDone, chunkOffsetData, first.cookie, append(data, pattern(first.off+512, first.length-512)...))
		c.answer(next)
		serveCorrectly(c)
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	p1 := bytes.Repeat([]byte{0xaa}, 64<<10)
	ctx1, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- c.ReadAt(ctx1, p1, 0) }()
	select {
	case <-gotFirst:
	case <-time.After(10 * time.Second):
		t.Fatal("the server got no request")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled ReadAt error = %v, want Canceled", err)
	}
	ctx := boundedContext(t, 10*time.Second)
	p2 := make([]byte, 8192)
	if err := c.ReadAt(ctx, p2, 4096); err != nil {
		t.Fatal(err)
	}
	<-second
	if !bytes.Equal(p2, pattern(4096, 8192)) {
		t.Fatal("second read got wrong data")
	}
	// Another round trip makes sure the abandoned reply was consumed.
	if err := c.ReadAt(ctx, p2, 0); err != nil || !bytes.Equal(p2, pattern(0, 8192)) {
		t.Fatalf("third read: %v", err)
	}
	if !bytes.Equal(p1, bytes.Repeat([]byte{0xaa}, 64<<10)) {
		t.Fatal("the canceled read's buffer was written after ReadAt returned")
	}
}

func TestStructuredErrors(t *testing.T) {
	fs := &fakeServer{structured: true, size: 1 << 20, flags: uint16(FlagSendFlush), serve: func(c *fakeConn) {
		for {
			req, ok := c.request()
			if !ok {
				return
			}
			switch req.typ {
			case cmdRead:
				// Part data, then an error at an offset.
				data := binary.BigEndian.AppendUint64(nil, req.off)
				c.chunk(0, chunkOffsetData, req.cookie, append(data, pattern(req.off, 512)...))
				p := binary.BigEndian.AppendUint32(nil, EIO)
				p = binary.BigEndian.AppendUint16(p, 8)
				p = append(p, "bad\nsect"...)
				p = binary.BigEndian.AppendUint64(p, req.off+512)
				c.chunk(replyFlagDone, chunkErrorOffset, req.cookie, p)
			case cmdFlush:
				c.simple(ENOSPC, req.cookie, nil)
			default:
				// An unknown error type still carries errno and message.
				p := binary.BigEndian.AppendUint32(nil, 1000)
				p = binary.BigEndian.AppendUint16(p, 0)
				c.chunk(replyFlagDone, chunkErrBit+77, req.cookie, append(p, 1, 2, 3))
			}
		}
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	ctx := boundedContext(t, 10*time.Second)
	var e *Error
	err := c.ReadAt(ctx, make([]byte, 4096), 4096)
	if !errors.As(err, &e) || e.Errno != EIO || e.Message != "bad?sect" {
		t.Fatalf("ReadAt error = %#v, want EIO with message", err)
	}
	err = c.Flush(ctx)
	if !errors.As(err, &e) || e.Errno != ENOSPC {
		t.Fatalf("Flush error = %v, want ENOSPC", err)
	}
	err = c.WriteAt(ctx, make([]byte, 10), 0)
	if !errors.As(err, &e) || e.Errno != 1000 || !strings.Contains(err.Error(), "errno 1000") {
		t.Fatalf("WriteAt error = %v, want errno 1000", err)
	}
}

func TestOldServer(t *testing.T) {
	// No structured replies, no NBD_OPT_GO: simple replies after
	// NBD_OPT_EXPORT_NAME.
	fs := &fakeServer{noGo: true, size: 3 << 20, flags: uint16(FlagReadOnly), serve: func(c *fakeConn) {
		for {
			req, ok := c.request()
			if !ok {
				return
			}
			if req.typ == cmdRead {
				c.simple(0, req.cookie, pattern(req.off, req.length))
			} else {
				c.simple(EINVAL, req.cookie, nil)
			}
		}
	}}
	c := dial(t, fs.start(t), Options{})
	if c.Size() != 3<<20 || !c.Flags().ReadOnly() || c.StructuredReplies() {
		t.Fatalf("Size %d, flags %#x, structured %v", c.Size(), uint16(c.Flags()), c.StructuredReplies())
	}
	if c.BlockSize() != defaultBlockSize {
		t.Errorf("BlockSize() = %+v, want defaults %+v", c.BlockSize(), defaultBlockSize)
	}
	p := make([]byte, 3<<20)
	var wg sync.WaitGroup
	var errs [4]error
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.ReadAt(boundedContext(t, 10*time.Second), p[i<<18:(i+1)<<18], int64(i)<<18)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if !bytes.Equal(p[:1<<20], pattern(0, 1<<20)) {
		t.Fatal("wrong data from simple replies")
	}
}

func TestPartialBlockStatus(t *testing.T) {
	// The server describes at most 1 MiB per request, alternating data and
	// zero, and sends an extra descriptor past the request for base.
	const size = 10<<20 + 12345
	fs := &fakeServer{structured: true, size: size, contexts: map[string]uint32{
		ContextBaseAllocation: 7, ContextAllocationDepth: 9,
	}, serve: func(c *fakeConn) {
		for {
			req, ok := c.request()
			if !ok {
				return
			}
			if req.typ != cmdBlockStatus {
				c.answer(req)
				continue
			}
			n := min(req.length, 1<<20)
			var flags uint32
			if (req.off>>20)%2 == 1 {
				flags = stateZero
			}
			base := binary.BigEndian.AppendUint32(nil, 7)
			base = binary.BigEndian.AppendUint32(base, n)
			base = binary.BigEndian.AppendUint32(base, flags)
			depth := binary.BigEndian.AppendUint32(nil, 9)
			depth = binary.BigEndian.AppendUint32(depth, n/2)
			depth = binary.BigEndian.AppendUint32(depth, 1)
			depth = binary.BigEndian.AppendUint32(depth, n)
			depth = binary.BigEndian.AppendUint32(depth, 1)
			c.chunk(0, chunkBlockStatus, req.cookie, depth)
			c.chunk(replyFlagDone, chunkBlockStatus, req.cookie, base)
		}
	}}
	c := dial(t, fs.start(t), Options{})
	got, err := c.Extents(boundedContext(t, 10*time.Second), 100, size-200)
	if err != nil {
		t.Fatal(err)
	}
	// Each request starts where the previous reply ended, so boundaries
	// drift by the 100-byte start offset.
	pos := int64(100)
	for i, e := range got {
		if e.Start != pos || e.Length <= 0 || e.Hole {
			t.Fatalf("extent %d = %+v, want start %d", i, e, pos)
		}
		if i > 0 && got[i-1].Zero == e.Zero {
			t.Fatalf("extents %d and %d not merged: %+v %+v", i-1, i, got[i-1], e)
		}
		pos = e.End()
	}
	if pos != size-100 {
		t.Fatalf("extents end at %d, want %d", pos, size-100)
	}
}

func TestBlockStatusViolations(t *testing.T) {
	tests := []struct {
		name    string
		payload func(req fakeRequest) []byte
		want    string
	}{
		{"unknown context", func(req fakeRequest) []byte {
			return []byte{0, 0, 0, 42, 0, 0, 1, 0, 0, 0, 0, 0}
		}, "unknown meta context id 42"},
		{"zero length descriptor", func(req fakeRequest) []byte {
			return []byte{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0}
		}, "descriptor of length 0"},
		{"ragged payload", func(req fakeRequest) []byte {
			return []byte{0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0}
		}, "BLOCK_STATUS of 11 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fs := &fakeServer{structured: true, size: 1 << 20, contexts: map[string]uint32{ContextBaseAllocation: 1},
				serve: func(c *fakeConn) {
					for {
						req, ok := c.request()
						if !ok {
							return
						}
						c.chunk(replyFlagDone, chunkBlockStatus, req.cookie, tc.payload(req))
					}
				}}
			c := dial(t, fs.start(t), Options{})
			_, err := c.Extents(boundedContext(t, 10*time.Second), 0, 1<<20)
			if !isProtocolError(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Extents error = %v, want protocol error with %q", err, tc.want)
			}
		})
	}
}

func TestCanceledReadMidData(t *testing.T) {
	// The server starts a data chunk and stalls in the middle of it. A
	// canceled ReadAt must not return while the reader may still write
	// into its buffer: after a grace period the connection is broken.
	stop, stalled := make(chan struct{}), make(chan struct{})
	defer close(stop)
	fs := &fakeServer{structured: true, size: 1 << 20, serve: func(c *fakeConn) {
		req, ok := c.request()
		if !ok {
			return
		}
		full := chunkBytes(replyFlagDone, chunkOffsetData, req.cookie,
			append(binary.BigEndian.AppendUint64(nil, req.off), pattern(req.off, req.length)...))
		c.write(full[:len(full)/2])
		close(stalled)
		<-stop
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-stalled:
			time.Sleep(50 * time.Millisecond) // let the reader take the data
		case <-time.After(10 * time.Second):
		}
		cancel()
	}()
	p := make([]byte, 1<<20)
	start := time.Now()
	err := c.ReadAt(ctx, p, 0)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("ReadAt error = %v, want Canceled", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("ReadAt returned after %v", d)
	}
	// The reader is gone: the buffer stays as it was left.
	snapshot := append([]byte(nil), p...)
	err = c.ReadAt(boundedContext(t, 5*time.Second), make([]byte, 1), 0)
	switch {
	case errors.Is(err, ErrClosed):
	case errors.Is(err, context.DeadlineExceeded):
		// Only when the cancel came before the reader took the data.
		t.Log("the reader had not started on the data when ReadAt was canceled")
	default:
		t.Fatalf("ReadAt after the broken read = %v, want ErrClosed", err)
	}
	if !bytes.Equal(p, snapshot) {
		t.Fatal("buffer changed after ReadAt returned")
	}
}

func TestServerShutdown(t *testing.T) {
	// After ESHUTDOWN the client sends no new requests; Close sends
	// NBD_CMD_DISC.
	disc := make(chan bool, 1)
	fs := &fakeServer{structured: true, size: 1 << 20, flags: uint16(FlagSendFlush), serve: func(c *fakeConn) {
		req, ok := c.request()
		if !ok {
			disc <- false
			return
		}
		c.simple(ESHUTDOWN, req.cookie, nil)
		next, _ := c.request() // the next thing must be NBD_CMD_DISC
		disc <- next.typ == cmdDisc
	}}
	c := dial(t, fs.start(t), Options{MetaContexts: []string{}})
	ctx := boundedContext(t, 10*time.Second)
	if err := c.Flush(ctx); errnoOf(err) != ESHUTDOWN {
		t.Fatalf("Flush error = %v, want ESHUTDOWN", err)
	}
	if err := c.ReadAt(ctx, make([]byte, 10), 0); errnoOf(err) != ESHUTDOWN {
		t.Fatalf("ReadAt after ESHUTDOWN = %v, want ESHUTDOWN without sending", err)
	}
	c.Close()
	select {
	case ok := <-disc:
		if !ok {
			t.Fatal("server got a request after ESHUTDOWN instead of NBD_CMD_DISC")
		}
	case <-ctx.Done():
		t.Fatal("server saw nothing")
	}
}
