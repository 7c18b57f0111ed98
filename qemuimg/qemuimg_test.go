package qemuimg

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/ova"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestMain(m *testing.M) { testutil.Main(m) }

const (
	mib       = 1 << 20
	imageSize = 4 * mib
)

// sampleRuns is the layout of the sample images: data, zeros and holes.
var sampleRuns = []testutil.Run{
	{Off: 0, Len: 64 << 10, Kind: testutil.Data},
	{Off: 1 * mib, Len: 512 << 10, Kind: testutil.Zero},
	{Off: 2 * mib, Len: 1 * mib, Kind: testutil.Data},
}

// images are the sample images of one test, all with the same content.
type images struct {
	dir     string
	raw     string // raw image
	qcow2   string // qcow2 image
	comp    string // compressed qcow2
	overlay string // empty qcow2 overlay over qcow2
	ova     string // OVA holding vm.ovf and disk.qcow2 (a copy of qcow2)
}

func makeImages(t *testing.T) images {
	t.Helper()
	testutil.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	im := images{
		dir:     dir,
		qcow2:   filepath.Join(dir, "disk.qcow2"),
		comp:    filepath.Join(dir, "comp.qcow2"),
		overlay: filepath.Join(dir, "overlay.qcow2"),
		ova:     filepath.Join(dir, "vm.ova"),
	}
	im.raw = testutil.MakeImage(t, im.qcow2, "qcow2", imageSize, sampleRuns, 1)
	testutil.RunCommand(t, "qemu-img", "convert", "-q", "-c", "-f", "qcow2", "-O", "qcow2", im.qcow2, im.comp)
	ctx := context.Background()
	if err := Create(ctx, im.overlay, CreateOptions{Format: "qcow2", BackingFile: "disk.qcow2"}); err != nil {
		t.Fatal(err)
	}
	disk, err := os.ReadFile(im.qcow2)
	if err != nil {
		t.Fatal(err)
	}
	writeOVA(t, im.ova, []tarFile{{"vm.ovf", []byte("<Envelope/>\n")}, {"disk.qcow2", disk}})
	return im
}

type tarFile struct {
	name string
	data []byte
}

// writeOVA writes a tar with fixed metadata, so member offsets are the same
// in every run.
func writeOVA(t *testing.T, path string, files []tarFile) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	for _, file := range files {
		hdr := &tar.Header{Name: file.name, Mode: 0o644, Size: int64(len(file.data)),
			ModTime: time.Unix(1700000000, 0), Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(file.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// normalize makes qemu-img JSON comparable across runs and machines: the
// test directory becomes "TMP", "actual-size" (it depends on the file
// system's allocation) becomes 0, and "dirty-flag" (which reflects whether
// another process has the image open) becomes false. Keys are sorted.
func normalize(t *testing.T, js []byte, dir string) []byte {
	t.Helper()
	js = bytes.ReplaceAll(js, []byte(dir), []byte("TMP"))
	var v map[string]any
	if err := json.Unmarshal(js, &v); err != nil {
		t.Fatalf("parsing %s: %v", js, err)
	}
	if _, ok := v["actual-size"]; ok {
		v["actual-size"] = 0
	}
	if _, ok := v["dirty-flag"]; ok {
		v["dirty-flag"] = false
	}
	out, err := json.MarshalIndent(v, "", "    ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to make it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s differs (-want +got):\n%s", path, diff)
	}
}

func TestInfo(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	member, err := ova.Find(im.ova, "disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		opt  Options
		want ImageInfo // JSON, ActualSize and DirtyFlag not compared
	}{
		{"raw", im.raw, Options{}, ImageInfo{Format: "raw", VirtualSize: imageSize}},
		{"raw-forced", im.raw, Options{Format: "raw"}, ImageInfo{Format: "raw", VirtualSize: imageSize}},
		{"qcow2", im.qcow2, Options{}, ImageInfo{Format: "qcow2", VirtualSize: imageSize, ClusterSize: 65536}},
		{"compressed", im.comp, Options{}, ImageInfo{Format: "qcow2", VirtualSize: imageSize, ClusterSize: 65536}},
		{"overlay", im.overlay, Options{}, ImageInfo{Format: "qcow2", VirtualSize: imageSize, ClusterSize: 65536,
			BackingFilename: "disk.qcow2", BackingFormat: "qcow2"}},
		{"member", im.ova, Options{Member: "disk.qcow2"}, ImageInfo{Format: "qcow2", VirtualSize: imageSize,
			ClusterSize: 65536, MemberOffset: member.Offset, MemberSize: member.Size}},
		{"member-forced-raw", im.ova, Options{Member: "disk.qcow2", Format: "raw"}, ImageInfo{Format: "raw",
			VirtualSize: member.Size, MemberOffset: member.Offset, MemberSize: member.Size}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Info(ctx, tc.path, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			js := got.JSON
			g := *got
			g.JSON, g.ActualSize, g.DirtyFlag = nil, 0, false
			if diff := cmp.Diff(tc.want, g); diff != "" {
				t.Errorf("info (-want +got):\n%s", diff)
			}
			if !json.Valid(js) {
				t.Fatalf("JSON is not valid: %s", js)
			}
			var keys map[string]any
			if err := json.Unmarshal(js, &keys); err != nil {
				t.Fatal(err)
			}
			if keys["format"] != tc.want.Format {
				t.Errorf("JSON format %v, want %q", keys["format"], tc.want.Format)
			}
			_, hasOffset := keys["member-offset"]
			if hasOffset != (tc.opt.Member != "") {
				t.Errorf("JSON has member-offset: %v, want %v", hasOffset, tc.opt.Member != "")
			}
			golden(t, "info-"+tc.name+".json", normalize(t, js, im.dir))
		})
	}
}

// TestInfoUnchanged checks that the JSON is qemu-img's output byte for byte.
func TestInfoUnchanged(t *testing.T) {
	im := makeImages(t)
	want := testutil.RunCommand(t, "qemu-img", "info", "--output=json", im.overlay)
	got, err := Info(context.Background(), im.overlay, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, string(got.JSON)); diff != "" {
		t.Errorf("JSON differs from qemu-img's output (-qemu-img +Info):\n%s", diff)
	}
}

func TestAddKeys(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"object", "{\n    \"a\": 1\n}\n", "{\n    \"a\": 1,\n    \"member-offset\": 7,\n    \"member-size\": 8\n}\n"},
		{"empty", "{}", "{\n    \"member-offset\": 7,\n    \"member-size\": 8\n}\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := addKeys([]byte(tc.in), "member-offset", 7, "member-size", 8)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, string(got)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
	if _, err := addKeys([]byte("[1]"), "k", 1); err == nil {
		t.Error("adding keys to an array: no error")
	}
}

func TestMeasure(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		path string
		opt  Options
	}{
		{"raw", im.raw, Options{}},
		{"qcow2", im.qcow2, Options{}},
		{"member", im.ova, Options{Member: "disk.qcow2"}},
	} {
		for _, dst := range []string{"raw", "qcow2"} {
			t.Run(tc.name+"-to-"+dst, func(t *testing.T) {
				got, err := Measure(ctx, tc.path, dst, tc.opt)
				if err != nil {
					t.Fatal(err)
				}
				if got.Required <= 0 || got.FullyAllocated < got.Required {
					t.Errorf("got required %d, fully allocated %d", got.Required, got.FullyAllocated)
				}
				if dst == "raw" && got.Required != imageSize {
					t.Errorf("required %d for raw, want %d", got.Required, imageSize)
				}
				golden(t, "measure-"+tc.name+"-to-"+dst+".json", normalize(t, got.JSON, im.dir))
			})
		}
	}
	// The member measures the same as the image it is a copy of.
	a, err := Measure(ctx, im.qcow2, "qcow2", Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Measure(ctx, im.ova, "qcow2", Options{Member: "disk.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Required != b.Required || a.FullyAllocated != b.FullyAllocated {
		t.Errorf("member measures %+v, image %+v", b, a)
	}
	for _, bad := range []string{"", "vmdk", "qcow2;"} {
		if _, err := Measure(ctx, im.raw, bad, Options{}); !errors.Is(err, ErrInvalidFormat) {
			t.Errorf("Measure to %q: got %v, want ErrInvalidFormat", bad, err)
		}
	}
}

func TestCompare(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	src, err := SourceOf(ctx, im.ova, Options{Member: "disk.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(im.dir, "changed.raw")
	testutil.RunCommand(t, "cp", im.raw, changed)
	testutil.RunCommand(t, "qemu-io", "-f", "raw", "-c", "write -P 0x55 1M 4k", changed)
	bigger := filepath.Join(im.dir, "bigger.raw")
	testutil.RunCommand(t, "cp", im.raw, bigger)
	if err := os.Truncate(bigger, imageSize+mib); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		a, b   string
		opt    CompareOptions
		differ string // "" if identical
	}{
		{"qcow2-raw", im.qcow2, im.raw, CompareOptions{}, ""},
		{"qcow2-raw-formats", im.qcow2, im.raw, CompareOptions{FormatA: "qcow2", FormatB: "raw"}, ""},
		{"compressed-raw", im.comp, im.raw, CompareOptions{}, ""},
		{"overlay-qcow2", im.overlay, im.qcow2, CompareOptions{}, ""},
		{"member-raw", src.Filename, im.raw, CompareOptions{}, ""},
		{"changed", im.qcow2, changed, CompareOptions{}, "Content mismatch at offset 1048576!"},
		{"bigger", im.raw, bigger, CompareOptions{}, ""}, // the extra MiB reads as zeros
		{"bigger-strict", im.raw, bigger, CompareOptions{Strict: true}, "Image size mismatch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Compare(ctx, tc.a, tc.b, tc.opt)
			if tc.differ == "" {
				if err != nil {
					t.Fatalf("got %v, want identical", err)
				}
				return
			}
			if !errors.Is(err, ErrDiffer) {
				t.Fatalf("got %v, want ErrDiffer", err)
			}
			if !strings.Contains(err.Error(), tc.differ) {
				t.Errorf("error %q does not contain qemu-img's message %q", err, tc.differ)
			}
		})
	}
	missing := filepath.Join(im.dir, "missing.raw")
	err = Compare(ctx, im.raw, missing, CompareOptions{})
	if err == nil || errors.Is(err, ErrDiffer) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing image: got %v, want an error naming %q that is not ErrDiffer", err, missing)
	}
	if err := Compare(ctx, im.raw, im.raw, CompareOptions{FormatA: "raw,x"}); !errors.Is(err, ErrInvalidFormat) {
		t.Errorf("bad format: got %v, want ErrInvalidFormat", err)
	}
}

func TestCreate(t *testing.T) {
	testutil.Need(t, "qemu-img")
	ctx := context.Background()
	dir := t.TempDir()
	base := filepath.Join(dir, "base.qcow2")
	for _, tc := range []struct {
		name string
		path string
		opt  CreateOptions
		want ImageInfo // only Format, VirtualSize, BackingFilename, BackingFormat
	}{
		{"raw", filepath.Join(dir, "a.raw"), CreateOptions{Size: 3 * mib}, ImageInfo{Format: "raw", VirtualSize: 3 * mib}},
		{"qcow2", base, CreateOptions{Format: "qcow2", Size: 5 * mib}, ImageInfo{Format: "qcow2", VirtualSize: 5 * mib}},
		{"backing", filepath.Join(dir, "top.qcow2"), CreateOptions{Format: "qcow2", BackingFile: "base.qcow2"},
			ImageInfo{Format: "qcow2", VirtualSize: 5 * mib, BackingFilename: "base.qcow2", BackingFormat: "qcow2"}},
		{"backing-size", filepath.Join(dir, "top2.qcow2"), CreateOptions{Format: "qcow2", Size: 7 * mib, BackingFile: base, BackingFormat: "qcow2"},
			ImageInfo{Format: "qcow2", VirtualSize: 7 * mib, BackingFilename: base, BackingFormat: "qcow2"}},
		{"falloc", filepath.Join(dir, "b.raw"), CreateOptions{Format: "raw", Size: 2 * mib, Preallocation: "falloc"},
			ImageInfo{Format: "raw", VirtualSize: 2 * mib}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := Create(ctx, tc.path, tc.opt); err != nil {
				t.Fatal(err)
			}
			info, err := Info(ctx, tc.path, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := ImageInfo{Format: info.Format, VirtualSize: info.VirtualSize,
				BackingFilename: info.BackingFilename, BackingFormat: info.BackingFormat}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("info (-want +got):\n%s", diff)
			}
			if tc.opt.Preallocation == "falloc" && info.ActualSize < tc.opt.Size {
				t.Errorf("actual size %d with falloc, want at least %d", info.ActualSize, tc.opt.Size)
			}
		})
	}
	for _, tc := range []struct {
		name string
		opt  CreateOptions
	}{
		{"no size", CreateOptions{Format: "qcow2"}},
		{"negative size", CreateOptions{Size: -1}},
		{"bad format", CreateOptions{Format: "qcow2 -x", Size: mib}},
		{"bad preallocation", CreateOptions{Size: mib, Preallocation: "full,x=y"}},
		{"unknown preallocation", CreateOptions{Size: mib, Preallocation: "lots"}},
		{"missing backing file", CreateOptions{Format: "qcow2", BackingFile: "nothing.qcow2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, "bad.img")
			if err := Create(ctx, p, tc.opt); err == nil {
				t.Errorf("Create %+v: no error", tc.opt)
			}
		})
	}
}

func TestMap(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	type run struct {
		Start, Length int64
		Data, Zero    bool
	}
	// Data runs are data; the rest reads as zeros (the zero run and holes
	// merge in qcow2 maps of content made from raw).
	want := []run{
		{0, 64 << 10, true, false},
		{64 << 10, 2*mib - 64<<10, false, true},
		{2 * mib, mib, true, false},
		{3 * mib, mib, false, true},
	}
	for _, tc := range []struct {
		name string
		path string
		opt  Options
	}{
		{"qcow2", im.qcow2, Options{}},
		{"compressed", im.comp, Options{}},
		{"member", im.ova, Options{Member: "disk.qcow2"}},
		{"overlay", im.overlay, Options{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			entries, err := Map(ctx, tc.path, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			var got []run
			for _, e := range entries {
				if e.Data != (e.Offset != nil) && tc.name != "compressed" {
					t.Errorf("entry %+v: data %v but offset %v", e, e.Data, e.Offset)
				}
				if tc.name == "overlay" && e.Data && e.Depth != 1 {
					t.Errorf("entry %+v: depth %d, want 1 (from the backing file)", e, e.Depth)
				}
				if e.Data && !e.Present {
					t.Errorf("entry %+v: data but not present", e)
				}
				r := run{e.Start, e.Length, e.Data, e.Zero}
				if n := len(got); n > 0 && got[n-1].Data == r.Data && got[n-1].Zero == r.Zero {
					got[n-1].Length += r.Length
					continue
				}
				got = append(got, r)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("map (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSourceOf(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	m, err := ova.Find(im.ova, "disk.qcow2")
	if err != nil {
		t.Fatal(err)
	}
	src, err := SourceOf(ctx, im.ova, Options{Member: "disk.qcow2"})
	if err != nil {
		t.Fatal(err)
	}
	if src.Format != "qcow2" || src.MemberOffset != m.Offset || src.MemberSize != m.Size {
		t.Errorf("got %+v, want qcow2 at %d size %d", src, m.Offset, m.Size)
	}
	if m.Offset == 0 {
		t.Error("member at offset 0; the test wants a non-zero offset")
	}
	var spec map[string]any
	if err := json.Unmarshal([]byte(strings.TrimPrefix(src.Filename, "json:")), &spec); err != nil {
		t.Fatalf("parsing %q: %v", src.Filename, err)
	}
	want := map[string]any{
		"driver": "qcow2",
		"file": map[string]any{
			"driver": "raw", "offset": float64(m.Offset), "size": float64(m.Size),
			"file": map[string]any{"driver": "file", "filename": im.ova},
		},
	}
	if diff := cmp.Diff(want, spec); diff != "" {
		t.Errorf("json: filename (-want +got):\n%s", diff)
	}
	nb, err := src.JSON(map[string]any{"backing": nil})
	if err != nil || !strings.Contains(nb, `"backing":null`) {
		t.Errorf("JSON with backing null: %q, %v", nb, err)
	}

	plain, err := SourceOf(ctx, im.comp, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if plain.Filename != im.comp || plain.Format != "qcow2" || plain.Member != "" {
		t.Errorf("got %+v for a plain image", plain)
	}
}

// TestColonInName checks that a relative path with a colon is not taken
// for a qemu protocol.
func TestColonInName(t *testing.T) {
	im := makeImages(t)
	t.Chdir(im.dir)
	name := "nbd:disk.qcow2"
	testutil.RunCommand(t, "cp", im.qcow2, name)
	info, err := Info(context.Background(), name, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Format != "qcow2" {
		t.Errorf("format %q, want qcow2", info.Format)
	}
	if err := Compare(context.Background(), name, "disk.qcow2", CompareOptions{}); err != nil {
		t.Error(err)
	}
}

func TestErrors(t *testing.T) {
	im := makeImages(t)
	ctx := context.Background()
	missing := filepath.Join(im.dir, "missing.qcow2")
	notTar := im.qcow2
	corrupt := filepath.Join(im.dir, "corrupt.qcow2")
	hdr := append([]byte("QFI\xfb\x00\x00\x00\x03"), make([]byte, 64<<10)...)
	if err := os.WriteFile(corrupt, hdr, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		path    string
		opt     Options
		is      error  // nil: any error
		mention string // the error must contain this
	}{
		{"missing file", missing, Options{}, fs.ErrNotExist, missing},
		{"missing OVA", missing, Options{Member: "disk.qcow2"}, fs.ErrNotExist, missing},
		{"directory", im.dir, Options{}, ErrNotImage, im.dir},
		{"unknown member", im.ova, Options{Member: "disk.vmdk"}, ova.ErrMemberNotFound, "disk.qcow2"},
		{"not an OVA", notTar, Options{Member: "disk.qcow2"}, ova.ErrNotTar, notTar},
		{"member not an image", im.ova, Options{Member: "vm.ovf"}, ErrNotImage, "vm.ovf"},
		{"corrupt qcow2", corrupt, Options{}, nil, "qcow2"},
		{"bad format", im.raw, Options{Format: `qcow2","x`}, ErrInvalidFormat, ""},
		{"wrong forced format", im.raw, Options{Format: "qcow2"}, nil, "Image is not in qcow2 format"},
		{"unknown format", im.raw, Options{Format: "nosuch"}, nil, "nosuch"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Info(ctx, tc.path, tc.opt)
			check := func(op string, err error) {
				t.Helper()
				if err == nil {
					t.Fatalf("%s: no error", op)
				}
				if tc.is != nil && !errors.Is(err, tc.is) {
					t.Errorf("%s: got %v, want %v", op, err, tc.is)
				}
				if !strings.Contains(err.Error(), tc.mention) {
					t.Errorf("%s: error %q does not mention %q", op, err, tc.mention)
				}
			}
			check("Info", err)
			_, err = Measure(ctx, tc.path, "qcow2", tc.opt)
			check("Measure", err)
			_, err = Map(ctx, tc.path, tc.opt)
			check("Map", err)
			_, err = SourceOf(ctx, tc.path, tc.opt)
			if tc.opt.Format == "" || tc.is != nil { // a forced format is not checked
				check("SourceOf", err)
			}
		})
	}
}

func TestCanceled(t *testing.T) {
	im := makeImages(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Info(ctx, im.qcow2, Options{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Info: got %v, want context.Canceled", err)
	}
	if err := Compare(ctx, im.qcow2, im.raw, CompareOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Compare: got %v, want context.Canceled", err)
	}
}

func TestBinaryFromEnv(t *testing.T) {
	im := makeImages(t)
	t.Setenv("QEMU_IMG", filepath.Join(im.dir, "no-such-qemu-img"))
	_, err := Info(context.Background(), im.qcow2, Options{})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want an error for the missing binary", err)
	}
	// A working binary through the variable.
	path, err := exec.LookPath("qemu-img")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("QEMU_IMG", path)
	if _, err := Info(context.Background(), im.qcow2, Options{}); err != nil {
		t.Error(err)
	}
}

// TestDashInName checks that a relative path starting with "-" is not
// read by qemu-img as an option, in every wrapper that passes a path.
func TestDashInName(t *testing.T) {
	im := makeImages(t)
	t.Chdir(im.dir)
	ctx := context.Background()
	name := "-x.qcow2"
	testutil.RunCommand(t, "cp", "--", im.qcow2, name)
	info, err := Info(ctx, name, Options{})
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.Format != "qcow2" || info.VirtualSize != imageSize {
		t.Errorf("Info: format %q, size %d; want qcow2, %d", info.Format, info.VirtualSize, imageSize)
	}
	if _, err := Info(ctx, name, Options{Format: "qcow2"}); err != nil {
		t.Errorf("Info with a format: %v", err)
	}
	if _, err := Measure(ctx, name, "raw", Options{}); err != nil {
		t.Errorf("Measure: %v", err)
	}
	if _, err := Map(ctx, name, Options{}); err != nil {
		t.Errorf("Map: %v", err)
	}
	if err := Compare(ctx, name, im.qcow2, CompareOptions{}); err != nil {
		t.Errorf("Compare: %v", err)
	}
	if err := Create(ctx, "-y.qcow2", CreateOptions{Format: "qcow2", BackingFile: name, BackingFormat: "qcow2"}); err != nil {
		t.Fatalf("Create: %v", err)
	}
	top, err := Info(ctx, "-y.qcow2", Options{})
	if err != nil {
		t.Fatalf("Info of the new image: %v", err)
	}
	// The backing file is recorded as given.
	if top.BackingFilename != name || top.VirtualSize != imageSize {
		t.Errorf("new image: backing %q, size %d; want %q, %d", top.BackingFilename, top.VirtualSize, name, imageSize)
	}
	if err := Compare(ctx, "-y.qcow2", name, CompareOptions{}); err != nil {
		t.Errorf("Compare with the new image: %v", err)
	}
	for _, f := range []string{"-x.qcow2", "-y.qcow2"} {
		if _, err := os.Stat(f); err != nil {
			t.Errorf("stat %s: %v", f, err)
		}
	}
}

func TestSafeName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"disk.qcow2", "disk.qcow2"},
		{"-x.qcow2", "./-x.qcow2"},
		{"--help", "./--help"},
		{"-", "./-"},
		{"nbd:x", "./nbd:x"},
		{"dir/-x", "dir/-x"},
		{"/abs/-x", "/abs/-x"},
		{"/abs/nbd:x", "/abs/nbd:x"},
	}
	for _, tc := range tests {
		if got := safeName(tc.in); got != tc.want {
			t.Errorf("safeName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
