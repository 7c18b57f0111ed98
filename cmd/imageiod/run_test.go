package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/control"
	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func writeConf(t *testing.T, dir, conf string) {
	t.Helper()
	os.MkdirAll(filepath.Join(dir, "conf.d"), 0o755)
	if err := os.WriteFile(filepath.Join(dir, "conf.d", "50-test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestShowConfig(t *testing.T) {
	dir := t.TempDir()
	writeConf(t, dir, "[remote]\nport = 54323\n[local]\nenable = false\n")
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"-c", dir, "--show-config"}, &out, &errb); code != 0 {
		t.Fatalf("run = %d: %s", code, errb.String())
	}
	var got config.Config
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatalf("output is not the config JSON: %v\n%s", err, out.String())
	}
	want := config.Default()
	want.Remote.Port = 54323
	want.Local.Enable = false
	if got != want {
		t.Errorf("config = %+v, want %+v", got, want)
	}
}

func TestUsage(t *testing.T) {
	tests := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"--frob"}, 2, "flag provided but not defined"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--log-level", "loud", "-c", "x"}, 2, "invalid log level"},
		{[]string{"-c", "/nonexistent"}, 1, "imageiod: could not find /nonexistent/conf.d/*.conf"},
	}
	for _, tc := range tests {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		if code != tc.code || !strings.Contains(errb.String(), tc.msg) {
			t.Errorf("run(%q) = %d %q, want %d and %q", tc.args, code, errb.String(), tc.code, tc.msg)
		}
	}
}

// TestDaemonProcess builds imageiod, runs it, adds a ticket with the
// control client, downloads a file over HTTPS and stops it with SIGTERM.
func TestDaemonProcess(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "imageiod")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	files := testutil.NewTLS(t, dir)
	ctlSock := filepath.Join(dir, "control.sock")
	writeConf(t, dir, fmt.Sprintf(`[tls]
key_file = %s
cert_file = %s
[remote]
host = 127.0.0.1
port = 0
[local]
socket = %s
[control]
socket = %s
`, files.KeyFile, files.CertFile, filepath.Join(dir, "local.sock"), ctlSock))
	stderr := &testutil.LockedBuffer{}
	cmd := exec.Command(bin, "-c", dir)
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
	}()
	c := control.NewClient("unix", ctlSock)
	image := filepath.Join(dir, "disk.raw")
	data := bytes.Repeat([]byte("imageio!"), 1<<17)
	os.WriteFile(image, data, 0o644)
	doc := fmt.Sprintf(`{"uuid": "proc-ticket-0001", "size": %d, "url": "file://%s", "ops": ["read"], "timeout": 60}`, len(data), image)
	var err error
	for i := 0; i < 500; i++ {
		if err = c.AddTicket(context.Background(), []byte(doc)); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("AddTicket: %v\n%s", err, stderr.String())
	}
	// The remote port is ephemeral: find it in the log.
	var addr string
	for i := 0; i < 500 && addr == ""; i++ {
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, "service=remote") && strings.Contains(line, "msg=listening") {
				for _, f := range strings.Fields(line) {
					if a, ok := strings.CutPrefix(f, "addr="); ok {
						addr = a
					}
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if addr == "" {
		t.Fatalf("no remote address in the log:\n%s", stderr.String())
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: files.Pool}}}
	resp, err := hc.Get("https://" + addr + "/images/proc-ticket-0001")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	hc.CloseIdleConnections()
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Errorf("GET = %d, %d bytes", resp.StatusCode, len(body))
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Errorf("imageiod exited with %v\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("imageiod did not stop on SIGTERM\n%s", stderr.String())
	}
	if _, err := os.Stat(ctlSock); !os.IsNotExist(err) {
		t.Errorf("control socket left behind: %v", err)
	}
	if strings.Contains(stderr.String(), "proc-ticket-0001") {
		t.Error("log contains a whole ticket id")
	}
}
