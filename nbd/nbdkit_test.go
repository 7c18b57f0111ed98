package nbd

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/imageio/imageio/internal/testutil"
)

func TestServerErrors(t *testing.T) {
	addr := nbdkit(t, "--filter=error", "memory", "size=4M",
		"error-pread=EIO", "error-pread-rate=1",
		"error-pwrite=ENOSPC", "error-pwrite-rate=1",
		"error-zero=EINVAL", "error-zero-rate=1")
	c := dial(t, addr, Options{})
	ctx := testutil.Context(t)
	p := make([]byte, 64<<10)
	tests := []struct {
		name string
		call func() error
		want uint32
	}{
		{"read", func() error { return c.ReadAt(ctx, p, 0) }, EIO},
		{"write", func() error { return c.WriteAt(ctx, p, 4096) }, ENOSPC},
		{"zero", func() error { return c.Zero(ctx, 0, 8192, 0) }, EINVAL},
		{"large read", func() error { return c.ReadAt(ctx, make([]byte, 3<<20), 0) }, EIO},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if got := errnoOf(err); got != tc.want {
				t.Fatalf("error = %v, want errno %s", err, ErrnoName(tc.want))
			}
			t.Logf("error: %v", err)
		})
	}
	// The connection still works after errors.
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush after errors: %v", err)
	}
}

func TestErrorMessage(t *testing.T) {
	e := &Error{Errno: ENOSPC, Message: "disk full"}
	if got, want := e.Error(), "NBD server error ENOSPC (no space left on device): disk full"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(&Error{Errno: ENOTSUP}, ErrNotSupported) {
		t.Error("ENOTSUP is not ErrNotSupported")
	}
}

func TestReadOnly(t *testing.T) {
	t.Run("nbdkit", func(t *testing.T) {
		c := dial(t, nbdkit(t, "-r", "memory", "size=1M"), Options{})
		checkReadOnly(t, c)
	})
	t.Run("qemu-nbd", func(t *testing.T) {
		img := filepath.Join(t.TempDir(), "disk.qcow2")
		testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "1M")
		c := dial(t, qemuNBD(t, img, "qcow2", "--read-only"), Options{})
		checkReadOnly(t, c)
	})
}

func checkReadOnly(t *testing.T, c *Client) {
	t.Helper()
	ctx := testutil.Context(t)
	if !c.Flags().ReadOnly() {
		t.Fatal("Flags().ReadOnly() = false, want true")
	}
	for name, err := range map[string]error{
		"write": c.WriteAt(ctx, make([]byte, 512), 0),
		"zero":  c.Zero(ctx, 0, 512, 0),
		"trim":  c.Trim(ctx, 0, 512),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on read-only export: error = %v, want ErrReadOnly", name, err)
		}
	}
	if err := c.ReadAt(ctx, make([]byte, 512), 0); err != nil {
		t.Errorf("ReadAt on read-only export: %v", err)
	}
}

func TestSimpleReplies(t *testing.T) {
	addr := nbdkit(t, "--no-sr", "memory", "size=8M")
	c := dial(t, addr, Options{})
	if c.StructuredReplies() {
		t.Fatal("StructuredReplies() = true with nbdkit --no-sr")
	}
	if c.HasMetaContext(ContextBaseAllocation) {
		t.Error("HasMetaContext(base:allocation) = true without structured replies")
	}
	ctx := testutil.Context(t)
	rng := rand.New(rand.NewPCG(3, 4))
	p := randomBytes(rng, 3<<20)
	if err := c.WriteAt(ctx, p, 12345); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(p))
	if err := c.ReadAt(ctx, got, 12345); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, p) {
		t.Fatalf("read back differs at %d", firstDiff(got, p))
	}
	exts, err := c.Extents(ctx, 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Extent{{Start: 0, Length: 8 << 20}}, exts); diff != "" {
		t.Errorf("Extents without block status (-want +got):\n%s", diff)
	}
	if _, err := Dial(ctx, addr, Options{DirtyBitmap: true}); !errors.Is(err, ErrNotSupported) {
		t.Errorf("Dial with DirtyBitmap and no structured replies: error = %v, want ErrNotSupported", err)
	}
}

func TestZeroTrim(t *testing.T) {
	c := dial(t, nbdkit(t, "memory", "size=16M"), Options{})
	ctx := testutil.Context(t)
	if !c.Flags().CanZero() || !c.Flags().CanTrim() {
		t.Fatalf("Flags() = %#x, want zero and trim", uint16(c.Flags()))
	}
	rng := rand.New(rand.NewPCG(5, 6))
	data := randomBytes(rng, 16<<20)
	if err := c.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := c.Zero(ctx, 1<<20, 1<<20, ZeroNoHole); err != nil {
		t.Fatal(err)
	}
	clear(data[1<<20 : 2<<20])
	if err := c.Zero(ctx, 4<<20, 2<<20, 0); err != nil {
		t.Fatal(err)
	}
	clear(data[4<<20 : 6<<20])
	if c.Flags().CanFastZero() {
		if err := c.Zero(ctx, 8<<20, 1<<20, ZeroFast); err != nil && !errors.Is(err, ErrNotSupported) {
			t.Fatalf("fast zero: %v", err)
		} else if err == nil {
			clear(data[8<<20 : 9<<20])
		}
	}
	if err := c.Trim(ctx, 10<<20, 1<<20); err != nil {
		t.Fatal(err)
	}
	clear(data[10<<20 : 11<<20]) // nbdkit memory reads trimmed ranges as zeros
	got := make([]byte, len(data))
	if err := c.ReadAt(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if i := firstDiff(got, data); i >= 0 {
		t.Fatalf("content differs at %d", i)
	}
	exts, err := c.Extents(ctx, 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		if e.Zero && !allZero(data[e.Start:e.End()]) {
			t.Errorf("extent %+v is zero but holds data", e)
		}
	}
}

func TestFastZeroNotOffered(t *testing.T) {
	c := dial(t, nbdkit(t, "--filter=nozero", "memory", "size=1M", "fastzeromode=none"), Options{})
	if c.Flags().CanFastZero() {
		t.Skip("server offers fast zero")
	}
	err := c.Zero(testutil.Context(t), 0, 4096, ZeroFast)
	if !errors.Is(err, ErrNotSupported) {
		t.Fatalf("Zero(ZeroFast) error = %v, want ErrNotSupported", err)
	}
}

func allZero(p []byte) bool {
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}
