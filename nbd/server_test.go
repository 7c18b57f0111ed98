package nbd

import (
	"context"
	"errors"
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

// socketDir returns a short private directory for a Unix socket (socket
// paths are limited to about 100 bytes, test temp dirs can be longer).
func socketDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// startServer runs a server command that listens on the Unix socket sock,
// waits until it accepts connections and stops it when the test ends.
func startServer(t testing.TB, sock string, name string, args ...string) {
	t.Helper()
	startServerOn(t, "unix", sock, name, args...)
}

// startServerOn is startServer for any network address.
func startServerOn(t testing.TB, network, addr string, name string, args ...string) {
	t.Helper()
	testutil.Need(t, name)
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Stdout = &stderr
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
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s %s exited early: %s", name, strings.Join(args, " "), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// qemuNBD serves image with qemu-nbd and returns its address.
func qemuNBD(t testing.TB, image, format string, extra ...string) Address {
	t.Helper()
	sock := filepath.Join(socketDir(t), "sock")
	args := append([]string{"--persistent", "--shared=16", "--socket=" + sock, "--format=" + format}, extra...)
	args = append(args, image)
	startServer(t, sock, "qemu-nbd", args...)
	return Address{Network: "unix", Addr: sock}
}

// nbdkit runs nbdkit with args (plugin, filters, parameters) and returns
// its address.
func nbdkit(t testing.TB, args ...string) Address {
	t.Helper()
	sock := filepath.Join(socketDir(t), "sock")
	all := append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)
	startServer(t, sock, "nbdkit", all...)
	return Address{Network: "unix", Addr: sock}
}

// dial connects to addr and closes the client when the test ends.
func dial(t testing.TB, addr Address, opts Options) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, addr, opts)
	if err != nil {
		t.Fatalf("Dial(%s): %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// testContext returns a context that ends with the test or after a bound.
func testContext(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// run runs a command and fails the test when it fails.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	testutil.Need(t, name)
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func errnoOf(err error) uint32 {
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	return 0
}
