package nbd_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	"github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/internal/testutil"
)

const MiB = 1 << 20

func open(t testing.TB, url string, opts nbd.Options) *nbd.Backend {
	t.Helper()
	b, err := nbd.Open(testutil.Context(t), url, opts)
	if err != nil {
		t.Fatalf("opening %s: %v", url, err)
	}
	return b
}

func TestConformance(t *testing.T) {
	servers := []struct {
		name  string
		serve func(t *testing.T, size int64) string
	}{
		{"qemu-nbd raw", func(t *testing.T, size int64) string {
			img := filepath.Join(t.TempDir(), "disk.raw")
			testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "raw", img, strconv.FormatInt(size, 10))
			return qemuNBD(t, img, "raw")
		}},
		{"qemu-nbd qcow2", func(t *testing.T, size int64) string {
			img := filepath.Join(t.TempDir(), "disk.qcow2")
			testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, strconv.FormatInt(size, 10))
			return qemuNBD(t, img, "qcow2", "--allocation-depth", "--discard=unmap")
		}},
		{"nbdkit memory", func(t *testing.T, size int64) string {
			return nbdkit(t, "memory", "size="+strconv.FormatInt(size, 10))
		}},
		{"nbdkit no zero no extents", func(t *testing.T, size int64) string {
			return nbdkit(t, "--filter=nozero", "--filter=noextents", "memory", "size="+strconv.FormatInt(size, 10))
		}},
	}
	for _, s := range servers {
		t.Run(s.name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
				return open(t, s.serve(t, size), nbd.Options{Sparse: true})
			})
		})
	}
	t.Run("read-only", func(t *testing.T) {
		backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
			return open(t, nbdkit(t, "memory", "size="+strconv.FormatInt(size, 10)), nbd.Options{ReadOnly: true})
		})
	})
}

func TestCaps(t *testing.T) {
	tests := []struct {
		name string
		args []string
		opts nbd.Options
		want backend.Caps
	}{
		{"memory", []string{"memory", "size=1M"}, nbd.Options{},
			backend.Caps{CanZero: true, CanFlush: true, Extents: []string{"zero"}, MaxReaders: 8, MaxWriters: 8, BlockSize: 1}},
		{"nozero", []string{"--filter=nozero", "memory", "size=1M"}, nbd.Options{},
			backend.Caps{CanFlush: true, Extents: []string{"zero"}, MaxReaders: 8, MaxWriters: 8, BlockSize: 1}},
		{"server read-only", []string{"-r", "memory", "size=1M"}, nbd.Options{},
			backend.Caps{ReadOnly: true, CanFlush: true, Extents: []string{"zero"}, MaxReaders: 8, MaxWriters: 8, BlockSize: 1}},
		{"backend read-only", []string{"memory", "size=1M"}, nbd.Options{ReadOnly: true},
			backend.Caps{ReadOnly: true, CanZero: true, CanFlush: true, Extents: []string{"zero"}, MaxReaders: 8, MaxWriters: 8, BlockSize: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := open(t, nbdkit(t, tc.args...), tc.opts)
			defer b.Close()
			got := b.Caps()
			// nbdkit's memory plugin may or may not advertise flush.
			tc.want.CanFlush = b.Client().Flags().CanFlush()
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("caps (-want +got):\n%s", diff)
			}
			if tc.want.ReadOnly {
				err := b.WriteAt(testutil.Context(t), []byte{1}, 0)
				if !errors.Is(err, backend.ErrReadOnly) {
					t.Errorf("write: got %v, want ErrReadOnly", err)
				}
			}
		})
	}
}

// sampleRuns is a 16 MiB image with data, zero clusters and holes.
var sampleRuns = []testutil.Run{
	{Off: 0, Len: MiB, Kind: testutil.Data},
	{Off: 2 * MiB, Len: 2 * MiB, Kind: testutil.Zero},
	{Off: 5 * MiB, Len: 64 << 10, Kind: testutil.Data},
	{Off: 8 * MiB, Len: 4 * MiB, Kind: testutil.Zero},
	{Off: 15 * MiB, Len: MiB, Kind: testutil.Data},
}

func TestQcow2Extents(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	testutil.MakeImage(t, img, "qcow2", 16*MiB, sampleRuns, 1)
	b := open(t, qemuNBD(t, img, "qcow2", "--read-only", "--allocation-depth"), nbd.Options{ReadOnly: true})
	defer b.Close()
	got, err := b.Extents(testutil.Context(t), backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	want := []backend.Extent{
		{Start: 0, Length: MiB},
		{Start: MiB, Length: MiB, Zero: true, Hole: true},
		{Start: 2 * MiB, Length: 2 * MiB, Zero: true},
		{Start: 4 * MiB, Length: MiB, Zero: true, Hole: true},
		{Start: 5 * MiB, Length: 64 << 10},
		{Start: 5*MiB + 64<<10, Length: 3*MiB - 64<<10, Zero: true, Hole: true},
		{Start: 8 * MiB, Length: 4 * MiB, Zero: true},
		{Start: 12 * MiB, Length: 3 * MiB, Zero: true, Hole: true},
		{Start: 15 * MiB, Length: MiB},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("zero extents (-want +got):\n%s", diff)
	}
	if _, err := b.Extents(testutil.Context(t), backend.ContextDirty); !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("dirty extents without a bitmap: got %v, want ErrNotSupported", err)
	}
}

func TestChecksumMatchesContent(t *testing.T) {
	img := filepath.Join(t.TempDir(), "disk.qcow2")
	raw := testutil.MakeImage(t, img, "qcow2", 16*MiB+12800, sampleRuns, 2) // qemu sizes are multiples of 512
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, qemuNBD(t, img, "qcow2", "--read-only", "--allocation-depth"), nbd.Options{ReadOnly: true})
	defer b.Close()
	for _, alg := range []string{"blake2b", "sha256"} {
		got, err := checksum.Compute(testutil.Context(t), b, alg, checksum.DefaultBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		want, err := checksum.Sum(bytes.NewReader(data), alg, checksum.DefaultBlockSize)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s: Compute over NBD %s, Sum over the raw content %s", alg, got.Checksum, want.Checksum)
		}
	}
}

func TestDirtyExtents(t *testing.T) {
	for _, named := range []bool{true, false} {
		t.Run("named="+strconv.FormatBool(named), func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.qcow2")
			testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
			testutil.RunCommand(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", img)
			testutil.RunCommand(t, "qemu-img", "bitmap", "--add", img, "b0")
			testutil.RunCommand(t, "qemu-io", "-f", "qcow2", "-c", "write -P 2 2M 64k", "-c", "write -z 4M 1M", img)
			opts := nbd.Options{ReadOnly: true, Dirty: true}
			if named {
				opts.Bitmap = "b0"
			}
			b := open(t, qemuNBD(t, img, "qcow2", "--read-only", "--allocation-depth", "--bitmap=b0"), opts)
			defer b.Close()
			if !b.Caps().HasExtents(backend.ContextDirty) {
				t.Fatalf("caps %+v lack dirty extents", b.Caps())
			}
			got, err := b.Extents(testutil.Context(t), backend.ContextDirty)
			if err != nil {
				t.Fatal(err)
			}
			want := []backend.Extent{
				{Start: 0, Length: MiB},
				{Start: MiB, Length: MiB, Zero: true},
				{Start: 2 * MiB, Length: 64 << 10, Dirty: true},
				{Start: 2*MiB + 64<<10, Length: 2*MiB - 64<<10, Zero: true},
				{Start: 4 * MiB, Length: MiB, Zero: true, Dirty: true},
				{Start: 5 * MiB, Length: 3 * MiB, Zero: true},
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("dirty extents (-want +got):\n%s", diff)
			}
			zero, err := b.Extents(testutil.Context(t), backend.ContextZero)
			if err != nil {
				t.Fatal(err)
			}
			if err := backendtest.CheckExtents(zero, 8*MiB); err != nil {
				t.Error(err)
			}
			if zero[0] != (backend.Extent{Start: 0, Length: MiB}) || !zero[1].Hole {
				t.Errorf("zero extents with a bitmap: got %+v", zero)
			}
		})
	}
}

func TestZeroPunchOnlyWhenSparse(t *testing.T) {
	ctx := testutil.Context(t)
	for _, tc := range []struct {
		name   string
		sparse bool
		punch  bool
		hole   bool
	}{
		{"sparse punch", true, true, true},
		{"sparse no punch", true, false, false},
		{"not sparse punch", false, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := filepath.Join(t.TempDir(), "disk.raw")
			if err := os.WriteFile(img, bytes.Repeat([]byte{1}, 4*MiB), 0o600); err != nil {
				t.Fatal(err)
			}
			before := testutil.Allocated(t, img)
			b := open(t, qemuNBD(t, img, "raw", "--discard=unmap", "--cache=none"), nbd.Options{Sparse: tc.sparse})
			defer b.Close()
			if err := b.Zero(ctx, MiB, MiB, tc.punch); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			after := testutil.Allocated(t, img)
			if tc.hole && after > before-MiB {
				t.Errorf("allocated after zero: got %d, want <= %d", after, before-MiB)
			}
			if !tc.hole && after < before {
				t.Errorf("allocated after zero: got %d, want >= %d", after, before)
			}
			got := make([]byte, 4*MiB)
			if err := b.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			want := bytes.Repeat([]byte{1}, 4*MiB)
			clear(want[MiB : 2*MiB])
			if !bytes.Equal(got, want) {
				t.Error("content after zero differs")
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	ctx := testutil.Context(t)
	if _, err := nbd.Open(ctx, "http://example.com/", nbd.Options{}); err == nil {
		t.Error("bad URL: got no error")
	}
	if _, err := nbd.Open(ctx, "nbd:unix:"+filepath.Join(t.TempDir(), "missing.sock"), nbd.Options{}); err == nil {
		t.Error("no server: got no error")
	}
	url := nbdkit(t, "memory", "size=1M")
	if _, err := nbd.Open(ctx, url, nbd.Options{Dirty: true}); err == nil {
		t.Error("dirty on a server without bitmaps: got no error")
	}
}

// TestStreamConns streams more ranges at once than there are stream
// connections into a raw image: each stream gets a connection of its own
// (the others wait), Flush covers them all, and Close closes them all.
func TestStreamConns(t *testing.T) {
	const size, streams = 24 * MiB, 6
	img := filepath.Join(t.TempDir(), "disk.raw")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "raw", img, strconv.Itoa(size))
	url := qemuNBD(t, img, "raw") // --shared=8
	b := open(t, url, nbd.Options{StreamConns: 2})
	data := bytes.Repeat([]byte("streamed"), size/8)
	ctx := testutil.Context(t)
	errs := make(chan error, streams)
	part := int64(size / streams)
	for i := range streams {
		go func() {
			off := int64(i) * part
			var acked int64
			err := b.WriteStream(ctx, bytes.NewReader(data[off:off+part]), off, part, MiB, make([]byte, 64<<10), func(n int64) { acked += n })
			if err == nil && acked != part {
				err = errors.New("acknowledged " + strconv.FormatInt(acked, 10) + " bytes")
			}
			errs <- err
		}()
	}
	for range streams {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("image content differs")
	}
	// All three connections are closed: clients can take all eight of
	// qemu-nbd's slots at once.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for range 8 {
		c, err := nbd.Open(dctx, url, nbd.Options{})
		if err != nil {
			t.Fatalf("a slot is still taken: %v", err)
		}
		defer c.Close()
	}
}
