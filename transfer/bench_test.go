package transfer

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/internal/testutil"
)

// benchSize is the image size of the upload/download benchmarks
// (IMAGEIO_BENCH_SIZE in bytes, default 1 GiB): half data in runs of
// 64 KiB to 16 MiB, the rest zero clusters and holes.
func benchSize() int64 {
	if s, err := strconv.ParseInt(os.Getenv("IMAGEIO_BENCH_SIZE"), 10, 64); err == nil && s > 0 {
		return s
	}
	return 1 << 30
}

func benchRuns(size int64) []testutil.Run {
	var runs []testutil.Run
	lens := []int64{64 << 10, 1 << 20, 16 << 20, 4 << 20, 256 << 10}
	kinds := []testutil.RunKind{testutil.Data, testutil.Zero, testutil.Data, testutil.Hole}
	off := int64(0)
	for i := 0; off < size; i++ {
		n := min(lens[i%len(lens)], size-off)
		k := kinds[i%len(kinds)]
		if k != testutil.Hole {
			runs = append(runs, testutil.Run{Off: off, Len: n, Kind: k})
		}
		off += n
	}
	return runs
}

// BenchmarkUpload and BenchmarkDownload move a qcow2 image through an
// in-process imageiod over HTTPS and over its Unix socket, and time
// qemu-img convert of the same image next to them for comparison.
// IMAGEIO_BENCH_WORKERS and IMAGEIO_BENCH_BUFFER override the worker count
// and buffer size. (make bench measures the real programs, with CPU and
// RSS per process.)
func BenchmarkUpload(b *testing.B)   { benchTransfer(b, true) }
func BenchmarkDownload(b *testing.B) { benchTransfer(b, false) }

func benchTransfer(b *testing.B, upload bool) {
	testutil.Need(b, "qemu-img", "qemu-nbd", "qemu-io")
	dir := b.TempDir()
	size := benchSize()
	img := filepath.Join(dir, "image.qcow2")
	raw := testutil.MakeImage(b, img, "qcow2", size, benchRuns(size), 1)
	os.Remove(raw)

	b.Run("qemu-img-convert", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			out := filepath.Join(dir, fmt.Sprintf("convert%d.qcow2", i))
			start := time.Now()
			cmd := exec.Command("qemu-img", "convert", "-q", "-T", "none", "-t", "none", "-f", "qcow2", "-O", "qcow2", img, out)
			if o, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("%v: %s", err, o)
			}
			b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/convert")
			os.Remove(out)
		}
	})
	for _, local := range []bool{false, true} {
		name := "https"
		if local {
			name = "unix"
		}
		b.Run(name, func(b *testing.B) {
			s := startDaemon(b, local)
			var source string
			if !upload {
				source = s.addNBD(b, img, "qcow2")
			}
			for i := 0; b.Loop(); i++ {
				disk := filepath.Join(b.TempDir(), "disk.qcow2")
				if out, err := exec.Command("qemu-img", "create", "-q", "-f", "qcow2", disk, fmt.Sprint(size)).CombinedOutput(); err != nil {
					b.Fatalf("%v: %s", err, out)
				}
				url := source
				if upload {
					url = s.addNBD(b, disk, "qcow2")
				}
				opts := httpbackend.Options{CAFile: s.tls.CAFile}
				workers, _ := strconv.Atoi(os.Getenv("IMAGEIO_BENCH_WORKERS"))
				bufSize, _ := strconv.Atoi(os.Getenv("IMAGEIO_BENCH_BUFFER"))
				var err error
				if upload {
					_, err = Upload(context.Background(), UploadOptions{Path: img, URL: url, HTTP: opts,
						Workers: workers, BufferSize: bufSize})
				} else {
					out := filepath.Join(b.TempDir(), "out.qcow2")
					_, err = Download(context.Background(), DownloadOptions{URL: url, HTTP: opts, Path: out,
						Workers: workers, BufferSize: bufSize})
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(size)
		})
	}
}
