package nbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// WriteFrom writes length bytes read from r at off, as WRITE requests of
// at most step bytes (step <= 0, or more than the server takes: the
// largest request it takes). Each request's payload is copied from r to
// the connection through buf as it is read, so a request can be much
// larger than buf, and the requests are pipelined: the server stores one
// while the next arrives. acked, when not nil, is called with the size of
// each request the server has acknowledged, in order, so its calls add up
// to the part of [off, off+length) known written.
//
// Nothing of a request goes out before its first bytes have been read, so
// when r ends or fails between requests the connection stays usable and
// the requests sent are still awaited. A request whose payload r cuts
// short cannot be completed: the connection is broken (later calls fail)
// and that request is not written. The error then wraps r's error, and
// io.ErrUnexpectedEOF when r ended early. After a server error no further
// request is sent.
func (c *Client) WriteFrom(ctx context.Context, r io.Reader, off, length, step int64, buf []byte, acked func(int64)) error {
	if err := c.checkWritable("writing"); err != nil {
		return err
	}
	if err := c.checkRange("writing", off, length); err != nil {
		return err
	}
	if length > 0 && len(buf) == 0 {
		return errors.New("writing from a reader: no buffer")
	}
	step = c.stepFor(step)
	var sent []*request // sent whole, not yet acknowledged, in order
	broken := false     // a request failed: nothing more is acknowledged
	var first error
	settle := func(req *request, err error) {
		if err != nil {
			if first == nil {
				first = fmt.Errorf("writing %d bytes at offset %d: %w", req.length, req.off, err)
			}
			broken = true
			return
		}
		if !broken && acked != nil {
			acked(int64(req.length))
		}
	}
	for pos := int64(0); pos < length && first == nil; {
		// Take the replies that are in, without waiting.
		for len(sent) > 0 {
			select {
			case <-sent[0].done:
				settle(sent[0], sent[0].err)
				sent = sent[1:]
				continue
			default:
			}
			break
		}
		if first != nil {
			break
		}
		n := min(step, length-pos)
		req, err := c.sendFrom(ctx, r, off+pos, n, buf, sent)
		if err != nil {
			first = err
			break
		}
		sent = append(sent, req)
		pos += n
	}
	for _, req := range sent {
		settle(req, c.wait(ctx, req))
	}
	return first
}

// sendFrom sends one WRITE request of n bytes at off whose payload is read
// from r through buf. When r cuts the payload short, the replies to the
// requests sent before (earlier) are awaited for a while, so that what
// the server wrote counts, and then the connection is broken; no other
// request can be sent meanwhile.
func (c *Client) sendFrom(ctx context.Context, r io.Reader, off, n int64, buf []byte, earlier []*request) (*request, error) {
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	got, rerr := io.ReadFull(r, buf[:min(int64(len(buf)), n)])
	if rerr != nil {
		// Nothing was sent: the stream is intact.
		return nil, payloadError(off, n, int64(got), rerr)
	}
	req := &request{cmd: cmdWrite, off: uint64(off), length: uint32(n), done: make(chan struct{})}
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
	defer func() { <-c.wsem }()
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}

	h, err := c.register(req)
	if err != nil {
		return nil, err
	}
	w, err := c.write(ctx, h, buf[:got])
	if err != nil && w == 0 && ctx.Err() != nil {
		// Nothing went out: forget the request.
		c.forget(req)
		return nil, context.Cause(ctx)
	}
	for done := int64(got); err == nil && done < n; {
		got, rerr = io.ReadFull(r, buf[:min(int64(len(buf)), n-done)])
		if got > 0 {
			_, err = c.write(ctx, buf[:got], nil)
			done += int64(got)
		}
		if err == nil && rerr != nil {
			perr := payloadError(off, n, done, rerr)
			awaitReplies(ctx, earlier, abandonGrace)
			c.fail(fmt.Errorf("sending WRITE: %w", perr))
			return nil, perr
		}
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("interrupted sending WRITE: %w", context.Cause(ctx))
		} else {
			err = fmt.Errorf("sending WRITE: %w", err)
		}
		return nil, c.fail(err)
	}
	return req, nil
}

// payloadError is the error of a reader that gave got of the n bytes of
// the request at off: an early end is io.ErrUnexpectedEOF.
func payloadError(off, n, got int64, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading the data to write at offset %d: got %d of %d bytes: %w", off, got, n, err)
}

// awaitReplies waits until reqs are answered, ctx ends or grace has passed.
func awaitReplies(ctx context.Context, reqs []*request, grace time.Duration) {
	t := time.NewTimer(grace)
	defer t.Stop()
	for _, req := range reqs {
		select {
		case <-req.done:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}
