package transfer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageio/imageio/backend"
	httpbackend "github.com/imageio/imageio/backend/http"
	"github.com/imageio/imageio/backend/mem"
	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/nbdlocal"
	"github.com/imageio/imageio/qemuimg"
)

// backingSize is the size of the images of the backing tests.
const backingSize = 64 << 20

// change is a range of the source that differs from the base (or, for
// keep, a range that must still read as the base).
type change struct {
	name string
	off  int64
	len  int64
	// cmd is the qemu-io command that makes the change ("" for keep);
	// "%d %d" in it is the offset and the length.
	cmd string
	// zero says the range must read as zeros afterwards.
	zero bool
}

// changes are what a source holds on top of the base: new data, zeros of
// every kind qemu makes, and ranges left alone. Offsets avoid 64 KiB
// cluster boundaries on purpose in some places.
var changes = []change{
	{name: "new data", off: 4 << 20, len: 4 << 20, cmd: "write -P 0xa5 %d %d"},
	{name: "zero cluster", off: 12 << 20, len: 2 << 20, cmd: "write -z %d %d", zero: true},
	{name: "zero unmapped", off: 16 << 20, len: 2 << 20, cmd: "write -z -u %d %d", zero: true},
	{name: "zero bytes written", off: 20 << 20, len: 1 << 20, cmd: "write -P 0 %d %d", zero: true},
	{name: "discarded", off: 24 << 20, len: 2 << 20, cmd: "discard %d %d", zero: true},
	{name: "small new data", off: 28<<20 + 4096, len: 3 * 512, cmd: "write -P 0x5a %d %d"},
	{name: "small zero", off: 30<<20 + 8192, len: 4096, cmd: "write -z %d %d", zero: true},
	{name: "kept", off: 32 << 20, len: 16 << 20},
	{name: "new data at the end", off: backingSize - 1<<20, len: 1 << 20, cmd: "write -P 0x3c %d %d"},
}

// makeBase makes an image full of data in format.
func makeBase(t *testing.T, dir, format string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, "base."+format)
	testutil.MakeImage(t, path, format, size, []testutil.Run{{Off: 0, Len: size, Kind: testutil.Data}}, 41)
	return path
}

// applyChanges runs the qemu-io commands of changes on the image at path.
func applyChanges(t *testing.T, path, format string) {
	t.Helper()
	args := []string{"-f", format}
	for _, c := range changes {
		if c.cmd != "" {
			args = append(args, "-c", fmt.Sprintf(c.cmd, c.off, c.len))
		}
	}
	testutil.RunCommand(t, "qemu-io", append(args, path)...)
}

// makeSource makes a standalone copy of base in format with changes made.
func makeSource(t *testing.T, dir, base, baseFormat, format string) string {
	t.Helper()
	path := filepath.Join(dir, "source."+format)
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", baseFormat, "-O", format, base, path)
	applyChanges(t, path, format)
	return path
}

// makeOverlaySource makes a qcow2 overlay of base with changes made: the
// unchanged ranges are unallocated in it.
func makeOverlaySource(t *testing.T, dir, base, baseFormat string) string {
	t.Helper()
	path := filepath.Join(dir, "source-overlay.qcow2")
	testutil.RunCommand(t, "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", baseFormat, path)
	applyChanges(t, path, "qcow2")
	return path
}

// serve serves the image at path with qemu-nbd (read-only, as a backup
// would) and adds a ticket for it.
func (s *imageiod) serve(t *testing.T, path, format string, noBacking bool) string {
	t.Helper()
	info, err := qemuimg.Info(context.Background(), path, qemuimg.Options{Format: format})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := nbdlocal.Start(context.Background(), nbdlocal.Config{Path: path, Format: format, ReadOnly: true, NoBacking: noBacking, Shared: 8})
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

// readContent returns the content of the image at path as its guest sees
// it (through its backing chain), converted to raw by qemu-img.
func readContent(t *testing.T, path, format string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "content.raw")
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", format, "-O", "raw", path, raw)
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// checkOverlay checks that the image at path is a qcow2 overlay of base
// that reads as source, with the zero changes reading as zeros and the kept
// ranges as the base.
func checkOverlay(t *testing.T, path, source, sourceFormat, base, baseFormat string) {
	t.Helper()
	ctx := context.Background()
	info, err := qemuimg.Info(ctx, path, qemuimg.Options{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.BackingFilename != base || info.BackingFormat != baseFormat {
		t.Errorf("qemu-img info: format %q, backing file %q (%q); want qcow2 over %q (%q)",
			info.Format, info.BackingFilename, info.BackingFormat, base, baseFormat)
	}
	if err := qemuimg.Compare(ctx, source, path, qemuimg.CompareOptions{FormatA: sourceFormat, FormatB: "qcow2"}); err != nil {
		t.Errorf("qemu-img compare source and overlay: %v", err)
	}
	got := readContent(t, path, "qcow2")
	want := readContent(t, base, baseFormat)
	for _, c := range changes {
		if c.off+c.len > int64(len(got)) || c.off+c.len > int64(len(want)) {
			continue
		}
		r := got[c.off : c.off+c.len]
		switch {
		case c.zero:
			if i := bytes.IndexFunc(r, func(c rune) bool { return c != 0 }); i >= 0 {
				t.Errorf("%s (%d+%d): byte %d is %#x through the backing chain, want zeros",
					c.name, c.off, c.len, c.off+int64(i), r[i])
			}
		case c.cmd == "":
			if !bytes.Equal(r, want[c.off:c.off+c.len]) {
				t.Errorf("%s (%d+%d): differs from the base", c.name, c.off, c.len)
			}
		}
	}
}

// TestDownloadBackingFile downloads sources that differ from a base image
// in every way into qcow2 overlays of the base, and checks that each
// overlay reads, through its backing file, exactly as its source.
func TestDownloadBackingFile(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	ctx := context.Background()
	baseQcow2 := makeBase(t, dir, "qcow2", backingSize)
	baseRaw := makeBase(t, dir, "raw", backingSize)

	tests := []struct {
		name string
		// source makes the source; its result is the path and format.
		source func(t *testing.T) (string, string, string)
		// base and its format; "" format leaves it to be probed.
		base, baseFormat string
		// holesToBacking leaves the source's holes to the base.
		holesToBacking bool
		// maxCopied, if > 0, bounds the data bytes fetched.
		maxCopied int64
	}{
		{
			name: "qcow2 over nbd",
			source: func(t *testing.T) (string, string, string) {
				p := makeSource(t, t.TempDir(), baseQcow2, "qcow2", "qcow2")
				return p, "qcow2", s.serve(t, p, "qcow2", false)
			},
			base: baseQcow2, baseFormat: "qcow2",
		},
		{
			name: "raw over nbd",
			source: func(t *testing.T) (string, string, string) {
				p := makeSource(t, t.TempDir(), baseQcow2, "qcow2", "raw")
				return p, "raw", s.serve(t, p, "raw", false)
			},
			base: baseQcow2, baseFormat: "qcow2",
		},
		{
			// qemu-img convert leaves the zeros unallocated: holes of a
			// whole disk, which read as zeros and must hide the base.
			name: "sparse qcow2 over nbd",
			source: func(t *testing.T) (string, string, string) {
				dir := t.TempDir()
				p := makeSource(t, dir, baseQcow2, "qcow2", "qcow2")
				sparse := filepath.Join(dir, "sparse.qcow2")
				testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", p, sparse)
				return sparse, "qcow2", s.serve(t, sparse, "qcow2", false)
			},
			base: baseQcow2, baseFormat: "qcow2",
		},
		{
			name: "raw file",
			source: func(t *testing.T) (string, string, string) {
				p := makeSource(t, t.TempDir(), baseQcow2, "qcow2", "raw")
				return p, "raw", s.addTicket(t, "file://"+p, backingSize)
			},
			base: baseQcow2, baseFormat: "qcow2",
		},
		{
			name: "raw base",
			source: func(t *testing.T) (string, string, string) {
				p := makeSource(t, t.TempDir(), baseRaw, "raw", "qcow2")
				return p, "qcow2", s.serve(t, p, "qcow2", false)
			},
			base: baseRaw, baseFormat: "raw",
		},
		{
			name: "probed base format",
			source: func(t *testing.T) (string, string, string) {
				p := makeSource(t, t.TempDir(), baseQcow2, "qcow2", "qcow2")
				return p, "qcow2", s.serve(t, p, "qcow2", false)
			},
			base: baseQcow2,
		},
		{
			// A snapshot layer served alone: its unallocated ranges are
			// holes, left to the backing file, so only the changes move.
			name: "overlay layer alone",
			source: func(t *testing.T) (string, string, string) {
				p := makeOverlaySource(t, t.TempDir(), baseQcow2, "qcow2")
				return p, "qcow2", s.serve(t, p, "qcow2", true)
			},
			base: baseQcow2, baseFormat: "qcow2",
			holesToBacking: true, maxCopied: 8 << 20,
		},
		{
			name: "overlay with its chain",
			source: func(t *testing.T) (string, string, string) {
				p := makeOverlaySource(t, t.TempDir(), baseQcow2, "qcow2")
				return p, "qcow2", s.serve(t, p, "qcow2", false)
			},
			base: baseQcow2, baseFormat: "qcow2",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, srcFormat, url := tc.source(t)
			out := filepath.Join(t.TempDir(), "backup.qcow2")
			var p progressCheck
			res, err := Download(ctx, DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
				Path: out, BackingFile: tc.base, BackingFormat: tc.baseFormat, HolesToBacking: tc.holesToBacking,
				Progress: p.fn, Verify: true})
			if err != nil {
				t.Fatal(err)
			}
			p.check(t, PhaseDownloading, backingSize)
			t.Logf("stats %+v", res.Stats)
			wantFormat := tc.baseFormat
			if wantFormat == "" {
				wantFormat = "qcow2"
			}
			checkOverlay(t, out, src, srcFormat, tc.base, wantFormat)
			if tc.maxCopied > 0 && res.Stats.Copied > tc.maxCopied {
				t.Errorf("copied %d bytes, want at most %d (the changes only)", res.Stats.Copied, tc.maxCopied)
			}
		})
	}
}

// TestDownloadBackingFileGrown downloads a disk that grew since its base
// was taken: past the end of the base the overlay must read as the disk.
func TestDownloadBackingFileGrown(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	base := makeBase(t, dir, "qcow2", backingSize-8<<20)
	src := filepath.Join(dir, "grown.qcow2")
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", base, src)
	testutil.RunCommand(t, "qemu-img", "resize", "-q", "-f", "qcow2", src, fmt.Sprint(backingSize))
	applyChanges(t, src, "qcow2")
	url := s.serve(t, src, "qcow2", false)
	out := filepath.Join(dir, "backup.qcow2")
	res, err := Download(context.Background(), DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
		Path: out, BackingFile: base, BackingFormat: "qcow2", Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Size != backingSize {
		t.Errorf("size %d, want %d", res.Size, backingSize)
	}
	if err := qemuimg.Compare(context.Background(), src, out, qemuimg.CompareOptions{FormatA: "qcow2", FormatB: "qcow2", Strict: false}); err != nil {
		t.Error(err)
	}
}

// TestDownloadLayerHolesZeroed downloads a snapshot layer served alone
// into an overlay of its parent without HolesToBacking: the overlay reads
// as the remote image (the layer, zeros where it allocates nothing), as
// for any other disk.
func TestDownloadLayerHolesZeroed(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	base := makeBase(t, dir, "qcow2", backingSize)
	layer := makeOverlaySource(t, dir, base, "qcow2")
	url := s.serve(t, layer, "qcow2", true)
	out := filepath.Join(dir, "backup.qcow2")
	res, err := Download(context.Background(), DownloadOptions{URL: url, HTTP: httpbackend.Options{CAFile: s.tls.CAFile},
		Path: out, BackingFile: base, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Stats.Copied > 8<<20 {
		t.Errorf("copied %d bytes, want only the layer's data", res.Stats.Copied)
	}
	alone := fmt.Sprintf(`json:{"driver": "qcow2", "backing": null, "file": {"driver": "file", "filename": %q}}`, layer)
	if err := qemuimg.Compare(context.Background(), alone, out, qemuimg.CompareOptions{FormatB: "qcow2"}); err != nil {
		t.Error(err)
	}
}

// TestDownloadHolesToBackingNeedsBacking checks the options that
// HolesToBacking needs, before the daemon is contacted.
func TestDownloadHolesToBackingNeedsBacking(t *testing.T) {
	dir := t.TempDir()
	for _, o := range []DownloadOptions{
		{HolesToBacking: true},
		{HolesToBacking: true, BackingFile: "base.qcow2", Incremental: true},
	} {
		o.URL, o.Path = "https://127.0.0.1:1/images/nothing", filepath.Join(dir, "out.qcow2")
		_, err := Download(context.Background(), o)
		if err == nil || !strings.Contains(err.Error(), "needs a backing file and a full download") {
			t.Errorf("%+v: got %v, want an error about the options", o, err)
		}
	}
}

// TestDownloadBackingFileMissing checks that a backing file that cannot be
// opened fails the download before the daemon is contacted, and leaves no
// image behind.
func TestDownloadBackingFileMissing(t *testing.T) {
	testutil.Need(t, "qemu-img")
	dir := t.TempDir()
	// Nothing listens at this URL: contacting it would fail differently
	// (after retries).
	const url = "https://127.0.0.1:1/images/nothing"
	for _, format := range []string{"", "qcow2", "raw"} {
		t.Run("format "+format, func(t *testing.T) {
			out := filepath.Join(dir, "backup.qcow2")
			_, err := Download(context.Background(), DownloadOptions{URL: url, Path: out,
				BackingFile: filepath.Join(dir, "missing.qcow2"), BackingFormat: format})
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("got %v, want ErrNotExist", err)
			}
			if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("image after the failure: %v, want none", err)
			}
		})
	}
}

// TestIncrementalBackup takes a full backup, then an incremental one of
// every kind of change into an overlay of it; the overlay must read as the
// disk.
func TestIncrementalBackup(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	s := startDaemon(t, false)
	dir := t.TempDir()
	ctx := context.Background()
	opts := httpbackend.Options{CAFile: s.tls.CAFile}
	disk := makeBase(t, dir, "qcow2", backingSize)

	full := filepath.Join(dir, "full.qcow2")
	srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: disk, Format: "qcow2", ReadOnly: true, Shared: 8})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Download(ctx, DownloadOptions{URL: s.addTicket(t, srv.URL(), backingSize), HTTP: opts, Path: full})
	if serr := srv.Stop(); serr != nil {
		t.Fatal(serr)
	}
	if err != nil {
		t.Fatal(err)
	}
	testutil.RunCommand(t, "qemu-img", "bitmap", "--add", "-f", "qcow2", disk, "b1")
	applyChanges(t, disk, "qcow2")

	// incremental downloads the changes since the checkpoint bitmap into
	// an overlay of backing, with a new checkpoint taken at the same time.
	incremental := func(bitmap, next, path, backing string) Stats {
		t.Helper()
		srv, err := nbdlocal.Start(ctx, nbdlocal.Config{Path: disk, Format: "qcow2", ReadOnly: true, Bitmap: bitmap, Shared: 8})
		if err != nil {
			t.Fatal(err)
		}
		res, err := Download(ctx, DownloadOptions{URL: s.d.AddDirtyTicket(t, srv.URL(), backingSize), HTTP: opts,
			Path: path, Incremental: true, BackingFile: backing, BackingFormat: "qcow2", Verify: true})
		if serr := srv.Stop(); serr != nil {
			t.Fatal(serr)
		}
		if err != nil {
			t.Fatal(err)
		}
		testutil.RunCommand(t, "qemu-img", "bitmap", "--add", "-f", "qcow2", disk, next)
		t.Logf("stats %+v", res.Stats)
		return res.Stats
	}
	incr := filepath.Join(dir, "incr1.qcow2")
	if st := incremental("b1", "b2", incr, full); st.Copied > 8<<20 {
		t.Errorf("copied %d bytes, want only the dirty data", st.Copied)
	}
	checkOverlay(t, incr, disk, "qcow2", full, "qcow2")

	// A second level: zeros where the first wrote data and data where it
	// wrote zeros, on top of incr1 on top of full.
	testutil.RunCommand(t, "qemu-io", "-f", "qcow2",
		"-c", "write -z 4M 1M", "-c", "write -P 0x77 12M 1M", "-c", "discard 30M 2M", "-c", "write -P 0 40M 64k", disk)
	incr2 := filepath.Join(dir, "incr2.qcow2")
	if st := incremental("b2", "b3", incr2, "incr1.qcow2"); st.Copied > 2<<20 {
		t.Errorf("copied %d bytes, want only the dirty data", st.Copied)
	}
	if err := qemuimg.Compare(ctx, disk, incr2, qemuimg.CompareOptions{FormatA: "qcow2", FormatB: "qcow2"}); err != nil {
		t.Errorf("second incremental backup: %v", err)
	}
}

// TestMaskHoles checks the view verify uses after a download into an
// overlay: the remote's holes read as zeros, the rest as the local image,
// and the extents agree with the data.
func TestMaskHoles(t *testing.T) {
	const size = 8<<20 + 4096
	data := randomBytes(size, 7)
	tests := []struct {
		name  string
		holes []backend.Extent // of the remote, in the zero context
	}{
		{name: "none"},
		{name: "one", holes: []backend.Extent{{Start: 1 << 20, Length: 1 << 20}}},
		{name: "two", holes: []backend.Extent{{Start: 64 << 10, Length: 128 << 10}, {Start: 4 << 20, Length: 2 << 20}}},
		{name: "unaligned", holes: []backend.Extent{{Start: 4096 + 512, Length: 3*512 + 1}, {Start: 3<<20 + 7, Length: 65536}}},
		{name: "start and end", holes: []backend.Extent{{Start: 0, Length: 512}, {Start: size - 4096, Length: 4096}}},
		{name: "everything", holes: []backend.Extent{{Start: 0, Length: size}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			remote := mem.NewWithData(data)
			want := bytes.Clone(data)
			for i := range tc.holes {
				h := &tc.holes[i]
				h.Zero, h.Hole = true, true
				if err := remote.Zero(ctx, h.Start, h.Length, true); err != nil {
					t.Fatal(err)
				}
				clear(want[h.Start:h.End()])
			}
			m := &masked{Backend: mem.NewWithData(data), holes: zeroRanges(tc.holes)}
			got := make([]byte, size)
			// Odd-sized reads cross the hole edges.
			for off := int64(0); off < size; off += 100003 {
				if err := m.ReadAt(ctx, got[off:min(off+100003, size)], off); err != nil {
					t.Fatal(err)
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("masked view differs from the image with its holes zeroed")
			}
			ext, err := m.Extents(ctx, backend.ContextZero)
			if err != nil {
				t.Fatal(err)
			}
			var pos int64
			for _, e := range ext {
				if e.Start != pos || e.Length <= 0 {
					t.Fatalf("extents %+v: gap or empty extent at %d", ext, pos)
				}
				if e.Zero {
					if i := bytes.IndexFunc(want[e.Start:e.End()], func(r rune) bool { return r != 0 }); i >= 0 {
						t.Errorf("extent %+v says zero but byte %d is not", e, e.Start+int64(i))
					}
				}
				pos = e.End()
			}
			if pos != size {
				t.Errorf("extents end at %d, want %d", pos, size)
			}
			sum, err := checksum.Compute(ctx, m, checksum.DefaultAlgorithm, checksum.DefaultBlockSize)
			if err != nil {
				t.Fatal(err)
			}
			wantSum, err := checksum.Compute(ctx, mem.NewWithData(want), checksum.DefaultAlgorithm, checksum.DefaultBlockSize)
			if err != nil {
				t.Fatal(err)
			}
			if sum != wantSum {
				t.Errorf("checksum %+v, want %+v", sum, wantSum)
			}
			// Where the remote's holes are whole chunks of the mem backend,
			// maskHoles finds them in its extents: the verify of a local
			// copy that holds other data there passes.
			aligned := true
			for _, h := range tc.holes {
				aligned = aligned && h.Start%mem.ChunkSize == 0 && (h.Length%mem.ChunkSize == 0 || h.End() == size)
			}
			if !aligned {
				return
			}
			v, err := maskHoles(ctx, mem.NewWithData(data), remote)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := v.(*masked); ok != (len(tc.holes) > 0) {
				t.Errorf("maskHoles gave %T, want a mask: %v", v, len(tc.holes) > 0)
			}
			if sum, err = checksum.Compute(ctx, v, checksum.DefaultAlgorithm, checksum.DefaultBlockSize); err != nil {
				t.Fatal(err)
			}
			remoteSum, err := checksum.Compute(ctx, remote, checksum.DefaultAlgorithm, checksum.DefaultBlockSize)
			if err != nil {
				t.Fatal(err)
			}
			if sum != remoteSum {
				t.Errorf("checksum of the masked local image %+v, want the remote's %+v", sum, remoteSum)
			}
		})
	}
}
