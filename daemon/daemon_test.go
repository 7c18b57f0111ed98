package daemon

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/control"
	"github.com/imageio/imageio/internal/testutil"
)

// daemonEnv is a whole Daemon started from a configuration.
type daemonEnv struct {
	d      *Daemon
	ctl    *control.Client
	https  *http.Client
	base   string
	tls    testutil.TLSFiles
	logs   *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// startDaemon runs a Daemon on loopback with TLS, a local socket and a
// control socket in a temp dir; edit adjusts the configuration.
func startDaemon(t testing.TB, edit func(*config.Config)) *daemonEnv {
	t.Helper()
	return startDaemonOptions(t, edit, Options{})
}

// startChain runs a host daemon serving url under ticket id over HTTPS
// only, and a proxy daemon whose ticket id points at the host's (so the
// proxy must verify it with the CA of [backend_http]).
func startChain(t testing.TB, id, url string, size int64) (host, proxy *daemonEnv) {
	t.Helper()
	host = startDaemon(t, func(c *config.Config) { c.Local.Enable = false })
	host.addTicket(t, id, url, size, `["read", "write"]`)
	proxy = startDaemon(t, func(c *config.Config) {
		c.Local.Enable = false
		c.BackendHTTP.CAFile = host.tls.CAFile
	})
	proxy.addTicket(t, id, host.base+"/images/"+id, size, `["read", "write"]`)
	return host, proxy
}

// startDaemonOptions is startDaemon with opts; the logger and shutdown
// timeout are the test's.
func startDaemonOptions(t testing.TB, edit func(*config.Config), opts Options) *daemonEnv {
	t.Helper()
	dir := t.TempDir()
	files := testutil.NewTLS(t, dir)
	cfg := config.Default()
	cfg.TLS.CertFile, cfg.TLS.KeyFile, cfg.TLS.CAFile = files.CertFile, files.KeyFile, files.CAFile
	cfg.Remote.Host, cfg.Remote.Port = "127.0.0.1", 0
	cfg.Local.Socket = filepath.Join(dir, "local.sock")
	cfg.Control.Socket = filepath.Join(dir, "control.sock")
	cfg.BackendNBD.BufferSize = 256 << 10
	if edit != nil {
		edit(&cfg)
	}
	e := &daemonEnv{tls: files, logs: &syncBuffer{}, done: make(chan error, 1)}
	opts.Logger, opts.ShutdownTimeout = slog.New(slog.NewTextHandler(e.logs, nil)), 5*time.Second
	d, err := Listen(cfg, opts)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	e.d = d
	if cfg.Control.Enable {
		e.ctl = control.NewClient("unix", cfg.Control.Socket)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: files.Pool}}
	e.https = &http.Client{Transport: tr}
	e.base = "https://" + d.RemoteAddr().String()
	ctx, cancel := context.WithCancel(context.Background())
	e.cancel = cancel
	go func() { e.done <- d.Run(ctx) }()
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-e.done; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("daemon log:\n%s", e.logs.String())
		}
	})
	return e
}

func (e *daemonEnv) addTicket(t testing.TB, id, url string, size int64, ops string) {
	t.Helper()
	doc := fmt.Sprintf(`{"uuid": %q, "size": %d, "url": %q, "ops": %s, "timeout": 300, "transfer_id": "tr-%s"}`, id, size, url, ops, id[:4])
	if err := e.ctl.AddTicket(context.Background(), []byte(doc)); err != nil {
		t.Fatalf("AddTicket: %v", err)
	}
}

func get(t *testing.T, c *http.Client, url string) (int, []byte) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return resp.StatusCode, body
}

func put(t *testing.T, c *http.Client, url string, data []byte) int {
	t.Helper()
	req, _ := http.NewRequest("PUT", url, bytes.NewReader(data))
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestDaemonFileBackend(t *testing.T) {
	e := startDaemon(t, nil)
	path := filepath.Join(t.TempDir(), "disk.raw")
	data := pattern(3<<20, 6)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	e.addTicket(t, "file-ticket-0001", "file://"+path, int64(len(data)), `["read", "write"]`)

	code, body := get(t, e.https, e.base+"/images/file-ticket-0001")
	if code != 200 || !bytes.Equal(body, data) {
		t.Fatalf("GET = %d, %d bytes, equal %v", code, len(body), bytes.Equal(body, data))
	}
	newData := pattern(1<<20, 7)
	if code := put(t, e.https, e.base+"/images/file-ticket-0001", newData); code != 200 {
		t.Fatalf("PUT = %d", code)
	}
	got, _ := os.ReadFile(path)
	if !bytes.Equal(got[:1<<20], newData) || !bytes.Equal(got[1<<20:], data[1<<20:]) {
		t.Error("file content after PUT differs")
	}
	// OPTIONS reports the local socket, and max_writers 1 for a file.
	req, _ := http.NewRequest("OPTIONS", e.base+"/images/file-ticket-0001", nil)
	resp, err := e.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var opts struct {
		UnixSocket string `json:"unix_socket"`
		MaxWriters int    `json:"max_writers"`
	}
	json.NewDecoder(resp.Body).Decode(&opts)
	resp.Body.Close()
	if opts.UnixSocket != e.d.LocalSocket() || opts.UnixSocket == "" {
		t.Errorf("unix_socket = %q, want %q", opts.UnixSocket, e.d.LocalSocket())
	}
	// The local service serves the same ticket.
	local := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", opts.UnixSocket)
	}}}
	code, body = get(t, local, "http://localhost/images/file-ticket-0001")
	if code != 200 || !bytes.Equal(body[:1<<20], newData) {
		t.Errorf("GET over the local socket = %d", code)
	}
	// Status over the control API.
	raw, err := e.ctl.GetTicket(context.Background(), "file-ticket-0001")
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Connections int  `json:"connections"`
		Active      bool `json:"active"`
	}
	json.Unmarshal(raw, &st)
	if st.Connections < 1 || st.Active {
		t.Errorf("status = %s", raw)
	}
	if err := e.ctl.DelTicket(context.Background(), "file-ticket-0001"); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, e.https, e.base+"/images/file-ticket-0001"); code != 403 {
		t.Errorf("GET after delete = %d", code)
	}
	if strings.Contains(e.logs.String(), "file-ticket-0001") {
		t.Error("log contains a whole ticket id")
	}
}

func TestDaemonTLSVersions(t *testing.T) {
	e := startDaemon(t, nil)
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		c, err := tls.Dial("tcp", e.d.RemoteAddr().String(), &tls.Config{RootCAs: e.tls.Pool, MinVersion: v, MaxVersion: v})
		if err == nil {
			c.Close()
			t.Errorf("TLS version %x accepted", v)
		}
	}
	c, err := tls.Dial("tcp", e.d.RemoteAddr().String(), &tls.Config{RootCAs: e.tls.Pool, MaxVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("TLS 1.2: %v", err)
	}
	c.Close()
}

func TestDaemonConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(*config.Config)
	}{
		{"tls without cert", func(c *config.Config) { c.TLS.CertFile = "" }},
		{"bad port", func(c *config.Config) { c.Remote.Port = 70000 }},
		{"bad control transport", func(c *config.Config) { c.Control.Transport = "udp" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			files := testutil.NewTLS(t, dir)
			cfg := config.Default()
			cfg.TLS.CertFile, cfg.TLS.KeyFile = files.CertFile, files.KeyFile
			cfg.Remote.Host, cfg.Remote.Port = "127.0.0.1", 0
			cfg.Local.Enable = false
			cfg.Control.Socket = filepath.Join(dir, "control.sock")
			tc.edit(&cfg)
			if d, err := Listen(cfg, Options{}); err == nil {
				d.closeListeners()
				t.Fatal("Listen succeeded")
			}
		})
	}
}

// startQemuNBD serves image on a Unix socket and stops it at cleanup.
func startQemuNBD(t testing.TB, image, format string, readOnly bool) string {
	t.Helper()
	args := []string{"--shared=8", "--export-name=", "--cache=writeback"}
	if readOnly {
		args = append(args, "--read-only")
	}
	if format != "raw" {
		args = append(args, "--allocation-depth")
	}
	return "nbd:unix:" + testutil.StartQemuNBD(t, image, format, args...)
}

func TestDaemonNBDBackend(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	const size = 8 << 20
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	raw := testutil.MakeImage(t, path, "qcow2", size, []testutil.Run{
		{Off: 0, Len: 1 << 20, Kind: testutil.Data},
		{Off: 2 << 20, Len: 1 << 20, Kind: testutil.Zero},
		{Off: 4 << 20, Len: 2 << 20, Kind: testutil.Data},
	}, 42)
	want, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	url := startQemuNBD(t, path, "qcow2", false)
	e := startDaemon(t, nil)
	e.addTicket(t, "nbd-ticket-00001", url, size, `["read", "write"]`)

	code, body := get(t, e.https, e.base+"/images/nbd-ticket-00001")
	if code != 200 || !bytes.Equal(body, want) {
		t.Fatalf("download = %d, %d bytes, equal %v", code, len(body), bytes.Equal(body, want))
	}
	code, body = get(t, e.https, e.base+"/images/nbd-ticket-00001/extents")
	if code != 200 {
		t.Fatalf("extents = %d %s", code, body)
	}
	var ext []struct {
		Start, Length int64
		Zero, Hole    bool
	}
	if err := json.Unmarshal(body, &ext); err != nil {
		t.Fatal(err)
	}
	wantExt := []struct {
		Start, Length int64
		Zero, Hole    bool
	}{
		{0, 1 << 20, false, false},
		{1 << 20, 1 << 20, true, true},
		{2 << 20, 1 << 20, true, false},
		{3 << 20, 1 << 20, true, true},
		{4 << 20, 2 << 20, false, false},
		{6 << 20, 2 << 20, true, true},
	}
	if diff := cmp.Diff(wantExt, ext); diff != "" {
		t.Errorf("extents (-want +got):\n%s", diff)
	}
	code, body = get(t, e.https, e.base+"/images/nbd-ticket-00001/checksum")
	sum, err := checksum.Sum(bytes.NewReader(want), "blake2b", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	if code != 200 || !strings.Contains(string(body), sum.Checksum) {
		t.Errorf("checksum = %d %s, want %s", code, body, sum.Checksum)
	}
	// Upload over part of the image, zero another part, and read back.
	newData := pattern(1<<20, 11)
	req, _ := http.NewRequest("PUT", e.base+"/images/nbd-ticket-00001?flush=n", bytes.NewReader(newData))
	req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", 7<<20, 8<<20-1))
	resp, err := e.https.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PUT = %v %v", resp, err)
	}
	resp.Body.Close()
	req, _ = http.NewRequest("PATCH", e.base+"/images/nbd-ticket-00001", strings.NewReader(`{"op": "zero", "offset": 0, "size": 4096, "flush": true}`))
	resp, err = e.https.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("PATCH = %v %v", resp, err)
	}
	resp.Body.Close()
	copy(want[7<<20:], newData)
	clear(want[:4096])
	if _, body = get(t, e.https, e.base+"/images/nbd-ticket-00001"); !bytes.Equal(body, want) {
		t.Error("content after PUT and zero differs")
	}
}

// TestRawExportNoHoles checks that extents of a raw export never report
// holes, with or without qemu:allocation-depth, as the reference daemon:
// a sparse raw file's unallocated ranges are zero, not holes, so a client
// with a backing file of its own does not leave them to it.
func TestRawExportNoHoles(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	const size = 4 << 20
	path := filepath.Join(t.TempDir(), "disk.raw")
	testutil.MakeImage(t, path, "raw", size, []testutil.Run{
		{Off: 1 << 20, Len: 1 << 20, Kind: testutil.Data},
	}, 5)
	type extent struct {
		Start, Length int64
		Zero, Hole    bool
	}
	want := []extent{{0, 1 << 20, true, false}, {1 << 20, 1 << 20, false, false}, {2 << 20, 2 << 20, true, false}}
	e := startDaemon(t, nil)
	for i, args := range [][]string{nil, {"--allocation-depth"}} {
		url := "nbd:unix:" + testutil.StartQemuNBD(t, path, "raw", append([]string{"--shared=8", "--export-name=", "--read-only"}, args...)...)
		id := fmt.Sprintf("raw-ticket-%05d", i)
		e.addTicket(t, id, url, size, `["read"]`)
		code, body := get(t, e.https, e.base+"/images/"+id+"/extents")
		if code != 200 {
			t.Fatalf("extents %v = %d %s", args, code, body)
		}
		var got []extent
		if err := json.Unmarshal(body, &got); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("extents with qemu-nbd %v (-want +got):\n%s", args, diff)
		}
	}
}

func TestProxyChain(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	const size = 6 << 20
	path := filepath.Join(t.TempDir(), "disk.qcow2")
	raw := testutil.MakeImage(t, path, "qcow2", size, []testutil.Run{
		{Off: 0, Len: 1 << 20, Kind: testutil.Data},
		{Off: 3 << 20, Len: 1 << 20, Kind: testutil.Zero},
		{Off: 4 << 20, Len: 1 << 20, Kind: testutil.Data},
	}, 7)
	want, _ := os.ReadFile(raw)
	url := startQemuNBD(t, path, "qcow2", false)

	host, proxy := startChain(t, "chain-ticket-0001", url, size)

	code, body := get(t, proxy.https, proxy.base+"/images/chain-ticket-0001")
	if code != 200 || !bytes.Equal(body, want) {
		t.Fatalf("download through proxy = %d, %d bytes, equal %v", code, len(body), bytes.Equal(body, want))
	}
	code, body = get(t, proxy.https, proxy.base+"/images/chain-ticket-0001/extents")
	if code != 200 || !strings.Contains(string(body), `"hole": true`) {
		t.Errorf("extents through proxy = %d %s", code, body)
	}
	_, hostSum := get(t, host.https, host.base+"/images/chain-ticket-0001/checksum?algorithm=sha256")
	code, proxySum := get(t, proxy.https, proxy.base+"/images/chain-ticket-0001/checksum?algorithm=sha256")
	if code != 200 || !bytes.Equal(hostSum, proxySum) {
		t.Errorf("checksum through proxy = %d %s, host says %s", code, proxySum, hostSum)
	}
	// Upload a whole new image through the proxy, byte-exact.
	upload := pattern(size, 99)
	clear(upload[2<<20 : 3<<20])
	if code := put(t, proxy.https, proxy.base+"/images/chain-ticket-0001", upload); code != 200 {
		t.Fatalf("upload through proxy = %d", code)
	}
	if _, body = get(t, host.https, host.base+"/images/chain-ticket-0001"); !bytes.Equal(body, upload) {
		t.Error("image on the host differs from the upload through the proxy")
	}
	req, _ := http.NewRequest("OPTIONS", proxy.base+"/images/chain-ticket-0001", nil)
	resp, err := proxy.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	opts, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(opts), `"max_writers": 8`) {
		t.Errorf("OPTIONS through proxy = %s", opts)
	}
}

func TestDaemonAbstractLocalSocket(t *testing.T) {
	e := startDaemon(t, func(c *config.Config) { c.Local.Socket = "" })
	sock := e.d.LocalSocket()
	if !strings.HasPrefix(sock, "\x00/org/ovirt/imageio/") || len(sock) != len("\x00/org/ovirt/imageio/")+32 {
		t.Fatalf("random local socket = %q", sock)
	}
	path := filepath.Join(t.TempDir(), "disk.raw")
	data := pattern(1<<20, 2)
	os.WriteFile(path, data, 0o644)
	e.addTicket(t, "abstract-ticket-1", "file://"+path, int64(len(data)), `["read"]`)
	local := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", "@"+sock[1:])
	}}}
	defer local.CloseIdleConnections()
	code, body := get(t, local, "http://localhost/images/abstract-ticket-1")
	if code != 200 || !bytes.Equal(body, data) {
		t.Errorf("GET over the abstract socket = %d, %d bytes", code, len(body))
	}
	if e.d.ControlAddr() == nil {
		t.Error("no control address")
	}
}
