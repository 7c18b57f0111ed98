package http_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/daemon"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

// imageiod is a real daemon running in the test process.
type imageiod struct {
	d   *daemon.Daemon
	tls testutil.TLSFiles
	dir string

	// mu guards the field that follows.
	mu   sync.Mutex
	mems map[string]*mem.Backend // images of the "mem:" scheme by URL
}

// memScheme serves "mem:NAME" ticket URLs from s.mems, so that the
// conformance suite runs on a backend that allows any number of
// concurrent writers (the file backend allows one, as in the reference).
func (s *imageiod) memScheme() daemon.Scheme {
	return daemon.Scheme{
		Open: func(ctx context.Context, t *ticket.Ticket) (backend.Backend, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			m := s.mems[t.URL]
			if m == nil {
				return nil, fmt.Errorf("no image %q", t.URL)
			}
			return unclosable{m}, nil
		},
		BufferSize: 1 << 20,
	}
}

// unclosable keeps a shared mem image open when a connection closes.
type unclosable struct{ backend.Backend }

func (unclosable) Close() error { return nil }

// addMem adds a mem image and a ticket for it.
func (s *imageiod) addMem(t *testing.T, size int64) string {
	t.Helper()
	url := "mem:" + rand.Text()
	s.mu.Lock()
	s.mems[url] = mem.New(size)
	s.mu.Unlock()
	return s.addTicket(t, url, size)
}

// startDaemon runs a daemon on 127.0.0.1 over HTTPS, with the local
// service on a random abstract socket when local is set.
func startDaemon(t *testing.T, local bool) *imageiod {
	t.Helper()
	dir := t.TempDir()
	files := testutil.NewTLS(t, dir)
	cfg := config.Default()
	cfg.TLS = config.TLS{Enable: true, CertFile: files.CertFile, KeyFile: files.KeyFile}
	cfg.Remote = config.Remote{Host: "127.0.0.1", Port: 0}
	cfg.Local = config.Local{Enable: local}
	cfg.Control.Enable = false
	cfg.BackendHTTP.CAFile = files.CAFile
	s := &imageiod{tls: files, dir: dir, mems: make(map[string]*mem.Backend)}
	schemes := daemon.DefaultSchemes(cfg)
	schemes["mem"] = s.memScheme()
	d, err := daemon.Listen(cfg, daemon.Options{ShutdownTimeout: time.Second, Schemes: schemes})
	if err != nil {
		t.Fatal(err)
	}
	s.d = d
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	})
	return s
}

// addImage makes a sparse raw file of size bytes holding data at 0, adds a
// read-write ticket for it and returns the transfer URL and the path.
func (s *imageiod) addImage(t *testing.T, size int64, data []byte) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	return s.addTicket(t, "file://"+path, size), path
}

func (s *imageiod) addTicket(t *testing.T, url string, size int64) string {
	t.Helper()
	id := rand.Text()
	doc := fmt.Sprintf(`{"uuid": %q, "size": %d, "url": %q, "ops": ["read", "write"], "timeout": 300, "sparse": true}`, id, size, url)
	tk, err := ticket.Parse([]byte(doc), ticket.ParseOptions{InactivityTimeout: 60,
		Schemes: append(slices.Clone(ticket.DefaultSchemes), "mem")})
	if err != nil {
		t.Fatal(err)
	}
	s.d.Tickets.Add(tk)
	return fmt.Sprintf("https://%s/images/%s", s.d.RemoteAddr(), id)
}

func openURL(t *testing.T, url string, opts httpbackend.Options) *httpbackend.Backend {
	t.Helper()
	b, err := httpbackend.Open(context.Background(), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestDaemonConformance(t *testing.T) {
	for _, local := range []bool{false, true} {
		t.Run(fmt.Sprintf("local=%v", local), func(t *testing.T) {
			s := startDaemon(t, local)
			backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
				url := s.addMem(t, size)
				b := openURL(t, url, httpbackend.Options{CAFile: s.tls.CAFile})
				if got := strings.HasPrefix(b.URL(), "http://localhost/"); got != local {
					t.Errorf("URL %q: on the Unix socket = %v, want %v", b.URL(), got, local)
				}
				return b
			})
		})
	}
}

func TestDaemonFeatures(t *testing.T) {
	s := startDaemon(t, false)
	url, _ := s.addImage(t, 1<<20, nil)
	b := openURL(t, url, httpbackend.Options{CAFile: s.tls.CAFile})
	for _, f := range []string{"checksum", "extents", "flush", "zero"} {
		found := false
		for _, g := range b.Features() {
			found = found || g == f
		}
		if !found {
			t.Errorf("features %q lack %q", b.Features(), f)
		}
	}
	c := b.Caps()
	if !c.CanZero || !c.CanFlush || c.ReadOnly || !c.HasExtents(backend.ContextZero) {
		t.Errorf("caps %+v: want zero, flush, zero extents, writable", c)
	}
	sum, err := b.Checksum(context.Background(), "", 0)
	if err != nil || sum == "" {
		t.Errorf("Checksum: %q, %v", sum, err)
	}
	if strings.Contains(b.URL(), url[strings.LastIndexByte(url, '/')+1:]) {
		t.Errorf("URL %q shows the ticket id", b.URL())
	}
}

func TestDaemonForbidden(t *testing.T) {
	s := startDaemon(t, false)
	url, _ := s.addImage(t, 1<<20, nil)
	b := openURL(t, url, httpbackend.Options{CAFile: s.tls.CAFile})
	id := url[strings.LastIndexByte(url, '/')+1:]
	s.d.Tickets.Remove(id)
	err := b.ReadAt(context.Background(), make([]byte, 4096), 0)
	if !errors.Is(err, httpbackend.ErrForbidden) {
		t.Fatalf("got %v, want ErrForbidden", err)
	}
	if strings.Contains(err.Error(), id) {
		t.Errorf("error %q shows the ticket id", err)
	}
	_, err = httpbackend.Open(context.Background(), url, httpbackend.Options{CAFile: s.tls.CAFile})
	if !errors.Is(err, httpbackend.ErrForbidden) || strings.Contains(err.Error(), id) {
		t.Errorf("Open with an unknown ticket: got %v, want ErrForbidden without the ticket id", err)
	}
}

func TestDaemonProxyFallback(t *testing.T) {
	s := startDaemon(t, false)
	data := make([]byte, 1<<20)
	rand.Read(data)
	url, _ := s.addImage(t, 2<<20, data)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "https://" + ln.Addr().String() + url[strings.Index(url, "/images/"):]
	ln.Close()
	var msgs []string
	b := openURL(t, dead, httpbackend.Options{CAFile: s.tls.CAFile, ProxyURL: url,
		Notify: func(m string) { msgs = append(msgs, m) }})
	if !strings.Contains(b.URL(), s.d.RemoteAddr().String()) {
		t.Errorf("URL %q: want the proxy URL", b.URL())
	}
	got := make([]byte, len(data))
	if err := b.ReadAt(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Error("data differs")
	}
	if len(msgs) == 0 {
		t.Error("no message about the fallback")
	}
}

// The daemon proxies to another daemon (ticket URL https://...), the way
// the engine's proxy does.
func TestDaemonProxyChain(t *testing.T) {
	upstream := startDaemon(t, false)
	data := make([]byte, 3<<20)
	rand.Read(data)
	upURL, path := upstream.addImage(t, 4<<20, data)
	// The proxy trusts the upstream's CA through [backend_http] ca_file.
	proxyD := startDaemonWithHTTPCA(t, upstream.tls.CAFile)
	url := proxyD.addTicket(t, upURL, 4<<20)
	b := openURL(t, url, httpbackend.Options{CAFile: proxyD.tls.CAFile})
	if got := b.Size(); got != 4<<20 {
		t.Errorf("Size: got %d, want %d", got, 4<<20)
	}
	more := make([]byte, 1<<20)
	rand.Read(more)
	if err := b.WriteAt(context.Background(), more, 3<<20); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(data), more...)
	if !bytes.Equal(got, want) {
		t.Error("upstream file differs")
	}
}

func startDaemonWithHTTPCA(t *testing.T, ca string) *imageiod {
	t.Helper()
	dir := t.TempDir()
	files := testutil.NewTLS(t, dir)
	cfg := config.Default()
	cfg.TLS = config.TLS{Enable: true, CertFile: files.CertFile, KeyFile: files.KeyFile}
	cfg.Remote = config.Remote{Host: "127.0.0.1", Port: 0}
	cfg.Local.Enable = false
	cfg.Control.Enable = false
	cfg.BackendHTTP.CAFile = ca
	d, err := daemon.Listen(cfg, daemon.Options{ShutdownTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &imageiod{d: d, tls: files, dir: dir}
}

// relay is a loopback TCP relay in front of a daemon that cuts every
// connection after limit bytes in either direction.
type relay struct {
	ln    net.Listener
	cuts  atomic.Int64
	limit int64
	wg    sync.WaitGroup
}

func startRelay(t *testing.T, target string, limit int64) *relay {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{ln: ln, limit: limit}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				r.serve(c, target)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		r.wg.Wait()
	})
	return r
}

func (r *relay) serve(c net.Conn, target string) {
	defer c.Close()
	u, err := net.Dial("tcp", target)
	if err != nil {
		return
	}
	defer u.Close()
	var moved atomic.Int64
	cut := make(chan struct{})
	var once sync.Once
	pipe := func(dst, src net.Conn) {
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				if moved.Add(int64(n)) > r.limit {
					once.Do(func() { r.cuts.Add(1); close(cut) })
					return
				}
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}
	done := make(chan struct{}, 2)
	go func() { pipe(u, c); done <- struct{}{} }()
	go func() { pipe(c, u); done <- struct{}{} }()
	left := 2
	select {
	case <-done:
		left--
	case <-cut:
	}
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
	u.Close()
	for ; left > 0; left-- {
		<-done
	}
}

func TestDaemonRetryThroughCuttingRelay(t *testing.T) {
	s := startDaemon(t, false)
	const size = 24 << 20
	want := make([]byte, size)
	rand.Read(want)
	url, path := s.addImage(t, size, nil)
	r := startRelay(t, s.d.RemoteAddr().String(), 5<<20)
	relayed := strings.Replace(url, s.d.RemoteAddr().String(), r.ln.Addr().String(), 1)
	var notes atomic.Int64
	b := openURL(t, relayed, httpbackend.Options{CAFile: s.tls.CAFile, Retries: 8,
		Notify: func(string) { notes.Add(1) }})
	ctx := context.Background()
	const chunk = 4 << 20
	for off := int64(0); off < size; off += chunk {
		if err := b.WriteFrom(ctx, bytes.NewReader(want[off:off+chunk]), off, chunk); err != nil {
			t.Fatalf("WriteFrom %d: %v", off, err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("uploaded file differs")
	}
	var back bytes.Buffer
	for off := int64(0); off < size; off += chunk {
		if err := b.ReadTo(ctx, &back, off, chunk); err != nil {
			t.Fatalf("ReadTo %d: %v", off, err)
		}
	}
	if !bytes.Equal(back.Bytes(), want) {
		t.Fatal("downloaded data differs")
	}
	if r.cuts.Load() == 0 || notes.Load() == 0 {
		t.Errorf("relay cut %d connections, %d retry messages: want some of both", r.cuts.Load(), notes.Load())
	}
}
