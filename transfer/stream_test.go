package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/mem"
)

// failAt fails reads that cover offset bad.
type failAt struct {
	backend.Backend
	bad int64
}

var errBad = errors.New("bad sector")

func (f failAt) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off <= f.bad && f.bad < off+int64(len(p)) {
		return errBad
	}
	return f.Backend.ReadAt(ctx, p, off)
}

func TestSourceReaderSeeks(t *testing.T) {
	data := randomBytes(1<<20+77, 11)
	src := mem.NewWithData(data)
	rng := rand.New(rand.NewPCG(1, 2))
	for _, bufSize := range []int{4096 + 3, 1 << 20, 4 << 20} {
		const off = 1000
		length := int64(len(data) - off - 5)
		var total int64
		r := newSourceReader(context.Background(), src, off, length, make([]byte, bufSize), func(n int64) { total += n })
		for range 20 {
			pos := rng.Int64N(length)
			if _, err := r.Seek(pos, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			n := min(rng.Int64N(300000), length-pos)
			got := make([]byte, n)
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("buffer %d: reading %d at %d: %v", bufSize, n, pos, err)
			}
			if !bytes.Equal(got, data[off+pos:off+pos+n]) {
				t.Fatalf("buffer %d: data at %d differs", bufSize, pos)
			}
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data[off:off+length]) {
			t.Fatalf("buffer %d: whole range: %v", bufSize, err)
		}
		r.finish()
		if total != length {
			t.Errorf("buffer %d: progress %d, want %d", bufSize, total, length)
		}
	}
}

func TestSourceReaderError(t *testing.T) {
	data := randomBytes(4<<20, 12)
	src := failAt{mem.NewWithData(data), 3 << 20}
	r := newSourceReader(context.Background(), src, 0, int64(len(data)), make([]byte, 1<<20), func(int64) {})
	defer r.finish()
	_, err := io.Copy(io.Discard, r)
	if !errors.Is(err, errBad) {
		t.Errorf("got %v, want the source error", err)
	}
}

func TestTargetWriter(t *testing.T) {
	data := randomBytes(3<<20+5, 13)
	for _, bufSize := range []int{4096 + 1, 65536 + 1, 4 << 20} {
		dst := mem.New(int64(len(data)) + 100)
		var total int64
		w := newTargetWriter(context.Background(), dst, 100, make([]byte, bufSize), func(n int64) { total += n })
		rng := rand.New(rand.NewPCG(3, 4))
		rest := data
		for len(rest) > 0 {
			n := min(len(rest), rng.IntN(200000)+1)
			var err error
			if rng.IntN(2) == 0 {
				_, err = w.Write(rest[:n])
			} else {
				_, err = w.ReadFrom(bytes.NewReader(rest[:n]))
			}
			if err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := w.flush(); err != nil {
			t.Fatal(err)
		}
		if err := w.finish(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(dst.Bytes()[100:], data) {
			t.Fatalf("buffer %d: target differs", bufSize)
		}
		if total != int64(len(data)) {
			t.Errorf("buffer %d: progress %d, want %d", bufSize, total, len(data))
		}
	}
}
