package transfer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// attemptsSource is a backend.StreamReader whose ReadTo, like the HTTP
// backend's, gives w one body per attempt and resumes after the bytes w
// took; every attempt but the last breaks after cut bytes.
type attemptsSource struct {
	data     []byte
	cut      int
	attempts int
	allCut   bool // the last attempt breaks too
	calls    int
}

func (s *attemptsSource) ReadTo(ctx context.Context, w io.Writer, off, length int64) error {
	rf := w.(io.ReaderFrom)
	done := int64(0)
	for attempt := 1; ; attempt++ {
		s.calls++
		rest := s.data[off+done : off+length]
		var body io.Reader = bytes.NewReader(rest)
		if (attempt < s.attempts || s.allCut) && len(rest) > s.cut {
			body = io.MultiReader(bytes.NewReader(rest[:s.cut]), errReader{errors.New("connection reset")})
		}
		cr := &countingReader{r: body}
		_, werr := rf.ReadFrom(cr)
		done += cr.n
		if werr != nil {
			return werr
		}
		if done == length {
			return nil
		}
		if attempt == s.attempts {
			return errors.New("out of attempts")
		}
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// sinkStreamer is a backend.ChunkWriter that reads length bytes into buf at off,
// or fails after failAt bytes.
type sinkStreamer struct {
	got    []byte
	failAt int64
}

var errSink = errors.New("target full")

func (s *sinkStreamer) WriteStream(ctx context.Context, r io.Reader, off, length, step int64, buf []byte, acked func(int64)) error {
	for done := int64(0); done < length; {
		n := min(int64(len(buf)), length-done)
		if s.failAt > 0 && done+n > s.failAt {
			return errSink
		}
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return err
		}
		copy(s.got[off+done:], buf[:n])
		done += n
		acked(n)
	}
	return nil
}

// TestStreamDownloadAttempts: one stream reads the bodies of several GET
// attempts in turn and gets every byte once; a target failure ends the
// GETs with that failure; GETs that all fail end the stream with their
// error. Nothing is left waiting.
func TestStreamDownloadAttempts(t *testing.T) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	const off, length = 1000, 900000
	c := &copier{}
	buf := make([]byte, 64<<10)

	src := &attemptsSource{data: data, cut: 200001, attempts: 10}
	dst := &sinkStreamer{got: make([]byte, len(data))}
	done := make(chan error, 1)
	go func() { done <- c.streamDownload(context.Background(), src, dst, off, length, buf) }()
	if err := waitErr(t, done); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst.got[off:off+length], data[off:off+length]) || src.calls != 5 {
		t.Fatalf("copied wrong bytes or used %d attempts, want 5", src.calls)
	}

	full := &sinkStreamer{got: make([]byte, len(data)), failAt: 300000}
	go func() {
		done <- c.streamDownload(context.Background(), &attemptsSource{data: data, cut: 100000, attempts: 10}, full, off, length, buf)
	}()
	if err := waitErr(t, done); !errors.Is(err, errSink) {
		t.Fatalf("error = %v, want the target's", err)
	}

	failing := &attemptsSource{data: data, cut: 100000, attempts: 3, allCut: true}
	go func() {
		done <- c.streamDownload(context.Background(), failing, &sinkStreamer{got: make([]byte, len(data))}, off, length, buf)
	}()
	if err := waitErr(t, done); err == nil || err.Error() != "out of attempts" {
		t.Fatalf("error = %v, want the source's", err)
	}
}

func waitErr(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("streamDownload did not return")
		return nil
	}
}
