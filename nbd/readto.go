package nbd

import (
	"context"
	"fmt"
	"io"
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
// request is sent as soon as the current reply's data begins: the server
// reads it while the current one is relayed. Holes are written as zeros.
//
// The connection is held while a reply is relayed (other replies wait
// behind it), so concurrent streams want a connection each. When w fails,
// the rest of the reply in progress is read and dropped, so the connection
// stays usable, and w's error is returned. A server that negotiated
// structured replies but cannot promise unfragmented ones
// (NBD_FLAG_SEND_DF) may send a reply's chunks in any order; from it each
// piece is read whole into buf and then written.
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
	step = c.stepFor(step)
	var flags uint16
	if c.info.structured {
		flags = cmdFlagDF
	}
	s := &readStream{c: c, w: w, buf: buf}
	defer s.release()
	var issued int64 // bytes requested so far
	sendNext := func() error {
		n := min(step, length-issued)
		req := newRequest(cmdRead, flags, off+issued, n)
		req.stream = newHandoff()
		if err := c.send(ctx, req, nil); err != nil {
			return fmt.Errorf("reading %d bytes at offset %d: %w", n, off+issued, err)
		}
		s.queue = append(s.queue, req)
		issued += n
		return nil
	}
	if length > 0 {
		if err := sendNext(); err != nil {
			return 0, err
		}
	}
	for len(s.queue) > 0 {
		cur := s.queue[0]
		for at := uint64(0); at < uint64(cur.length); {
			seg, err := s.next(ctx, cur)
			if err != nil {
				return s.written, err
			}
			if seg.off != at {
				err := protocolError("READ data at %d+%d out of order: expected offset %d", cur.off+seg.off, seg.n, cur.off+at)
				cur.stream.back <- err
				return s.written, err
			}
			// The current reply's data has begun, and no data of a later
			// reply comes before its end: the next request can go.
			if len(s.queue) == 1 && issued < length && s.werr == nil {
				if err := sendNext(); err != nil && s.werr == nil {
					s.werr = err // relay no more, but read this segment
				}
			}
			if err := s.relay(ctx, seg); err != nil {
				cur.stream.back <- err
				return s.written, fmt.Errorf("reading %d bytes at offset %d: %w", cur.length, cur.off, err)
			}
			cur.stream.back <- nil
			at += seg.n
		}
		close(cur.stream.gone) // more data for it is the server's error
		s.queue = s.queue[1:]
		s.relayed = append(s.relayed, cur)
		if s.werr != nil {
			return s.written, s.werr
		}
	}
	for _, req := range s.relayed {
		if err := c.wait(ctx, req); err != nil {
			return s.written, fmt.Errorf("reading %d bytes at offset %d: %w", req.length, req.off, err)
		}
	}
	return s.written, nil
}

// readStream is the state of one ReadTo.
type readStream struct {
	c   *Client
	w   io.Writer
	buf []byte

	queue   []*request // sent, data not all relayed, in order
	relayed []*request // data relayed, reply maybe not complete
	written int64      // bytes written to w
	werr    error      // w's error: no more is written
}

// next waits for the next segment of req's reply.
func (s *readStream) next(ctx context.Context, req *request) (segment, error) {
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
	case <-ctx.Done():
		return segment{}, context.Cause(ctx)
	}
}

// relay reads seg from the connection through buf and writes it to w
// (zeros for a hole), or only reads it once w has failed. It returns an
// error when the connection cannot go on: reading it failed, or ctx ended
// mid-segment.
func (s *readStream) relay(ctx context.Context, seg segment) error {
	if seg.r == nil {
		z := s.buf[:min(uint64(len(s.buf)), seg.n)]
		clear(z)
		for left := seg.n; left > 0 && s.werr == nil; {
			k := min(uint64(len(z)), left)
			s.write(z[:k])
			left -= k
		}
		return nil
	}
	for left := seg.n; left > 0; {
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		k := min(uint64(len(s.buf)), left)
		if _, err := io.ReadFull(seg.r, s.buf[:k]); err != nil {
			return err
		}
		left -= k
		if s.werr == nil {
			s.write(s.buf[:k])
		}
	}
	return nil
}

func (s *readStream) write(p []byte) {
	n, err := s.w.Write(p)
	s.written += int64(n)
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
