package file_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/backendtest"
	"github.com/imageio/imageio/backend/file"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/internal/testutil"
)

// newImage creates an empty sparse file of size bytes.
func newImage(t testing.TB, size int64) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConformance(t *testing.T) {
	for _, sparse := range []bool{true, false} {
		name := "sparse"
		if !sparse {
			name = "preallocated"
		}
		t.Run(name, func(t *testing.T) {
			backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
				b, err := file.Open(newImage(t, size), file.Options{Sparse: sparse})
				if err != nil {
					t.Fatal(err)
				}
				if !b.Direct() {
					t.Log("file system refused O_DIRECT; testing buffered I/O")
				}
				return b
			})
		})
	}
}

func TestConformanceBuffered(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		b, err := file.OpenBuffered(newImage(t, size), file.Options{Sparse: true})
		if err != nil {
			t.Fatal(err)
		}
		if b.Direct() {
			t.Fatal("OpenBuffered uses O_DIRECT")
		}
		return b
	})
}

func TestConformanceReadOnly(t *testing.T) {
	backendtest.Run(t, func(t *testing.T, size int64) backend.Backend {
		b, err := file.Open(newImage(t, size), file.Options{ReadOnly: true})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}

func TestCaps(t *testing.T) {
	b, err := file.Open(newImage(t, 1<<20), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := b.Caps()
	t.Logf("direct I/O %v, block size %d", b.Direct(), c.BlockSize)
	if c.MaxReaders != 8 || c.MaxWriters != 1 || !c.CanZero || !c.CanFlush || c.ReadOnly {
		t.Errorf("caps of a regular file: got %+v", c)
	}
	if b.Direct() && c.BlockSize != 1 && c.BlockSize != 512 && c.BlockSize != 4096 {
		t.Errorf("probed block size: got %d, want 1, 512 or 4096", c.BlockSize)
	}
	ext, err := b.Extents(context.Background(), backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	if len(ext) != 1 || ext[0] != (backend.Extent{Start: 0, Length: 1 << 20}) {
		t.Errorf("extents: got %+v, want one data extent", ext)
	}
	if _, err := b.Extents(context.Background(), backend.ContextDirty); !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("dirty extents: got %v, want ErrNotSupported", err)
	}
}

func TestZeroAllocation(t *testing.T) {
	const size = 8 << 20
	ctx := context.Background()
	tests := []struct {
		name   string
		sparse bool
		punch  bool
		hole   bool // the zeroed MiB is deallocated
	}{
		{"sparse punch", true, true, true},
		{"sparse no punch", true, false, false},
		{"not sparse, punch asked", false, true, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := newImage(t, size)
			b, err := file.Open(path, file.Options{Sparse: tc.sparse})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			data := bytes.Repeat([]byte{0x5a}, size)
			if err := b.WriteAt(ctx, data, 0); err != nil {
				t.Fatal(err)
			}
			if err := b.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			before := testutil.Allocated(t, path)
			if err := b.Zero(ctx, 1<<20, 1<<20, tc.punch); err != nil {
				t.Fatal(err)
			}
			after := testutil.Allocated(t, path)
			if tc.hole && after > before-(1<<20) {
				t.Errorf("allocated after punching 1 MiB: got %d, want <= %d", after, before-(1<<20))
			}
			if !tc.hole && after < before {
				t.Errorf("allocated after zeroing 1 MiB: got %d, want >= %d", after, before)
			}
			got := make([]byte, size)
			if err := b.ReadAt(ctx, got, 0); err != nil {
				t.Fatal(err)
			}
			clear(data[1<<20 : 2<<20])
			if !bytes.Equal(got, data) {
				t.Error("content after zero differs")
			}
		})
	}
}

func TestSmallAndOddSizes(t *testing.T) {
	ctx := context.Background()
	for _, size := range []int64{0, 1, 1000, 4096, 4097, 3*4096 + 17} {
		for _, direct := range []bool{true, false} {
			path := newImage(t, size)
			open := file.Open
			if !direct {
				open = file.OpenBuffered
			}
			b, err := open(path, file.Options{Sparse: true})
			if err != nil {
				t.Fatal(err)
			}
			if b.Size() != size {
				t.Errorf("size %d: Size() = %d", size, b.Size())
			}
			want := make([]byte, size)
			for i := range want {
				want[i] = byte(i%250 + 1)
			}
			if err := b.WriteAt(ctx, want, 0); err != nil {
				t.Fatalf("size %d direct %v: %v", size, direct, err)
			}
			if size > 2 {
				if err := b.Zero(ctx, 1, size-2, true); err != nil {
					t.Fatalf("size %d direct %v: zero: %v", size, direct, err)
				}
				clear(want[1 : size-1])
			}
			got := make([]byte, size)
			if err := b.ReadAt(ctx, got, 0); err != nil {
				t.Fatalf("size %d direct %v: %v", size, direct, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("size %d direct %v: content differs", size, direct)
			}
			if err := b.Close(); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Size() != size {
				t.Errorf("size %d direct %v: file size changed to %d", size, direct, fi.Size())
			}
		}
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := file.Open(filepath.Join(dir, "missing"), file.Options{}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want ErrNotExist", err)
	}
	if _, err := file.Open(dir, file.Options{ReadOnly: true}); err == nil {
		t.Error("directory: got no error")
	}
}

func TestUnalignedBuffers(t *testing.T) {
	ctx := context.Background()
	const size = 4 << 20
	b, err := file.Open(newImage(t, size), file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	want := make([]byte, size)
	for i := range want {
		want[i] = byte(i*13 + 1)
	}
	// Aligned offsets and lengths but a buffer at an odd address.
	src := make([]byte, size+1)[1:]
	copy(src, want)
	if err := b.WriteAt(ctx, src, 0); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, size+3)[3:]
	if err := b.ReadAt(ctx, dst, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, want) {
		t.Error("content differs")
	}
	// Unaligned offset whose misalignment equals the buffer's: only the
	// edges bounce.
	buf := file.AlignedBuffer(1<<20 + 8192)
	p := buf[100 : 100+1<<20]
	if err := b.ReadAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p, want[100:100+1<<20]) {
		t.Error("content differs for equally misaligned buffer")
	}
	for i := range p {
		p[i] = 0xee
	}
	if err := b.WriteAt(ctx, p, 100); err != nil {
		t.Fatal(err)
	}
	copy(want[100:], p)
	if err := b.ReadAt(ctx, dst, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, want) {
		t.Error("content differs after equally misaligned write")
	}
}

func benchImage(b *testing.B, size int64) *file.Backend {
	b.Helper()
	path := newImage(b, size)
	img, err := file.Open(path, file.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { img.Close() })
	buf := file.AlignedBuffer(4 << 20)
	for i := range buf {
		buf[i] = byte(i*7 + 1)
	}
	ctx := context.Background()
	for off := int64(0); off < size; off += int64(len(buf)) {
		if err := img.WriteAt(ctx, buf, off); err != nil {
			b.Fatal(err)
		}
	}
	return img
}

func BenchmarkReadAt(b *testing.B) {
	const size = 256 << 20
	img := benchImage(b, size)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		buf  []byte
	}{
		{"aligned", file.AlignedBuffer(4 << 20)},
		{"unaligned buffer", make([]byte, 4<<20+1)[1:]},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(tc.buf)))
			b.ReportAllocs()
			var off int64
			for b.Loop() {
				if err := img.ReadAt(ctx, tc.buf, off); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(tc.buf))) % size
			}
		})
	}
}

func BenchmarkWriteAt(b *testing.B) {
	const size = 256 << 20
	img := benchImage(b, size)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		buf  []byte
		skew int64
	}{
		{"aligned", file.AlignedBuffer(4 << 20), 0},
		{"unaligned buffer", make([]byte, 4<<20+1)[1:], 0},
		{"unaligned offset", file.AlignedBuffer(4 << 20), 100},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := range tc.buf {
				tc.buf[i] = byte(i + 3)
			}
			b.SetBytes(int64(len(tc.buf)))
			b.ReportAllocs()
			var off int64
			for b.Loop() {
				if err := img.WriteAt(ctx, tc.buf, off+tc.skew); err != nil {
					b.Fatal(err)
				}
				off = (off + int64(len(tc.buf))) % (size - 8<<20)
			}
		})
	}
}

func TestChecksumOverFile(t *testing.T) {
	ctx := context.Background()
	const size = 9<<20 + 4096 + 100
	path := newImage(t, size)
	want := make([]byte, size)
	for i := range 2 << 20 {
		want[1<<20+i] = byte(i*31 + 7)
	}
	want[size-1] = 9
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := file.Open(path, file.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got, err := checksum.Compute(ctx, b, "sha256", 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := checksum.Sum(bytes.NewReader(want), "sha256", 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	if got != sum {
		t.Errorf("Compute over the file: got %s, want %s", got.Checksum, sum.Checksum)
	}
}
