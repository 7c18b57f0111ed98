package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// segment is a run of a streamed READ reply that the reply reader hands to
// ReadTo: n bytes at off (relative to the request), to be read from r, or
// a hole (r nil) that reads as zeros.
type segment struct {
	r      io.Reader
	off, n uint64
}

// handoff passes a streamed READ's reply data from the reply reader to the
// ReadTo relaying it, without a copy: while ReadTo holds a segment, it
// reads the connection itself.
type handoff struct {
	seg chan segment // a segment handed over (unbuffered)
	// back gets one value for every segment taken: nil once its n bytes
	// were read from r, else why the connection cannot go on.
	back chan error
	gone chan struct{} // closed when ReadTo takes no more segments
}

func newHandoff() *handoff {
	return &handoff{seg: make(chan segment), back: make(chan error), gone: make(chan struct{})}
}

// hand gives a segment to ReadTo and waits until it has read the data, or
// discards the data when ReadTo has gone. Called by the reply reader.
func (h *handoff) hand(r io.Reader, off, n uint64) error {
	select {
	case h.seg <- segment{r: r, off: off, n: n}:
		return <-h.back
	case <-h.gone:
		if r == nil {
			return nil
		}
		_, err := io.CopyN(io.Discard, r, int64(n))
		return err
	}
}

// ReadTo writes [off, off+length) of the export to w in order, as READ
// requests of at most step bytes (step <= 0, or more than the server
// takes: the largest request it takes), and returns the bytes written to
// w. Each reply's data is relayed from the connection to w through buf as
// it arrives, so a request can be much larger than buf, and the next
// request is sent as soon as the current reply's last data chunk begins:
// the server reads it while the current one is relayed. Holes are written
// as zeros.
//
// Data is written before its reply is known to be complete, but the last
// piece of the range is held back until every reply is: when the server
// reports an error for data already sent (it may, after the data), w never
// gets the whole range. When w fails or ctx ends, the rest of the reply in
// progress is read and dropped, so the connection stays usable (a server
// that stalls mid-reply after ctx ended gets abandonGrace, then the
// connection is broken); w's error, or ctx's, is returned as it is.
//
// The connection is held while a reply is relayed (other replies wait
// behind it, and Close waits for a write to w in progress), so concurrent
// streams want a connection each. A server that negotiated structured
// replies but cannot promise unfragmented ones (NBD_FLAG_SEND_DF), or that
// refuses a large unfragmented read (EOVERFLOW), may send a reply's chunks
// in any order; from it each piece is read whole into buf and then written.
func (c *Client) ReadTo(ctx context.Context, w io.Writer, off, length, step int64, buf []byte) (int64, error) {
	if err := c.checkRange("reading", off, length); err != nil {
		return 0, err
	}
	if length > 0 && len(buf) == 0 {
		return 0, fmt.Errorf("reading to a writer: no buffer")
	}
	if c.info.structured && c.info.flags&FlagSendDF == 0 {
		return c.readThrough(ctx, w, off, length, buf)
	}
	s := &readStream{c: c, ctx: ctx, w: w, buf: buf, off: off, length: length, step: c.stepFor(step)}
	if c.info.structured {
		s.flags = cmdFlagDF
	}
	defer s.release()
	err := s.run()
	var e *Error
	if errors.As(err, &e) && e.Errno == EOVERFLOW && s.overflowAt >= 0 {
		// The server will not send this much in one chunk: read the rest
		// without DF.
		s.release()
		if err := s.settle(true); err != nil {
			return s.written, err
		}
		n, err := c.readThrough(ctx, w, s.overflowAt, off+length-s.overflowAt, buf)
		return s.written + n, err
	}
	return s.written, err
}

// readStream is the state of one ReadTo.
type readStream struct {
	c           *Client
	ctx         context.Context
	w           io.Writer
	buf         []byte
	off, length int64
	step        int64
	flags       uint16

	issued     int64      // bytes requested so far
	queue      []*request // sent, data not all relayed, in order
	relayed    []*request // data relayed, reply maybe not complete
	written    int64      // bytes written to w
	werr       error      // why nothing more is written: w's error or ctx's
	overflowAt int64      // where a request refused with EOVERFLOW starts; -1 if none
}

// run sends the requests and relays their replies.
func (s *readStream) run() error {
	s.overflowAt = -1
	if s.length == 0 {
		return nil
	}
	if err := s.sendNext(); err != nil {
		return err
	}
	for len(s.queue) > 0 {
		cur := s.queue[0]
		var held []byte // the range's last piece, not yet written
		for at := uint64(0); at < uint64(cur.length); {
			seg, err := s.next(cur)
			if err != nil {
				var e *Error
				if at == 0 && errors.As(err, &e) && e.Errno == EOVERFLOW {
					s.overflowAt = int64(cur.off)
				}
				return err
			}
			if seg.off != at {
				err := protocolError("READ data at %d+%d out of order: expected offset %d", cur.off+seg.off, seg.n, cur.off+at)
				cur.stream.back <- err
				return err
			}
			ends := seg.off+seg.n == uint64(cur.length)
			// The current reply's last data chunk has begun, and no chunk
			// of a later reply comes before its end: the next request
			// can go.
			if ends && len(s.queue) == 1 && s.issued < s.length && s.werr == nil {
				if err := s.sendNext(); err != nil {
					s.werr = err // relay no more, but read this segment
				}
			}
			last := ends && s.issued == s.length && len(s.queue) == 1
			held, err = s.relay(seg, last)
			if err != nil {
				cur.stream.back <- err
				if s.ctx.Err() != nil {
					// The guard broke the connection.
					return context.Cause(s.ctx)
				}
				return fmt.Errorf("reading %d bytes at offset %d: %w", cur.length, cur.off, err)
			}
			cur.stream.back <- nil
			at += seg.n
		}
		close(cur.stream.gone) // more data for it is the server's error
		s.queue = s.queue[1:]
		s.relayed = append(s.relayed, cur)
		if s.werr != nil {
			return s.werr
		}
		// Every reply must be complete before the range is.
		if err := s.settle(held != nil); err != nil {
			return err
		}
		if held != nil {
			s.write(held)
			return s.werr
		}
	}
	return s.settle(true)
}

// sendNext sends the next request.
func (s *readStream) sendNext() error {
	n := min(s.step, s.length-s.issued)
	req := newRequest(cmdRead, s.flags, s.off+s.issued, n)
	req.stream = newHandoff()
	if err := s.c.send(s.ctx, req, nil); err != nil {
		return fmt.Errorf("reading %d bytes at offset %d: %w", n, s.off+s.issued, err)
	}
	s.queue = append(s.queue, req)
	s.issued += n
	return nil
}

// settle returns the first error of the relayed requests whose replies
// are complete (all of them when wait is set, waiting for them) and
// forgets the complete ones.
func (s *readStream) settle(wait bool) error {
	var first error
	for _, req := range s.relayed {
		if !wait {
			select {
			case <-req.done:
			default:
				continue
			}
		}
		if err := s.c.wait(s.ctx, req); err != nil && first == nil {
			first = fmt.Errorf("reading %d bytes at offset %d: %w", req.length, req.off, err)
		}
	}
	if first != nil {
		return first
	}
	pending := s.relayed[:0]
	for _, req := range s.relayed {
		select {
		case <-req.done:
		default:
			pending = append(pending, req)
		}
	}
	s.relayed = pending
	return nil
}

// next waits for the next segment of req's reply.
func (s *readStream) next(req *request) (segment, error) {
	select {
	case seg := <-req.stream.seg:
		return seg, nil
	case <-req.done:
		// The reply ended before its data: an error reply, or the
		// connection failed.
		err := req.err
		if err == nil {
			err = protocolError("READ reply ended without its data")
		}
		return segment{}, fmt.Errorf("reading %d bytes at offset %d: %w", req.length, req.off, err)
	case <-s.ctx.Done():
		return segment{}, context.Cause(s.ctx)
	}
}

// relay reads seg from the connection through buf and writes it to w
// (zeros for a hole). Once w has failed or ctx has ended it only reads.
// When last is set, the final piece is read but not written: it is
// returned for the caller to write once every reply is complete. The
// error is set when the connection cannot go on: reading it failed.
func (s *readStream) relay(seg segment, last bool) (held []byte, err error) {
	if seg.r == nil {
		z := s.buf[:min(uint64(len(s.buf)), seg.n)]
		clear(z)
		for left := seg.n; left > 0 && s.werr == nil; {
			k := min(uint64(len(z)), left)
			left -= k
			if last && left == 0 {
				return z[:k], nil
			}
			s.write(z[:k])
		}
		return nil, nil
	}
	release := s.c.guard(s.ctx)
	defer release()
	for left := seg.n; left > 0; {
		if s.werr == nil && s.ctx.Err() != nil {
			s.werr = context.Cause(s.ctx)
		}
		k := min(uint64(len(s.buf)), left)
		if _, err := io.ReadFull(seg.r, s.buf[:k]); err != nil {
			return nil, err
		}
		left -= k
		if s.werr != nil {
			continue
		}
		if last && left == 0 {
			return s.buf[:k], nil
		}
		s.write(s.buf[:k])
	}
	return nil, nil
}

// write writes p to w unless writing has stopped.
func (s *readStream) write(p []byte) {
	if s.werr != nil {
		return
	}
	n, err := s.w.Write(p)
	s.written += int64(n)
	if err == nil && n < len(p) {
		err = io.ErrShortWrite
	}
	if err != nil {
		s.werr = err
	}
}

// release tells the reply reader to drop the data of requests whose data
// ReadTo no longer takes.
func (s *readStream) release() {
	for _, req := range s.queue {
		close(req.stream.gone)
	}
	s.queue = nil
}

// guard breaks the connection when ctx ends and the caller has not called
// the returned release abandonGrace later: a reply being read must not
// hold a canceled caller forever.
func (c *Client) guard(ctx context.Context) (release func()) {
	var mu sync.Mutex
	var t *time.Timer
	released := false
	stop := context.AfterFunc(ctx, func() {
		mu.Lock()
		defer mu.Unlock()
		if !released {
			t = time.AfterFunc(abandonGrace, func() {
				c.fail(fmt.Errorf("%w: canceled read still receiving data", ErrClosed))
			})
		}
	})
	return func() {
		stop()
		mu.Lock()
		defer mu.Unlock()
		released = true
		if t != nil {
			t.Stop()
		}
	}
}

// readThrough is ReadTo for servers whose reply chunks may come in any
// order: each piece is read into buf and then written.
func (c *Client) readThrough(ctx context.Context, w io.Writer, off, length int64, buf []byte) (int64, error) {
	var written int64
	for written < length {
		p := buf[:min(int64(len(buf)), length-written)]
		if err := c.ReadAt(ctx, p, off+written); err != nil {
			return written, err
		}
		n, err := w.Write(p)
		written += int64(n)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// stepFor returns the request size for a stream asked to use step: the
// largest the server takes when step is 0 or more, step rounded down to
// the server's minimum block, or that block when step is smaller.
func (c *Client) stepFor(step int64) int64 {
	switch {
	case step <= 0 || step > c.maxIO:
		return c.maxIO
	case c.step(step) > 0:
		return c.step(step)
	default:
		return int64(c.info.blockSize.Min)
	}
}
