package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

func TestUsage(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no storage", nil, "--storage is required"},
		{"extra argument", []string{"--storage", ".", "x"}, `unexpected argument "x"`},
		{"unknown flag", []string{"--frob"}, "flag provided but not defined"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tc.args, &stdout, &stderr)
			if !errors.Is(err, errUsage) {
				t.Errorf("run error %v, want errUsage", err)
			}
			if !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("stderr %q does not contain %q", stderr.String(), tc.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout got %q, want nothing", stdout.String())
			}
		})
	}
}

// TestRun starts the command, reads the credentials it prints, logs in with
// them, and stops it by cancelling its context (as SIGINT does).
func TestRun(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd")
	imageiod, err := enginesim.BuildImageiod()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pwFile := filepath.Join(dir, "password")
	if err := os.WriteFile(pwFile, []byte("secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(dir, "storage")
	if err := os.Mkdir(storage, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := run(ctx, []string{"--storage", storage, "--listen", "127.0.0.1:0", "--imageiod", imageiod,
			"--password-file", pwFile, "--storage-domains", "sd1,sd2", "--no-proxy"}, pw, &stderr)
		pw.CloseWithError(io.EOF)
		done <- err
	}()
	vals := map[string]string{}
	sc := bufio.NewScanner(pr)
	for i := 0; i < 5 && sc.Scan(); i++ {
		k, v, ok := strings.Cut(sc.Text(), " = ")
		if !ok {
			t.Fatalf("output line %q is not key = value", sc.Text())
		}
		vals[k] = v
	}
	go io.Copy(io.Discard, pr)
	if vals["password"] != "secret" || vals["username"] != "admin@internal" || vals["storage_domains"] != "sd1,sd2" {
		t.Errorf("printed %v", vals)
	}
	cctx, ccancel := context.WithTimeout(ctx, 30*time.Second)
	defer ccancel()
	c, err := engine.Connect(cctx, engine.Config{URL: vals["engine_url"], Username: vals["username"], Password: vals["password"], CAFile: vals["cafile"]})
	if err != nil {
		t.Fatalf("connecting with the printed credentials: %v", err)
	}
	if _, err := c.StorageDomain(cctx, "sd2"); err != nil {
		t.Errorf("storage domain sd2: %v", err)
	}
	c.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v\nstderr: %s", err, stderr.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("enginesim did not stop")
	}
	if _, err := os.Stat(vals["cafile"]); !os.IsNotExist(err) {
		t.Errorf("state directory left behind: %v", err)
	}
}

// TestManPage checks that man/enginesim.1 documents every flag.
func TestManPage(t *testing.T) {
	man, err := os.ReadFile(filepath.Join("..", "..", "man", "enginesim.1"))
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, &stdout, &stderr); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	n := 0
	for _, line := range strings.Split(stderr.String(), "\n") {
		name, ok := strings.CutPrefix(line, "  -")
		if !ok {
			continue
		}
		name, _, _ = strings.Cut(name, " ")
		n++
		if !bytes.Contains(man, []byte(`\-\-`+strings.ReplaceAll(name, "-", `\-`))) {
			t.Errorf("man/enginesim.1 does not document --%s", name)
		}
	}
	if n < 10 {
		t.Errorf("found only %d flags in the usage text", n)
	}
}
