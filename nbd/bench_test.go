package nbd

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/imageio/imageio/internal/testutil"
)

// BenchmarkCopy copies a qcow2 image of IMAGEIO_BENCH_SIZE (e.g. "4G")
// from one qemu-nbd to another through the client, and times qemu-img
// convert and nbdcopy on the same image in the same run. Run it with
//
//	IMAGEIO_BENCH_SIZE=4G go test -run XXX -bench Copy -benchtime 1x ./nbd
func BenchmarkCopy(b *testing.B) {
	sizeEnv := os.Getenv("IMAGEIO_BENCH_SIZE")
	if sizeEnv == "" {
		b.Skip("set IMAGEIO_BENCH_SIZE (e.g. 4G) to run")
	}
	size, err := parseSize(sizeEnv)
	if err != nil {
		b.Fatal(err)
	}
	for _, tool := range []string{"qemu-img", "qemu-nbd", "nbdcopy"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s is not installed", tool)
		}
	}
	dir := b.TempDir()
	src := filepath.Join(dir, "src.qcow2")
	start := time.Now()
	layout := buildBenchImage(b, src, size)
	b.Logf("built %s in %v: %s", src, time.Since(start).Round(time.Millisecond), layout)
	cache := cacheArgs(dir)

	type result struct {
		name string
		wall time.Duration
	}
	var results []result
	for i := 0; i < b.N; i++ {
		srcAddr, stopSrc := serve(b, src, append([]string{"--read-only", "--allocation-depth"}, cache...)...)

		for _, conns := range []int{1, 4} {
			dst := filepath.Join(dir, "dst.qcow2")
			testutil.RunCommand(b, "qemu-img", "create", "-q", "-f", "qcow2", dst, strconv.FormatInt(size, 10))
			dstAddr, stopDst := serve(b, dst, cache...)
			b.ResetTimer()
			start := time.Now()
			if err := benchCopy(context.Background(), srcAddr, dstAddr, conns); err != nil {
				b.Fatal(err)
			}
			wall := time.Since(start)
			b.StopTimer()
			stopDst()
			testutil.RunCommand(b, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", src, dst)
			os.Remove(dst)
			results = append(results, result{fmt.Sprintf("imageio nbd client, %d connection(s), 4 workers", conns), wall})
		}

		dst := filepath.Join(dir, "nbdcopy.qcow2")
		testutil.RunCommand(b, "qemu-img", "create", "-q", "-f", "qcow2", dst, strconv.FormatInt(size, 10))
		dstAddr, stopDst := serve(b, dst, cache...)
		start := time.Now()
		testutil.RunCommand(b, "nbdcopy", nbdURI(srcAddr), nbdURI(dstAddr))
		results = append(results, result{"nbdcopy qemu-nbd -> qemu-nbd (defaults)", time.Since(start)})
		stopDst()
		testutil.RunCommand(b, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", src, dst)
		os.Remove(dst)
		stopSrc()

		dst = filepath.Join(dir, "convert.qcow2")
		start = time.Now()
		testutil.RunCommand(b, "qemu-img", "convert", "-p", "-T", "none", "-t", "none", "-f", "qcow2", "-O", "qcow2", src, dst)
		results = append(results, result{"qemu-img convert -T none -t none (file -> file)", time.Since(start)})
		testutil.RunCommand(b, "qemu-img", "compare", "-q", "-f", "qcow2", "-F", "qcow2", src, dst)
		os.Remove(dst)
	}
	metric := []string{"client-1conn-s", "client-4conn-s", "nbdcopy-s", "qemu-img-convert-s"}
	fmt.Printf("\nBenchmarkCopy: %s qcow2 (%s), cache %s\n", sizeEnv, layout, strings.Join(cache, " "))
	fmt.Printf("%-50s %8s %10s\n", "copy", "wall s", "GiB/s virt")
	for i, r := range results {
		s := r.wall.Seconds()
		fmt.Printf("%-50s %8.2f %10.2f\n", r.name, s, float64(size)/(1<<30)/s)
		if i < len(metric) {
			b.ReportMetric(s, metric[i])
		}
	}
}

// benchCopy copies the source export to the destination export with 4
// workers over the source extents: data in 8 MiB requests, zero extents
// with Zero, holes skipped (the destination is new).
func benchCopy(ctx context.Context, srcAddr, dstAddr Address, conns int) error {
	const workers, chunk = 4, 8 << 20
	var srcs, dsts []*Client
	defer func() {
		for _, c := range append(srcs, dsts...) {
			c.Close()
		}
	}()
	for i := 0; i < conns; i++ {
		s, err := Dial(ctx, srcAddr, Options{})
		if err != nil {
			return err
		}
		srcs = append(srcs, s)
		d, err := Dial(ctx, dstAddr, Options{MetaContexts: []string{}})
		if err != nil {
			return err
		}
		dsts = append(dsts, d)
	}
	exts, err := srcs[0].Extents(ctx, 0, srcs[0].Size())
	if err != nil {
		return err
	}
	type task struct {
		off, n int64
		zero   bool
	}
	tasks := make(chan task)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		defer close(tasks)
		for _, e := range exts {
			if e.Hole {
				continue
			}
			if e.Zero {
				select {
				case tasks <- task{e.Start, e.Length, true}:
				case <-gctx.Done():
					return gctx.Err()
				}
				continue
			}
			for off := e.Start; off < e.End(); off += chunk {
				select {
				case tasks <- task{off, min(chunk, e.End()-off), false}:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
		}
		return nil
	})
	for w := 0; w < workers; w++ {
		src, dst := srcs[w%conns], dsts[w%conns]
		g.Go(func() error {
			buf := make([]byte, chunk)
			for t := range tasks {
				if t.zero {
					if err := dst.Zero(gctx, t.off, t.n, 0); err != nil {
						return err
					}
					continue
				}
				p := buf[:t.n]
				if err := src.ReadAt(gctx, p, t.off); err != nil {
					return err
				}
				if err := dst.WriteAt(gctx, p, t.off); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	for _, d := range dsts {
		if err := d.Flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// buildBenchImage writes a qcow2 of size at path: about half random data,
// a quarter zero clusters and a quarter holes, in runs of 64 KiB to
// 16 MiB. It writes through qemu-nbd with this client, in one pass.
func buildBenchImage(b *testing.B, path string, size int64) string {
	testutil.RunCommand(b, "qemu-img", "create", "-q", "-f", "qcow2", path, strconv.FormatInt(size, 10))
	addr, stop := serve(b, path)
	defer stop()
	ctx := context.Background()
	c, err := Dial(ctx, addr, Options{MetaContexts: []string{}})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	rng := rand.New(rand.NewPCG(42, 4242))
	var data, zero, hole int64
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(4)
	for off := int64(0); off < size; {
		n := min(int64(1+rng.IntN(256))*(64<<10), size-off)
		switch k := rng.IntN(4); {
		case k < 2:
			data += n
			for pos := off; pos < off+n; pos += 8 << 20 {
				pos, m, seed := pos, min(8<<20, off+n-pos), rng.Uint64()
				g.Go(func() error {
					r := rand.New(rand.NewPCG(seed, seed+1))
					return c.WriteAt(gctx, randomBytes(r, int(m)), pos)
				})
			}
		case k == 2:
			zero += n
			zoff := off // off changes below, before the goroutine runs
			g.Go(func() error { return c.Zero(gctx, zoff, n, ZeroNoHole) })
		default:
			hole += n
		}
		off += n
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	if err := c.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	c.Close()
	stop()
	// Report what qemu-img map sees, not what was asked for.
	var entries []mapEntry
	if err := json.Unmarshal([]byte(testutil.RunCommand(b, "qemu-img", "map", "--output=json", "-f", "qcow2", path)), &entries); err != nil {
		b.Fatal(err)
	}
	data, zero, hole = 0, 0, 0
	for _, e := range entries {
		switch {
		case e.Data:
			data += e.Length
		case e.Present:
			zero += e.Length
		default:
			hole += e.Length
		}
	}
	return fmt.Sprintf("%.2f GiB data, %.2f GiB zero clusters, %.2f GiB holes",
		float64(data)/(1<<30), float64(zero)/(1<<30), float64(hole)/(1<<30))
}

// serve starts qemu-nbd for a qcow2 image and returns its address and a
// function that stops it (also called at cleanup).
func serve(b *testing.B, image string, extra ...string) (Address, func()) {
	sock := testutil.SocketPath(b)
	args := append([]string{"--persistent", "--shared=8", "--socket=" + sock, "--format=qcow2"}, extra...)
	args = append(args, image)
	cmd := exec.Command("qemu-nbd", args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	}
	b.Cleanup(stop)
	for deadline := time.Now().Add(20 * time.Second); ; {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-exited:
			b.Fatalf("qemu-nbd exited: %s", stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			b.Fatal("qemu-nbd did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return Address{Network: "unix", Addr: sock}, stop
}

// cacheArgs returns qemu-nbd cache options: O_DIRECT when dir allows it.
func cacheArgs(dir string) []string {
	f, err := os.OpenFile(filepath.Join(dir, "odirect"), os.O_CREATE|os.O_RDWR|syscall.O_DIRECT, 0o600)
	if err != nil {
		return []string{"--cache=writeback", "--aio=threads"}
	}
	f.Close()
	os.Remove(f.Name())
	return []string{"--cache=none", "--aio=native"}
}

func nbdURI(a Address) string { return "nbd+unix:///?socket=" + a.Addr }

// parseSize parses sizes like 4G, 512M, 1048576.
func parseSize(s string) (int64, error) {
	mult := int64(1)
	switch strings.ToUpper(s[len(s)-1:]) {
	case "K":
		mult = 1 << 10
	case "M":
		mult = 1 << 20
	case "G":
		mult = 1 << 30
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// BenchmarkReadTo reads a 256 MiB raw image from qemu-nbd (page cache) to
// io.Discard: with ReadAt into two 4 MiB buffers, the next read in flight
// while a buffer is written, as the buffered paths do, and with ReadTo
// relaying 4 MiB reads through 256 KiB.
//
//	go test -run XXX -bench ReadTo -benchtime 20x ./nbd
func BenchmarkReadTo(b *testing.B) {
	testutil.Need(b, "qemu-img", "qemu-nbd")
	const size = 256 << 20
	img := filepath.Join(b.TempDir(), "disk.raw")
	data := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i+8 <= len(data); i += 8 {
		binary.LittleEndian.PutUint64(data[i:], rng.Uint64())
	}
	if err := os.WriteFile(img, data, 0o644); err != nil {
		b.Fatal(err)
	}
	c := dial(b, qemuNBD(b, img, "raw", "--cache=writeback"), Options{})
	ctx := context.Background()
	b.Run("ReadAt", func(b *testing.B) {
		const piece = 4 << 20
		bufs := [2][]byte{make([]byte, piece), make([]byte, piece)}
		b.SetBytes(size)
		for range b.N {
			var done [2]chan error
			read := func(i int, off int64) {
				done[i] = make(chan error, 1)
				go func() { done[i] <- c.ReadAt(ctx, bufs[i], off) }()
			}
			read(0, 0)
			for k, off := 0, int64(0); off < size; k, off = k+1, off+piece {
				if off+piece < size {
					read((k+1)%2, off+piece)
				}
				if err := <-done[k%2]; err != nil {
					b.Fatal(err)
				}
				io.Discard.Write(bufs[k%2])
			}
		}
	})
	b.Run("ReadTo", func(b *testing.B) {
		buf := make([]byte, 256<<10)
		b.SetBytes(size)
		for range b.N {
			if _, err := c.ReadTo(ctx, io.Discard, 0, size, 4<<20, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
