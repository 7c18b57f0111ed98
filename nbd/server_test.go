package nbd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// qemuNBD serves image with qemu-nbd and returns its address.
func qemuNBD(t testing.TB, image, format string, extra ...string) Address {
	t.Helper()
	sock := testutil.StartQemuNBD(t, image, format, append([]string{"--shared=16"}, extra...)...)
	return Address{Network: "unix", Addr: sock}
}

// nbdkit runs nbdkit with args (plugin, filters, parameters) and returns
// its address.
func nbdkit(t testing.TB, args ...string) Address {
	t.Helper()
	return Address{Network: "unix", Addr: testutil.StartNBDKit(t, args...)}
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

func errnoOf(err error) uint32 {
	var e *Error
	if errors.As(err, &e) {
		return e.Errno
	}
	return 0
}
