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
)

const (
	benchImage   = 256 << 20
	benchRequest = 64 << 20
)

// BenchmarkNBD moves data over HTTPS through the daemon to and from a real
// qemu-nbd, in requests of 64 MiB on one connection, with default buffers
// and serial (depth 1) or pipelined copies. Client and daemon share the
// process, so a CPU profile shows both; the daemon's part is under
// net/http.(*conn).serve, copyIn, readSlot and the nbd reader.
func BenchmarkNBD(b *testing.B) {
	path := filepath.Join(b.TempDir(), "disk.raw")
	// Data everywhere, so downloads read it from the image.
	if err := os.WriteFile(path, pattern(benchImage, 9), 0o644); err != nil {
		b.Fatal(err)
	}
	url := startQemuNBD(b, path, "raw", false)
	for _, depth := range []int{1, 2, 3} {
		b.Run(fmt.Sprint("depth=", depth), func(b *testing.B) { benchTransfer(b, url, depth) })
	}
}

// BenchmarkNBDLatency is BenchmarkNBD against storage that takes 2 ms per
// request (nbdkit memory with the delay filter), where overlapping the
// backend with the client pays most.
func BenchmarkNBDLatency(b *testing.B) {
	url := startNBDKit(b, "--filter=delay", "memory", fmt.Sprint("size=", benchImage), "delay-read=2ms", "delay-write=2ms")
	for _, depth := range []int{1, 2, 3} {
		b.Run(fmt.Sprint("depth=", depth), func(b *testing.B) { benchTransfer(b, url, depth) })
	}
}

func benchTransfer(b *testing.B, nbdURL string, depth int) {
	e := startDaemonOptions(b, func(c *config.Config) { c.BackendNBD.BufferSize = config.Default().BackendNBD.BufferSize },
		Options{PipelineDepth: depth})
	e.addTicket(b, "bench-ticket-0001", nbdURL, benchImage, `["read", "write"]`)
	url := e.base + "/images/bench-ticket-0001"
	data := pattern(benchRequest, 3)
	b.Run("upload", func(b *testing.B) {
		b.SetBytes(benchRequest)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			off := int64(i%(benchImage/benchRequest)) * benchRequest
			req, err := http.NewRequest("PUT", url+"?flush=n", bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", off, off+benchRequest-1))
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
		b.SetBytes(benchRequest)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			off := int64(i%(benchImage/benchRequest)) * benchRequest
			req, err := http.NewRequest("GET", url, nil)
			if err != nil {
				b.Fatal(err)
			}
			req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+benchRequest-1))
			resp, err := e.https.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if err != nil || n != benchRequest || resp.StatusCode != http.StatusPartialContent {
				b.Fatalf("GET = %d, %d bytes, %v", resp.StatusCode, n, err)
			}
		}
	})
}
