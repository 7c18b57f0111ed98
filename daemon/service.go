package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/ticket"
)

// Version is the version the daemon reports in its Server header and on
// /info/. It is the reference daemon's version, because clients parse it to
// decide which features to use.
const Version = "2.5.3"

const serverHeader = "imageio/" + Version

// Defaults for Config fields left zero.
const (
	DefaultPreAuthTimeout  = 60 * time.Second
	DefaultShutdownTimeout = 30 * time.Second
	DefaultBufferSize      = 8 << 20
	// MaxDataBuffer caps the data buffer of a request: larger buffers
	// gave no more throughput in measurements but 8 MiB buffers cost 32
	// MiB of memory with 4 connections (see docs/daemon.md).
	MaxDataBuffer = 2 << 20
	// MaxChunk caps the backend requests of a streamed PUT (see
	// backend.ChunkWriter): the largest NBD request qemu-nbd takes.
	MaxChunk = 32 << 20
	// relaySize is the buffer a streamed PUT body moves through.
	relaySize = 256 << 10
)

// tlsReadBuffer is the socket read buffer of TLS connections: several
// records per read system call.
const tlsReadBuffer = 256 << 10

// Scheme opens backends for the ticket URLs of one scheme.
type Scheme struct {
	// Open opens a backend for t. Every connection opens its own and
	// closes it when the connection closes.
	Open func(ctx context.Context, t *ticket.Ticket) (backend.Backend, error)
	// BufferSize is the size of the data buffers used with this backend.
	BufferSize int
}

// Config configures an images service.
type Config struct {
	Tickets *ticket.Store
	// Schemes maps URL schemes to backends.
	Schemes map[string]Scheme
	// MaxConnections caps max_readers and max_writers reported by OPTIONS
	// ([daemon] max_connections); the ticket store enforces it per ticket.
	MaxConnections int
	// UnixSocket is reported as "unix_socket" by OPTIONS when the local
	// service is enabled ("\x00name" for an abstract socket); "" leaves it
	// out.
	UnixSocket string
	// TLS, if set, makes the service HTTPS.
	TLS *tls.Config
	// PreAuthTimeout is the idle timeout of a connection before its first
	// authorized request (60 s).
	PreAuthTimeout time.Duration
	// ShutdownTimeout bounds how long Run waits for requests in flight
	// once ctx is done (30 s); they are cut after it.
	ShutdownTimeout time.Duration
	// Logger receives connection and request logs; nil discards.
	Logger *slog.Logger
	// PipelineDepth is how many data buffers one GET or PUT uses
	// (DefaultPipelineDepth): while one chunk moves between the client
	// and the daemon, up to PipelineDepth-1 others are read from or
	// written to the backend. 1 copies serially.
	PipelineDepth int
}

// Service is one images service: remote (with /info/) or local.
type Service struct {
	cfg  Config
	name string
	info bool
	log  *slog.Logger
	bufs bufferPools

	nextID atomic.Uint64

	// mu guards the fields that follow.
	mu    sync.Mutex
	conns map[net.Conn]*connState
	open  sync.WaitGroup // connections not yet closed
}

// NewRemote returns the remote service: the images API and /info/,
// over HTTPS when cfg.TLS is set.
func NewRemote(cfg Config) *Service { return newService(cfg, "remote", true) }

// NewLocal returns the local service: the images API over a Unix socket.
func NewLocal(cfg Config) *Service { return newService(cfg, "local", false) }

func newService(cfg Config, name string, info bool) *Service {
	if cfg.PreAuthTimeout <= 0 {
		cfg.PreAuthTimeout = DefaultPreAuthTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.PipelineDepth <= 0 {
		cfg.PipelineDepth = DefaultPipelineDepth
	}
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Service{
		cfg:   cfg,
		name:  name,
		info:  info,
		log:   l.With("service", name),
		conns: make(map[net.Conn]*connState),
	}
}

type connKey struct{}

// Run serves the images API on ln until ctx is done, then stops accepting
// connections and waits up to ShutdownTimeout for requests in flight before
// cutting them. It returns nil after a shutdown requested by ctx.
func (s *Service) Run(ctx context.Context, ln net.Listener) error {
	tl := &timeoutListener{Listener: ln, timeout: s.cfg.PreAuthTimeout}
	ln = tl
	if s.cfg.TLS != nil {
		tl.readBuffer = tlsReadBuffer
		ln = tls.NewListener(ln, s.cfg.TLS)
	}
	// Requests keep running during a graceful shutdown; reqCtx is
	// canceled only when the shutdown bound expires.
	reqCtx, cutRequests := context.WithCancel(context.Background())
	defer cutRequests()
	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: s.cfg.PreAuthTimeout,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
		ConnContext:       s.connContext,
		ConnState:         s.connStateHook,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	s.log.Info("listening", "addr", ln.Addr().String(), "tls", s.cfg.TLS != nil)
	select {
	case err := <-errc:
		s.waitConns()
		return fmt.Errorf("serving %s service: %w", s.name, err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		s.log.Warn("cutting requests still running after shutdown timeout", "timeout", s.cfg.ShutdownTimeout)
		cutRequests()
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.log.Warn("serve", "err", err)
	}
	s.waitConns()
	return nil
}

// waitConns waits until every connection released its backends.
func (s *Service) waitConns() {
	s.open.Wait()
}

func (s *Service) connContext(ctx context.Context, c net.Conn) context.Context {
	raw := c
	if tc, ok := c.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	tc, _ := raw.(*timeoutConn)
	client := "local"
	if a, ok := raw.RemoteAddr().(*net.TCPAddr); ok {
		client = a.IP.String()
	}
	cs := &connState{
		ctx:      ctx,
		id:       s.nextID.Add(1),
		client:   client,
		conn:     tc,
		start:    time.Now(),
		backends: make(map[*ticket.Ticket]*connBackend),
		stats:    make(map[string]*opStats),
	}
	s.mu.Lock()
	s.conns[c] = cs
	s.open.Add(1)
	s.mu.Unlock()
	s.log.Debug("OPEN", "connection", cs.id, "client", client)
	return context.WithValue(ctx, connKey{}, cs)
}

func (s *Service) connStateHook(c net.Conn, state http.ConnState) {
	if state != http.StateClosed && state != http.StateHijacked {
		return
	}
	s.mu.Lock()
	cs, ok := s.conns[c]
	delete(s.conns, c)
	s.mu.Unlock()
	if !ok {
		return
	}
	cs.close(s.log)
	s.open.Done()
}

// bufferPools holds one sync.Pool of data buffers per buffer size, so a
// request borrows a buffer instead of allocating one.
type bufferPools struct {
	pools sync.Map // int -> *sync.Pool of *[]byte
}

func (p *bufferPools) get(size int) *[]byte {
	v, ok := p.pools.Load(size)
	if !ok {
		v, _ = p.pools.LoadOrStore(size, &sync.Pool{New: func() any {
			b := make([]byte, size)
			return &b
		}})
	}
	return v.(*sync.Pool).Get().(*[]byte)
}

func (p *bufferPools) put(b *[]byte) {
	if v, ok := p.pools.Load(len(*b)); ok {
		v.(*sync.Pool).Put(b)
	}
}
