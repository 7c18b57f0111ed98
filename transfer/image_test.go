package transfer

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/daemon/daemontest"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/nbdlocal"
	"github.com/imageio/imageio/qemuimg"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// imageiod is a real daemon running in the test process, over HTTPS, with
// its local Unix socket service when asked.
type imageiod struct {
	d   *daemontest.Daemon
	tls testutil.TLSFiles
}

func startDaemon(t testing.TB, local bool) *imageiod {
	t.Helper()
	d := daemontest.Start(t, daemontest.Options{Local: local})
	return &imageiod{d: d, tls: d.TLS}
}

// addDisk makes a new raw image of size bytes (the disk on the daemon's
// side), serves it with qemu-nbd as vdsm does, and adds a read-write ticket
// for it; it returns the transfer URL and the image.
func (s *imageiod) addDisk(t *testing.T, size int64) (string, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "disk.raw")
	if err := qemuimg.Create(context.Background(), path, qemuimg.CreateOptions{Format: "raw", Size: size}); err != nil {
		t.Fatal(err)
	}
	return s.addNBD(t, path, "raw"), path
}

// addNBD serves the image at path with qemu-nbd and adds a ticket for it.
func (s *imageiod) addNBD(t testing.TB, path, format string) string {
	t.Helper()
	info, err := qemuimg.Info(context.Background(), path, qemuimg.Options{Format: format})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbdlocal.Start(context.Background(), nbdlocal.Config{Path: path, Format: format, Shared: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Stop(); err != nil {
			t.Error(err)
		}
	})
	return s.addTicket(t, srv.URL(), info.VirtualSize)
}

func (s *imageiod) addTicket(t testing.TB, url string, size int64) string {
	t.Helper()
	return s.d.AddTicket(t, url, size)
}

func compare(t *testing.T, a, fa, b, fb string) {
	t.Helper()
	if err := qemuimg.Compare(context.Background(), a, b, qemuimg.CompareOptions{FormatA: fa, FormatB: fb}); err != nil {
		t.Fatal(err)
	}
}

// progressCheck records progress reports and checks them.
type progressCheck struct {
	mu     sync.Mutex
	phases []string
	last   map[string]Progress
}

func (p *progressCheck) fn(r Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.last == nil {
		p.last = map[string]Progress{}
	}
	if n := len(p.phases); n == 0 || p.phases[n-1] != r.Phase {
		p.phases = append(p.phases, r.Phase)
	}
	p.last[r.Phase] = r
}

func (p *progressCheck) check(t *testing.T, phase string, total int64) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if got := p.last[phase]; got.Done != total || got.Total != total {
		t.Errorf("last %q progress %+v, want done = total = %d (phases %q)", phase, got, total, p.phases)
	}
}

var sampleRuns = []testutil.Run{
	{Off: 0, Len: 1 << 20, Kind: testutil.Data},
	{Off: 2 << 20, Len: 1 << 20, Kind: testutil.Zero},
	{Off: 4<<20 + 64<<10, Len: 3 << 20, Kind: testutil.Data},
	{Off: 9 << 20, Len: 512 << 10, Kind: testutil.Zero},
}

func TestRoundTrip(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	ctx := context.Background()
	tests := []struct {
		name   string
		size   int64
		format string // of the uploaded image
		local  bool   // daemon's Unix socket service on
		// workers of the transfer; the file backend allows one writer.
		workers int
	}{
		{name: "raw", size: 12 << 20, format: "raw"},
		{name: "qcow2 unix socket", size: 12 << 20, format: "qcow2", local: true},
		{name: "odd size", size: 12<<20 + 3*512, format: "raw"},
		{name: "odd size qcow2", size: 12<<20 + 512, format: "qcow2", local: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := startDaemon(t, tc.local)
			dir := t.TempDir()
			img := filepath.Join(dir, "image."+tc.format)
			testutil.MakeImage(t, img, tc.format, tc.size, sampleRuns, 1)

			url, disk := s.addDisk(t, tc.size)
			var up progressCheck
			res, err := Upload(ctx, UploadOptions{Path: img, URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
				Progress: up.fn, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			if res.Checksum == "" || res.Size != tc.size {
				t.Errorf("upload result %+v: want a checksum and size %d", res, tc.size)
			}
			if got := strings.HasPrefix(res.URL, "http://localhost/"); got != tc.local {
				t.Errorf("upload used %q; want the Unix socket = %v", res.URL, tc.local)
			}
			up.check(t, PhaseUploading, tc.size)
			up.check(t, PhaseVerifying, tc.size)
			compare(t, img, tc.format, disk, "raw")

			for _, format := range []string{"qcow2", "raw"} {
				out := filepath.Join(dir, "download."+format)
				var down progressCheck
				res, err := Download(ctx, DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
					Path: out, Format: format, Progress: down.fn, Verify: true})
				if err != nil {
					t.Fatal(err)
				}
				if res.Size != tc.size {
					t.Errorf("download size %d, want %d", res.Size, tc.size)
				}
				down.check(t, PhaseDownloading, tc.size)
				compare(t, out, format, img, tc.format)
				if format == "qcow2" && res.Stats.Skipped == 0 {
					t.Errorf("download stats %+v: want zero extents skipped", res.Stats)
				}
			}
		})
	}
}

func TestUploadCompressedQcow2(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	raw := filepath.Join(dir, "image.raw")
	const size = 12 << 20
	testutil.MakeImage(t, raw, "raw", size, sampleRuns, 2)
	// Compressible data: a text pattern.
	f, err := os.OpenFile(raw, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte(strings.Repeat("imageio compressed ", 100000)), 5<<20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	img := filepath.Join(dir, "image.qcow2")
	if out, err := exec.Command("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", raw, img).CombinedOutput(); err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	url, disk := s.addDisk(t, size)
	if _, err := Upload(context.Background(), UploadOptions{Path: img, URL: url,
		HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Verify: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, disk, "raw", raw, "raw")
}

func TestUploadOVAMember(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.qcow2")
	const size = 6 << 20
	raw := testutil.MakeImage(t, img, "qcow2", size, sampleRuns[:2], 3)
	ova := filepath.Join(dir, "vm.ova")
	writeOVA(t, ova, img)
	url, disk := s.addDisk(t, size)
	if _, err := Upload(context.Background(), UploadOptions{Path: ova, Member: "disk.qcow2", URL: url,
		HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Verify: true}); err != nil {
		t.Fatal(err)
	}
	compare(t, disk, "raw", raw, "raw")
}

// writeOVA writes a tar with an OVF descriptor and the disk (padded to 512
// bytes).
func writeOVA(t *testing.T, path, disk string) {
	t.Helper()
	data, err := os.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	if r := len(data) % 512; r != 0 {
		data = append(data, make([]byte, 512-r)...)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	ovf := []byte("<Envelope/>\n")
	for _, m := range []struct {
		name string
		data []byte
	}{{"vm.ovf", ovf}, {"disk.qcow2", data}} {
		if err := tw.WriteHeader(&tar.Header{Name: m.name, Mode: 0o644, Size: int64(len(m.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(m.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestSparseLarge(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, true)
	dir := t.TempDir()
	const size = 32 << 30
	img := filepath.Join(dir, "big.qcow2")
	runs := []testutil.Run{
		{Off: 0, Len: 1 << 20, Kind: testutil.Data},
		{Off: 10 << 30, Len: 2 << 20, Kind: testutil.Data},
		{Off: 20 << 30, Len: 64 << 20, Kind: testutil.Zero},
		{Off: size - 1<<20, Len: 1 << 20, Kind: testutil.Data},
	}
	makeSparseQcow2(t, img, size, runs)
	url, disk := s.addDisk(t, size)
	ctx := context.Background()
	res, err := Upload(ctx, UploadOptions{Path: img, URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
		DiskIsZero: true, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Copied != 4<<20 {
		t.Errorf("upload copied %d bytes, want %d", res.Stats.Copied, 4<<20)
	}
	compare(t, img, "qcow2", disk, "raw")
	out := filepath.Join(dir, "back.qcow2")
	res, err = Download(ctx, DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Path: out, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Copied != 4<<20 {
		t.Errorf("download copied %d bytes, want %d", res.Stats.Copied, 4<<20)
	}
	compare(t, out, "qcow2", img, "qcow2")
	if fi, err := os.Stat(out); err != nil || fi.Size() > 64<<20 {
		t.Errorf("downloaded image: %v, size %d; want a small file", err, fi.Size())
	}
}

// makeSparseQcow2 makes a qcow2 image with qemu-io writes only (no raw
// copy of 32 GiB).
func makeSparseQcow2(t *testing.T, path string, size int64, runs []testutil.Run) {
	t.Helper()
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", path, fmt.Sprint(size))
	args := []string{"-f", "qcow2"}
	for i, r := range runs {
		switch r.Kind {
		case testutil.Data:
			args = append(args, "-c", fmt.Sprintf("write -P %d %d %d", i+1, r.Off, r.Len))
		case testutil.Zero:
			args = append(args, "-c", fmt.Sprintf("write -z %d %d", r.Off, r.Len))
		}
	}
	args = append(args, path)
	testutil.RunCommand(t, "qemu-io", args...)
}

func TestDroppedConnections(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	// Data runs of 6 MiB (one request each) between holes; the relay
	// cuts every connection in its third request.
	const size = 64 << 20
	img := filepath.Join(dir, "image.raw")
	var runs []testutil.Run
	for off := int64(0); off < size; off += 8 << 20 {
		runs = append(runs, testutil.Run{Off: off, Len: 6 << 20, Kind: testutil.Data})
	}
	testutil.MakeImage(t, img, "raw", size, runs, 4)
	url, disk := s.addDisk(t, size)
	r := testutil.StartRelay(t, s.d.RemoteAddr().String(), 15<<20)
	relayed := strings.Replace(url, s.d.RemoteAddr().String(), r.Addr(), 1)
	var notes atomic.Int64
	opts := httpbackend.Options{CAFile: s.tls.CAFile, Retries: 10, Notify: func(string) { notes.Add(1) }}
	ctx := context.Background()
	if _, err := Upload(ctx, UploadOptions{Path: img, URL: relayed, HTTP: opts, BufferSize: 1 << 20, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	compare(t, disk, "raw", img, "raw")
	out := filepath.Join(dir, "back.raw")
	if _, err := Download(ctx, DownloadOptions{URL: relayed, HTTP: opts, Path: out, Format: "raw", BufferSize: 1 << 20, Workers: 2}); err != nil {
		t.Fatal(err)
	}
	compare(t, out, "raw", img, "raw")
	if r.Cuts() == 0 || notes.Load() == 0 {
		t.Errorf("relay cut %d connections, %d retry messages; want some of both", r.Cuts(), notes.Load())
	}
}

// cancelAt returns a context and a progress function that cancels it
// once phase has done bytes; the context ends with the test at the latest.
func cancelAt(t *testing.T, phase string, done int64) (context.Context, func(Progress)) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return ctx, func(p Progress) {
		if p.Phase == phase && p.Done >= done {
			cancel()
		}
	}
}

func TestDownloadCancel(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	const size = 64 << 20
	img := filepath.Join(dir, "image.raw")
	testutil.MakeImage(t, img, "raw", size, []testutil.Run{{Off: 0, Len: size, Kind: testutil.Data}}, 5)
	url := s.addTicket(t, "file://"+img, size)
	out := filepath.Join(dir, "partial.qcow2")
	ctx, progress := cancelAt(t, PhaseDownloading, 4<<20)
	_, err := Download(ctx, DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Path: out,
		Progress: progress, BufferSize: 1 << 20})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("partial image: %v, want it removed", err)
	}

	// KeepPartial keeps it.
	ctx, progress = cancelAt(t, PhaseDownloading, 4<<20)
	_, err = Download(ctx, DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Path: out,
		Progress: progress, BufferSize: 1 << 20, KeepPartial: true})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
	if _, err := os.Stat(out); err != nil {
		t.Errorf("partial image with KeepPartial: %v", err)
	}
}

func TestUploadCancel(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	const size = 64 << 20
	img := filepath.Join(dir, "image.qcow2")
	testutil.MakeImage(t, img, "qcow2", size, []testutil.Run{{Off: 0, Len: size, Kind: testutil.Data}}, 6)
	url, _ := s.addDisk(t, size)
	ctx, progress := cancelAt(t, PhaseUploading, 4<<20)
	_, err := Upload(ctx, UploadOptions{Path: img, URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
		BufferSize: 1 << 20, Progress: progress})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("got %v, want context.Canceled", err)
	}
}

func TestVerifyMismatch(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	const size = 4 << 20
	img := filepath.Join(dir, "image.raw")
	testutil.MakeImage(t, img, "raw", size, sampleRuns[:1], 7)
	url, disk := s.addDisk(t, size)
	// The disk is not zero, but we say it is: the zero extent is skipped
	// and the checksums differ.
	if err := os.WriteFile(disk, []byte(strings.Repeat("x", size)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Upload(context.Background(), UploadOptions{Path: img, URL: url,
		HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, DiskIsZero: true, Verify: true})
	var ve *VerifyError
	if !errors.Is(err, ErrVerifyMismatch) || !errors.As(err, &ve) || ve.Local == ve.Remote {
		t.Fatalf("got %v, want a VerifyError", err)
	}
}

func TestDownloadExisting(t *testing.T) {
	out := filepath.Join(t.TempDir(), "exists.qcow2")
	if err := os.WriteFile(out, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Download(context.Background(), DownloadOptions{URL: "https://127.0.0.1:1/images/x", Path: out})
	if !errors.Is(err, fs.ErrExist) {
		t.Errorf("got %v, want ErrExist", err)
	}
}

func TestIncrementalDownload(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	ctx := context.Background()
	const size = 8 << 20
	disk := filepath.Join(dir, "disk.qcow2")
	testutil.MakeImage(t, disk, "qcow2", size, sampleRuns[:3], 8)
	opts := httpbackend.Options{CAFile: s.tls.CAFile}

	// Full backup, then a checkpoint (bitmap) and changes.
	full := filepath.Join(dir, "full.qcow2")
	srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: disk, Format: "qcow2", ReadOnly: true, Shared: 8})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Download(ctx, DownloadOptions{URL: s.addTicket(t, srv.URL(), size), HTTP: opts, Path: full})
	srv.Stop()
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCommand(t, "qemu-img", "bitmap", "--add", "-f", "qcow2", disk, "b1")
	testutil.RunCommand(t, "qemu-io", "-f", "qcow2", "-c", "write -P 7 1M 64k", "-c", "write -z 4M 128k", disk)

	srv, err = nbdlocal.Start(ctx, nbdlocal.Config{Path: disk, Format: "qcow2", ReadOnly: true, Bitmap: "b1", Shared: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	url := s.d.AddDirtyTicket(t, srv.URL(), size)
	incr := filepath.Join(dir, "incr.qcow2")
	res, err := Download(ctx, DownloadOptions{URL: url, HTTP: opts, Path: incr, Incremental: true,
		BackingFile: full, BackingFormat: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Copied != 64<<10 || res.Stats.Zeroed != 128<<10 {
		t.Errorf("stats %+v: want 64 KiB copied and 128 KiB zeroed", res.Stats)
	}
	srv.Stop()
	compare(t, incr, "qcow2", disk, "qcow2")
}

// TestUploadZeroTarget checks that zero extents are not sent to a disk
// that the daemon says reads as zeros, and are sent to one with old data.
func TestUploadZeroTarget(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	const size = 12 << 20
	img := filepath.Join(t.TempDir(), "image.qcow2")
	testutil.MakeImage(t, img, "qcow2", size, sampleRuns, 3)
	tests := []struct {
		name    string
		oldData bool
	}{
		{name: "new disk"},
		{name: "disk with old data", oldData: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url, disk := s.addDisk(t, size)
			if tc.oldData {
				if err := os.WriteFile(disk, []byte(strings.Repeat("x", size)), 0o600); err != nil {
					t.Fatal(err)
				}
				// The daemon's backend opens the disk at the first request
				// after the ticket was added, so it sees the new data.
			}
			res, err := Upload(context.Background(), UploadOptions{Path: img, URL: url,
				HTTP: httpbackend.Options{CAFile: s.tls.CAFile}, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			compare(t, img, "qcow2", disk, "raw")
			if gotZeroed := res.Stats.Zeroed > 0; gotZeroed != tc.oldData {
				t.Errorf("stats %+v: zeroed = %v, want %v", res.Stats, gotZeroed, tc.oldData)
			}
		})
	}
}

// TestUploadDeadURL checks that an upload to a daemon that is not there
// fails with the connection error and leaves no qemu-nbd behind (the
// local qemu-nbd starts while the daemon is contacted).
func TestUploadDeadURL(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	img := filepath.Join(t.TempDir(), "image.qcow2")
	testutil.MakeImage(t, img, "qcow2", 4<<20, sampleRuns[:1], 8)
	_, err = Upload(context.Background(), UploadOptions{Path: img, URL: "https://" + addr + "/images/ticket",
		HTTP: httpbackend.Options{Retries: -1}})
	if err == nil || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("got %v, want connection refused", err)
	}
	if left := testutil.Children("qemu-nbd"); len(left) > 0 {
		t.Errorf("qemu-nbd left running after the failed upload: %v", left)
	}
}
