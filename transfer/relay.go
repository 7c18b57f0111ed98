package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imageio/imageio/backend"
)

// uploadStep is the size of the reads an upload asks of a source that
// relays them (a local qemu-nbd): large requests cost it far less per byte
// than the pieces of a buffered ring, and their data goes from its socket
// to the connection through streamRelay bytes of the worker's buffer.
const uploadStep = 4 << 20

// relaySource is the body of an upload's PUT over a source that relays
// reads to a writer (backend.ChunkReader): WriteNTo sends [off,
// off+length) to the connection as the source's replies arrive, through
// buf, with no ring of pieces in between. It is seekable, so that the HTTP
// backend can resend the range after a transient failure; progress counts
// each byte once, however often it is sent.
type relaySource struct {
	ctx         context.Context
	src         backend.Backend
	relay       backend.ChunkReader
	off, length int64
	buf         []byte
	progress    func(int64)

	pos      int64 // next byte to send, relative to off
	reported int64 // bytes counted in progress
}

func newRelaySource(ctx context.Context, src backend.Backend, relay backend.ChunkReader, off, length int64, buf []byte, progress func(int64)) *relaySource {
	return &relaySource{ctx: ctx, src: src, relay: relay, off: off, length: length,
		buf: buf[:min(len(buf), streamRelay)], progress: progress}
}

// advance moves pos past n sent bytes and counts the new ones.
func (r *relaySource) advance(n int) {
	r.pos += int64(n)
	if r.pos > r.reported {
		r.progress(r.pos - r.reported)
		r.reported = r.pos
	}
}

// WriteNTo writes up to n bytes from pos to w, relayed from the source. It
// returns a nil error at the end of the range; an error of w is returned
// as it is.
func (r *relaySource) WriteNTo(w io.Writer, n int64) (int64, error) {
	n = min(n, r.length-r.pos)
	if n <= 0 {
		return 0, nil
	}
	cw := &countingWriter{w: w, r: r}
	k, err := r.relay.ReadStream(r.ctx, cw, r.off+r.pos, n, uploadStep, r.buf)
	if err != nil && !(cw.err != nil && errors.Is(err, cw.err)) {
		err = fmt.Errorf("reading source: %w", err)
	}
	return k, err
}

// countingWriter advances its relaySource as bytes reach w.
type countingWriter struct {
	w   io.Writer
	r   *relaySource
	err error
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.r.advance(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

// Read reads from pos into p with a plain read of the source (net/http
// reads a body this way only when it cannot hand the connection to
// WriteNTo).
func (r *relaySource) Read(p []byte) (int, error) {
	if r.pos >= r.length {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.length-r.pos)]
	if err := r.src.ReadAt(r.ctx, p, r.off+r.pos); err != nil {
		return 0, fmt.Errorf("reading source: %w", err)
	}
	r.advance(len(p))
	return len(p), nil
}

func (r *relaySource) Seek(offset int64, whence int) (int64, error) {
	pos, err := seekPos(r.pos, r.length, offset, whence)
	if err == nil {
		r.pos = pos
	}
	return pos, err
}
