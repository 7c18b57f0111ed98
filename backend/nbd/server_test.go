package nbd_test

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// qemuNBD serves image with qemu-nbd and returns its URL.
func qemuNBD(t testing.TB, image, format string, extra ...string) string {
	t.Helper()
	return "nbd:unix:" + testutil.StartQemuNBD(t, image, format, append([]string{"--shared=8"}, extra...)...)
}

// nbdkit runs nbdkit with args (filters, plugin, parameters) and returns
// its URL.
func nbdkit(t testing.TB, args ...string) string {
	t.Helper()
	return "nbd:unix:" + testutil.StartNBDKit(t, args...)
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
