package transfer

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/imageio/imageio/backend"
)

// The stream adapters split a worker's buffer into a ring of pieces, so
// that the source is read (or the target written) several pieces ahead
// while another piece is on the network: with a 4 MiB buffer, up to four
// 1 MiB reads (uploads) or three 1 MiB writes (downloads) are in flight to
// the local qemu-nbd per worker, within the memory of one buffer. The NBD
// client pipelines them on its connection.

// Piece sizes: a buffer is split into at most maxPieces pieces of at least
// minPiece bytes (two pieces when it is smaller than 2*minPiece).
const (
	maxPieces = 4
	minPiece  = 256 << 10
)

// split cuts buf into pieces (one when buf is too small to split).
func split(buf []byte) [][]byte {
	if len(buf) < 2 {
		return [][]byte{buf}
	}
	n := min(maxPieces, max(2, len(buf)/minPiece))
	size := len(buf) / n
	pieces := make([][]byte, n)
	for i := range pieces {
		end := (i + 1) * size
		if i == n-1 {
			end = len(buf)
		}
		pieces[i] = buf[i*size : end : end]
	}
	return pieces
}

// readPiece is one piece of a sourceReader's ring: the window
// [start, start+n) relative to the range, and its read.
type readPiece struct {
	buf      []byte
	start, n int64
	done     chan error // the read in flight; nil once its result is taken
	err      error
}

// wait waits for the piece's read and returns its error.
func (p *readPiece) wait() error {
	if p.done != nil {
		p.err = <-p.done
		p.done = nil
	}
	return p.err
}

// sourceReader reads [off, off+length) of src and is seekable (positions
// relative to off), so that the HTTP backend can resend the range after a
// transient failure. It keeps a read in flight in every piece of its ring
// that the caller is not reading: the pieces after the current one are
// read from src while the current one is served. Progress counts each
// byte once, however often it is read. Call finish before reusing the
// buffer.
type sourceReader struct {
	ctx         context.Context
	src         backend.Backend
	off, length int64
	progress    func(int64)

	pos      int64 // next byte to return, relative to off
	reported int64 // bytes counted in progress

	// pieces is a ring; the queued pieces, in order of position, are
	// head, head+1, ... (count of them), and next is where the read after
	// the last of them starts.
	pieces      []readPiece
	head, count int
	next        int64
}

func newSourceReader(ctx context.Context, src backend.Backend, off, length int64, buf []byte, progress func(int64)) *sourceReader {
	r := &sourceReader{ctx: ctx, src: src, off: off, length: length, progress: progress}
	for _, b := range split(buf) {
		r.pieces = append(r.pieces, readPiece{buf: b})
	}
	return r
}

// issue starts reads into the free pieces.
func (r *sourceReader) issue() {
	for r.count < len(r.pieces) && r.next < r.length {
		p := &r.pieces[(r.head+r.count)%len(r.pieces)]
		p.start, p.n, p.err = r.next, min(int64(len(p.buf)), r.length-r.next), nil
		ch := make(chan error, 1)
		p.done = ch
		buf, at := p.buf[:p.n], r.off+p.start
		go func() { ch <- r.src.ReadAt(r.ctx, buf, at) }()
		r.next += p.n
		r.count++
	}
}

// drop forgets the head piece (after its read ends).
func (r *sourceReader) drop() {
	_ = r.pieces[r.head].wait()
	r.head = (r.head + 1) % len(r.pieces)
	r.count--
}

// finish waits for the reads in flight; the buffer is free after it.
func (r *sourceReader) finish() {
	for r.count > 0 {
		r.drop()
	}
}

// load makes the head piece hold r.pos and waits for it.
func (r *sourceReader) load() (*readPiece, error) {
	for r.count > 0 && r.pos >= r.pieces[r.head].start+r.pieces[r.head].n {
		r.drop()
	}
	if r.count == 0 || r.pos < r.pieces[r.head].start {
		// A seek, or the first read: start again from pos.
		r.finish()
		r.next = r.pos
	}
	r.issue()
	h := &r.pieces[r.head]
	if err := h.wait(); err != nil {
		r.finish()
		r.next = r.pos
		return nil, fmt.Errorf("reading source: %w", err)
	}
	return h, nil
}

// served moves pos past n bytes of the head piece h, counts progress, and
// frees h for the next read when it is used up.
func (r *sourceReader) served(h *readPiece, n int) {
	r.pos += int64(n)
	if r.pos > r.reported {
		r.progress(r.pos - r.reported)
		r.reported = r.pos
	}
	if r.pos == h.start+h.n {
		r.drop()
		r.issue()
	}
}

func (r *sourceReader) Read(p []byte) (int, error) {
	if r.pos >= r.length {
		return 0, io.EOF
	}
	h, err := r.load()
	if err != nil {
		return 0, err
	}
	n := copy(p, h.buf[r.pos-h.start:h.n])
	r.served(h, n)
	return n, nil
}

// WriteNTo writes up to n bytes from pos to w straight from the pieces
// (no copy; the HTTP backend uses it for request bodies). It
// returns a nil error at the end of the range.
func (r *sourceReader) WriteNTo(w io.Writer, n int64) (int64, error) {
	var total int64
	for total < n && r.pos < r.length {
		h, err := r.load()
		if err != nil {
			return total, err
		}
		from := r.pos - h.start
		to := min(h.n, from+n-total)
		k, werr := w.Write(h.buf[from:to])
		r.served(h, k)
		total += int64(k)
		if werr != nil {
			return total, werr
		}
	}
	return total, nil
}

func (r *sourceReader) Seek(offset int64, whence int) (int64, error) {
	pos, err := seekPos(r.pos, r.length, offset, whence)
	if err == nil {
		r.pos = pos
	}
	return pos, err
}

// seekPos returns where Seek(offset, whence) goes from pos in a range of
// length bytes.
func seekPos(pos, length, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += pos
	case io.SeekEnd:
		offset += length
	default:
		return 0, errors.New("seeking: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seeking: negative position")
	}
	return offset, nil
}

// writePiece is one piece of a targetWriter's ring and its write.
type writePiece struct {
	buf  []byte
	n    int        // bytes being written
	done chan error // the write in flight; nil when none
}

// targetWriter writes a stream to dst from off. It fills one piece of its
// ring while the full pieces before it are written to dst in the
// background. Call flush at the end of the stream and finish before
// reusing the buffer.
type targetWriter struct {
	ctx      context.Context
	dst      backend.Backend
	off      int64 // where the current piece goes
	progress func(int64)

	pieces []writePiece
	cur    int // piece being filled
	fill   int // bytes in it
}

func newTargetWriter(ctx context.Context, dst backend.Backend, off int64, buf []byte, progress func(int64)) *targetWriter {
	w := &targetWriter{ctx: ctx, dst: dst, off: off, progress: progress}
	for _, b := range split(buf) {
		w.pieces = append(w.pieces, writePiece{buf: b})
	}
	return w
}

// ReadFrom reads r into the pieces and writes each full piece. A read
// error leaves the partial piece in place: the caller may continue with
// another reader holding the following bytes.
func (w *targetWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		buf := w.pieces[w.cur].buf
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
		buf := w.pieces[w.cur].buf
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

// writeCurrent starts writing the current piece in the background and
// moves to the next one, after waiting for the write that used it.
func (w *targetWriter) writeCurrent() error {
	if w.fill == 0 {
		return nil
	}
	p := &w.pieces[w.cur]
	ch := make(chan error, 1)
	p.done, p.n = ch, w.fill
	buf, off := p.buf[:w.fill], w.off
	go func() { ch <- w.dst.WriteAt(w.ctx, buf, off) }()
	w.off += int64(w.fill)
	w.fill = 0
	w.cur = (w.cur + 1) % len(w.pieces)
	return w.wait(w.cur)
}

// wait waits for the write of piece i and counts it.
func (w *targetWriter) wait(i int) error {
	p := &w.pieces[i]
	if p.done == nil {
		return nil
	}
	err := <-p.done
	p.done = nil
	if err != nil {
		return fmt.Errorf("writing target: %w", err)
	}
	w.progress(int64(p.n))
	return nil
}

// flush writes what is buffered and waits for every write.
func (w *targetWriter) flush() error {
	if err := w.writeCurrent(); err != nil {
		return err
	}
	return w.finish()
}

// finish waits for the writes in flight and returns the first error; the
// buffer is free after it.
func (w *targetWriter) finish() error {
	var first error
	for i := range w.pieces {
		if err := w.wait(i); err != nil && first == nil {
			first = err
		}
	}
	return first
}
