package daemon

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/imageio/imageio/config"
	"github.com/imageio/imageio/internal/testutil"
)

// benchNBD starts a daemon with default buffers and an nbd ticket for a
// raw image of size bytes served by qemu-nbd.
func benchNBD(b *testing.B, size int64) (*daemonEnv, string) {
	b.Helper()
	testutil.Need(b, "qemu-nbd")
	path := filepath.Join(b.TempDir(), "disk.raw")
	// Data everywhere, so downloads read it from the image.
	if err := os.WriteFile(path, pattern(int(size), 9), 0o644); err != nil {
		b.Fatal(err)
	}
	url := startQemuNBD(b, path, "raw", false)
	e := startDaemon(b, func(c *config.Config) { c.BackendNBD.BufferSize = config.Default().BackendNBD.BufferSize })
	e.addTicket(b, "bench-ticket-0001", url, size, `["read", "write"]`)
	return e, e.base + "/images/bench-ticket-0001"
}

// BenchmarkNBD moves data over HTTPS through the daemon to and from a real
// qemu-nbd, in requests of 64 MiB on one connection. Client and daemon
// share the process, so a CPU profile shows both.
func BenchmarkNBD(b *testing.B) {
	const image, request = 256 << 20, 64 << 20
	e, url := benchNBD(b, image)
	data := pattern(request, 3)
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(request)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			off := int64(i%(image/request)) * request
			req, err := http.NewRequest("PUT", url+"?flush=n", bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", off, off+request-1))
			resp, err := e.https.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Fatalf("PUT = %d", resp.StatusCode)
			}
		}
	})
	b.Run("download", func(b *testing.B) {
		b.SetBytes(request)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			off := int64(i%(image/request)) * request
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+request-1))
			resp, err := e.https.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != request || resp.StatusCode != http.StatusPartialContent {
				b.Fatalf("GET = %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		}
	})
}
