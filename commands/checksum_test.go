package commands

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/imageio/imageio/checksum"
	"github.com/imageio/imageio/internal/testutil"
)

// TestChecksumLocal checks that the same content gives the same checksum
// in any format and inside an OVA, and that it matches the checksum of
// the raw bytes.
func TestChecksumLocal(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	raw := sampleImage(t, dir, "disk.raw", "raw")
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath, qcow)

	f, err := os.Open(raw)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := checksum.Sum(f, "blake2b", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"raw", []string{"checksum", raw, "--block-size", "1m"}},
		{"qcow2", []string{"checksum", "--block-size=1m", qcow, "-q"}},
		{"ova member", []string{"checksum", ovaPath, "--member", "disk.qcow2", "--block-size", "1M", "--max-workers", "2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var got checksumResult
			dec := json.NewDecoder(strings.NewReader(stdout))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("stdout %q: %v", stdout, err)
			}
			if got.Checksum != want.Checksum || got.Algorithm != "blake2b" || got.BlockSize != 1<<20 {
				t.Errorf("got %+v, want %+v", got, want)
			}
		})
	}
}

func TestChecksumJSONProgress(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	stdout, stderr, code := runApp(t, context.Background(), "checksum", qcow, "--json", "--algorithm", "sha256")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	var steps []progressStep
	for _, l := range lines[:len(lines)-1] {
		var s progressStep
		dec := json.NewDecoder(strings.NewReader(l))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("progress line %q: %v", l, err)
		}
		steps = append(steps, s)
	}
	if len(steps) < 2 || steps[0].Phase != phaseComputing || steps[len(steps)-1].Phase != phaseDone {
		t.Errorf("progress steps %+v", steps)
	}
	var res checksumResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.Algorithm != "sha256" || len(res.Checksum) != 64 {
		t.Errorf("result line %q: %+v, %v", lines[len(lines)-1], res, err)
	}
	if stderr != "" {
		t.Errorf("stderr %q, want nothing", stderr)
	}
}

func TestChecksumBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad algorithm", []string{"checksum", "x", "--algorithm", "crc"}, ExitUsage, "Unsupported value 'crc'"},
		{"block size not aligned", []string{"checksum", "x", "--block-size", "1049000"}, ExitUsage, "not aligned"},
		{"block size too large", []string{"checksum", "x", "--block-size", "1g"}, ExitUsage, "out of allowed range"},
		{"member with url", []string{"checksum", "https://h/images/t", "--member", "d"}, ExitUsage, "--member"},
		{"proxy with file", []string{"checksum", "x", "--proxy-url", "https://p"}, ExitUsage, "--proxy-url"},
		{"missing file", []string{"checksum", filepath.Join(dir, "nope")}, ExitFailure, "no such file"},
		{"bad url", []string{"checksum", "https://[::1/images/6a3c1f0e-5b0e-4f4e-9d0c-2f1b6f1f4a77"}, ExitFailure, "parsing"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			stdout, stderr, code := runApp(t, context.Background(), tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) || strings.Count(stderr, "\n") != 1 {
				t.Errorf("exit %d, stderr %q; want %d and one line with %q", code, stderr, tc.code, tc.want)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}
