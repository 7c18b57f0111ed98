package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/backend/mem"
)

// The HTTP backend writes a relaySource to the connection as it relays.
var _ httpbackend.PieceWriter = (*relaySource)(nil)

// memRelay relays a backend's reads to a writer through buf, as
// backend/nbd does with its replies.
type memRelay struct{ backend.Backend }

func (m memRelay) ReadStream(ctx context.Context, w io.Writer, off, length, step int64, buf []byte) (int64, error) {
	var done int64
	for done < length {
		p := buf[:min(int64(len(buf)), length-done)]
		if err := m.ReadAt(ctx, p, off+done); err != nil {
			return done, err
		}
		n, err := w.Write(p)
		done += int64(n)
		if err != nil {
			return done, err
		}
	}
	return done, nil
}

func TestRelaySource(t *testing.T) {
	data := randomBytes(5<<20+333, 14)
	const off = 777
	length := int64(len(data) - off - 11)
	t.Run("pieces, reads and seeks", func(t *testing.T) {
		var progress int64
		src := memRelay{mem.NewWithData(data)}
		r := newRelaySource(context.Background(), src, src, off, length, make([]byte, 1<<20), func(n int64) { progress += n })
		var got bytes.Buffer
		for _, n := range []int64{10000, -1000, 3 << 20, length} {
			if n < 0 {
				if _, err := io.CopyN(&got, r, -n); err != nil {
					t.Fatal(err)
				}
				continue
			}
			before := got.Len()
			k, err := r.WriteNTo(&got, n)
			if want := min(n, length-int64(before)); err != nil || k != want || int64(got.Len()-before) != want {
				t.Fatalf("WriteNTo(%d) = %d, %v; want %d", n, k, err, want)
			}
		}
		if !bytes.Equal(got.Bytes(), data[off:off+length]) {
			t.Fatal("data differs")
		}
		// A resend from the start counts no progress twice.
		if _, err := r.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
		got.Reset()
		if _, err := r.WriteNTo(&got, length); err != nil || !bytes.Equal(got.Bytes(), data[off:off+length]) {
			t.Fatalf("after a seek: %v", err)
		}
		if progress != length {
			t.Errorf("progress %d, want %d", progress, length)
		}
	})
	t.Run("write fails", func(t *testing.T) {
		src := memRelay{mem.NewWithData(data)}
		r := newRelaySource(context.Background(), src, src, 0, int64(len(data)), make([]byte, 1<<20), func(int64) {})
		w := &shortWriter{limit: 1<<20 + 5}
		n, err := r.WriteNTo(w, int64(len(data)))
		if !errors.Is(err, errFull) || n != 1<<20+5 {
			t.Fatalf("WriteNTo = %d, %v; want %d, the writer's error", n, err, 1<<20+5)
		}
		if pos, _ := r.Seek(0, io.SeekCurrent); pos != n {
			t.Fatalf("position %d after the failed write, want %d", pos, n)
		}
	})
	t.Run("source fails", func(t *testing.T) {
		src := memRelay{failAt{Backend: mem.NewWithData(data), bad: 2<<20 + 1}}
		r := newRelaySource(context.Background(), src, src, 0, int64(len(data)), make([]byte, 1<<20), func(int64) {})
		n, err := r.WriteNTo(io.Discard, int64(len(data)))
		if !errors.Is(err, errBad) || n != 2<<20 {
			t.Fatalf("WriteNTo = %d, %v; want %d, the source's error", n, err, 2<<20)
		}
	})
}
