package nbd_test

import (
	"testing"

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
