package http

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	nethttp "net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// open opens the test server's image with fast retries.
func open(t *testing.T, s *testServer, opts Options) *Backend {
	t.Helper()
	if opts.CAFile == "" && s.caFile != "" {
		opts.CAFile = s.caFile
	}
	b, err := Open(context.Background(), s.url(), opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	b.backoff = time.Millisecond
	t.Cleanup(func() { b.Close() })
	return b
}

func randomData(n int, seed uint64) []byte {
	var s [32]byte
	s[0] = byte(seed)
	p := make([]byte, n)
	_, _ = rand.NewChaCha8(s).Read(p)
	return p
}

// TestConformance runs the suite over plain HTTP against the test handler;
// TestDaemonConformance runs it over HTTPS and the Unix socket against
// the real daemon.
func TestConformance(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		s := newTestServer(t, mem.New(size), false, nil)
		return open(t, s, Options{})
	})
}

func TestConformanceOldDaemon(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		s := newTestServer(t, mem.New(size), false, func(s *testServer) { s.oldDaemon = true })
		return open(t, s, Options{})
	})
}

func TestOldDaemon(t *testing.T) {
	data := randomData(1<<20+512, 1)
	s := newTestServer(t, mem.NewWithData(data), false, func(s *testServer) { s.oldDaemon = true })
	b := open(t, s, Options{})
	if got := b.Size(); got != int64(len(data)) {
		t.Errorf("Size: got %d, want %d", got, len(data))
	}
	caps := b.Caps()
	if caps.CanZero || caps.CanFlush || len(caps.Extents) != 0 || caps.MaxWriters != 1 {
		t.Errorf("Caps: got %+v, want no zero, flush, extents and one writer", caps)
	}
	ext, err := b.Extents(context.Background(), backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]backend.Extent{{Start: 0, Length: int64(len(data))}}, ext); diff != "" {
		t.Errorf("Extents (-want +got):\n%s", diff)
	}
	if _, err := b.Extents(context.Background(), backend.ContextDirty); !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("dirty Extents: got %v, want ErrNotSupported", err)
	}
	if err := b.Zero(context.Background(), 4096, 8192, false); err != nil {
		t.Fatal(err)
	}
	clear(data[4096 : 4096+8192])
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.img.Bytes(), data) {
		t.Error("content differs after zero by PUT")
	}
	st := s.img.Stats()
	if st.Zeros != 0 || st.Flushes != 0 {
		t.Errorf("server stats: %d zeros, %d flushes, want none", st.Zeros, st.Flushes)
	}
}

func TestCertificates(t *testing.T) {
	s := newTestServer(t, mem.New(1<<20), true, nil)
	other := testutil.NewTLS(t, t.TempDir())
	tests := []struct {
		name    string
		opts    Options
		wantErr string // "" = success
	}{
		{"cafile", Options{CAFile: s.caFile}, ""},
		{"insecure", Options{Insecure: true}, ""},
		{"system CAs", Options{}, "system CAs"},
		{"wrong CA", Options{CAFile: other.CAFile}, other.CAFile},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := Open(context.Background(), s.url(), tc.opts)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				b.Close()
				return
			}
			if err == nil {
				b.Close()
				t.Fatal("Open succeeded, want a certificate error")
			}
			var ce *CertificateError
			if !errors.As(err, &ce) {
				t.Fatalf("Open: got %v (%T), want *CertificateError", err, err)
			}
			msg := err.Error()
			for _, want := range []string{tc.wantErr, "--cafile"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not name %q", msg, want)
				}
			}
			if strings.Contains(msg, s.ticket) {
				t.Errorf("error %q shows the ticket id", msg)
			}
		})
	}
}

func TestProxyFallback(t *testing.T) {
	data := randomData(256<<10, 2)
	proxy := newTestServer(t, mem.NewWithData(data), true, nil)
	// A dead transfer URL: a port that was listening and is now closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String() + "/images/" + proxy.ticket
	ln.Close()

	var mu sync.Mutex
	var msgs []string
	notify := func(m string) {
		mu.Lock()
		defer mu.Unlock()
		msgs = append(msgs, m)
	}
	b, err := Open(context.Background(), dead, Options{CAFile: proxy.caFile, ProxyURL: proxy.url(), Notify: notify})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer b.Close()
	if want := proxy.srv.URL + "/images/" + Redacted; b.URL() != want {
		t.Errorf("URL: got %q, want %q", b.URL(), want)
	}
	got := make([]byte, len(data))
	if err := b.ReadAt(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("data read through the proxy differs")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(msgs) == 0 || !strings.Contains(strings.Join(msgs, "\n"), "proxy") {
		t.Errorf("Notify messages %q do not tell about the proxy", msgs)
	}
	for _, m := range msgs {
		if strings.Contains(m, proxy.ticket) {
			t.Errorf("message %q shows the ticket id", m)
		}
	}

	// Without a proxy, the error names the redacted URL only.
	_, err = Open(context.Background(), dead, Options{CAFile: proxy.caFile, Retries: -1})
	if err == nil || strings.Contains(err.Error(), proxy.ticket) {
		t.Errorf("Open of a dead URL: got %v, want an error without the ticket id", err)
	}
}

// unixServer serves s's handler on a Unix socket at addr ("@name" for an
// abstract socket).
func unixServer(t *testing.T, s *testServer, addr string) *httptest.Server {
	t.Helper()
	ln, err := net.Listen("unix", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func TestUnixSocketSwitch(t *testing.T) {
	tests := []struct {
		name     string
		abstract bool
		disable  bool
		broken   bool
	}{
		{name: "path"},
		{name: "abstract", abstract: true},
		{name: "disabled", disable: true},
		{name: "socket missing", broken: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := randomData(64<<10, 3)
			s := newTestServer(t, mem.NewWithData(data), true, nil)
			addr := filepath.Join(t.TempDir(), "sock")
			s.unixSocket = addr
			if tc.abstract {
				name := fmt.Sprintf("/imageio-test/%d/%s", time.Now().UnixNano(), t.Name())
				addr = "@" + name
				s.unixSocket = "\x00" + name
			}
			if !tc.broken {
				unixServer(t, s, addr)
			}
			b := open(t, s, Options{DisableUnixSocket: tc.disable})
			wantUnix := !tc.disable && !tc.broken
			if got := strings.HasPrefix(b.URL(), "http://localhost/"); got != wantUnix {
				t.Errorf("URL %q: on Unix socket = %v, want %v", b.URL(), got, wantUnix)
			}
			before := s.requests.Load()
			got := make([]byte, len(data))
			if err := b.ReadAt(context.Background(), got, 0); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Error("data differs")
			}
			if s.requests.Load() != before+1 {
				t.Errorf("requests: got %d more, want 1", s.requests.Load()-before)
			}
		})
	}
}

func TestServerErrors(t *testing.T) {
	s := newTestServer(t, mem.New(1<<20), false, nil)
	b := open(t, s, Options{})
	ctx := context.Background()

	err := b.WriteAt(ctx, make([]byte, 4096), 1<<20-100)
	if !errors.Is(err, backend.ErrOutOfRange) {
		t.Errorf("write past end: got %v, want ErrOutOfRange", err)
	}

	// The server forgets the ticket: 403 with its message, ticket redacted.
	s.forgetTicket()
	err = b.ReadAt(ctx, make([]byte, 4096), 0)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("read with unknown ticket: got %v, want ErrForbidden", err)
	}
	var se *ServerError
	if !errors.As(err, &se) || !strings.Contains(se.Message, "No such ticket") {
		t.Errorf("error %v does not carry the daemon's message", err)
	}
	if strings.Contains(err.Error(), s.ticket) {
		t.Errorf("error %q shows the ticket id", err)
	}
}

func TestRetry(t *testing.T) {
	const size = 8 << 20
	var s *testServer
	tests := []struct {
		name  string
		fault func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool
	}{
		{"500 once", func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
			if n == 3 {
				nethttp.Error(w, "Server failed to perform the request", nethttp.StatusInternalServerError)
				return true
			}
			return false
		}},
		{"reset every 3rd", func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
			if n > 2 && n%3 == 0 {
				resetConn(w)
				return true
			}
			return false
		}},
		{"drop mid-response", func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
			if r.Method != nethttp.MethodGet || n%2 == 0 || r.Header.Get("Range") == "" {
				return false
			}
			// Send headers and part of the body, then cut the connection.
			var first, last int64
			fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-%d", &first, &last)
			w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", first, last, size))
			w.Header().Set("Content-Length", fmt.Sprint(last-first+1))
			w.WriteHeader(nethttp.StatusPartialContent)
			half := make([]byte, (last-first+1)/2)
			if err := s.img.ReadAt(r.Context(), half, first); err != nil {
				panic(err)
			}
			w.Write(half)
			nethttp.NewResponseController(w).Flush()
			panic(nethttp.ErrAbortHandler)
		}},
		{"read half of PUT body", resetOddPutHalfway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := randomData(size, 4)
			s = newTestServer(t, mem.NewWithData(want), false, nil)
			b := open(t, s, Options{})
			s.setFault(tc.fault)
			ctx := context.Background()

			// Read with ReadTo and ReadAt, in 1 MiB requests.
			var got bytes.Buffer
			for off := int64(0); off < size/2; off += 1 << 20 {
				if err := b.ReadTo(ctx, &got, off, 1<<20); err != nil {
					t.Fatalf("ReadTo %d: %v", off, err)
				}
			}
			p := make([]byte, 1<<20)
			for off := int64(size / 2); off < size; off += 1 << 20 {
				if err := b.ReadAt(ctx, p, off); err != nil {
					t.Fatalf("ReadAt %d: %v", off, err)
				}
				got.Write(p)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Fatal("data read differs")
			}

			// Write new data with WriteFrom from a seekable reader, zero a range.
			next := randomData(size, 5)
			for off := int64(0); off < size; off += 2 << 20 {
				if err := b.WriteFrom(ctx, bytes.NewReader(next[off:off+2<<20]), off, 2<<20); err != nil {
					t.Fatalf("WriteFrom %d: %v", off, err)
				}
			}
			if err := b.Zero(ctx, 1<<20, 1<<20, false); err != nil {
				t.Fatal(err)
			}
			clear(next[1<<20 : 2<<20])
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(s.img.Bytes(), next) {
				t.Fatal("data written differs")
			}
		})
	}
}

func TestRetryGivesUp(t *testing.T) {
	s := newTestServer(t, mem.New(1<<20), false, nil)
	var msgs []string
	b := open(t, s, Options{Retries: 2, Notify: func(m string) { msgs = append(msgs, m) }})
	for _, code := range []int{500, 501, 507} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			msgs = nil
			before := s.requests.Load()
			s.setFault(func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
				nethttp.Error(w, "No space left on device", code)
				return true
			})
			err := b.WriteAt(context.Background(), make([]byte, 4096), 0)
			var se *ServerError
			if !errors.As(err, &se) || se.Code != code {
				t.Fatalf("got %v, want a ServerError %d", err, code)
			}
			if !strings.Contains(err.Error(), "No space left on device") {
				t.Errorf("error %q does not pass on the server message", err)
			}
			wantTries := int64(1)
			if code == 500 {
				wantTries = 3
			}
			if got := s.requests.Load() - before; got != wantTries {
				t.Errorf("requests: got %d, want %d", got, wantTries)
			}
			if len(msgs) != int(wantTries-1) {
				t.Errorf("notify messages: got %q, want %d", msgs, wantTries-1)
			}
			if got, want := errors.Is(err, backend.ErrNoSpace), code == 507; got != want {
				t.Errorf("%d: errors.Is(%v, backend.ErrNoSpace) = %v, want %v", code, err, got, want)
			}
			if code == 507 && !errors.Is(err, ErrNoSpace) {
				t.Errorf("507: got %v, want ErrNoSpace", err)
			}
		})
	}
}

// A plain reader (not seekable) cannot be resent after it was read.
func TestWriteFromPlainReader(t *testing.T) {
	s := newTestServer(t, mem.New(1<<20), false, nil)
	b := open(t, s, Options{})
	s.setFault(func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
		_, _ = r.Body.Read(make([]byte, 1000))
		resetConn(w)
		return true
	})
	r := struct{ io.Reader }{bytes.NewReader(make([]byte, 1<<20))}
	err := b.WriteFrom(context.Background(), r, 0, 1<<20)
	if err == nil || !strings.Contains(err.Error(), "cannot resend") {
		t.Errorf("got %v, want an error saying the source cannot be resent", err)
	}
}

// Keep-alive connections closed by the server while idle are replaced
// without an error.
func TestStaleConnections(t *testing.T) {
	data := randomData(64<<10, 6)
	s := newTestServer(t, mem.NewWithData(data), true, func(s *testServer) { s.idleTimeout = 20 * time.Millisecond })
	var msgs []string
	b := open(t, s, Options{Retries: -1, Notify: func(m string) { msgs = append(msgs, m) }})
	p := make([]byte, len(data))
	for i := range 5 {
		if err := b.ReadAt(context.Background(), p, 0); err != nil {
			t.Fatalf("read %d: %v", i, err)
		}
		if err := b.WriteAt(context.Background(), p, 0); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(msgs) != 0 {
		t.Errorf("messages: %q, want none", msgs)
	}
}

func TestCanceledDuringRetry(t *testing.T) {
	s := newTestServer(t, mem.New(1<<20), false, nil)
	b := open(t, s, Options{Retries: 100})
	b.backoff = time.Hour
	s.setFault(func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
		nethttp.Error(w, "busy", nethttp.StatusServiceUnavailable)
		return true
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := b.ReadAt(ctx, make([]byte, 10), 0)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("got %v, want DeadlineExceeded", err)
	}
}

func TestChecksum(t *testing.T) {
	s := newTestServer(t, mem.NewWithData(randomData(3<<20, 7)), false, nil)
	b := open(t, s, Options{})
	sum, err := b.Checksum(context.Background(), "sha256", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if len(sum) != 64 {
		t.Errorf("checksum %q: want 64 hex digits", sum)
	}
	if _, err := b.Checksum(context.Background(), "nope", 0); err == nil {
		t.Error("unknown algorithm: got no error")
	}
}
