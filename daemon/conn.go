package daemon

import (
	"bufio"
	"context"
	"log/slog"
	"math"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/ticket"
)

// timeoutConn gives every Read and Write its own deadline, timeout from
// the start of the call, like a Python socket timeout: an idle or very slow
// client is dropped, a busy one never. Deadlines set explicitly (by
// net/http or crypto/tls) take precedence until they are cleared.
type timeoutConn struct {
	net.Conn
	// br buffers reads for TLS, which otherwise reads the socket once or
	// twice per 16 KiB record; nil reads the socket directly.
	br *bufio.Reader

	// wmu guards wbuf. It is held while a flush writes the socket, so
	// buffered and direct writes keep their order. Lock order: wmu, mu.
	wmu sync.Mutex
	// wbuf collects writes while the connection is corked (see cork);
	// nil when it is not.
	wbuf []byte

	// mu guards the fields that follow.
	mu            sync.Mutex
	timeout       time.Duration
	readDeadline  time.Time // explicit, zero when unset
	writeDeadline time.Time
}

func (c *timeoutConn) setTimeout(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.timeout = d
}

func (c *timeoutConn) Read(p []byte) (int, error) {
	if c.br != nil {
		return c.br.Read(p)
	}
	return c.readSocket(p)
}

// rawReader reads the socket of a timeoutConn, under its bufio.Reader.
type rawReader struct{ c *timeoutConn }

func (r rawReader) Read(p []byte) (int, error) { return r.c.readSocket(p) }

func (c *timeoutConn) readSocket(p []byte) (int, error) {
	c.mu.Lock()
	d := c.readDeadline
	if d.IsZero() {
		d = time.Now().Add(c.timeout)
	}
	// Set under mu so that a concurrent SetReadDeadline (net/http aborting
	// its background read) is never overwritten by a later future deadline.
	err := c.Conn.SetReadDeadline(d)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

// Write writes p to the socket, or while corked adds it to the buffer,
// writing the buffer first when p does not fit.
func (c *timeoutConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.wbuf == nil {
		return c.writeSocket(p)
	}
	if len(c.wbuf)+len(p) > cap(c.wbuf) {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= cap(c.wbuf) {
			return c.writeSocket(p)
		}
	}
	c.wbuf = append(c.wbuf, p...)
	return len(p), nil
}

// cork makes writes collect in buf until uncork, so that the TLS records
// of a large response (16 KiB each) go out in a few large system calls
// instead of one each. The caller must call uncork before it reuses buf.
func (c *timeoutConn) cork(buf []byte) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wbuf = buf[:0]
}

// uncork writes what was collected since cork and stops collecting.
func (c *timeoutConn) uncork() error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	err := c.flushLocked()
	c.wbuf = nil
	return err
}

// flushLocked writes the buffer; the caller holds wmu.
func (c *timeoutConn) flushLocked() error {
	if len(c.wbuf) == 0 {
		return nil
	}
	_, err := c.writeSocket(c.wbuf)
	c.wbuf = c.wbuf[:0]
	return err
}

func (c *timeoutConn) writeSocket(p []byte) (int, error) {
	c.mu.Lock()
	d := c.writeDeadline
	if d.IsZero() {
		d = time.Now().Add(c.timeout)
	}
	err := c.Conn.SetWriteDeadline(d)
	c.mu.Unlock()
	if err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

func (c *timeoutConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline, c.writeDeadline = t, t
	return c.Conn.SetDeadline(t)
}

func (c *timeoutConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.readDeadline = t
	return c.Conn.SetReadDeadline(t)
}

func (c *timeoutConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writeDeadline = t
	return c.Conn.SetWriteDeadline(t)
}

// unixSocketBuffer is the send and receive buffer asked for on an accepted
// Unix socket connection (the local service).
const unixSocketBuffer = 4 << 20

// timeoutListener wraps accepted connections in timeoutConn.
type timeoutListener struct {
	net.Listener
	timeout time.Duration
	// readBuffer is the size of the read buffer of each connection; 0
	// reads the socket directly.
	readBuffer int
}

func (l *timeoutListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	if u, ok := c.(*net.UnixConn); ok {
		// A Unix stream socket queues at most the sender's send buffer
		// (about 208 KiB by default): a GET response would go out in
		// small parts, waking both ends each time. Errors only cost
		// speed.
		_ = u.SetWriteBuffer(unixSocketBuffer)
		_ = u.SetReadBuffer(unixSocketBuffer)
	}
	tc := &timeoutConn{Conn: c, timeout: l.timeout}
	if l.readBuffer > 0 {
		tc.br = bufio.NewReaderSize(rawReader{tc}, l.readBuffer)
	}
	return tc, nil
}

// connBackend is a backend opened for one connection and one ticket. Close
// may be called twice (by the ticket's cancel and by the connection).
type connBackend struct {
	backend.Backend
	bufferSize int
	// chunkSize is the size of one backend request when the backend
	// streams a PUT body (a backend.ChunkWriter); buffer_size uncapped.
	chunkSize int
	once      sync.Once
	err       error
}

func (b *connBackend) Close() error {
	b.once.Do(func() { b.err = b.Backend.Close() })
	return b.err
}

// opStats accumulates one kind of operation on a connection.
type opStats struct {
	ops   int
	bytes int64
	time  time.Duration
}

// connState is the daemon's state of one client connection.
type connState struct {
	// ctx is the server's base context: canceled when a shutdown cuts
	// requests, not when the client goes away, so an operation can finish
	// writing what a client sent before disconnecting.
	ctx    context.Context
	id     uint64
	client string
	conn   *timeoutConn
	start  time.Time

	// mu guards the fields that follow.
	mu       sync.Mutex
	backends map[*ticket.Ticket]*connBackend
	stats    map[string]*opStats
}

func (cs *connState) backend(t *ticket.Ticket) *connBackend {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	return cs.backends[t]
}

func (cs *connState) addBackend(t *ticket.Ticket, b *connBackend) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	cs.backends[t] = b
}

// record adds one operation of kind to the connection's statistics.
func (cs *connState) record(kind string, bytes int64, d time.Duration) {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	s := cs.stats[kind]
	if s == nil {
		s = &opStats{}
		cs.stats[kind] = s
	}
	s.ops++
	s.bytes += bytes
	s.time += d
}

// close releases the connection's backends and logs its statistics.
func (cs *connState) close(log *slog.Logger) {
	cs.mu.Lock()
	backends := cs.backends
	cs.backends = nil
	kinds := make([]string, 0, len(cs.stats))
	for k := range cs.stats {
		kinds = append(kinds, k)
	}
	sort.Strings(kinds)
	attrs := []any{"connection", cs.id, "client", cs.client, "seconds", round(time.Since(cs.start).Seconds())}
	for _, k := range kinds {
		s := cs.stats[k]
		g := []any{"ops", s.ops, "seconds", round(s.time.Seconds())}
		if s.bytes > 0 {
			g = append(g, "bytes", s.bytes)
			if s.time > 0 {
				g = append(g, "mib_per_s", round(float64(s.bytes)/(1<<20)/s.time.Seconds()))
			}
		}
		attrs = append(attrs, slog.Group(k, g...))
	}
	cs.mu.Unlock()
	for t, b := range backends {
		t.Detach(cs.id)
		if err := b.Close(); err != nil {
			log.Warn("closing backend", "connection", cs.id, "transfer", t.TransferID, "err", err)
		}
	}
	log.Info("CLOSE", attrs...)
}

func round(f float64) float64 { return math.Round(f*1000) / 1000 }
