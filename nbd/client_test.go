package nbd

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

func TestDialQemuNBD(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "10M")
	addr := qemuNBD(t, img, "qcow2", "--allocation-depth")
	c := dial(t, addr, Options{})
	if got, want := c.Size(), int64(10<<20); got != want {
		t.Errorf("Size() = %d, want %d", got, want)
	}
	f := c.Flags()
	if f.ReadOnly() || !f.CanFlush() || !f.CanZero() || !f.CanTrim() || !f.CanMultiConn() {
		t.Errorf("Flags() = %#x, want writable, flush, zero, trim, multi-conn", uint16(f))
	}
	if bs := c.BlockSize(); bs.Min == 0 || bs.Preferred < bs.Min || bs.Max < bs.Preferred {
		t.Errorf("BlockSize() = %+v", bs)
	}
	for _, name := range []string{ContextBaseAllocation, ContextAllocationDepth} {
		if !c.HasMetaContext(name) {
			t.Errorf("HasMetaContext(%q) = false, want true", name)
		}
	}
	if !c.StructuredReplies() {
		t.Error("StructuredReplies() = false, want true")
	}
	ctx := testutil.Context(t)
	t.Logf("flags %#x, block size %+v", uint16(f), c.BlockSize())
	if f.CanFastZero() {
		if err := c.Zero(ctx, 0, 1<<20, ZeroFast); err != nil && !errors.Is(err, ErrNotSupported) {
			t.Errorf("Zero(ZeroFast): %v", err)
		}
	}
	if err := c.Trim(ctx, 1<<20, 1<<20); err != nil {
		t.Errorf("Trim: %v", err)
	}
}

func TestUnknownExport(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.raw")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
	addr := qemuNBD(t, img, "raw", "--export-name=sda")
	addr.Export = "sdb"
	_, err := Dial(testutil.Context(t), addr, Options{})
	if !errors.Is(err, ErrUnknownExport) {
		t.Fatalf("Dial(%s) error = %v, want ErrUnknownExport", addr, err)
	}
	addr.Export = "sda"
	c := dial(t, addr, Options{})
	if c.Size() != 1<<20 {
		t.Errorf("Size() = %d, want %d", c.Size(), 1<<20)
	}
}

func TestRoundTrip(t *testing.T) {
	for _, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			const size = 40 << 20
			c, img := dialNewImage(t, format, size)
			ctx := testutil.Context(t)
			model := make([]byte, size)
			rng := rand.New(rand.NewPCG(1, 2))
			for i := 0; i < 40; i++ {
				n := 1 + rng.IntN(1<<20)
				if i%20 == 0 {
					n = 33<<20 + rng.IntN(1<<20) // larger than the max block size
				}
				off := rng.IntN(size - n + 1)
				p := randomBytes(rng, n)
				if err := c.WriteAt(ctx, p, int64(off)); err != nil {
					t.Fatalf("WriteAt(%d bytes at %d): %v", n, off, err)
				}
				copy(model[off:], p)
				if i%7 == 3 {
					zoff, zn := rng.IntN(size/2), rng.IntN(size/2)
					if err := c.Zero(ctx, int64(zoff), int64(zn), 0); err != nil {
						t.Fatalf("Zero(%d, %d): %v", zoff, zn, err)
					}
					clear(model[zoff : zoff+zn])
				}
			}
			if err := c.Flush(ctx); err != nil {
				t.Fatalf("Flush: %v", err)
			}
			got := make([]byte, size)
			if err := c.ReadAt(ctx, got, 0); err != nil {
				t.Fatalf("ReadAt: %v", err)
			}
			if i := firstDiff(got, model); i >= 0 {
				t.Fatalf("content differs at offset %d", i)
			}
			// Unaligned reads of random ranges.
			for i := 0; i < 30; i++ {
				n := 1 + rng.IntN(3<<20)
				off := rng.IntN(size - n + 1)
				p := make([]byte, n)
				if err := c.ReadAt(ctx, p, int64(off)); err != nil {
					t.Fatalf("ReadAt(%d bytes at %d): %v", n, off, err)
				}
				if !bytes.Equal(p, model[off:off+n]) {
					t.Fatalf("ReadAt(%d bytes at %d) differs at %d", n, off, firstDiff(p, model[off:off+n]))
				}
			}
			c.Close()
			// The data reached the image.
			if format == "raw" {
				disk, err := os.ReadFile(img)
				if err != nil {
					t.Fatal(err)
				}
				if i := firstDiff(disk, model); i >= 0 {
					t.Fatalf("image differs at offset %d", i)
				}
			}
		})
	}
}

// dialNewImage creates an empty image of format and size bytes, serves it
// with qemu-nbd and connects to it; it returns the client and the image.
func dialNewImage(t *testing.T, format string, size int64) (*Client, string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "disk."+format)
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", format, img, strconv.FormatInt(size, 10))
	return dial(t, qemuNBD(t, img, format), Options{}), img
}

// randomBytes returns n bytes from rng.
func randomBytes(rng *rand.Rand, n int) []byte {
	p := make([]byte, n+8)
	for i := 0; i < n; i += 8 {
		binary.LittleEndian.PutUint64(p[i:], rng.Uint64())
	}
	return p[:n]
}

// firstDiff returns the first offset where a and b differ, or -1.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

func TestTCP(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.raw")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "raw", img, "1M")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	hostport := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	testutil.StartServer(t, "tcp", hostport, "qemu-nbd", "--persistent", "--bind=127.0.0.1",
		"--port="+strconv.Itoa(port), "--export-name=disk", "--format=raw", img)
	for _, url := range []string{
		"nbd://" + hostport + "/disk",
		"nbd:" + hostport + ":exportname=disk",
	} {
		t.Run(url, func(t *testing.T) {
			addr, err := ParseURL(url)
			if err != nil {
				t.Fatal(err)
			}
			c := dial(t, addr, Options{})
			ctx := testutil.Context(t)
			p := []byte("hello over tcp")
			if err := c.WriteAt(ctx, p, 1000); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(p))
			if err := c.ReadAt(ctx, got, 1000); err != nil || !bytes.Equal(got, p) {
				t.Fatalf("ReadAt = %q, %v; want %q", got, err, p)
			}
		})
	}
}
