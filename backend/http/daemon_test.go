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
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/daemon"
	"github.com/imageio/imageio/daemon/daemontest"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

// imageiod is a real daemon running in the test process.
type imageiod struct {
	d   *daemontest.Daemon
	tls testutil.TLSFiles

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
	s := &imageiod{mems: make(map[string]*mem.Backend)}
	s.d = daemontest.Start(t, daemontest.Options{Local: local,
		Schemes: map[string]daemon.Scheme{"mem": s.memScheme()}})
	s.tls = s.d.TLS
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
	return s.d.AddTicket(t, url, size)
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
	d := daemontest.Start(t, daemontest.Options{HTTPCAFile: ca})
	return &imageiod{d: d, tls: d.TLS}
}

func TestDaemonRetryThroughCuttingRelay(t *testing.T) {
	s := startDaemon(t, false)
	const size = 24 << 20
	want := make([]byte, size)
	rand.Read(want)
	url, path := s.addImage(t, size, nil)
	r := testutil.StartRelay(t, s.d.RemoteAddr().String(), 5<<20)
	relayed := strings.Replace(url, s.d.RemoteAddr().String(), r.Addr(), 1)
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
	if r.Cuts() == 0 || notes.Load() == 0 {
		t.Errorf("relay cut %d connections, %d retry messages: want some of both", r.Cuts(), notes.Load())
	}
}
