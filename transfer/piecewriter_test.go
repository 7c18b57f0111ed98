package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/backend/mem"
)

// The HTTP backend writes a sourceReader to a plain-HTTP connection from
// its pieces.
var _ httpbackend.PieceWriter = (*sourceReader)(nil)

// shortWriter accepts at most limit bytes, then fails.
type shortWriter struct {
	bytes.Buffer
	limit int
}

var errFull = errors.New("connection closed")

func (w *shortWriter) Write(p []byte) (int, error) {
	if room := w.limit - w.Len(); len(p) > room {
		w.Buffer.Write(p[:max(room, 0)])
		return max(room, 0), errFull
	}
	return w.Buffer.Write(p)
}

func TestSourceReaderWriteNTo(t *testing.T) {
	data := randomBytes(5<<20+333, 12)
	const off = 777
	length := int64(len(data) - off - 11)
	tests := []struct {
		name    string
		bufSize int
		steps   []int64 // WriteNTo sizes; a negative one is a Read of that many bytes
	}{
		{name: "whole", bufSize: 4 << 20, steps: []int64{length}},
		{name: "more than left", bufSize: 4 << 20, steps: []int64{length + 1000}},
		{name: "small pieces", bufSize: 4096 + 3, steps: []int64{10000, 1, 3 << 20, length}},
		{name: "after reads", bufSize: 1 << 20, steps: []int64{-1000, 300000, -70000, length}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var progress int64
			r := newSourceReader(context.Background(), mem.NewWithData(data), off, length, make([]byte, tc.bufSize), func(n int64) { progress += n })
			defer r.finish()
			var got bytes.Buffer
			for _, n := range tc.steps {
				if n < 0 {
					if _, err := io.CopyN(&got, r, -n); err != nil {
						t.Fatal(err)
					}
					continue
				}
				before := got.Len()
				k, err := r.WriteNTo(&got, n)
				if err != nil {
					t.Fatal(err)
				}
				if want := min(n, length-int64(before)); k != want || int64(got.Len()-before) != want {
					t.Fatalf("WriteNTo(%d): got %d (%d in writer), want %d", n, k, got.Len()-before, want)
				}
			}
			if !bytes.Equal(got.Bytes(), data[off:off+length]) {
				t.Error("data differs")
			}
			if progress != length {
				t.Errorf("progress: got %d, want %d", progress, length)
			}
		})
	}
}

func TestSourceReaderWriteNToErrors(t *testing.T) {
	data := randomBytes(4<<20, 13)
	t.Run("write fails, then rewind", func(t *testing.T) {
		var progress int64
		r := newSourceReader(context.Background(), mem.NewWithData(data), 0, int64(len(data)), make([]byte, 1<<20), func(n int64) { progress += n })
		defer r.finish()
		w := &shortWriter{limit: 1<<20 + 5}
		n, err := r.WriteNTo(w, int64(len(data)))
		if !errors.Is(err, errFull) || n != 1<<20+5 {
			t.Fatalf("WriteNTo: got %d, %v; want %d, %v", n, err, 1<<20+5, errFull)
		}
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if _, err := r.WriteNTo(&got, int64(len(data))); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), data) {
			t.Error("data after rewind differs")
		}
		if progress != int64(len(data)) {
			t.Errorf("progress: got %d, want %d (each byte once)", progress, len(data))
		}
	})
	t.Run("source fails", func(t *testing.T) {
		src := failAt{Backend: mem.NewWithData(data), bad: 2<<20 + 1}
		r := newSourceReader(context.Background(), src, 0, int64(len(data)), make([]byte, 1<<20), func(int64) {})
		defer r.finish()
		n, err := r.WriteNTo(io.Discard, int64(len(data)))
		if !errors.Is(err, errBad) || n != 2<<20 {
			t.Fatalf("WriteNTo: got %d, %v; want %d, %v", n, err, 2<<20, errBad)
		}
	})
}
