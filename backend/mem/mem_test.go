package mem

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/backend"
)

const c = ChunkSize

func TestExtentsZero(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name string
		size int64
		ops  func(t *testing.T, b *Backend)
		want []backend.Extent
	}{
		{
			name: "empty",
			size: 4 * c,
			ops:  func(*testing.T, *Backend) {},
			want: []backend.Extent{{Start: 0, Length: 4 * c, Zero: true, Hole: true}},
		},
		{
			name: "data zero hole",
			size: 4*c + 100,
			ops: func(t *testing.T, b *Backend) {
				mustWrite(t, b, bytes.Repeat([]byte{1}, 10), c+5)
				mustZero(t, b, 2*c, c, false)
			},
			want: []backend.Extent{
				{Start: 0, Length: c, Zero: true, Hole: true},
				{Start: c, Length: c},
				{Start: 2 * c, Length: c, Zero: true},
				{Start: 3 * c, Length: c + 100, Zero: true, Hole: true},
			},
		},
		{
			name: "punch",
			size: 3 * c,
			ops: func(t *testing.T, b *Backend) {
				mustWrite(t, b, bytes.Repeat([]byte{1}, 3*c), 0)
				mustZero(t, b, c, c, true)
			},
			want: []backend.Extent{
				{Start: 0, Length: c},
				{Start: c, Length: c, Zero: true, Hole: true},
				{Start: 2 * c, Length: c},
			},
		},
		{
			name: "short tail chunk zeroed",
			size: c + 10,
			ops: func(t *testing.T, b *Backend) {
				mustWrite(t, b, []byte{1}, c)
				mustZero(t, b, c, 10, false)
			},
			want: []backend.Extent{
				{Start: 0, Length: c, Zero: true, Hole: true},
				{Start: c, Length: 10, Zero: true},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b := New(tc.size)
			tc.ops(t, b)
			got, err := b.Extents(ctx, backend.ContextZero)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("extents (-want +got):\n%s", diff)
			}
		})
	}
}

func TestExtentsDirty(t *testing.T) {
	ctx := context.Background()
	caps := DefaultCaps()
	caps.Extents = append(caps.Extents, backend.ContextDirty)
	data := bytes.Repeat([]byte{7}, 4*c)
	b := NewWithDataCaps(data, caps)
	mustWrite(t, b, []byte{1}, c)
	mustZero(t, b, 3*c, c, true)
	got, err := b.Extents(ctx, backend.ContextDirty)
	if err != nil {
		t.Fatal(err)
	}
	want := []backend.Extent{
		{Start: 0, Length: c},
		{Start: c, Length: c, Dirty: true},
		{Start: 2 * c, Length: c},
		{Start: 3 * c, Length: c, Dirty: true, Zero: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dirty extents (-want +got):\n%s", diff)
	}
	b.ClearDirty()
	got, err = b.Extents(ctx, backend.ContextDirty)
	if err != nil {
		t.Fatal(err)
	}
	want = []backend.Extent{
		{Start: 0, Length: 3 * c},
		{Start: 3 * c, Length: c, Zero: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dirty extents after ClearDirty (-want +got):\n%s", diff)
	}
}

func TestDirtyNotSupported(t *testing.T) {
	b := New(c)
	if _, err := b.Extents(context.Background(), backend.ContextDirty); !errors.Is(err, backend.ErrNotSupported) {
		t.Errorf("dirty extents without ContextDirty: got %v, want ErrNotSupported", err)
	}
}

func TestReadOnly(t *testing.T) {
	caps := DefaultCaps()
	caps.ReadOnly = true
	b := NewWithCaps(c, caps)
	if err := b.WriteAt(context.Background(), []byte{1}, 0); !errors.Is(err, backend.ErrReadOnly) {
		t.Errorf("write: got %v, want ErrReadOnly", err)
	}
	if err := b.Zero(context.Background(), 0, 1, false); !errors.Is(err, backend.ErrReadOnly) {
		t.Errorf("zero: got %v, want ErrReadOnly", err)
	}
}

func TestNewWithDataAndStats(t *testing.T) {
	ctx := context.Background()
	data := make([]byte, 3*c+7)
	data[c+1] = 9
	data[len(data)-1] = 3
	b := NewWithData(data)
	if got := b.Bytes(); !bytes.Equal(got, data) {
		t.Error("Bytes differ from the data given")
	}
	buf := make([]byte, 100)
	if err := b.ReadAt(ctx, buf, c); err != nil {
		t.Fatal(err)
	}
	if err := b.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	want := Stats{Reads: 1, ReadBytes: 100, Flushes: 1}
	if diff := cmp.Diff(want, b.Stats()); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	got, err := b.Extents(ctx, backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	wantExt := []backend.Extent{
		{Start: 0, Length: c, Zero: true, Hole: true},
		{Start: c, Length: c},
		{Start: 2 * c, Length: c, Zero: true, Hole: true},
		{Start: 3 * c, Length: 7},
	}
	if diff := cmp.Diff(wantExt, got); diff != "" {
		t.Errorf("extents (-want +got):\n%s", diff)
	}
}

func TestLargeSparseIsCheap(t *testing.T) {
	ctx := context.Background()
	b := New(32 << 30)
	mustWrite(t, b, []byte("hello"), 16<<30)
	got, err := b.Extents(ctx, backend.ContextZero)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[1].Start != 16<<30 || got[1].Zero {
		t.Errorf("extents of 32 GiB image with one write: got %+v", got)
	}
	if n := len(b.chunks); n != 1 {
		t.Errorf("stored chunks: got %d, want 1", n)
	}
}

func mustWrite(t *testing.T, b *Backend, p []byte, off int64) {
	t.Helper()
	if err := b.WriteAt(context.Background(), p, off); err != nil {
		t.Fatal(err)
	}
}

func mustZero(t *testing.T, b *Backend, off, length int64, punch bool) {
	t.Helper()
	if err := b.Zero(context.Background(), off, length, punch); err != nil {
		t.Fatal(err)
	}
}
