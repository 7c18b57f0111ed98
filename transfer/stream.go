package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imageio/imageio/backend"
)

// The stream adapters split their buffer in two halves, so that the source
// is read (or the target written) in the background while the other half
// is on the network: a worker keeps its disk and its connection busy at
// the same time with the memory of one buffer.

// halves splits buf in two halves (one when buf is too small to split).
func halves(buf []byte) [][]byte {
	if len(buf) < 2 {
		return [][]byte{buf}
	}
	h := len(buf) / 2
	return [][]byte{buf[:h:h], buf[h:]}
}

// sourceReader reads [off, off+length) of src and is seekable (positions
// relative to off), so that the HTTP backend can resend the range after a
// transient failure. While one half of its buffer is read by the caller,
// the next piece is read from src into the other. Progress counts each byte
// once, however often it is read. Call finish before reusing the buffer.
type sourceReader struct {
	ctx         context.Context
	src         backend.Backend
	off, length int64
	bufs        [][]byte
	progress    func(int64)

	pos      int64 // next byte to return, relative to off
	reported int64 // bytes counted in progress

	cur              int   // buffer being served
	curStart, curLen int64 // its window, relative to off

	// A background read of [pendStart, pendStart+pendLen) into
	// bufs[pendIdx]; pending is nil when none runs.
	pending            chan error
	pendIdx            int
	pendStart, pendLen int64
}

func newSourceReader(ctx context.Context, src backend.Backend, off, length int64, buf []byte, progress func(int64)) *sourceReader {
	return &sourceReader{ctx: ctx, src: src, off: off, length: length, bufs: halves(buf), progress: progress}
}

// prefetch starts reading the piece after the current window.
func (r *sourceReader) prefetch() {
	if r.pending != nil || len(r.bufs) < 2 {
		return
	}
	start := r.curStart + r.curLen
	if start >= r.length {
		return
	}
	idx := 1 - r.cur
	n := min(int64(len(r.bufs[idx])), r.length-start)
	r.pendIdx, r.pendStart, r.pendLen = idx, start, n
	ch := make(chan error, 1)
	r.pending = ch
	buf, off := r.bufs[idx][:n], r.off+start
	go func() { ch <- r.src.ReadAt(r.ctx, buf, off) }()
}

// wait waits for the background read and returns its error.
func (r *sourceReader) wait() error {
	if r.pending == nil {
		return nil
	}
	err := <-r.pending
	r.pending = nil
	return err
}

// finish waits for a background read; the buffer is free after it.
func (r *sourceReader) finish() { _ = r.wait() }

func (r *sourceReader) Read(p []byte) (int, error) {
	if r.pos >= r.length {
		return 0, io.EOF
	}
	if r.pos < r.curStart || r.pos >= r.curStart+r.curLen {
		if err := r.load(); err != nil {
			return 0, fmt.Errorf("reading source: %w", err)
		}
	}
	n := copy(p, r.bufs[r.cur][r.pos-r.curStart:r.curLen])
	r.pos += int64(n)
	if r.pos > r.reported {
		r.progress(r.pos - r.reported)
		r.reported = r.pos
	}
	return n, nil
}

// load makes the window hold r.pos: the background read when it is the
// next piece, else a read done now.
func (r *sourceReader) load() error {
	if r.pending != nil && r.pendStart == r.pos {
		err := r.wait()
		if err != nil {
			r.curLen = 0
			return err
		}
		r.cur, r.curStart, r.curLen = r.pendIdx, r.pendStart, r.pendLen
		r.prefetch()
		return nil
	}
	// A seek, or the first read: drop any background read.
	_ = r.wait()
	r.cur = 0
	n := min(int64(len(r.bufs[0])), r.length-r.pos)
	if err := r.src.ReadAt(r.ctx, r.bufs[0][:n], r.off+r.pos); err != nil {
		r.curLen = 0
		return err
	}
	r.curStart, r.curLen = r.pos, n
	r.prefetch()
	return nil
}

func (r *sourceReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.length
	default:
		return 0, errors.New("seeking: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seeking: negative position")
	}
	r.pos = offset
	return offset, nil
}

// targetWriter writes a stream to dst from off. It fills one half of its
// buffer while the other is written to dst in the background. Call flush
// at the end of the stream and finish before reusing the buffer.
type targetWriter struct {
	ctx      context.Context
	dst      backend.Backend
	off      int64 // where the current buffer goes
	bufs     [][]byte
	cur      int
	fill     int
	progress func(int64)

	pending chan error // background write of the other buffer
	pendLen int
}

func newTargetWriter(ctx context.Context, dst backend.Backend, off int64, buf []byte, progress func(int64)) *targetWriter {
	return &targetWriter{ctx: ctx, dst: dst, off: off, bufs: halves(buf), progress: progress}
}

// ReadFrom reads r into the buffer and writes each full half. A read error
// leaves the partial buffer in place: the caller may continue with another
// reader holding the following bytes.
func (w *targetWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		buf := w.bufs[w.cur]
		n, err := r.Read(buf[w.fill:])
		w.fill += n
		total += int64(n)
		if w.fill == len(buf) {
			if werr := w.writeCurrent(); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (w *targetWriter) Write(p []byte) (int, error) {
	written := 0
	for len(p) > 0 {
		buf := w.bufs[w.cur]
		n := copy(buf[w.fill:], p)
		w.fill += n
		p = p[n:]
		written += n
		if w.fill == len(buf) {
			if err := w.writeCurrent(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// writeCurrent starts writing the current buffer in the background and
// switches to the other one (after its own write is done).
func (w *targetWriter) writeCurrent() error {
	if err := w.wait(); err != nil {
		return err
	}
	if w.fill == 0 {
		return nil
	}
	buf, off := w.bufs[w.cur][:w.fill], w.off
	ch := make(chan error, 1)
	w.pending, w.pendLen = ch, w.fill
	go func() { ch <- w.dst.WriteAt(w.ctx, buf, off) }()
	w.off += int64(w.fill)
	w.fill = 0
	if len(w.bufs) > 1 {
		w.cur = 1 - w.cur
		return nil
	}
	// One buffer only: write in the foreground.
	return w.wait()
}

// wait waits for the background write and counts it.
func (w *targetWriter) wait() error {
	if w.pending == nil {
		return nil
	}
	err := <-w.pending
	w.pending = nil
	if err != nil {
		return fmt.Errorf("writing target: %w", err)
	}
	w.progress(int64(w.pendLen))
	return nil
}

// flush writes what is buffered and waits for it.
func (w *targetWriter) flush() error {
	if err := w.writeCurrent(); err != nil {
		return err
	}
	return w.wait()
}

// finish waits for a background write; the buffer is free after it.
func (w *targetWriter) finish() error { return w.wait() }
