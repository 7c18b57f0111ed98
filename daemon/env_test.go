package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// nopClose shares one mem backend between connections.
type nopClose struct{ backend.Backend }

func (nopClose) Close() error { return nil }

// slowBackend sleeps before every read and write, to keep a transfer busy.
type slowBackend struct {
	backend.Backend
	delay time.Duration
}

func (b slowBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.ReadAt(ctx, p, off)
}

func (b slowBackend) WriteAt(ctx context.Context, p []byte, off int64) error {
	select {
	case <-time.After(b.delay):
	case <-ctx.Done():
		return ctx.Err()
	}
	return b.Backend.WriteAt(ctx, p, off)
}

// env is a running remote service with mem backends and a fake clock.
type env struct {
	t       *testing.T
	store   *ticket.Store
	svc     *Service
	base    string // https://127.0.0.1:port
	client  *http.Client
	logs    *syncBuffer
	clock   atomic.Int64
	opens   atomic.Int32
	mu      sync.Mutex
	images  map[string]backend.Backend // by ticket URL
	stopped chan error
	cancel  context.CancelFunc
}

type envOptions struct {
	maxConns       int
	preAuthTimeout time.Duration
	bufferSize     int
	unixSocket     string
	plain          bool // no TLS
	depth          int  // Config.PipelineDepth
}

func newEnv(t *testing.T, o envOptions) *env {
	t.Helper()
	e := &env{t: t, logs: &syncBuffer{}, images: make(map[string]backend.Backend), stopped: make(chan error, 1)}
	e.clock.Store(1000)
	e.store = ticket.NewStore(ticket.Config{MaxConnections: o.maxConns, Clock: e.clock.Load})
	if o.bufferSize == 0 {
		o.bufferSize = 64 << 10
	}
	cfg := Config{
		Tickets: e.store,
		Schemes: map[string]Scheme{"mem": {
			Open: func(ctx context.Context, tk *ticket.Ticket) (backend.Backend, error) {
				e.opens.Add(1)
				e.mu.Lock()
				defer e.mu.Unlock()
				b, ok := e.images[tk.URL]
				if !ok {
					return nil, fmt.Errorf("no image %s", tk.URL)
				}
				return nopClose{b}, nil
			},
			BufferSize: o.bufferSize,
		}},
		MaxConnections: o.maxConns,
		UnixSocket:     o.unixSocket,
		PreAuthTimeout: o.preAuthTimeout,
		PipelineDepth:  o.depth,
		Logger:         slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 16}
	if o.plain {
		e.base = "http://" + ln.Addr().String()
	} else {
		files := testutil.NewTLS(t, t.TempDir())
		cert, err := tls.LoadX509KeyPair(files.CertFile, files.KeyFile)
		if err != nil {
			t.Fatal(err)
		}
		cfg.TLS = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
		tr.TLSClientConfig = &tls.Config{RootCAs: files.Pool}
		e.base = "https://" + ln.Addr().String()
	}
	e.client = &http.Client{Transport: tr}
	e.svc = NewRemote(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.stopped <- e.svc.Run(ctx, ln) }()
	t.Cleanup(func() {
		// Close idle client connections first: the server waits up to 5 s
		// for a new connection that never sent a request.
		tr.CloseIdleConnections()
		e.stop()
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *env) stop() {
	if e.cancel == nil {
		return
	}
	e.cancel()
	e.cancel = nil
	select {
	case err := <-e.stopped:
		if err != nil {
			e.t.Errorf("Run: %v", err)
		}
	case <-time.After(40 * time.Second):
		e.t.Error("service did not stop")
	}
}

// addImage adds a mem image and a ticket for it.
func (e *env) addImage(id string, b backend.Backend, ticketJSON string) *ticket.Ticket {
	e.t.Helper()
	url := "mem:" + id
	e.mu.Lock()
	e.images[url] = b
	e.mu.Unlock()
	doc := strings.ReplaceAll(ticketJSON, "URL", url)
	doc = strings.ReplaceAll(doc, "ID", id)
	tk, err := ticket.Parse([]byte(doc), ticket.ParseOptions{InactivityTimeout: 60, Schemes: []string{"mem"}})
	if err != nil {
		e.t.Fatalf("parsing ticket: %v", err)
	}
	e.store.Add(tk)
	return tk
}

type response struct {
	code   int
	header http.Header
	body   []byte
	close  bool // the server sent Connection: close
}

func (r response) String() string { return fmt.Sprintf("%d %q", r.code, r.body) }

// do sends a request; headers are "Name: value" strings.
func (e *env) do(method, path string, body io.Reader, headers ...string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.base+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, h := range headers {
		k, v, _ := strings.Cut(h, ": ")
		req.Header.Set(k, v)
	}
	if br, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(br.Len())
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{code: resp.StatusCode, header: resp.Header, body: data, close: resp.Close}
}

func pattern(size int, seed byte) []byte {
	p := make([]byte, size)
	for i := range p {
		p[i] = byte(i*7+i/4096) ^ seed
	}
	return p
}

func newMem(data []byte) *mem.Backend { return mem.NewWithData(data) }

type backendIface = backend.Backend
