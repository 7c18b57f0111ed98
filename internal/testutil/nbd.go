package testutil

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// SocketPath returns a short Unix socket path in a private directory that
// is removed when the test ends (t.TempDir names can exceed the 108-byte
// limit of socket paths).
func SocketPath(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "nbd")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "sock")
}

// StartQemuNBD serves image with qemu-nbd --persistent on a new Unix
// socket and returns the socket path; extra options (such as --shared=8
// or --read-only) come before the image. The server is stopped when the
// test ends.
func StartQemuNBD(t testing.TB, image, format string, extra ...string) string {
	t.Helper()
	sock := SocketPath(t)
	args := append([]string{"--persistent", "--socket=" + sock, "--format=" + format}, extra...)
	StartServer(t, "unix", sock, "qemu-nbd", append(args, image)...)
	return sock
}

// StartNBDKit runs nbdkit with args (filters, plugin, parameters) in the
// foreground on a new Unix socket and returns the socket path. The server
// is stopped when the test ends.
func StartNBDKit(t testing.TB, args ...string) string {
	t.Helper()
	sock := SocketPath(t)
	all := append([]string{"--foreground", "--exit-with-parent", "--unix", sock}, args...)
	StartServer(t, "unix", sock, "nbdkit", all...)
	return sock
}

// StartServer runs the server command name with args, waits until it
// accepts connections on addr (network "unix" or "tcp") and stops it when
// the test ends: SIGTERM, then SIGKILL after 10 s. It skips the test when
// name is not installed and fails it when the server exits early or does
// not listen within 20 s.
func StartServer(t testing.TB, network, addr, name string, args ...string) {
	t.Helper()
	Need(t, name)
	cmd := exec.Command(name, args...)
	out := &LockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	exited := StartProcess(t, cmd, false)
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		c, err := net.Dial(network, addr)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s %s exited early: %s", name, strings.Join(args, " "), out.String())
		default:
		}
		if i >= 1000 || time.Now().After(deadline) {
			t.Fatalf("%s did not listen on %s: %v", name, addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
