package nbd

import (
	"encoding/json"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/internal/testutil"
)

// mapEntry is one entry of qemu-img map --output=json.
type mapEntry struct {
	Start   int64 `json:"start"`
	Length  int64 `json:"length"`
	Present bool  `json:"present"`
	Zero    bool  `json:"zero"`
	Data    bool  `json:"data"`
}

// qemuImgMap returns the extents qemu-img map reports for image. With
// depth, holes are the ranges not present in the image (what
// qemu:allocation-depth says); without, the ranges without data (what the
// base:allocation hole flag says).
func qemuImgMap(t *testing.T, image, format string, depth bool) []Extent {
	t.Helper()
	out := testutil.RunCommand(t, "qemu-img", "map", "--output=json", "-f", format, image)
	var entries []mapEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("parsing qemu-img map output: %v\n%s", err, out)
	}
	var exts []Extent
	for _, m := range entries {
		e := Extent{Start: m.Start, Length: m.Length, Zero: m.Zero}
		if !m.Data && !m.Zero {
			t.Fatalf("qemu-img map entry %+v has neither data nor zero", m)
		}
		if depth {
			e.Hole = !m.Present
		} else {
			e.Hole = !m.Data
		}
		if e.Hole {
			e.Zero = true
		}
		exts = appendExtent(exts, e)
	}
	return exts
}

// clip returns the part of exts within [off, off+length).
func clip(exts []Extent, off, length int64) []Extent {
	var out []Extent
	end := off + length
	for _, e := range exts {
		s, t := max(e.Start, off), min(e.End(), end)
		if s < t {
			e.Start, e.Length = s, t-s
			out = appendExtent(out, e)
		}
	}
	return out
}

// sampleRuns returns runs of data, zero and hole at random sizes (64 KiB
// to 2 MiB, some unaligned) covering size bytes.
func sampleRuns(rng *rand.Rand, size int64) []testutil.Run {
	var runs []testutil.Run
	for off := int64(0); off < size; {
		n := int64(64<<10) * (1 + rng.Int64N(32))
		if rng.IntN(4) == 0 {
			n += rng.Int64N(64 << 10)
		}
		n = min(n, size-off)
		runs = append(runs, testutil.Run{Off: off, Len: n, Kind: testutil.RunKind(rng.IntN(3))})
		off += n
	}
	return runs
}

func TestExtentsMatchQemuImgMap(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	const size = 32 << 20
	rng := rand.New(rand.NewPCG(7, 8))
	runs := sampleRuns(rng, size)
	dir := t.TempDir()
	raw := filepath.Join(dir, "disk.raw")
	testutil.MakeImage(t, raw, "raw", size, runs, 1)
	qcow := filepath.Join(dir, "disk.qcow2")
	testutil.MakeImage(t, qcow, "qcow2", size, runs, 1)
	compressed := filepath.Join(dir, "compressed.qcow2")
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", qcow, compressed)

	tests := []struct {
		name, image, format string
		depth               bool
	}{
		{"raw", raw, "raw", false},
		{"qcow2", qcow, "qcow2", true},
		{"qcow2 without depth", qcow, "qcow2", false},
		{"compressed qcow2", compressed, "qcow2", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--read-only"}
			if tc.depth {
				args = append(args, "--allocation-depth")
			}
			c := dial(t, qemuNBD(t, tc.image, tc.format, args...), Options{})
			if got := c.HasMetaContext(ContextAllocationDepth); got != tc.depth {
				t.Fatalf("HasMetaContext(%q) = %v, want %v", ContextAllocationDepth, got, tc.depth)
			}
			want := qemuImgMap(t, tc.image, tc.format, tc.depth)
			ctx := testutil.Context(t)
			got, err := c.Extents(ctx, 0, c.Size())
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("Extents differ from qemu-img map (-want +got):\n%s", diff)
			}
			if tc.name == "qcow2" {
				checkRunsAgree(t, got, runs)
			}
			for i := 0; i < 20; i++ {
				off := rng.Int64N(size)
				n := 1 + rng.Int64N(size-off)
				got, err := c.Extents(ctx, off, n)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(clip(want, off, n), got); diff != "" {
					t.Fatalf("Extents(%d, %d) (-want +got):\n%s", off, n, diff)
				}
			}
		})
	}
}

// checkRunsAgree checks extents of a qcow2 made from runs: data runs are
// not zero, zero runs are zero and allocated, holes are holes (at cluster
// granularity, so only clusters fully inside a run are checked).
func checkRunsAgree(t *testing.T, exts []Extent, runs []testutil.Run) {
	t.Helper()
	const cluster = 64 << 10
	find := func(off int64) Extent {
		for _, e := range exts {
			if off >= e.Start && off < e.End() {
				return e
			}
		}
		t.Fatalf("no extent at %d", off)
		return Extent{}
	}
	for _, r := range runs {
		for off := (r.Off + cluster - 1) / cluster * cluster; off+cluster <= r.Off+r.Len; off += cluster {
			e := find(off)
			var want Extent
			switch r.Kind {
			case testutil.Zero:
				want = Extent{Zero: true}
			case testutil.Hole:
				want = Extent{Zero: true, Hole: true}
			}
			if e.Zero != want.Zero || e.Hole != want.Hole {
				t.Fatalf("cluster at %d of run %+v: extent %+v", off, r, e)
			}
		}
	}
}

func TestExtentsLargeImage(t *testing.T) {
	// A sparse image larger than one BLOCK_STATUS request (2 GiB).
	img := filepath.Join(t.TempDir(), "big.qcow2")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "5G")
	testutil.RunCommand(t, "qemu-io", "-f", "qcow2",
		"-c", "write -P 1 2047M 2M",
		"-c", "write -z 3G 1M",
		"-c", "write -P 2 5119M 1M", img)
	c := dial(t, qemuNBD(t, img, "qcow2", "--read-only", "--allocation-depth"), Options{})
	got, err := c.Extents(testutil.Context(t), 0, c.Size())
	if err != nil {
		t.Fatal(err)
	}
	const M = 1 << 20
	want := []Extent{
		{Start: 0, Length: 2047 * M, Zero: true, Hole: true},
		{Start: 2047 * M, Length: 2 * M},
		{Start: 2049 * M, Length: 3072*M - 2049*M, Zero: true, Hole: true},
		{Start: 3072 * M, Length: M, Zero: true},
		{Start: 3073 * M, Length: 5119*M - 3073*M, Zero: true, Hole: true},
		{Start: 5119 * M, Length: M},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Extents (-want +got):\n%s", diff)
	}
}

func TestDirtyBitmap(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "8M")
	testutil.RunCommand(t, "qemu-io", "-f", "qcow2", "-c", "write -P 1 0 1M", "-c", "write -P 1 6M 1M", img)
	testutil.RunCommand(t, "qemu-img", "bitmap", "--add", img, "b0")
	testutil.RunCommand(t, "qemu-io", "-f", "qcow2",
		"-c", "write -P 2 2M 64k",
		"-c", "write -P 3 6400k 64k",
		"-c", "write -z 7M 128k", img)
	const K = 1 << 10
	want := []Extent{
		{Start: 0, Length: 1024 * K},
		{Start: 1024 * K, Length: 1024 * K, Zero: true},
		{Start: 2048 * K, Length: 64 * K, Dirty: true},
		{Start: 2112 * K, Length: 6144*K - 2112*K, Zero: true},
		{Start: 6144 * K, Length: 256 * K},
		{Start: 6400 * K, Length: 64 * K, Dirty: true},
		{Start: 6464 * K, Length: 7168*K - 6464*K},
		{Start: 7168 * K, Length: 128 * K, Zero: true, Dirty: true},
		{Start: 7296 * K, Length: 8192*K - 7296*K, Zero: true},
	}

	t.Run("only bitmap", func(t *testing.T) {
		c := dial(t, qemuNBD(t, img, "qcow2", "--read-only", "--bitmap=b0"), Options{DirtyBitmap: true})
		if got := c.DirtyBitmap(); got != DirtyBitmapPrefix+"b0" {
			t.Fatalf("DirtyBitmap() = %q, want %q", got, DirtyBitmapPrefix+"b0")
		}
		got, err := c.Extents(testutil.Context(t), 0, c.Size())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Extents (-want +got):\n%s", diff)
		}
	})

	testutil.RunCommand(t, "qemu-img", "bitmap", "--add", img, "b1")
	addr := qemuNBD(t, img, "qcow2", "--read-only", "--bitmap=b0", "--bitmap=b1")
	t.Run("two bitmaps", func(t *testing.T) {
		_, err := Dial(testutil.Context(t), addr, Options{DirtyBitmap: true})
		if err == nil || !strings.Contains(err.Error(), "qemu:dirty-bitmap:b0") || !strings.Contains(err.Error(), "qemu:dirty-bitmap:b1") {
			t.Fatalf("Dial with two bitmaps: error = %v, want one naming both", err)
		}
	})
	t.Run("named bitmap", func(t *testing.T) {
		c := dial(t, addr, Options{DirtyBitmap: true, MetaContexts: []string{ContextBaseAllocation, DirtyBitmapPrefix + "b0"}})
		got, err := c.Extents(testutil.Context(t), 0, c.Size())
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Fatalf("Extents (-want +got):\n%s", diff)
		}
	})
	t.Run("missing bitmap", func(t *testing.T) {
		_, err := Dial(testutil.Context(t), addr, Options{MetaContexts: []string{ContextBaseAllocation, DirtyBitmapPrefix + "nope"}})
		if err == nil || !strings.Contains(err.Error(), `"nope"`) {
			t.Fatalf("Dial with a missing bitmap: error = %v, want one naming it", err)
		}
	})
	t.Run("no bitmap", func(t *testing.T) {
		_, err := Dial(testutil.Context(t), qemuNBD(t, img, "qcow2", "--read-only"), Options{DirtyBitmap: true})
		if err == nil || !strings.Contains(err.Error(), "no dirty bitmap") {
			t.Fatalf("Dial without bitmaps: error = %v, want no dirty bitmap", err)
		}
	})
}
