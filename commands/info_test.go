package commands

import (
	"archive/tar"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

// sampleImage makes a 4 MiB image of the format with data, zero and hole
// runs, the same on every run.
func sampleImage(t *testing.T, dir, name, format string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	testutil.MakeImage(t, path, format, 4<<20, []testutil.Run{
		{Off: 0, Len: 256 << 10, Kind: testutil.Data},
		{Off: 1 << 20, Len: 512 << 10, Kind: testutil.Zero},
		{Off: 3 << 20, Len: 64 << 10, Kind: testutil.Data},
	}, 1)
	return path
}

// makeOVA writes an OVA (tar) at path holding an OVF file and the members.
func makeOVA(t *testing.T, path string, members ...string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	ovf := []byte("<?xml version=\"1.0\"?><Envelope/>\n")
	if err := tw.WriteHeader(&tar.Header{Name: "vm.ovf", Mode: 0o644, Size: int64(len(ovf)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write(ovf)
	for _, m := range members {
		src, err := os.Open(m)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := src.Stat()
		if err := tw.WriteHeader(&tar.Header{Name: filepath.Base(m), Mode: 0o644, Size: st.Size(), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(tw, src); err != nil {
			t.Fatal(err)
		}
		src.Close()
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// normalize makes qemu-img JSON output comparable across runs: the temp
// directory becomes TMP and sizes on disk (which depend on the file
// system) become 0.
func normalize(t *testing.T, out, dir string) string {
	t.Helper()
	var lines []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("output line %q is not JSON: %v", line, err)
		}
		v = zeroKeys(v, "actual-size")
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, strings.ReplaceAll(string(b), dir, "TMP"))
	}
	return strings.Join(lines, "\n") + "\n"
}

func zeroKeys(v any, keys ...string) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = zeroKeys(e, keys...)
			for _, z := range keys {
				if k == z {
					x[k] = 0
				}
			}
		}
	case []any:
		for i, e := range x {
			x[i] = zeroKeys(e, keys...)
		}
	}
	return v
}

func TestInfoMeasureGolden(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	raw := sampleImage(t, dir, "disk.raw", "raw")
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath, qcow)
	cases := []struct {
		name string
		args []string
	}{
		{"info-qcow2", []string{"info", qcow, "--json"}},
		{"info-raw", []string{"info", "--json", raw}},
		{"info-ova-member", []string{"info", ovaPath, "--member", "disk.qcow2", "--json"}},
		{"measure-qcow2-to-qcow2", []string{"measure", qcow, "-f", "qcow2", "--json"}},
		{"measure-raw-to-qcow2", []string{"measure", "--format=qcow2", raw, "--json"}},
		{"measure-ova-member-to-raw", []string{"measure", ovaPath, "--member", "disk.qcow2", "--format", "raw", "--json"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			if stderr != "" {
				t.Errorf("stderr %q, want nothing", stderr)
			}
			if strings.Count(stdout, "\n") != 1 {
				t.Errorf("stdout has %d lines, want one JSON object on one line", strings.Count(stdout, "\n"))
			}
			golden(t, tc.name+".golden", normalize(t, stdout, dir))
		})
	}
}

func TestInfoText(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath, qcow)

	var out, errOut strings.Builder
	if err := runInfo(context.Background(), infoOptions{Member: "disk.qcow2"}, []string{ovaPath}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"format:        qcow2", "virtual size:  4 MiB (4194304 bytes)", "member:        disk.qcow2 (offset ", "cluster size:  64 KiB"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("info output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := runMeasure(context.Background(), measureOptions{Format: "qcow2"}, []string{qcow}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "required size:") || !strings.Contains(out.String(), "fully allocated size:") {
		t.Errorf("measure output:\n%s", out.String())
	}
}

func TestInfoBadInput(t *testing.T) {
	testutil.Need(t, "qemu-img")
	dir := t.TempDir()
	notTar := filepath.Join(dir, "not.ova")
	os.WriteFile(notTar, []byte("hello"), 0o644)
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath)
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"missing file", []string{"info", filepath.Join(dir, "nope.qcow2")}, "no such file"},
		{"directory", []string{"info", dir}, "not a disk image"},
		{"not an OVA", []string{"info", notTar, "--member", "d"}, "not a tar archive"},
		{"unknown member", []string{"info", ovaPath, "--member", "nope.vmdk"}, "nope.vmdk"},
		{"measure missing file", []string{"measure", filepath.Join(dir, "nope"), "-f", "raw"}, "no such file"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != ExitFailure {
				t.Errorf("exit %d, want %d", code, ExitFailure)
			}
			if !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr %q: want one line containing %q", stderr, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

func TestInspectImage(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	raw := sampleImage(t, dir, "disk.raw", "raw")
	iso := filepath.Join(dir, "cd.iso")
	isoData := make([]byte, 64<<10)
	copy(isoData[0x8001:], "CD001")
	if err := os.WriteFile(iso, isoData, 0o644); err != nil {
		t.Fatal(err)
	}
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath, qcow, iso)
	cases := []struct {
		name, path, member, format string
		iso                        bool
	}{
		{"qcow2", qcow, "", "qcow2", false},
		{"raw", raw, "", "raw", false},
		{"iso", iso, "", "raw", true},
		{"ova qcow2", ovaPath, "disk.qcow2", "qcow2", false},
		{"ova iso", ovaPath, "cd.iso", "raw", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := inspectImage(context.Background(), tc.path, tc.member)
			if err != nil {
				t.Fatal(err)
			}
			if f.Format != tc.format || f.ISO != tc.iso || f.VirtualSize <= 0 || f.Required <= 0 {
				t.Errorf("got %+v, want format %s, iso %v and sizes", f, tc.format, tc.iso)
			}
		})
	}
}

// TestDashFileName checks that a file named like an option, given after
// "--", reaches qemu as a file.
func TestDashFileName(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	sampleImage(t, dir, "-odd.qcow2", "qcow2")
	t.Chdir(dir)
	for _, args := range [][]string{
		{"info", "--json", "--", "-odd.qcow2"},
		{"measure", "-f", "raw", "--", "-odd.qcow2"},
		{"checksum", "--", "-odd.qcow2"},
	} {
		if _, stderr, code := runApp(t, context.Background(), args...); code != 0 {
			t.Errorf("%q: exit %d: %s", args, code, stderr)
		}
	}
}
