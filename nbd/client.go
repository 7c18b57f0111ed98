package nbd

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// maxPiece bounds one READ or WRITE request; larger calls are split
	// and the pieces pipelined.
	maxPiece = 32 << 20
	// zeroStep bounds one WRITE_ZEROES or TRIM request.
	zeroStep = 1 << 30
	// abandonGrace is how long a canceled ReadAt waits for the reader to
	// finish filling its buffer before it breaks the connection.
	abandonGrace = 2 * time.Second
	// discTimeout bounds sending NBD_CMD_DISC in Close.
	discTimeout = time.Second
)

// aLongTimeAgo is a deadline in the past, to interrupt blocked I/O.
var aLongTimeAgo = time.Unix(1, 0)

// Client is a connection to one NBD export. All methods are safe for
// concurrent use; requests from several goroutines are in flight on the
// connection at the same time.
type Client struct {
	conn        net.Conn
	r           *bufio.Reader
	info        exportInfo
	contextByID map[uint32]string
	maxIO       int64 // largest READ or WRITE request

	// wsem is a one-slot semaphore held while a request header and its
	// payload are written, so requests never interleave on the wire.
	wsem chan struct{}
	// readerDone is closed when the reply reader goroutine has exited.
	readerDone chan struct{}

	// mu guards the fields that follow. It is never held together with a
	// request's bufMu, nor during network I/O.
	mu      sync.Mutex
	pending map[uint64]*request // requests sent and not yet answered
	cookie  uint64              // last cookie used
	err     error               // why the connection is unusable; nil while it works
	closing bool                // Close was called
	// shutdown is the ESHUTDOWN error the server sent: no new requests
	// are sent, and Close disconnects.
	shutdown error
}

// request is one command in flight.
type request struct {
	cmd    uint16
	flags  uint16
	off    uint64
	length uint32
	cookie uint64
	hdr    [requestHeaderLen]byte

	// The reader goroutine holds bufMu while it writes into buf (READ
	// data); once canceled is set it discards the data instead.
	bufMu    sync.Mutex
	buf      []byte
	canceled atomic.Bool

	// stream, when set, takes the READ data instead of buf (ReadTo).
	stream *handoff

	// Fields used only by the reader goroutine until done is closed.
	got      uint64            // READ bytes covered by data and hole chunks
	replyErr error             // first error chunk of a structured reply
	status   map[uint32][]desc // BLOCK_STATUS descriptors by context id

	err  error         // outcome; set before done is closed
	done chan struct{} // closed when the reply is complete or the connection failed
}

// desc is one block status descriptor.
type desc struct {
	length, flags uint32
}

// Dial connects to addr, runs the handshake and returns a client for the
// export.
func Dial(ctx context.Context, addr Address, opts Options) (*Client, error) {
	if addr.Network != "unix" && addr.Network != "tcp" {
		return nil, fmt.Errorf("connecting to %s: unsupported network %q", addr.URL(), addr.Network)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, addr.Network, addr.Addr)
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", addr.URL(), err)
	}
	setSocketBuffers(conn)
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
	r := bufio.NewReaderSize(conn, 64<<10)
	info, err := negotiate(r, conn, addr.Export, opts)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // the only deadlines come from ctx
	}
	if !stop() || ctx.Err() != nil {
		conn.Close()
		if err == nil || ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("negotiating with %s: %w", addr.URL(), err)
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("negotiating with %s: %w", addr.URL(), err)
	}
	conn.SetDeadline(time.Time{})
	c := newClient(conn, r, info)
	go c.readLoop()
	return c, nil
}

func newClient(conn net.Conn, r *bufio.Reader, info exportInfo) *Client {
	c := &Client{
		conn:        conn,
		r:           r,
		info:        info,
		contextByID: make(map[uint32]string),
		wsem:        make(chan struct{}, 1),
		readerDone:  make(chan struct{}),
		pending:     make(map[uint64]*request),
	}
	for name, id := range info.contexts {
		c.contextByID[id] = name
	}
	c.maxIO = min(int64(info.blockSize.Max), maxPiece)
	if m := int64(info.blockSize.Min); m > 1 {
		c.maxIO -= c.maxIO % m
	}
	if c.maxIO <= 0 {
		c.maxIO = int64(info.blockSize.Min)
	}
	return c
}

// Size returns the size of the export in bytes.
func (c *Client) Size() int64 { return c.info.size }

// Flags returns the transmission flags of the export.
func (c *Client) Flags() Flags { return c.info.flags }

// BlockSize returns the server's block size constraints (defaults 1, 4096
// and 32 MiB when the server sent none).
func (c *Client) BlockSize() BlockSize { return c.info.blockSize }

// StructuredReplies reports whether structured replies were negotiated.
func (c *Client) StructuredReplies() bool { return c.info.structured }

// HasMetaContext reports whether the meta context name was negotiated.
func (c *Client) HasMetaContext(name string) bool {
	_, ok := c.info.contexts[name]
	return ok
}

// DirtyBitmap returns the negotiated dirty bitmap context name
// (DirtyBitmapPrefix+NAME), or "".
func (c *Client) DirtyBitmap() string { return c.info.bitmap }

func (c *Client) checkRange(op string, off, length int64) error {
	if off < 0 || length < 0 || off > c.info.size || length > c.info.size-off {
		return fmt.Errorf("%s %d bytes at offset %d of %d: %w", op, length, off, c.info.size, ErrOutOfRange)
	}
	return nil
}

func (c *Client) checkWritable(op string) error {
	if c.info.flags.ReadOnly() {
		return fmt.Errorf("%s: %w", op, ErrReadOnly)
	}
	return nil
}

// ReadAt reads len(p) bytes at off into p. The data goes straight from the
// connection into p. When ctx ends while the reply is arriving, ReadAt
// gives the data a short grace period and then breaks the connection, so
// that nothing writes into p after it returns.
func (c *Client) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := c.checkRange("reading", off, int64(len(p))); err != nil {
		return err
	}
	if err := c.pieces(ctx, cmdRead, 0, off, int64(len(p)), c.maxIO, p); err != nil {
		return fmt.Errorf("reading %d bytes at offset %d: %w", len(p), off, err)
	}
	return nil
}

// WriteAt writes p at off.
func (c *Client) WriteAt(ctx context.Context, p []byte, off int64) error {
	if err := c.checkWritable("writing"); err != nil {
		return err
	}
	if err := c.checkRange("writing", off, int64(len(p))); err != nil {
		return err
	}
	if err := c.pieces(ctx, cmdWrite, 0, off, int64(len(p)), c.maxIO, p); err != nil {
		return fmt.Errorf("writing %d bytes at offset %d: %w", len(p), off, err)
	}
	return nil
}

// Zero makes [off, off+length) read as zeros with NBD_CMD_WRITE_ZEROES.
// Without ZeroNoHole the server may deallocate the range.
func (c *Client) Zero(ctx context.Context, off, length int64, flags ZeroFlags) error {
	if err := c.checkWritable("zeroing"); err != nil {
		return err
	}
	if !c.info.flags.CanZero() {
		return fmt.Errorf("zeroing: %w: no NBD_CMD_WRITE_ZEROES", ErrNotSupported)
	}
	var f uint16
	if flags&ZeroNoHole != 0 {
		f |= cmdFlagNoHole
	}
	if flags&ZeroFast != 0 {
		if !c.info.flags.CanFastZero() {
			return fmt.Errorf("zeroing: %w: no fast zero", ErrNotSupported)
		}
		f |= cmdFlagFastZero
	}
	if err := c.checkRange("zeroing", off, length); err != nil {
		return err
	}
	if err := c.pieces(ctx, cmdWriteZeroes, f, off, length, c.step(zeroStep), nil); err != nil {
		return fmt.Errorf("zeroing %d bytes at offset %d: %w", length, off, err)
	}
	return nil
}

// Trim tells the server that [off, off+length) is no longer needed; its
// content becomes unspecified.
func (c *Client) Trim(ctx context.Context, off, length int64) error {
	if err := c.checkWritable("trimming"); err != nil {
		return err
	}
	if !c.info.flags.CanTrim() {
		return fmt.Errorf("trimming: %w: no NBD_CMD_TRIM", ErrNotSupported)
	}
	if err := c.checkRange("trimming", off, length); err != nil {
		return err
	}
	if err := c.pieces(ctx, cmdTrim, 0, off, length, c.step(zeroStep), nil); err != nil {
		return fmt.Errorf("trimming %d bytes at offset %d: %w", length, off, err)
	}
	return nil
}

// Flush makes completed writes durable. It does nothing when the server
// does not offer NBD_CMD_FLUSH (it has no volatile cache to flush).
func (c *Client) Flush(ctx context.Context) error {
	if !c.info.flags.CanFlush() {
		return nil
	}
	req, err := c.start(ctx, cmdFlush, 0, 0, 0, nil)
	if err == nil {
		err = c.wait(ctx, req)
	}
	if err != nil {
		return fmt.Errorf("flushing: %w", err)
	}
	return nil
}

// step returns limit rounded down to the server's minimum block size.
func (c *Client) step(limit int64) int64 {
	if m := int64(c.info.blockSize.Min); m > 1 {
		limit -= limit % m
	}
	return limit
}

// pieces sends [off, off+length) as requests of at most step bytes, all in
// flight together, and waits for them. buf is the READ destination or the
// WRITE payload.
func (c *Client) pieces(ctx context.Context, cmd, flags uint16, off, length, step int64, buf []byte) error {
	if length == 0 {
		return nil
	}
	if length <= step {
		req, err := c.start(ctx, cmd, flags, off, length, buf)
		if err != nil {
			return err
		}
		return c.wait(ctx, req)
	}
	reqs := make([]*request, 0, (length+step-1)/step)
	for pos := int64(0); pos < length; pos += step {
		n := min(step, length-pos)
		var b []byte
		if buf != nil {
			b = buf[pos : pos+n]
		}
		req, err := c.start(ctx, cmd, flags, off+pos, n, b)
		if err != nil {
			c.abandonAll(reqs)
			return err
		}
		reqs = append(reqs, req)
	}
	for i, req := range reqs {
		if err := c.wait(ctx, req); err != nil {
			c.abandonAll(reqs[i+1:])
			return err
		}
	}
	return nil
}

// start registers and sends one request. For cmdRead, buf receives the
// data; for cmdWrite it is the payload, written before start returns.
func (c *Client) start(ctx context.Context, cmd, flags uint16, off, length int64, buf []byte) (*request, error) {
	req := newRequest(cmd, flags, off, length)
	var payload []byte
	if cmd == cmdRead {
		req.buf = buf
	} else if cmd == cmdWrite {
		payload = buf
	}
	if err := c.send(ctx, req, payload); err != nil {
		return nil, err
	}
	return req, nil
}

func newRequest(cmd, flags uint16, off, length int64) *request {
	return &request{
		cmd:    cmd,
		flags:  flags,
		off:    uint64(off),
		length: uint32(length),
		done:   make(chan struct{}),
	}
}

// send registers req and writes it with its payload.
func (c *Client) send(ctx context.Context, req *request, payload []byte) error {
	select {
	case c.wsem <- struct{}{}:
	case <-ctx.Done():
		return context.Cause(ctx)
	}
	defer func() { <-c.wsem }()

	h, err := c.register(req)
	if err != nil {
		return err
	}
	n, err := c.write(ctx, h, payload)
	if err == nil {
		return nil
	}
	if n == 0 && ctx.Err() != nil {
		// Nothing went out: the stream is intact, forget the request.
		c.forget(req)
		return context.Cause(ctx)
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("interrupted sending %s: %w", commandName(req.cmd), context.Cause(ctx))
	} else {
		err = fmt.Errorf("sending %s: %w", commandName(req.cmd), err)
	}
	// The first failure wins: a write cut short by Close reports ErrClosed.
	return c.fail(err)
}

// register gives req a cookie and makes it pending, and returns its
// header, unless the connection is broken or shut down. The caller holds
// wsem.
func (c *Client) register(req *request) ([]byte, error) {
	c.mu.Lock()
	if c.err != nil || c.shutdown != nil {
		err := c.err
		if err == nil {
			err = c.shutdown
		}
		c.mu.Unlock()
		return nil, err
	}
	c.cookie++
	req.cookie = c.cookie
	c.pending[req.cookie] = req
	c.mu.Unlock()

	h := req.hdr[:]
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[4:], req.flags)
	binary.BigEndian.PutUint16(h[6:], req.cmd)
	binary.BigEndian.PutUint64(h[8:], req.cookie)
	binary.BigEndian.PutUint64(h[16:], req.off)
	binary.BigEndian.PutUint32(h[24:], req.length)
	return h, nil
}

// forget drops a registered request of which nothing was sent.
func (c *Client) forget(req *request) {
	c.mu.Lock()
	delete(c.pending, req.cookie)
	c.mu.Unlock()
}

// write writes a request header and payload with one system call where
// possible, honouring ctx. The caller holds wsem.
func (c *Client) write(ctx context.Context, hdr, payload []byte) (int64, error) {
	var fired chan struct{}
	var stop func() bool
	deadline := false
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
		deadline = true
	}
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			c.conn.SetWriteDeadline(aLongTimeAgo)
			close(fired)
		})
	}
	bufs := net.Buffers{hdr}
	if len(payload) > 0 {
		bufs = append(bufs, payload)
	}
	n, err := bufs.WriteTo(c.conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		<-ctx.Done() // the only write deadlines come from ctx
	}
	if stop != nil && !stop() {
		<-fired
		deadline = true
	}
	if deadline {
		c.conn.SetWriteDeadline(time.Time{})
	}
	return n, err
}

// wait waits for req's reply. When ctx ends first, the request is
// abandoned: its reply is still read, and READ data is discarded.
func (c *Client) wait(ctx context.Context, req *request) error {
	select {
	case <-req.done:
	case <-ctx.Done():
		c.abandon(req)
		return context.Cause(ctx)
	}
	if req.buf != nil {
		// The connection may have failed while the reader was filling
		// buf; make sure it is done with it.
		c.abandon(req)
	}
	return req.err
}

// abandon makes sure the reader goroutine no longer touches req.buf. If
// the reader is filling it right now, it gets abandonGrace to finish
// before the connection is broken.
func (c *Client) abandon(req *request) {
	req.canceled.Store(true)
	if req.buf == nil {
		return
	}
	if req.bufMu.TryLock() {
		req.canceled.Store(true)
		req.bufMu.Unlock()
		return
	}
	t := time.AfterFunc(abandonGrace, func() {
		c.fail(fmt.Errorf("%w: canceled read still receiving data", ErrClosed))
	})
	req.bufMu.Lock()
	req.canceled.Store(true)
	req.bufMu.Unlock()
	t.Stop()
}

func (c *Client) abandonAll(reqs []*request) {
	for _, r := range reqs {
		c.abandon(r)
	}
}

// lookup returns the pending request with cookie.
func (c *Client) lookup(cookie uint64) *request {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pending[cookie]
}

// complete finishes req with err unless the connection failed first.
func (c *Client) complete(req *request, err error) {
	c.mu.Lock()
	if c.pending[req.cookie] != req {
		c.mu.Unlock()
		return
	}
	delete(c.pending, req.cookie)
	var e *Error
	if errors.As(err, &e) && e.Errno == ESHUTDOWN && c.shutdown == nil {
		c.shutdown = err
	}
	c.mu.Unlock()
	req.err = err
	close(req.done)
}

// fail marks the connection broken with err (the first error wins),
// closes it and fails every pending request. It returns the error that
// won.
func (c *Client) fail(err error) error {
	c.mu.Lock()
	if c.err == nil {
		c.err = err
	}
	err = c.err
	pending := c.pending
	c.pending = make(map[uint64]*request)
	c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
	}
	for _, req := range pending {
		req.err = err
		close(req.done)
	}
	return err
}

// readLoop reads replies until the connection fails or is closed.
func (c *Client) readLoop() {
	defer close(c.readerDone)
	err := c.readReplies(c.r)
	c.mu.Lock()
	closing := c.closing
	c.mu.Unlock()
	switch {
	case closing:
		err = ErrClosed
	case errors.Is(err, ErrProtocol):
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		err = fmt.Errorf("reading replies: server closed the connection: %w", err)
	default:
		err = fmt.Errorf("reading replies: %w", err)
	}
	c.fail(err)
}

// Close sends NBD_CMD_DISC and closes the connection. Calls in progress
// and later calls fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		<-c.readerDone
		return nil
	}
	c.closing = true
	broken := c.err != nil
	c.mu.Unlock()
	if !broken {
		c.disconnect()
	}
	c.fail(ErrClosed)
	<-c.readerDone
	return nil
}

// disconnect sends NBD_CMD_DISC, giving up after discTimeout.
func (c *Client) disconnect() {
	t := time.NewTimer(discTimeout)
	defer t.Stop()
	select {
	case c.wsem <- struct{}{}:
	case <-t.C:
		return
	}
	defer func() { <-c.wsem }()
	c.mu.Lock()
	c.cookie++
	cookie := c.cookie
	c.mu.Unlock()
	var h [requestHeaderLen]byte
	binary.BigEndian.PutUint32(h[0:], magicRequest)
	binary.BigEndian.PutUint16(h[6:], cmdDisc)
	binary.BigEndian.PutUint64(h[8:], cookie)
	c.conn.SetWriteDeadline(time.Now().Add(discTimeout))
	c.conn.Write(h[:])
}

// socketBufferSize is the send and receive buffer asked for on a new
// connection. Larger buffers than the defaults let a 4 MiB request move with
// fewer wake-ups of both ends (measured: about 0.1-0.2 CPU-s per GiB less in
// the daemon's upload path over a Unix socket).
const socketBufferSize = 4 << 20

// setSocketBuffers asks for larger socket buffers; the kernel may cap them,
// and a failure only costs speed, so errors are ignored.
func setSocketBuffers(conn net.Conn) {
	type buffered interface {
		SetReadBuffer(int) error
		SetWriteBuffer(int) error
	}
	if b, ok := conn.(buffered); ok {
		_ = b.SetReadBuffer(socketBufferSize)
		_ = b.SetWriteBuffer(socketBufferSize)
	}
}
