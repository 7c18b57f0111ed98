package http

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	nethttp "net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageio/imageio/backend"
)

// Defaults for Options.
const (
	DefaultBufferSize = 4 << 20
	DefaultMaxConns   = 4
	DefaultRetries    = 5
)

// maxRequest bounds the body of one PUT made to emulate zero.
const maxRequest = 128 << 20

// Options configure Open.
type Options struct {
	CAFile   string // PEM CA bundle; empty = system roots
	Insecure bool   // skip certificate and host name checks
	// ProxyURL is tried when the transfer URL cannot be reached (connect or
	// TLS failure).
	ProxyURL string
	// BufferSize is the chunk size for streaming (default 4 MiB).
	BufferSize int
	// MaxConns is how many idle connections are kept (default 4).
	MaxConns int
	// Retries is how many times a request that failed in a transient way
	// is sent again (default 5; 0 = default, -1 = none).
	Retries int
	// Notify receives fallback and retry messages for the UI; may be nil.
	Notify func(msg string)
	// DisableUnixSocket keeps using the URL even when the daemon is on
	// this host.
	DisableUnixSocket bool
}

// Backend is an image served by an imageio daemon. It is safe for
// concurrent use; each concurrent request uses its own connection.
type Backend struct {
	opts    Options
	retries int
	backoff time.Duration // first retry delay; doubled each time

	client *nethttp.Client
	url    *url.URL // the images URL in use (http://localhost/... on the Unix socket)
	red    redactor
	// display is the URL in use, redacted.
	display string

	size     int64
	caps     backend.Caps
	features []string

	// extents caches the zero extents read by Open, until the first
	// write or first use.
	extents atomic.Pointer[[]backend.Extent]

	bufs sync.Pool // *[]byte of opts.BufferSize
}

var (
	_ backend.Backend      = (*Backend)(nil)
	_ backend.StreamWriter = (*Backend)(nil)
	_ backend.StreamReader = (*Backend)(nil)
)

// optionsReply is the JSON body of OPTIONS /images/ID.
type optionsReply struct {
	UnixSocket string   `json:"unix_socket"`
	Features   []string `json:"features"`
	MaxReaders int      `json:"max_readers"`
	MaxWriters int      `json:"max_writers"`
}

// Open connects to the image at rawURL (https://host:port/images/TICKET).
func Open(ctx context.Context, rawURL string, opts Options) (*Backend, error) {
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if opts.MaxConns <= 0 {
		opts.MaxConns = DefaultMaxConns
	}
	retries := opts.Retries
	switch {
	case retries == 0:
		retries = DefaultRetries
	case retries < 0:
		retries = 0
	}
	tlsConf, err := tlsConfig(opts)
	if err != nil {
		return nil, err
	}
	b := &Backend{opts: opts, retries: retries, backoff: 200 * time.Millisecond}
	b.bufs.New = func() any {
		buf := make([]byte, opts.BufferSize)
		return &buf
	}
	b.client = &nethttp.Client{Transport: newTransport(tlsConf, opts, nil)}

	reply, local, err := b.connect(ctx, rawURL, opts.ProxyURL != "")
	if err != nil && opts.ProxyURL != "" && isFallbackError(err) {
		first := b.display
		b.notify(fmt.Sprintf("cannot reach %s (%v); trying the proxy URL", first, cause(err)))
		reply, local, err = b.connect(ctx, opts.ProxyURL, false)
		if err != nil {
			b.Close()
			return nil, fmt.Errorf("connecting to %s and then to the proxy: %w", first, err)
		}
		b.notify("using the proxy URL " + b.display)
	}
	if err != nil {
		b.Close()
		return nil, err
	}
	if reply.UnixSocket != "" && local && !opts.DisableUnixSocket {
		b.switchToUnix(ctx, reply.UnixSocket, tlsConf)
	}
	b.setCaps(reply)
	if err := b.readSize(ctx); err != nil {
		b.Close()
		return nil, err
	}
	return b, nil
}

func tlsConfig(opts Options) (*tls.Config, error) {
	// Bulk transfers: full-size records from the first byte.
	conf := &tls.Config{MinVersion: tls.VersionTLS12, DynamicRecordSizingDisabled: true}
	if opts.Insecure {
		conf.InsecureSkipVerify = true
		return conf, nil
	}
	if opts.CAFile != "" {
		pem, err := os.ReadFile(opts.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("reading CA file %q: no PEM certificates found", opts.CAFile)
		}
		conf.RootCAs = pool
	}
	return conf, nil
}

// newTransport makes the transport for one daemon. Idle connections are
// kept without a time limit: when the daemon closes one (the ticket's
// inactivity timeout), the next request opens a new connection, and a
// request that raced with the close is sent again by net/http (all our
// requests are marked idempotent) or by our retry loop.
func newTransport(tlsConf *tls.Config, opts Options, dial func(ctx context.Context, network, addr string) (net.Conn, error)) *nethttp.Transport {
	d := &net.Dialer{Timeout: 20 * time.Second, KeepAlive: 30 * time.Second}
	if dial == nil {
		dial = d.DialContext
	}
	bulkDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return bulkConn{c}, nil
	}
	// HTTPS connections are made here rather than by net/http, so that
	// the TLS connection is a bulkConn too: a request body is then
	// encrypted straight from the source's pieces, not copied into a
	// buffer first.
	tlsDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		conf := &tls.Config{}
		if tlsConf != nil {
			conf = tlsConf.Clone()
		}
		if conf.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			conf.ServerName = host
		}
		tc := tls.Client(raw, conf)
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		return bulkConn{tc}, nil
	}
	return &nethttp.Transport{
		DialContext:         bulkDial,
		DialTLSContext:      tlsDial,
		DisableCompression:  true,
		MaxIdleConnsPerHost: opts.MaxConns,
		IdleConnTimeout:     0,
		// Request bodies go to the connection through bulkConn, past
		// this buffer but for the bytes net/http puts in it after the
		// headers: a small one keeps that copy small.
		WriteBufferSize: 4 << 10,
		ReadBufferSize:  256 << 10,
	}
}

// tlsHandshakeTimeout bounds a TLS handshake.
const tlsHandshakeTimeout = 20 * time.Second

// bulkConn makes net/http write request bodies in large pieces: it
// copies a body to the connection with io.Copy, 32 KiB per write, unless
// the connection is an io.ReaderFrom. A body over a PieceWriter is written
// from the source's own buffers, others through a 256 KiB buffer. Plain
// and TLS connections are both bulkConns (under TLS each write becomes
// records of 16 KiB, sealed from the written bytes).
type bulkConn struct{ net.Conn }

var bulkBufs = sync.Pool{New: func() any {
	b := make([]byte, 256<<10)
	return &b
}}

func (c bulkConn) ReadFrom(r io.Reader) (int64, error) {
	// net/http passes a PUT body as an io.LimitedReader over the
	// attemptBody; a source that writes from its own buffers is written
	// to the connection without a copy through bulkBufs.
	var n int64
	if lr, ok := r.(*io.LimitedReader); ok {
		if a, ok := lr.R.(*attemptBody); ok && a.canWriteTo() {
			k, err := a.writeTo(c.Conn, lr.N)
			lr.N -= k
			n += k
			if err != nil || lr.N <= 0 {
				return n, err
			}
		}
	}
	bp := bulkBufs.Get().(*[]byte)
	defer bulkBufs.Put(bp)
	k, err := io.CopyBuffer(struct{ io.Writer }{c.Conn}, r, *bp)
	return n + k, err
}

// isFallbackError reports whether err from the first OPTIONS means that
// the transfer URL cannot be reached: any transport failure (connect, TLS,
// certificate), but not an HTTP error status or a canceled context.
func isFallbackError(err error) bool {
	var ce *CertificateError
	return errors.As(err, &ce) || (isTransient(err) && !isServerError(err))
}

func isServerError(err error) bool {
	var se *ServerError
	return errors.As(err, &se)
}

// connect sets the URL and sends OPTIONS. It reports whether the TCP
// connection's local and peer addresses are equal (daemon on this host).
// With noRetry, connection failures are not retried, so that the fallback
// to the proxy URL is quick.
func (b *Backend) connect(ctx context.Context, rawURL string, noRetry bool) (optionsReply, bool, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse errors include the whole URL.
		return optionsReply{}, false, fmt.Errorf("parsing transfer URL: invalid URL")
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return optionsReply{}, false, fmt.Errorf("parsing transfer URL: unsupported scheme %q", u.Scheme)
	}
	if u.Host == "" {
		return optionsReply{}, false, fmt.Errorf("parsing transfer URL: missing host")
	}
	u.RawQuery, u.Fragment = "", ""
	b.url = u
	b.red = newRedactor(u)
	b.display = b.red.url(u)

	var local atomic.Bool
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		la, lok := info.Conn.LocalAddr().(*net.TCPAddr)
		ra, rok := info.Conn.RemoteAddr().(*net.TCPAddr)
		local.Store(lok && rok && la.IP.Equal(ra.IP))
	}}
	tctx := httptrace.WithClientTrace(ctx, trace)
	var reply optionsReply
	retries := b.retries
	if noRetry {
		retries = 0
	}
	err = b.retry(ctx, retries, "getting options of "+b.display, func(int) error {
		reply = optionsReply{}
		resp, err := b.send(tctx, nethttp.MethodOptions, b.url.String(), nil, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		switch resp.StatusCode {
		case nethttp.StatusOK:
		case nethttp.StatusMethodNotAllowed, nethttp.StatusNoContent:
			// An old daemon (405) or proxy (204): no features.
			return nil
		default:
			return b.statusError(resp, "getting options of "+b.display)
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&reply); err != nil {
			return fmt.Errorf("getting options of %s: decoding reply: %w", b.display, err)
		}
		if allow := resp.Header.Get("Allow"); allow != "" && !strings.Contains(allow, "PUT") {
			reply.Features = slices.DeleteFunc(reply.Features, func(f string) bool { return f == "zero" || f == "flush" })
			reply.MaxWriters = -1 // read-only
		}
		return nil
	})
	return reply, local.Load(), err
}

// unixSocketBuffer is the send and receive buffer asked for on a
// connection to the daemon's Unix socket.
const unixSocketBuffer = 4 << 20

// switchToUnix moves to the daemon's local service on socket. Names
// starting with NUL are abstract (Go spells them with a leading '@'). On
// failure the backend stays on TCP.
func (b *Backend) switchToUnix(ctx context.Context, socket string, tlsConf *tls.Config) {
	addr := socket
	if strings.HasPrefix(addr, "\x00") {
		addr = "@" + addr[1:]
	}
	d := &net.Dialer{Timeout: 20 * time.Second}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		c, err := d.DialContext(ctx, "unix", addr)
		if u, ok := c.(*net.UnixConn); ok {
			// A Unix stream socket queues at most the sender's send
			// buffer (about 208 KiB by default): a 1 MiB piece of a PUT
			// would block in parts, waking both ends each time.
			// Errors only cost speed.
			_ = u.SetWriteBuffer(unixSocketBuffer)
			_ = u.SetReadBuffer(unixSocketBuffer)
		}
		return c, err
	}
	client := &nethttp.Client{Transport: newTransport(tlsConf, b.opts, dial)}
	u := &url.URL{Scheme: "http", Host: "localhost", Path: b.url.Path, RawPath: b.url.RawPath}
	old, oldURL := b.client, b.url
	b.client, b.url = client, u
	err := b.retry(ctx, 0, "getting options over the local socket", func(int) error {
		resp, err := b.send(ctx, nethttp.MethodOptions, u.String(), nil, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != nethttp.StatusOK {
			return b.statusError(resp, "getting options over the local socket")
		}
		return nil
	})
	if err != nil {
		b.client, b.url = old, oldURL
		client.CloseIdleConnections()
		b.notify(fmt.Sprintf("cannot use the daemon's local socket: %v; staying on %s", err, b.display))
		return
	}
	old.CloseIdleConnections()
	b.display = b.red.url(u)
}

func (b *Backend) setCaps(r optionsReply) {
	b.features = slices.Clone(r.Features)
	c := backend.Caps{
		CanZero:    slices.Contains(r.Features, "zero"),
		CanFlush:   slices.Contains(r.Features, "flush"),
		MaxReaders: max(r.MaxReaders, 1),
		MaxWriters: max(r.MaxWriters, 1),
		BlockSize:  1,
	}
	if r.MaxWriters < 0 {
		c.ReadOnly = true
	}
	if slices.Contains(r.Features, "extents") {
		// Dirty extents depend on the ticket, which OPTIONS does not
		// tell; Extents(ContextDirty) is tried anyway.
		c.Extents = []string{backend.ContextZero}
	}
	b.caps = c
}

// readSize learns the image size: the end of the last extent, or when the
// daemon has no extents, the total of a one-byte ranged GET.
func (b *Backend) readSize(ctx context.Context) error {
	if b.caps.HasExtents(backend.ContextZero) {
		ext, err := b.getExtents(ctx, backend.ContextZero)
		if err != nil {
			return err
		}
		if len(ext) > 0 {
			b.size = ext[len(ext)-1].End()
		}
		b.extents.Store(&ext)
		return nil
	}
	op := "probing size of " + b.display
	return b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.send(ctx, nethttp.MethodGet, b.url.String(), map[string]string{"Range": "bytes=0-0"}, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		switch resp.StatusCode {
		case nethttp.StatusPartialContent, nethttp.StatusRequestedRangeNotSatisfiable:
			total, ok := contentRangeTotal(resp.Header.Get("Content-Range"))
			if !ok {
				return fmt.Errorf("%s: no size in Content-Range %q", op, resp.Header.Get("Content-Range"))
			}
			b.size = total
			return nil
		case nethttp.StatusOK:
			if resp.ContentLength < 0 {
				return fmt.Errorf("%s: no Content-Length", op)
			}
			b.size = resp.ContentLength
			return nil
		}
		return b.statusError(resp, op)
	})
}

// contentRangeTotal parses the total of "bytes F-L/N" or "bytes */N".
func contentRangeTotal(s string) (int64, bool) {
	_, total, ok := strings.Cut(s, "/")
	if !ok || !strings.HasPrefix(s, "bytes ") {
		return 0, false
	}
	n, err := strconv.ParseInt(total, 10, 64)
	return n, err == nil && n >= 0
}

// URL returns the URL in use after fallbacks, with the ticket id redacted.
func (b *Backend) URL() string { return b.display }

// Features returns the features the daemon reported in OPTIONS.
func (b *Backend) Features() []string { return slices.Clone(b.features) }

// Size returns the image size.
func (b *Backend) Size() int64 { return b.size }

// Caps returns the capabilities learned from OPTIONS.
func (b *Backend) Caps() backend.Caps {
	c := b.caps
	c.Extents = slices.Clone(c.Extents)
	return c
}

// Close closes idle connections.
func (b *Backend) Close() error {
	b.client.CloseIdleConnections()
	return nil
}

func (b *Backend) notify(msg string) {
	if b.opts.Notify != nil {
		b.opts.Notify(b.red.text(msg))
	}
}

// send makes one request. Its errors are redacted; transport failures are
// marked transient.
func (b *Backend) send(ctx context.Context, method, u string, header map[string]string, body io.Reader) (*nethttp.Response, error) {
	req, err := nethttp.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("making %s request: %v", method, b.red.text(err.Error()))
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	// All our requests may be sent again: mark them idempotent (a nil
	// value is not sent) so that net/http retries a request that found a
	// stale keep-alive connection.
	req.Header["Idempotency-Key"] = nil
	resp, err := b.client.Do(req)
	if err != nil {
		return nil, b.transportError(ctx, err)
	}
	return resp, nil
}

// statusError makes a *ServerError from an error response.
func (b *Backend) statusError(resp *nethttp.Response, op string) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &ServerError{Op: op, Code: resp.StatusCode, Message: b.red.text(strings.TrimSpace(string(msg)))}
}

// drain reads what is left of a response body (up to a bound) and closes
// it, so that the connection can be used again.
func drain(resp *nethttp.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
	resp.Body.Close()
}

// retry calls fn until it succeeds, fails permanently, or retries run out.
// fn gets the attempt number (0 first).
func (b *Backend) retry(ctx context.Context, retries int, op string, fn func(attempt int) error) error {
	delay := b.backoff
	for attempt := 0; ; attempt++ {
		err := fn(attempt)
		if err == nil {
			return nil
		}
		if !isTransient(err) || attempt >= retries || ctx.Err() != nil {
			if ctxErr := ctx.Err(); ctxErr != nil {
				return fmt.Errorf("%s: %w", op, ctxErr)
			}
			var ce *CertificateError
			if isServerError(err) || errors.As(err, &ce) {
				return err // they name the request already
			}
			return fmt.Errorf("%s: %w", op, err)
		}
		b.notify(fmt.Sprintf("%s: %v; retrying in %v (%d of %d)", op, err, delay, attempt+1, retries))
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", op, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 5*time.Second)
	}
}

func (b *Backend) getBuf() *[]byte  { return b.bufs.Get().(*[]byte) }
func (b *Backend) putBuf(p *[]byte) { b.bufs.Put(p) }

func rangeHeader(off, length int64) map[string]string {
	return map[string]string{"Range": fmt.Sprintf("bytes=%d-%d", off, off+length-1)}
}

func (b *Backend) checkRange(off, length int64) error {
	if off < 0 || length < 0 || off > b.size-length {
		return fmt.Errorf("range %d+%d of %s (size %d): %w", off, length, b.display, b.size, backend.ErrOutOfRange)
	}
	return nil
}

// get sends GET for [off, off+length) and checks that the reply starts at
// off. The caller drains the response.
func (b *Backend) get(ctx context.Context, off, length int64, op string) (*nethttp.Response, error) {
	resp, err := b.send(ctx, nethttp.MethodGet, b.url.String(), rangeHeader(off, length), nil)
	if err != nil {
		return nil, err
	}
	switch resp.StatusCode {
	case nethttp.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		if !strings.HasPrefix(cr, fmt.Sprintf("bytes %d-", off)) {
			drain(resp)
			return nil, fmt.Errorf("%s: unexpected Content-Range %q", op, cr)
		}
		return resp, nil
	case nethttp.StatusOK:
		if off == 0 {
			return resp, nil
		}
		drain(resp)
		return nil, fmt.Errorf("%s: server ignored the Range header", op)
	}
	err = b.statusError(resp, op)
	drain(resp)
	return nil, err
}

// ReadAt reads len(p) bytes at off with one GET (resumed after transient
// failures).
func (b *Backend) ReadAt(ctx context.Context, p []byte, off int64) error {
	length := int64(len(p))
	if err := b.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	op := fmt.Sprintf("reading %d-%d of %s", off, off+length-1, b.display)
	var done int64
	return b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.get(ctx, off+done, length-done, op)
		if err != nil {
			return err
		}
		defer drain(resp)
		n, err := io.ReadFull(resp.Body, p[done:])
		done += int64(n)
		if err != nil {
			return b.transportError(ctx, err)
		}
		return nil
	})
}

// countReader counts the bytes read and keeps the read error.
type countReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil {
		c.err = err
	}
	return n, err
}

// ReadTo sends [off, off+length) to w with one GET. The body is copied
// with w.ReadFrom when w has it, else through a pooled buffer. After a
// transient failure the GET is sent again for the bytes not yet read, so
// w sees every byte once, in order.
func (b *Backend) ReadTo(ctx context.Context, w io.Writer, off, length int64) error {
	if err := b.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	op := fmt.Sprintf("reading %d-%d of %s", off, off+length-1, b.display)
	var done int64
	return b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.get(ctx, off+done, length-done, op)
		if err != nil {
			return err
		}
		defer drain(resp)
		cr := &countReader{r: io.LimitReader(resp.Body, length-done)}
		var werr error
		if rf, ok := w.(io.ReaderFrom); ok {
			_, werr = rf.ReadFrom(cr)
		} else {
			buf := b.getBuf()
			_, werr = io.CopyBuffer(struct{ io.Writer }{w}, cr, *buf)
			b.putBuf(buf)
		}
		done += cr.n
		if cr.err != nil && cr.err != io.EOF {
			return b.transportError(ctx, cr.err)
		}
		if werr != nil {
			return fmt.Errorf("%s: writing: %w", op, werr)
		}
		if done < length {
			return b.transportError(ctx, io.ErrUnexpectedEOF)
		}
		return nil
	})
}

// WriteAt writes p at off with one PUT.
func (b *Backend) WriteAt(ctx context.Context, p []byte, off int64) error {
	return b.WriteFrom(ctx, bytes.NewReader(p), off, int64(len(p)))
}

// attemptBody is the body of one PUT attempt. net/http may still read a
// request body after Do returns, so each attempt gets its own wrapper and
// detach stops it from touching the source before the source is rewound
// for the next attempt or given back to the caller.
type attemptBody struct {
	// mu guards the fields that follow; Read holds it while reading r.
	mu       sync.Mutex
	r        io.Reader
	detached bool
	n        int64
	left     int64 // bytes still expected from r
	err      error // error from r (not from the network)
}

var errDetached = errors.New("request body detached")

func (a *attemptBody) Read(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached {
		return 0, errDetached
	}
	if a.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > a.left {
		p = p[:a.left]
	}
	n, err := a.r.Read(p)
	a.n += int64(n)
	a.left -= int64(n)
	if err == io.EOF && a.left > 0 {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && err != io.EOF {
		a.err = err
	}
	if a.left == 0 && err == nil {
		err = io.EOF
	}
	return n, err
}

func (a *attemptBody) Close() error { return nil }

// PieceWriter is a request body source that writes its next bytes to a
// writer straight from its own buffers (transfer's source reader does):
// WriteFrom then sends them on the connection (plain or TLS) without
// copying them first. WriteNTo writes at most n bytes and returns how many it
// wrote; at the end of its data it returns what it wrote and a nil error.
type PieceWriter interface {
	WriteNTo(w io.Writer, n int64) (int64, error)
}

// canWriteTo reports whether the source is a PieceWriter.
func (a *attemptBody) canWriteTo() bool {
	_, ok := a.r.(PieceWriter)
	return ok
}

// errWriter remembers the error of its writer, so that writeTo can tell
// a network error from a source error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	n, err := e.w.Write(p)
	if err != nil {
		e.err = err
	}
	return n, err
}

// writeTo writes up to limit bytes of the source to w with the source's
// WriteNTo, holding mu like Read does, so detach waits for a write to the
// connection in progress (it ends when net/http closes a connection it
// gives up on). Source errors are kept for detach.
func (a *attemptBody) writeTo(w io.Writer, limit int64) (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.detached {
		return 0, errDetached
	}
	want := min(limit, a.left)
	if want <= 0 {
		return 0, nil
	}
	ew := &errWriter{w: w}
	n, err := a.r.(PieceWriter).WriteNTo(ew, want)
	a.n += n
	a.left -= n
	switch {
	case err != nil && ew.err == nil:
		a.err = err
	case err == nil && n < want:
		err = io.ErrUnexpectedEOF
		a.err = err
	}
	return n, err
}

// detach stops further reads and returns how many bytes were read and the
// source's error.
func (a *attemptBody) detach() (int64, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.detached = true
	return a.n, a.err
}

// WriteFrom writes length bytes read from r at off with one PUT
// (?flush=n, Content-Range: bytes off-end/*). The body is streamed from r;
// nothing is buffered here. An r that is a PieceWriter writes to the
// connection itself (under TLS: records sealed from its pieces), without a
// copy.
//
// Retries: when r is also an io.Seeker, a transiently failed PUT is sent
// again after seeking r back to where it was when WriteFrom was called, so
// the same range is resent (never the whole image). A plain io.Reader is
// retried only when the failed attempt read nothing from it. The transfer
// package passes a seekable reader over its source range.
func (b *Backend) WriteFrom(ctx context.Context, r io.Reader, off, length int64) error {
	if b.caps.ReadOnly {
		return fmt.Errorf("writing to %s: %w", b.display, backend.ErrReadOnly)
	}
	if err := b.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	b.extents.Store(nil)
	op := fmt.Sprintf("writing %d-%d of %s", off, off+length-1, b.display)
	seeker, _ := r.(io.Seeker)
	var start int64
	if seeker != nil {
		var err error
		if start, err = seeker.Seek(0, io.SeekCurrent); err != nil {
			seeker = nil
		}
	}
	var consumed bool
	header := map[string]string{
		"Content-Range": fmt.Sprintf("bytes %d-%d/*", off, off+length-1),
		"Content-Type":  "application/octet-stream",
	}
	u := b.url.String() + "?flush=n"
	return b.retry(ctx, b.retries, op, func(attempt int) error {
		if attempt > 0 && consumed {
			if seeker == nil {
				return fmt.Errorf("cannot resend: the source cannot be rewound")
			}
			if _, err := seeker.Seek(start, io.SeekStart); err != nil {
				return fmt.Errorf("rewinding the source: %w", err)
			}
		}
		// cur is the body net/http is reading; GetBody (used by net/http
		// to resend on a stale keep-alive connection) detaches it and
		// rewinds the source.
		var mu sync.Mutex
		cur := &attemptBody{r: r, left: length}
		var read int64
		req, err := nethttp.NewRequestWithContext(ctx, nethttp.MethodPut, u, cur)
		if err != nil {
			return fmt.Errorf("making request: %v", b.red.text(err.Error()))
		}
		req.ContentLength = length
		if seeker != nil {
			req.GetBody = func() (io.ReadCloser, error) {
				mu.Lock()
				defer mu.Unlock()
				n, srcErr := cur.detach()
				read += n
				if srcErr != nil {
					return nil, srcErr
				}
				if _, err := seeker.Seek(start, io.SeekStart); err != nil {
					return nil, err
				}
				cur = &attemptBody{r: r, left: length}
				return cur, nil
			}
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		req.Header["Idempotency-Key"] = nil
		resp, err := b.client.Do(req)
		if resp != nil {
			if resp.StatusCode != nethttp.StatusOK {
				err = b.statusError(resp, op)
			}
			drain(resp)
		}
		mu.Lock()
		n, srcErr := cur.detach()
		read += n
		mu.Unlock()
		if read > 0 {
			consumed = true
		}
		if srcErr != nil {
			return fmt.Errorf("reading the source: %w", srcErr)
		}
		if err != nil && !isServerError(err) {
			return b.transportError(ctx, err)
		}
		return err
	})
}

// zeroReader reads zeros; it is seekable so that a PUT of zeros can be
// resent.
type zeroReader struct{ pos int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	clear(p)
	z.pos += int64(len(p))
	return len(p), nil
}

func (z *zeroReader) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
		z.pos = off
	case io.SeekCurrent:
		z.pos += off
	default:
		return 0, errors.New("zeroReader: unsupported whence")
	}
	return z.pos, nil
}

// Zero makes [off, off+length) read as zeros with PATCH {"op": "zero"}.
// The images API has no punch flag: the daemon decides whether to
// deallocate. A daemon without the "zero" feature gets PUTs of zeros.
func (b *Backend) Zero(ctx context.Context, off, length int64, punch bool) error {
	if b.caps.ReadOnly {
		return fmt.Errorf("zeroing %s: %w", b.display, backend.ErrReadOnly)
	}
	if err := b.checkRange(off, length); err != nil {
		return err
	}
	if length == 0 {
		return nil
	}
	b.extents.Store(nil)
	if !b.caps.CanZero {
		for length > 0 {
			n := min(length, maxRequest)
			if err := b.WriteFrom(ctx, &zeroReader{}, off, n); err != nil {
				return err
			}
			off += n
			length -= n
		}
		return nil
	}
	msg := fmt.Sprintf(`{"op":"zero","offset":%d,"size":%d,"flush":false}`, off, length)
	return b.patch(ctx, msg, fmt.Sprintf("zeroing %d-%d of %s", off, off+length-1, b.display))
}

// Flush sends PATCH {"op": "flush"}; it does nothing when the daemon lacks
// the "flush" feature.
func (b *Backend) Flush(ctx context.Context) error {
	if !b.caps.CanFlush {
		return nil
	}
	return b.patch(ctx, `{"op":"flush"}`, "flushing "+b.display)
}

func (b *Backend) patch(ctx context.Context, msg, op string) error {
	header := map[string]string{"Content-Type": "application/json"}
	return b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.send(ctx, nethttp.MethodPatch, b.url.String(), header, strings.NewReader(msg))
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != nethttp.StatusOK {
			return b.statusError(resp, op)
		}
		return nil
	})
}

// Extents returns the image's extents in context (backend.ContextZero or
// backend.ContextDirty). A daemon without the "extents" feature gets one
// data extent for ContextZero and backend.ErrNotSupported for others.
func (b *Backend) Extents(ctx context.Context, context string) ([]backend.Extent, error) {
	if context == backend.ContextZero {
		if ext := b.extents.Swap(nil); ext != nil {
			return *ext, nil
		}
	}
	if !slices.Contains(b.features, "extents") {
		if context == backend.ContextZero {
			if b.size == 0 {
				return nil, nil
			}
			return []backend.Extent{{Start: 0, Length: b.size}}, nil
		}
		return nil, fmt.Errorf("getting %s extents of %s: %w", context, b.display, backend.ErrNotSupported)
	}
	return b.getExtents(ctx, context)
}

func (b *Backend) getExtents(ctx context.Context, context string) ([]backend.Extent, error) {
	op := fmt.Sprintf("getting %s extents of %s", context, b.display)
	u := b.url.String() + "/extents?context=" + url.QueryEscape(context)
	var ext []backend.Extent
	err := b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.send(ctx, nethttp.MethodGet, u, nil, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != nethttp.StatusOK {
			err := b.statusError(resp, op)
			if resp.StatusCode == nethttp.StatusNotFound && context == backend.ContextDirty {
				return fmt.Errorf("%w (%w)", err, backend.ErrNotSupported)
			}
			return err
		}
		ext, err = parseExtents(resp.Body)
		if err != nil {
			if isNetError(err) && !errors.Is(err, errBadExtents) {
				return b.transportError(ctx, err)
			}
			return fmt.Errorf("%s: %w", op, err)
		}
		return nil
	})
	return ext, err
}

// Checksum asks the daemon for the block checksum of the image (GET
// /images/ID/checksum). An empty algorithm or zero blockSize leaves the
// choice to the daemon (blake2b, 4 MiB).
func (b *Backend) Checksum(ctx context.Context, algorithm string, blockSize int) (string, error) {
	q := url.Values{}
	if algorithm != "" {
		q.Set("algorithm", algorithm)
	}
	if blockSize > 0 {
		q.Set("block_size", strconv.Itoa(blockSize))
	}
	u := b.url.String() + "/checksum"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	op := "getting checksum of " + b.display
	var sum string
	err := b.retry(ctx, b.retries, op, func(int) error {
		resp, err := b.send(ctx, nethttp.MethodGet, u, nil, nil)
		if err != nil {
			return err
		}
		defer drain(resp)
		if resp.StatusCode != nethttp.StatusOK {
			return b.statusError(resp, op)
		}
		var reply struct {
			Checksum string `json:"checksum"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&reply); err != nil {
			return fmt.Errorf("%s: decoding reply: %w", op, err)
		}
		if reply.Checksum == "" {
			return fmt.Errorf("%s: reply has no checksum", op)
		}
		sum = reply.Checksum
		return nil
	})
	return sum, err
}
