package commands

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/qemuimg"
)

// backupSize is the size of the disk of the backing file tests.
const backupSize = 16 << 20

// backupChanges are qemu-io commands that make a disk differ from its
// base: new data and zeros of every kind; the ranges in zeroRanges must
// read as zeros afterwards, and 8-12 MiB is left as in the base.
var backupChanges = []string{
	"write -P 0xa5 1M 1M",
	"write -z 3M 1M",
	"write -z -u 5M 512k",
	"write -P 0 6M 256k",
	"discard 7M 512k",
	"write -P 0x3c 15M 1M",
}

var zeroRanges = [][2]int64{{3 << 20, 1 << 20}, {5 << 20, 512 << 10}, {6 << 20, 256 << 10}, {7 << 20, 512 << 10}}

// makeBackupImages makes, in dir, base.qcow2 (data everywhere), base.raw
// (the same content) and source.FORMAT (the base with backupChanges).
func makeBackupImages(t *testing.T, dir, format string) (baseQcow2, baseRaw, source string) {
	t.Helper()
	baseQcow2 = filepath.Join(dir, "base.qcow2")
	baseRaw = testutil.MakeImage(t, baseQcow2, "qcow2", backupSize, []testutil.Run{{Off: 0, Len: backupSize, Kind: testutil.Data}}, 11)
	if err := os.Rename(baseRaw, filepath.Join(dir, "base.raw")); err != nil {
		t.Fatal(err)
	}
	baseRaw = filepath.Join(dir, "base.raw")
	source = filepath.Join(dir, "source."+format)
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", format, baseQcow2, source)
	args := []string{"-f", format}
	for _, c := range backupChanges {
		args = append(args, "-c", c)
	}
	testutil.RunCommand(t, "qemu-io", append(args, source)...)
	return baseQcow2, baseRaw, source
}

// checkBackup checks that out is a qcow2 overlay of backing (as recorded
// in out) in backingFormat that reads as source, zeros included.
func checkBackup(t *testing.T, out, source, backing, backingFormat string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	info, err := qemuimg.Info(ctx, out, qemuimg.Options{Format: "qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" || info.BackingFilename != backing || info.BackingFormat != backingFormat {
		t.Errorf("qemu-img info %s: %s over %q (%s), want qcow2 over %q (%s)",
			out, info.Format, info.BackingFilename, info.BackingFormat, backing, backingFormat)
	}
	compareImages(t, source, out)
	raw := filepath.Join(t.TempDir(), "content.raw")
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", out, raw)
	data, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range zeroRanges {
		if i := bytes.IndexFunc(data[r[0]:r[0]+r[1]], func(c rune) bool { return c != 0 }); i >= 0 {
			t.Errorf("%s: byte %d is not zero through the backing chain", out, r[0]+int64(i))
		}
	}
}

// TestDownloadBackingFile uploads a disk that differs from a base image,
// then downloads it into qcow2 overlays of the base with imageio download,
// by transfer URL and by disk id; each overlay must read, through its
// backing file, as the disk.
func TestDownloadBackingFile(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	c := testClient(t, sim)
	ca := sim.CAFile()
	for _, diskFormat := range []string{"qcow2", "raw"} {
		t.Run(diskFormat+" disk", func(t *testing.T) {
			dir := t.TempDir()
			baseQcow2, baseRaw, source := makeBackupImages(t, dir, diskFormat)
			_, res, stderr, code := jsonRun(t, context.Background(), append([]string{"upload", source, "-s", "data1", "-f", diskFormat}, engineFlags(sim)...)...)
			if code != 0 {
				t.Fatalf("upload: exit %d: %s", code, stderr)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: res.DiskID, Direction: engine.Download})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c.Finalize(ctx, tr)
			})

			out := filepath.Join(dir, "out")
			tests := []struct {
				name string
				file string
				args []string // FILE is added where it is ""
				// backing and format recorded in the overlay
				backing, format string
			}{
				{"qcow2 base", out + "1.qcow2", []string{"download", tr.TransferURL, "", "--format", "qcow2", "--backing-file", baseQcow2, "--cafile", ca, "--verify"},
					baseQcow2, "qcow2"},
				{"raw base, flags first", out + "2.qcow2", []string{"download", "--backing-format", "raw", "--backing-file", baseRaw, "--cafile", ca, tr.TransferURL, ""},
					baseRaw, "raw"},
				// Relative to the directory of FILE, as qemu-img create
				// takes it (the working directory is the package's).
				{"relative backing file", out + "3.qcow2", []string{"download", tr.TransferURL, "", "--backing-file", "base.qcow2", "--cafile", ca, "--verify"},
					"base.qcow2", "qcow2"},
			}
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) {
					args := slices.Clone(tc.args)
					args[slices.Index(args, "")] = tc.file
					_, res, stderr, code := jsonRun(t, context.Background(), args...)
					if code != 0 {
						t.Fatalf("%q: exit %d: %s", args, code, stderr)
					}
					if res.Result != "ok" || res.Size != backupSize || (res.Checksum == nil) == slices.Contains(args, "--verify") {
						t.Errorf("result %+v", res)
					}
					checkBackup(t, tc.file, source, tc.backing, tc.format)
				})
			}
			if err := c.Finalize(ctx, tr); err != nil {
				t.Fatal(err)
			}
			t.Run("disk id", func(t *testing.T) {
				file := out + "4.qcow2"
				args := append([]string{"download", "--disk-id", res.DiskID, file, "--backing-file", baseQcow2, "--verify"}, engineFlags(sim)...)
				if _, stderr, code := runApp(t, context.Background(), args...); code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				checkBackup(t, file, source, baseQcow2, "qcow2")
			})
		})
	}
}

// TestDownloadBackingFileErrors checks that a backing file that cannot be
// opened is one error line, exit status 1, before the daemon or the engine
// is contacted (nothing listens at their addresses here), with no file
// left behind.
func TestDownloadBackingFileErrors(t *testing.T) {
	testutil.Need(t, "qemu-img")
	dir := t.TempDir()
	raw := filepath.Join(dir, "base.raw")
	if err := os.WriteFile(raw, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "sub")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	t.Setenv(PasswordEnv, "secret")
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	const url = "https://127.0.0.1:1/images/nothing"
	engineArgs := []string{"--engine-url", "https://127.0.0.1:1/ovirt-engine", "--username", "admin@internal"}
	out := filepath.Join("sub", "out.qcow2")
	tests := []struct {
		name string
		args []string
		want []string // in stderr
	}{
		{name: "missing", args: []string{"download", url, out, "--backing-file", filepath.Join(dir, "missing.qcow2")},
			want: []string{`backing file "` + filepath.Join(dir, "missing.qcow2") + `"`, "no such file"}},
		{name: "missing with format", args: []string{"download", url, out, "--backing-file", filepath.Join(dir, "missing.raw"), "--backing-format", "raw"},
			want: []string{"missing.raw", "no such file"}},
		{name: "missing by disk id", args: append([]string{"download", "--disk-id", "D", out, "--backing-file", filepath.Join(dir, "missing.qcow2")}, engineArgs...),
			want: []string{"missing.qcow2", "no such file"}},
		// base.raw is in the working directory, not in sub where FILE
		// goes: qemu-img would look for sub/base.raw.
		{name: "relative to the working directory", args: []string{"download", url, out, "--backing-file", "base.raw"},
			want: []string{`"sub/base.raw": a relative backing file is relative to the directory of the new image`}},
		{name: "wrong format", args: []string{"download", url, out, "--backing-file", raw, "--backing-format", "qcow2"},
			want: []string{"base.raw", "not in qcow2 format"}},
		{name: "directory", args: []string{"download", url, out, "--backing-file", sub},
			want: []string{"backing file", "not a disk image"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			t.Logf("stderr: %s", stderr)
			if code != ExitFailure {
				t.Errorf("exit %d, want %d", code, ExitFailure)
			}
			if !strings.HasPrefix(stderr, "imageio: ") || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q: want one line starting with \"imageio: \"", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not contain %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "127.0.0.1:1") || strings.Contains(stderr, "connect") {
				t.Errorf("stderr %q: the daemon or the engine was contacted", stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
			if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s after the failure: %v, want no file", out, err)
			}
		})
	}
}

// TestDownloadBackingFormatAlone checks that --backing-format without
// --backing-file is a usage error, not ignored.
func TestDownloadBackingFormatAlone(t *testing.T) {
	stdout, stderr, code := runApp(t, context.Background(), "download", "https://127.0.0.1:1/images/x", "out.qcow2", "--backing-format", "raw")
	if code != ExitUsage || !strings.Contains(stderr, "--backing-format goes with --backing-file") || strings.Count(stderr, "\n") != 1 || stdout != "" {
		t.Errorf("exit %d, stdout %q, stderr %q; want 2 and one line about --backing-file", code, stdout, stderr)
	}
}
