package http

import (
	"bytes"
	"context"
	"errors"
	"io"
	nethttp "net/http"
	"strings"
	"testing"

	"github.com/imageio/imageio/backend/mem"
)

// pieces is a seekable source that writes itself in pieces of size bytes
// (a PieceWriter), failing with err once pos reaches failAt (if > 0).
type pieces struct {
	data   []byte
	pos    int64
	size   int64
	failAt int64
	err    error
	writes int // WriteNTo calls
}

func (p *pieces) Read(b []byte) (int, error) {
	if p.pos >= int64(len(p.data)) {
		return 0, io.EOF
	}
	n := copy(b, p.data[p.pos:])
	p.pos += int64(n)
	return n, nil
}

func (p *pieces) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += p.pos
	default:
		return 0, errors.New("unsupported whence")
	}
	p.pos = off
	return off, nil
}

func (p *pieces) WriteNTo(w io.Writer, n int64) (int64, error) {
	p.writes++
	var total int64
	for total < n && p.pos < int64(len(p.data)) {
		if p.failAt > 0 && p.pos >= p.failAt {
			return total, p.err
		}
		end := min(p.pos+p.size, p.pos+n-total, int64(len(p.data)))
		k, err := w.Write(p.data[p.pos:end])
		p.pos += int64(k)
		total += int64(k)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func TestWriteFromPieceWriter(t *testing.T) {
	const size = 8 << 20
	tests := []struct {
		name  string
		tls   bool
		fault func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool
	}{
		{name: "plain"},
		{name: "tls", tls: true},
		{name: "reset every 3rd", fault: func(w nethttp.ResponseWriter, r *nethttp.Request, n int) bool {
			if n > 2 && n%3 == 0 {
				resetConn(w)
				return true
			}
			return false
		}},
		{name: "read half of PUT body", fault: resetOddPutHalfway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, mem.New(size), tc.tls, nil)
			b := open(t, s, Options{})
			s.setFault(tc.fault)
			want := randomData(size, 6)
			ctx := context.Background()
			const chunk = 3<<20 + 5
			for off := int64(0); off < size; off += chunk {
				n := min(chunk, size-off)
				src := &pieces{data: want[off : off+n], size: 1 << 20}
				if err := b.WriteFrom(ctx, src, off, n); err != nil {
					t.Fatalf("WriteFrom %d: %v", off, err)
				}
				if src.writes == 0 {
					t.Errorf("WriteFrom %d (tls %v): WriteNTo not used", off, tc.tls)
				}
			}
			if !bytes.Equal(s.img.Bytes(), want) {
				t.Fatal("data written differs")
			}
		})
	}
}

func TestWriteFromPieceWriterErrors(t *testing.T) {
	errSource := errors.New("bad sector")
	tests := []struct {
		name string
		src  *pieces
		want string
	}{
		{name: "source fails", src: &pieces{data: randomData(4<<20, 7), size: 1 << 20, failAt: 2 << 20, err: errSource}, want: "bad sector"},
		{name: "source short", src: &pieces{data: randomData(1<<20, 7), size: 1 << 20}, want: "reading the source"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newTestServer(t, mem.New(8<<20), false, nil)
			b := open(t, s, Options{Retries: 1})
			err := b.WriteFrom(context.Background(), tc.src, 0, 4<<20)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("WriteFrom: got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
