package control

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ticket"
)

func TestMain(m *testing.M) { testutil.Main(m) }

const testTicket = `{"uuid": "test-ticket-0123456789", "size": 1048576, "url": "nbd:unix:/run/x.sock",
	"ops": ["read"], "timeout": 300, "transfer_id": "transfer-1"}`

// startServer runs a control server on a Unix socket in a temp dir and
// returns the store, the socket path and a client.
func startServer(t *testing.T, removeTimeout time.Duration) (*ticket.Store, string, *Client) {
	t.Helper()
	store := ticket.NewStore(ticket.Config{})
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(config.Control{Transport: "unix", Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(ServerConfig{Tickets: store, Parse: ticket.ParseOptions{InactivityTimeout: 60}, RemoveTimeout: removeTimeout})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return store, sock, NewClient("unix", sock)
}

func TestSocketMode(t *testing.T) {
	_, sock, _ := startServer(t, time.Second)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o660 {
		t.Errorf("socket mode = %o, want 660", got)
	}
}

func TestClientLifecycle(t *testing.T) {
	store, _, c := startServer(t, time.Second)
	ctx := context.Background()
	if err := c.AddTicket(ctx, []byte(testTicket)); err != nil {
		t.Fatalf("AddTicket: %v", err)
	}
	raw, err := c.GetTicket(ctx, "test-ticket-0123456789")
	if err != nil {
		t.Fatalf("GetTicket: %v", err)
	}
	var st ticket.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		t.Fatal(err)
	}
	if st.UUID != "test-ticket-0123456789" || st.Size != 1<<20 || st.TransferID != "transfer-1" || st.Timeout != 300 {
		t.Errorf("status = %+v", st)
	}
	before := st.Expires
	if err := c.ModTicket(ctx, "test-ticket-0123456789", 3000); err != nil {
		t.Fatalf("ModTicket: %v", err)
	}
	raw, _ = c.GetTicket(ctx, "test-ticket-0123456789")
	json.Unmarshal(raw, &st)
	if st.Expires < before+2000 {
		t.Errorf("expires %d after extending by 3000, was %d", st.Expires, before)
	}
	if err := c.DelTicket(ctx, "test-ticket-0123456789"); err != nil {
		t.Fatalf("DelTicket: %v", err)
	}
	if err := c.DelTicket(ctx, "test-ticket-0123456789"); err != nil {
		t.Fatalf("DelTicket again (idempotent): %v", err)
	}
	_, err = c.GetTicket(ctx, "test-ticket-0123456789")
	var se *ServerError
	if !errors.As(err, &se) || se.Code != 404 || se.Message != "No such ticket 'test-ticket-0123456789'" {
		t.Fatalf("GetTicket after delete = %v", err)
	}
	if !IsNotFound(err) {
		t.Error("IsNotFound = false")
	}
	if store.Len() != 0 {
		t.Errorf("store has %d tickets", store.Len())
	}
}

func TestClientErrors(t *testing.T) {
	_, _, c := startServer(t, time.Second)
	ctx := context.Background()
	tests := []struct {
		name string
		call func() error
		code int
		msg  string
	}{
		{"invalid ticket", func() error {
			return c.AddTicket(ctx, []byte(`{"uuid": "abc", "size": "1", "url": "nbd:x", "ops": ["read"], "timeout": 1}`))
		}, 400, "Invalid ticket: Invalid value for 'size': '1': expecting a <class 'int'> value"},
		{"missing key", func() error {
			return c.AddTicket(ctx, []byte(`{"uuid": "abc", "size": 1, "ops": ["read"], "timeout": 1}`))
		}, 400, "Invalid ticket: Required ticket parameter is missing: url"},
		{"scheme", func() error {
			return c.AddTicket(ctx, []byte(`{"uuid": "abc", "size": 1, "url": "ftp://x", "ops": ["read"], "timeout": 1}`))
		}, 400, "Invalid ticket: Invalid value for 'url': 'ftp://x': Unsupported url scheme: ftp"},
		{"mod missing", func() error { return c.ModTicket(ctx, "nope", 10) }, 404, "No such ticket: nope"},
		{"mod negative", func() error { return c.ModTicket(ctx, "nope", -1) }, 400, "Invalid value -1 < 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			var se *ServerError
			if !errors.As(err, &se) {
				t.Fatalf("error = %v, want *ServerError", err)
			}
			if se.Code != tc.code || se.Message != tc.msg {
				t.Errorf("got %d %q, want %d %q", se.Code, se.Message, tc.code, tc.msg)
			}
			if want := "server error: " + se.Message; !strings.HasSuffix(se.Error(), se.Message) || !strings.Contains(se.Error(), "server error: ") {
				t.Errorf("Error() = %q, want like %q", se.Error(), want)
			}
		})
	}
}

// raw sends one request over the socket and returns status, headers, body.
func raw(t *testing.T, sock, method, path, body string) (int, http.Header, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	req, err := http.NewRequest(method, "http://localhost"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

func TestServerWire(t *testing.T) {
	store, sock, _ := startServer(t, time.Second)
	tests := []struct {
		name, method, path, body string
		code                     int
		resp                     string
	}{
		{"put", "PUT", "/tickets/anything", testTicket, 200, ""},
		{"put no id", "PUT", "/tickets/", testTicket, 400, "Ticket id is required\n"},
		{"put not json", "PUT", "/tickets/x", "{", 400, "Ticket is not in a json format: Unexpected end of JSON input\n"},
		{"get no id", "GET", "/tickets/", "", 400, "Ticket id is required\n"},
		{"patch no timeout", "PATCH", "/tickets/test-ticket-0123456789", `{}`, 400, "Missing required value for 'timeout'\n"},
		{"patch string", "PATCH", "/tickets/test-ticket-0123456789", `{"timeout": "1"}`, 400, "Integer required '1'\n"},
		{"patch bad json", "PATCH", "/tickets/test-ticket-0123456789", `x`, 400, ""},
		{"patch ok", "PATCH", "/tickets/test-ticket-0123456789", `{"timeout": 60}`, 200, ""},
		{"unknown path", "GET", "/other", "", 404, "No handler for '/other'\n"},
		{"bad method", "FOO", "/tickets/x", "", 405, "Invalid method 'FOO'\n"},
		{"no handler method", "POST", "/tickets/x", "", 405, "Method 'POST' not defined for '/tickets/x'\n"},
		{"profile", "GET", "/profile/", "", 404, "profiling is not supported\n"},
		{"delete missing", "DELETE", "/tickets/missing", "", 204, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, h, body := raw(t, sock, tc.method, tc.path, tc.body)
			if code != tc.code {
				t.Fatalf("status = %d, want %d (%q)", code, tc.code, body)
			}
			if tc.resp != "" && body != tc.resp {
				t.Errorf("body = %q, want %q", body, tc.resp)
			}
			if got := h.Get("Server"); got != "imageio/2.5.3" {
				t.Errorf("Server = %q", got)
			}
			if code >= 400 && h.Get("Content-Type") != "text/plain; charset=UTF-8" {
				t.Errorf("Content-Type = %q", h.Get("Content-Type"))
			}
		})
	}
	code, h, body := raw(t, sock, "GET", "/tickets/test-ticket-0123456789", "")
	if code != 200 || h.Get("Content-Type") != "application/json" || !strings.HasSuffix(body, "}\n") {
		t.Fatalf("GET = %d %q %q", code, h.Get("Content-Type"), body)
	}
	var keys map[string]any
	json.Unmarshal([]byte(body), &keys)
	var names []string
	for k := range keys {
		names = append(names, k)
	}
	want := []string{"active", "canceled", "connections", "dirty", "expires", "idle_time", "inactivity_timeout",
		"ops", "size", "sparse", "timeout", "transfer_id", "transferred", "url", "uuid"}
	if diff := cmp.Diff(want, names, cmpopts.SortSlices(func(a, b string) bool { return a < b })); diff != "" {
		t.Errorf("status keys (-want +got):\n%s", diff)
	}
	if code, _, _ := raw(t, sock, "DELETE", "/tickets/", ""); code != 204 || store.Len() != 0 {
		t.Errorf("DELETE /tickets/ = %d, %d tickets left", code, store.Len())
	}
}

func TestDeleteConflict(t *testing.T) {
	store, _, c := startServer(t, 100*time.Millisecond)
	ctx := context.Background()
	if err := c.AddTicket(ctx, []byte(testTicket)); err != nil {
		t.Fatal(err)
	}
	tk, _ := store.Get("test-ticket-0123456789")
	op, _, err := tk.Begin(ctx, 0) // an operation that ignores cancellation
	if err != nil {
		t.Fatal(err)
	}
	err = c.DelTicket(ctx, "test-ticket-0123456789")
	var se *ServerError
	if !errors.As(err, &se) || se.Code != 409 || se.Message != "Timeout cancelling transfer transfer-1" {
		t.Fatalf("DelTicket = %v, want 409", err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); op.End() }()
	wg.Wait()
	if err := c.DelTicket(ctx, "test-ticket-0123456789"); err != nil {
		t.Fatalf("DelTicket retry: %v", err)
	}
}

func TestTCPLoopback(t *testing.T) {
	ln, err := Listen(config.Control{Transport: "tcp", Port: 0, PreferIPv4: true})
	if err != nil {
		t.Fatal(err)
	}
	host, _, _ := net.SplitHostPort(ln.Addr().String())
	if !net.ParseIP(host).IsLoopback() {
		t.Errorf("listening on %s, want loopback", host)
	}
	store := ticket.NewStore(ticket.Config{})
	srv := NewServer(ServerConfig{Tickets: store})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	defer func() { cancel(); <-done }()
	c := NewClient("tcp", ln.Addr().String())
	if err := c.AddTicket(context.Background(), []byte(testTicket)); err != nil {
		t.Fatal(err)
	}
	if store.Len() != 1 {
		t.Errorf("store has %d tickets", store.Len())
	}
}

func TestClientFromConfig(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	os.WriteFile(filepath.Join(dir, "conf.d", "50-test.conf"), []byte("[control]\ntransport = tcp\nport = 54324\n"), 0o644)
	c, err := ClientFromConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c.base != "http://127.0.0.1:54324" {
		t.Errorf("base = %q", c.base)
	}
	if _, err := ClientFromConfig(t.TempDir()); !errors.Is(err, config.ErrNotFound) {
		t.Errorf("ClientFromConfig(empty) = %v, want config.ErrNotFound", err)
	}
	if _, err := clientFor(config.Control{Transport: "tcp", Port: -1}); err == nil {
		t.Error("tcp port -1 accepted")
	}
}

func TestLogsRedactIDs(t *testing.T) {
	var logs strings.Builder
	var mu sync.Mutex
	store := ticket.NewStore(ticket.Config{})
	sock := filepath.Join(t.TempDir(), "control.sock")
	ln, err := Listen(config.Control{Transport: "unix", Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return logs.Write(p)
	}), nil))
	srv := NewServer(ServerConfig{Tickets: store, Logger: logger})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	const id = "secret-ticket-id-0123456789"
	raw(t, sock, "PUT", "/tickets/"+id, `{"uuid": "`+id+`", "size": 1, "url": "ftp://h/images/`+id+`", "ops": ["read"], "timeout": 1}`)
	raw(t, sock, "PUT", "/tickets/"+id, strings.Replace(testTicket, "test-ticket-0123456789", id, 1))
	raw(t, sock, "GET", "/tickets/"+id, "")
	raw(t, sock, "GET", "/tickets/missing-"+id, "")
	raw(t, sock, "PATCH", "/tickets/missing-"+id, `{"timeout": 1}`)
	raw(t, sock, "DELETE", "/tickets/"+id, "")
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), id) {
		t.Errorf("log names a whole ticket id:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "secret-t...") {
		t.Errorf("log does not name the redacted id:\n%s", logs.String())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
