package nbd_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// socketPath returns a short socket path in a directory removed when the
// test ends (t.TempDir names can exceed the 108-byte socket path limit).
func socketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "sock")
}

// serve starts an NBD server listening on sock, waits until it accepts
// connections and stops it (SIGTERM, then SIGKILL after 10 s) when the
// test ends.
func serve(t testing.TB, sock, name string, args ...string) string {
	t.Helper()
	testutil.Need(t, name)
	cmd := exec.Command(name, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			return "nbd:unix:" + sock
		}
		select {
		case <-exited:
			t.Fatalf("%s %s exited: %s", name, strings.Join(args, " "), out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s is not listening on %s: %v", name, sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// qemuNBD serves image with qemu-nbd and returns its URL.
func qemuNBD(t testing.TB, image, format string, extra ...string) string {
	t.Helper()
	sock := socketPath(t)
	args := append([]string{"--persistent", "--shared=8", "--socket=" + sock, "--format=" + format}, extra...)
	return serve(t, sock, "qemu-nbd", append(args, image)...)
}

// nbdkit runs nbdkit with args (filters, plugin, parameters) and returns
// its URL.
func nbdkit(t testing.TB, args ...string) string {
	t.Helper()
	sock := socketPath(t)
	return serve(t, sock, "nbdkit", append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)...)
}

// run runs a command and fails the test when it fails.
func run(t testing.TB, name string, args ...string) {
	t.Helper()
	testutil.Need(t, name)
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
