package daemon

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/ticket"
)

// waitFor polls cond every 10 ms for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestCancelDuringDownload(t *testing.T) {
	e := newEnv(t, envOptions{bufferSize: 4096})
	img := slowBackend{Backend: newMem(pattern(1<<20, 1)), delay: 20 * time.Millisecond}
	tk := e.addImage("read-ticket-00001", img, readTicket)
	done := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("GET", e.base+"/images/read-ticket-00001", nil)
		resp, err := e.client.Do(req)
		if err != nil {
			done <- response{code: -1}
			return
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- response{code: resp.StatusCode, body: make([]byte, n)}
	}()
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	start := time.Now()
	if err := e.store.Cancel(context.Background(), tk.UUID, 10*time.Second); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cancel took %v", d)
	}
	r := <-done
	if len(r.body) >= 1<<20 {
		t.Errorf("download completed (%d bytes) despite cancel", len(r.body))
	}
	if _, err := e.store.Get(tk.UUID); !errors.Is(err, ticket.ErrNotFound) {
		t.Errorf("ticket still in store: %v", err)
	}
}

func TestCancelDuringUpload(t *testing.T) {
	e := newEnv(t, envOptions{bufferSize: 4096})
	img := slowBackend{Backend: mem.New(1 << 20), delay: 20 * time.Millisecond}
	tk := e.addImage("write-ticket-0001", img, writeTicket)
	done := make(chan response, 1)
	go func() {
		req, _ := http.NewRequest("PUT", e.base+"/images/write-ticket-0001", bytes.NewReader(pattern(1<<20, 2)))
		resp, err := e.client.Do(req)
		if err != nil {
			done <- response{code: -1}
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- response{code: resp.StatusCode, body: body, close: resp.Close}
	}()
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	if err := e.store.Cancel(context.Background(), tk.UUID, 10*time.Second); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	r := <-done
	if r.code != 403 && r.code != -1 {
		t.Errorf("canceled upload = %s, want 403 or a cut connection", r)
	}
	if r.code == 403 && !strings.Contains(string(r.body), "was canceled") {
		t.Errorf("canceled upload body = %q", r.body)
	}
}

func TestCancelTimeoutWithSlowBackend(t *testing.T) {
	e := newEnv(t, envOptions{bufferSize: 1 << 20})
	// A backend op that ignores cancellation for 500 ms.
	img := stubbornBackend{slowBackend{Backend: newMem(pattern(4<<20, 1)), delay: 500 * time.Millisecond}}
	tk := e.addImage("read-ticket-00001", img,
		`{"uuid": "ID", "size": 4194304, "url": "URL", "ops": ["read"], "timeout": 300, "transfer_id": "tr-x"}`)
	got := make(chan struct{})
	go func() {
		defer close(got)
		resp, err := e.client.Get(e.base + "/images/read-ticket-00001")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	defer func() { <-got }()
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	err := e.store.Cancel(context.Background(), tk.UUID, 50*time.Millisecond)
	if !errors.Is(err, ticket.ErrCancelTimeout) {
		t.Fatalf("Cancel = %v, want ErrCancelTimeout", err)
	}
	waitFor(t, "the transfer to stop", func() bool { return !tk.Status().Active })
	if err := e.store.Cancel(context.Background(), tk.UUID, time.Second); err != nil {
		t.Fatalf("second Cancel: %v", err)
	}
}

// stubbornBackend reads without looking at the context.
type stubbornBackend struct{ slowBackend }

func (b stubbornBackend) ReadAt(ctx context.Context, p []byte, off int64) error {
	time.Sleep(b.delay)
	return b.Backend.ReadAt(context.Background(), p, off)
}

func TestPreAuthTimeout(t *testing.T) {
	e := newEnv(t, envOptions{preAuthTimeout: 200 * time.Millisecond, plain: true})
	c := dialRaw(t, e)
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	start := time.Now()
	// An idle connection is closed by the server.
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle connection")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("idle connection closed after %v", d)
	}
}

func TestInactivityTimeoutAfterAuthorization(t *testing.T) {
	e := newEnv(t, envOptions{preAuthTimeout: 100 * time.Millisecond, plain: true})
	e.addImage("read-ticket-00001", newMem(pattern(1<<20, 1)),
		`{"uuid": "ID", "size": 1048576, "url": "URL", "ops": ["read"], "timeout": 300, "inactivity_timeout": 1}`)
	c := dialRaw(t, e)
	defer c.Close()
	io.WriteString(c, "GET /images/read-ticket-00001 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n")
	if resp := readResponse(t, c); resp.StatusCode != 206 {
		t.Fatalf("GET = %d", resp.StatusCode)
	}
	// Idle longer than the pre-authorization timeout, shorter than the
	// ticket's: the connection still works.
	time.Sleep(400 * time.Millisecond)
	io.WriteString(c, "GET /images/read-ticket-00001 HTTP/1.1\r\nHost: x\r\nRange: bytes=0-0\r\n\r\n")
	if resp := readResponse(t, c); resp.StatusCode != 206 {
		t.Fatalf("second GET = %d", resp.StatusCode)
	}
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from an idle connection")
	}
	if d := time.Since(start); d < 500*time.Millisecond || d > 5*time.Second {
		t.Errorf("connection closed after %v, want about 1 s", d)
	}
}

func TestLocalService(t *testing.T) {
	store := ticket.NewStore(ticket.Config{})
	img := newMem(pattern(1<<20, 8))
	svc := NewLocal(Config{
		Tickets: store,
		Schemes: map[string]Scheme{"mem": {Open: func(context.Context, *ticket.Ticket) (backendIface, error) {
			return nopClose{img}, nil
		}}},
		UnixSocket: "\x00/test/imageio",
	})
	sock := filepath.Join(t.TempDir(), "local.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()
	tk, _ := ticket.Parse([]byte(`{"uuid": "local-ticket-001", "size": 1048576, "url": "mem:x", "ops": ["read"], "timeout": 60}`),
		ticket.ParseOptions{Schemes: []string{"mem"}})
	store.Add(tk)
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr}
	resp, err := hc.Get("http://localhost/images/local-ticket-001")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, img.Bytes()) {
		t.Errorf("GET over unix socket = %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, err = hc.Get("http://localhost/info/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("/info/ on the local service = %d, want 404", resp.StatusCode)
	}
}

func TestGracefulShutdown(t *testing.T) {
	e := newEnv(t, envOptions{bufferSize: 64 << 10})
	img := slowBackend{Backend: newMem(pattern(1<<20, 1)), delay: 10 * time.Millisecond}
	tk := e.addImage("read-ticket-00001", img, readTicket)
	done := make(chan int, 1)
	go func() {
		resp, err := e.client.Get(e.base + "/images/read-ticket-00001")
		if err != nil {
			done <- -1
			return
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- int(n)
	}()
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	e.stop() // waits for the request in flight
	if n := <-done; n != 1<<20 {
		t.Errorf("download during shutdown got %d bytes, want all", n)
	}
	if !strings.Contains(e.logs.String(), "msg=CLOSE") {
		t.Error("no CLOSE log line")
	}
}

func TestShutdownCutsAfterBound(t *testing.T) {
	store := ticket.NewStore(ticket.Config{})
	img := slowBackend{Backend: newMem(pattern(1<<20, 1)), delay: 200 * time.Millisecond}
	svc := NewRemote(Config{
		Tickets: store,
		Schemes: map[string]Scheme{"mem": {Open: func(context.Context, *ticket.Ticket) (backendIface, error) {
			return nopClose{img}, nil
		}, BufferSize: 4096}},
		ShutdownTimeout: 100 * time.Millisecond,
		Logger:          slog.New(slog.DiscardHandler),
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx, ln) }()
	tk, _ := ticket.Parse([]byte(`{"uuid": "slow-ticket-0001", "size": 1048576, "url": "mem:x", "ops": ["read"], "timeout": 60}`),
		ticket.ParseOptions{Schemes: []string{"mem"}})
	store.Add(tk)
	go func() {
		resp, err := http.Get("http://" + ln.Addr().String() + "/images/slow-ticket-0001")
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	waitFor(t, "an active transfer", func() bool { return tk.Status().Active })
	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("shutdown took %v", d)
	}
}

func TestTransferredAndIdle(t *testing.T) {
	e := newEnv(t, envOptions{})
	tk := e.addImage("write-ticket-0001", mem.New(1<<20), writeTicket)
	if r := e.do("PUT", "/images/write-ticket-0001?flush=n", bytes.NewReader(pattern(300000, 1))); r.code != 200 {
		t.Fatalf("PUT = %s", r)
	}
	if r := e.do("PATCH", "/images/write-ticket-0001", strings.NewReader(`{"op": "zero", "offset": 200000, "size": 300000}`)); r.code != 200 {
		t.Fatalf("PATCH = %s", r)
	}
	e.clock.Add(7)
	st := tk.Status()
	if st.Transferred == nil || *st.Transferred != 500000 {
		t.Errorf("transferred = %v, want 500000 (union of written and zeroed ranges)", st.Transferred)
	}
	if st.IdleTime != 7 || st.Active || st.Connections != 1 {
		t.Errorf("idle_time %d active %v connections %d, want 7 false 1", st.IdleTime, st.Active, st.Connections)
	}
	e.client.CloseIdleConnections()
	waitFor(t, "the connection to close", func() bool { return tk.Status().Connections == 0 })
}
