package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/ticket"
)

// DefaultPipelineDepth is Config.PipelineDepth when it is not set. Memory
// for data is connections x depth x buffer size; see docs/daemon.md for
// what depth costs and buys.
const DefaultPipelineDepth = 2

// corkSize is the size of the buffer that collects the TLS records of a
// chunk of a response before they are written to the socket.
const corkSize = 256 << 10

// copyOut sends [offset, offset+size) of b to w in buffer-sized chunks.
// Reads of the next chunks are in flight while a chunk is sent; chunks
// are sent in order, and cancellation is checked between chunks. When tc
// is not nil (TLS), each chunk's records are collected and written to tc
// in corkSize writes.
func (s *Service) copyOut(ctx context.Context, w io.Writer, tc *timeoutConn, b *connBackend, op *ticket.Op, offset, size int64) error {
	if sr, ok := b.Backend.(backend.StreamReader); ok {
		return sr.ReadTo(ctx, &opWriter{w: w, op: op}, offset, size)
	}
	if cr, ok := b.Backend.(backend.ChunkReader); ok {
		return s.relayOut(ctx, w, tc, cr, int64(b.chunkSize), op, offset, size)
	}
	if size <= 0 {
		return nil
	}
	step := int64(b.bufferSize)
	depth := int(min((size+step-1)/step, int64(s.cfg.PipelineDepth)))
	rctx, cancel := context.WithCancel(ctx)
	slots := make([]readSlot, depth)
	for i := range slots {
		slots[i] = readSlot{buf: s.bufs.get(b.bufferSize), done: make(chan error, 1)}
	}
	defer func() {
		// Wait for reads still in flight before their buffers go back.
		cancel()
		for i := range slots {
			if slots[i].busy {
				<-slots[i].done
			}
			s.bufs.put(slots[i].buf)
		}
	}()
	var cork []byte
	if tc != nil {
		corkp := s.bufs.get(corkSize)
		defer s.bufs.put(corkp)
		cork = *corkp
	}
	next, end := offset, offset+size
	for i := range slots {
		n := min(step, end-next)
		slots[i].start(rctx, b, next, n)
		next += n
	}
	for i := 0; ; i = (i + 1) % depth {
		sl := &slots[i]
		if !sl.busy {
			return nil
		}
		err := <-sl.done
		sl.busy = false
		if err != nil {
			return fmt.Errorf("reading %d bytes at %d: %w", sl.n, sl.off, err)
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("reading: %w", err)
		}
		if err := send(w, tc, cork, (*sl.buf)[:sl.n]); err != nil {
			return fmt.Errorf("sending %d bytes: %w", sl.n, err)
		}
		op.Add(sl.n)
		if next < end {
			n := min(step, end-next)
			sl.start(rctx, b, next, n)
			next += n
		}
	}
}

// relayOut sends [offset, offset+size) of cr to w as the backend's replies
// arrive, in reads of step bytes (the backend's request size) relayed
// through one pooled relaySize buffer: no data buffers per connection.
// An NBD server holds up to two such reads per connection. When tc is not
// nil (TLS), the records of each relayed piece are corked into one socket
// write.
func (s *Service) relayOut(ctx context.Context, w io.Writer, tc *timeoutConn, cr backend.ChunkReader, step int64, op *ticket.Op, offset, size int64) error {
	if size <= 0 {
		return nil
	}
	buf := s.bufs.get(relaySize)
	defer s.bufs.put(buf)
	sw := &sendWriter{w: w, tc: tc, op: op}
	if tc != nil {
		corkp := s.bufs.get(corkSize)
		defer s.bufs.put(corkp)
		sw.cork = *corkp
	}
	if _, err := cr.ReadStream(ctx, sw, offset, size, step, *buf); err != nil {
		if sw.err != nil {
			return fmt.Errorf("sending: %w", sw.err)
		}
		return fmt.Errorf("reading %d bytes at %d: %w", size, offset, err)
	}
	return nil
}

// sendWriter sends what it is given with send and counts it in op; it
// keeps the first error.
type sendWriter struct {
	w    io.Writer
	tc   *timeoutConn
	cork []byte
	op   *ticket.Op
	err  error
}

func (sw *sendWriter) Write(p []byte) (int, error) {
	if err := send(sw.w, sw.tc, sw.cork, p); err != nil {
		sw.err = err
		return 0, err
	}
	sw.op.Add(int64(len(p)))
	return len(p), nil
}

// send writes p to w, corking tc with cork while it does when tc is not
// nil.
func send(w io.Writer, tc *timeoutConn, cork, p []byte) error {
	if tc == nil {
		_, err := w.Write(p)
		return err
	}
	tc.cork(cork)
	_, err := w.Write(p)
	if ferr := tc.uncork(); err == nil {
		err = ferr
	}
	return err
}

// readSlot is one buffer of copyOut and the backend read filling it.
type readSlot struct {
	buf    *[]byte
	off, n int64
	busy   bool // a read is in flight or its result not yet taken
	done   chan error
}

func (sl *readSlot) start(ctx context.Context, b backend.Backend, off, n int64) {
	sl.off, sl.n, sl.busy = off, n, true
	go func() { sl.done <- b.ReadAt(ctx, (*sl.buf)[:n], off) }()
}

// writeResult is the outcome of one backend write of copyIn.
type writeResult struct {
	buf *[]byte
	seq int
	off int64
	n   int64
	err error
}

// copyIn writes the request body to [offset, offset+size) of b. While the
// next chunk is read from the body, up to PipelineDepth-1 earlier chunks
// are written to the backend. A short body writes what arrived and
// nothing past it. After a failed write no more of the body is read, and
// the writes in flight finish. The operation counts only bytes written in an unbroken
// run from offset, so the ticket's transferred ranges stay exact when
// writes finish out of order or one fails.
func (s *Service) copyIn(ctx context.Context, r *request, b *connBackend, op *ticket.Op, offset, size int64) error {
	if cw, ok := b.Backend.(backend.ChunkWriter); ok {
		return s.streamIn(ctx, r, cw, b.chunkSize, op, offset, size)
	}
	if sw, ok := b.Backend.(backend.StreamWriter); ok {
		body := &opReader{ctx: ctx, r: r.Body, op: op}
		if err := sw.WriteFrom(ctx, body, offset, size); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				return partialError(size, op.Done(), err)
			}
			return fmt.Errorf("writing %d bytes at %d: %w", size, offset, err)
		}
		return nil
	}
	if size <= 0 {
		return nil
	}
	step := int64(b.bufferSize)
	depth := int(min((size+step-1)/step, int64(s.cfg.PipelineDepth)))
	results := make(chan writeResult, depth)
	free := make([]*[]byte, 0, depth)
	owned, inflight := 0, 0
	// Bytes of writes that finished ahead of an earlier one, by sequence.
	var ahead map[int]int64
	counted := 0 // sequence number of the first write not yet counted
	var werr error
	reap := func(res writeResult) {
		inflight--
		free = append(free, res.buf)
		if res.err != nil {
			if werr == nil {
				werr = fmt.Errorf("writing %d bytes at %d: %w", res.n, res.off, res.err)
			}
			return
		}
		if res.seq != counted {
			if ahead == nil {
				ahead = make(map[int]int64, depth)
			}
			ahead[res.seq] = res.n
			return
		}
		op.Add(res.n)
		counted++
		for n, ok := ahead[counted]; ok; n, ok = ahead[counted] {
			delete(ahead, counted)
			op.Add(n)
			counted++
		}
	}
	defer func() {
		for inflight > 0 {
			reap(<-results)
		}
		for _, buf := range free {
			s.bufs.put(buf)
		}
	}()

	requested := size
	for seq := 0; size > 0; seq++ {
		// Take the results that are in, without waiting.
		for more := true; more && inflight > 0; {
			select {
			case res := <-results:
				reap(res)
			default:
				more = false
			}
		}
		if werr != nil {
			return werr
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("writing: %w", err)
		}
		var bufp *[]byte
		switch {
		case len(free) > 0:
			bufp = free[len(free)-1]
			free = free[:len(free)-1]
		case owned < depth:
			bufp = s.bufs.get(b.bufferSize)
			owned++
		default:
			reap(<-results)
			seq--
			continue
		}
		n := min(step, size)
		got, rerr := io.ReadFull(r.Body, (*bufp)[:n])
		if got > 0 {
			inflight++
			go func(buf *[]byte, seq int, off, n int64) {
				err := b.WriteAt(ctx, (*buf)[:n], off)
				results <- writeResult{buf: buf, seq: seq, off: off, n: n, err: err}
			}(bufp, seq, offset, int64(got))
			offset += int64(got)
			size -= int64(got)
		} else {
			free = append(free, bufp)
		}
		if rerr != nil {
			for inflight > 0 {
				reap(<-results)
			}
			if werr != nil {
				return werr
			}
			if errors.Is(rerr, io.ErrUnexpectedEOF) || errors.Is(rerr, io.EOF) {
				return partialError(requested, op.Done(), rerr)
			}
			return &httpError{Code: http.StatusBadRequest, Close: true, Err: rerr,
				Msg: fmt.Sprintf("Requested %d bytes, available %d bytes", requested, op.Done())}
		}
	}
	for inflight > 0 {
		reap(<-results)
	}
	return werr
}

// streamIn writes the request body to [offset, offset+size) of cw in
// requests of chunk bytes. The operation counts the bytes the backend
// acknowledged, in an unbroken run from offset. A short body writes the
// requests that arrived whole and nothing of the one it cut.
func (s *Service) streamIn(ctx context.Context, r *request, cw backend.ChunkWriter, chunk int, op *ticket.Op, offset, size int64) error {
	if size <= 0 {
		return nil
	}
	buf := s.bufs.get(relaySize)
	defer s.bufs.put(buf)
	body := &bodyReader{ctx: ctx, r: r.Body}
	err := cw.WriteStream(ctx, body, offset, size, int64(chunk), *buf, op.Add)
	if err == nil {
		return nil
	}
	var be *bodyError
	if errors.As(err, &be) || errors.Is(err, io.ErrUnexpectedEOF) {
		return partialError(size, op.Done(), err)
	}
	return fmt.Errorf("writing %d bytes at %d: %w", size, offset, err)
}

// bodyReader reads a request body until ctx ends. Its read errors are
// bodyErrors, to tell them from the backend's.
type bodyReader struct {
	ctx context.Context
	r   io.Reader
}

func (r *bodyReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		err = &bodyError{err}
	}
	return n, err
}

// bodyError is a failure reading the request body.
type bodyError struct{ err error }

func (e *bodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *bodyError) Unwrap() error { return e.err }
