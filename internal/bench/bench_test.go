package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/internal/testutil"
)

// asProgram makes the test binary act as the bench program, for the
// scenarios that run "bench copy" (the harness runs itself).
const asProgram = "IMAGEIO_BENCH_TEST_AS_PROGRAM"

func TestMain(m *testing.M) {
	if os.Getenv(asProgram) == "1" {
		os.Exit(program(os.Args[1:], os.Stdout, os.Stderr))
	}
	testutil.Main(m)
}

// TestRunBench runs the harness end to end on a small image: the qemu-img
// and NBD scenarios run and verify, the imageio ones are skipped because
// the programs are not built where it looks.
func TestRunBench(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	t.Setenv(asProgram, "1")
	work := t.TempDir()
	cfg := config{Work: work, Bin: filepath.Join(work, "no-bin"), Size: 8 << 20, SparseSize: 64 << 20, Runs: 2, Seed: 5,
		Only: regexp.MustCompile(`convert$|NBD client|upload HTTPS`)}
	rep, stdout, stderr := runBenchJSON(t, cfg)
	type got struct {
		Image, Scenario string
		Runs            int
		Verified        bool
		Note            string
	}
	var rows []got
	for _, w := range rep.Rows {
		rows = append(rows, got{w.Image, w.Scenario, w.Runs, w.Verified, w.Note})
	}
	want := []got{
		{"8M", scConvert, 2, true, ""},
		{"8M", scNBDClient, 2, true, ""},
		{"8M", scUploadTLS, 0, false, "skipped: bin/imageio not found"},
		{"64M sparse", scConvert, 2, true, ""},
		{"64M sparse", scNBDClient, 2, true, ""},
		{"64M sparse", scUploadTLS, 0, false, "skipped: bin/imageio not found"},
	}
	if diff := cmp.Diff(want, rows); diff != "" {
		t.Errorf("rows (-want +got):\n%s\nstderr:\n%s", diff, stderr.String())
	}
	for _, w := range rep.Rows {
		// CPU time comes in clock ticks (10 ms), so a copy of these tiny
		// images may honestly measure 0; it must never be negative.
		if w.Runs > 0 && (w.Wall <= 0 || w.ClientCPU < 0 || w.ServerCPU < 0 || w.ClientRSS <= 0) {
			t.Errorf("row %+v lacks measurements", w)
		}
	}
	if !strings.Contains(stdout.String(), scNBDClient) {
		t.Errorf("table lacks %q:\n%s", scNBDClient, stdout.String())
	}
	if _, err := os.Stat(filepath.Join(work, "results.md")); err != nil {
		t.Error(err)
	}
	if _, err := os.Stat(filepath.Join(work, "tmp")); !os.IsNotExist(err) {
		t.Errorf("scratch directory left behind: %v", err)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: "4G", want: 4 << 30},
		{in: "32g", want: 32 << 30},
		{in: "512M", want: 512 << 20},
		{in: "64KiB", want: 64 << 10},
		{in: "1T", want: 1 << 40},
		{in: "12345", want: 12345},
		{in: "0", want: 0},
		{in: "", wantErr: true},
		{in: "G", wantErr: true},
		{in: "-1G", wantErr: true},
		{in: "4X", wantErr: true},
		{in: "99999999999T", wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseSize(tc.in)
			if (err != nil) != tc.wantErr {
				t.Fatalf("parseSize(%q) error = %v, want error %v", tc.in, err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("parseSize(%q) = %d, want %d", tc.in, got, tc.want)
			}
		})
	}
}

func TestFormatSizeRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 1000, 64 << 10, 1536 << 20, 4 << 30, 32 << 30, 1 << 40} {
		s := formatSize(n)
		got, err := parseSize(s)
		if err != nil || got != n {
			t.Errorf("parseSize(formatSize(%d) = %q) = %d, %v; want %d", n, s, got, err, n)
		}
	}
}

func TestConfigFromEnv(t *testing.T) {
	env := map[string]string{"BENCH_SIZE": "1G", "BENCH_SPARSE_SIZE": "0", "BENCH_RUNS": "3", "BENCH_ONLY": "upload", "BENCH_SEED": "7"}
	cfg, err := configFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Size != 1<<30 || cfg.SparseSize != 0 || cfg.Runs != 3 || cfg.Seed != 7 || cfg.Only.String() != "upload" {
		t.Errorf("configFromEnv = %+v", cfg)
	}
	for _, bad := range []map[string]string{{"BENCH_RUNS": "0"}, {"BENCH_SIZE": "4Q"}, {"BENCH_ONLY": "("}, {"BENCH_SIZE": "1K"}} {
		if _, err := configFromEnv(func(k string) string { return bad[k] }); err == nil {
			t.Errorf("configFromEnv(%v) succeeded, want an error", bad)
		}
	}
}

func TestLayout(t *testing.T) {
	tests := []struct {
		name string
		size int64
		mix  mix
	}{
		{"dense 4G", 4 << 30, denseMix},
		{"sparse 32G", 32 << 30, sparseMix},
		{"odd size", 100<<20 + 4096, denseMix},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			runs := layout(tc.size, tc.mix, 1)
			if diff := cmp.Diff(runs, layout(tc.size, tc.mix, 1)); diff != "" {
				t.Fatalf("same seed gave another layout (-first +second):\n%s", diff)
			}
			var off int64
			for i, r := range runs {
				if r.Off != off || r.Len <= 0 {
					t.Fatalf("run %d = %+v, want it to start at %d", i, r, off)
				}
				if r.End() != tc.size && r.Len%runAlign != 0 {
					t.Errorf("run %d = %+v is not %d aligned", i, r, runAlign)
				}
				if i > 0 && runs[i-1].Kind == r.Kind {
					t.Errorf("runs %d and %d are both %v; want them merged", i-1, i, r.Kind)
				}
				off = r.End()
			}
			if off != tc.size {
				t.Errorf("runs end at %d, want %d", off, tc.size)
			}
			if tc.size < 1<<30 {
				return
			}
			sum := totals(runs)
			for k, share := range map[kind]float64{data: tc.mix.Data, zero: tc.mix.Zero} {
				got := float64(sum[k]) / float64(tc.size)
				if got < share*0.7 || got > share*1.3 {
					t.Errorf("%v share = %.3f, want about %.3f", k, got, share)
				}
			}
		})
	}
	if cmp.Equal(layout(1<<30, denseMix, 1), layout(1<<30, denseMix, 2)) {
		t.Error("seeds 1 and 2 gave the same layout")
	}
}

func TestBuildImage(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io")
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "img.qcow2")
	size := int64(96 << 20)
	runs := layout(size, denseMix, 3)
	if err := buildImage(ctx, path, size, runs, 3); err != nil {
		t.Fatal(err)
	}
	got, err := mapImage(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	sum := totals(runs)
	want := imageStats{Size: size, Data: sum[data], Zero: sum[zero], Hole: sum[hole]}
	if got != want {
		t.Errorf("qemu-img map of the image = %+v, want %+v", got, want)
	}
	// A second call finds the image and leaves it alone.
	if err := buildImage(ctx, path, size, nil, 3); err != nil {
		t.Fatal(err)
	}
	// The same seed gives the same bytes.
	other := filepath.Join(t.TempDir(), "other.qcow2")
	if err := buildImage(ctx, other, size, runs, 3); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("qemu-img", "compare", "-q", "-s", path, other).CombinedOutput(); err != nil {
		t.Errorf("images of the same seed differ: %v: %s", err, out)
	}
}

func TestParseStat(t *testing.T) {
	// Field 2 may hold spaces and parentheses.
	line := "1234 (a b) (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 7 3 20 0 1 0 100 1000 100\n"
	got, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procTimes{User: 2.5, System: 1.3, ChildUser: 0.07, ChildSystem: 0.03}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("parseStat (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 x 1 1 1 1"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded, want an error", bad)
		}
	}
}

func TestParseHWM(t *testing.T) {
	tests := []struct {
		name, in string
		want     int64
		wantErr  bool
	}{
		{"live", "Name:\tx\nVmPeak:\t 9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1000 kB\n", 2 << 20, false},
		{"zombie", "Name:\tx\nState:\tZ (zombie)\n", 0, false},
		{"bad unit", "VmHWM:\t 12 MB\n", 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseHWM([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Errorf("parseHWM = %d, %v; want %d, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestMeasure(t *testing.T) {
	testutil.Need(t, "sh")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// The shell burns CPU itself, then waits for a child that burns more.
	loop := `i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done`
	u, err := measure(ctx, exec.Command("sh", "-c", loop+`; sh -c '`+loop+`'; true`))
	if err != nil {
		t.Fatal(err)
	}
	if u.Wall <= 0 || u.CPU <= 0 || u.ChildCPU <= 0 || u.PeakRSS <= 0 || u.TreeRSS <= 0 {
		t.Errorf("measure = %+v, want every field above 0", u)
	}
	if u.CPU > u.Wall*1.5+0.05 {
		t.Errorf("CPU %.2f s is well above the wall time %.2f s of a single-threaded shell", u.CPU, u.Wall)
	}

	if _, err := measure(ctx, exec.Command("sh", "-c", "exit 3")); err == nil {
		t.Error("measure of a failing program succeeded")
	}

	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancelShort()
	start := time.Now()
	if _, err := measure(short, exec.Command("sh", "-c", "sleep 30")); err == nil {
		t.Error("measure of a killed program succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("cancelled measure took %v", d)
	}
}

func TestServerStop(t *testing.T) {
	testutil.Need(t, "sh")
	dir := t.TempDir()
	// A server that ignores SIGTERM in a child is still stopped: the
	// whole group gets SIGKILL after the parent exits.
	s, err := startServer("sh", filepath.Join(dir, "log"), "sh", "-c", "sleep 30 & wait")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Times(); err != nil {
		t.Errorf("Times of a live server: %v", err)
	}
	if err := s.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
	if !s.Exited() {
		t.Error("server still running after Stop")
	}
	if err := s.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestMedian(t *testing.T) {
	tests := []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	}
	for _, tc := range tests {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestReport(t *testing.T) {
	const main, big = "4G", "32G sparse"
	images := []*image{
		{Label: main, Stats: imageStats{Size: 4 << 30, Data: 2 << 30}},
		{Label: big, Stats: imageStats{Size: 32 << 30, Data: 1 << 28}},
	}
	results := []result{
		{Image: main, Scenario: scConvert, Run: 1, Wall: 4, Verified: true},
		{Image: main, Scenario: scConvert, Run: 2, Wall: 2, Verified: true},
		{Image: main, Scenario: scConvert, Run: 3, Wall: 3, Verified: true},
		{Image: main, Scenario: scUploadTLS, Run: 1, Wall: 3.6, DaemonCPU: 0.8, ClientRSS: 30 << 20, DaemonRSS: 40 << 20, Verified: true},
		{Image: main, Scenario: scDownloadTLS, Run: 1, Wall: 4.2, DaemonCPU: 1.4, ClientRSS: 30 << 20, DaemonRSS: 50 << 20, Verified: true},
		{Image: main, Scenario: scDownloadTLS, Run: 2, Wall: 2.6, DaemonCPU: 1.4, ClientRSS: 30 << 20, DaemonRSS: 50 << 20, Verified: true},
		{Image: main, Scenario: scDownloadTLS, Run: 3, Wall: 3.9, DaemonCPU: 1.4, ClientRSS: 30 << 20, DaemonRSS: 50 << 20, Verified: true},
		{Image: main, Scenario: scNBDCopy, Run: 1, Skipped: "nbdcopy not found"},
		{Image: main, Scenario: scUploadUnix, Run: 1, Error: "imageio: exit status 1\nmore"},
		{Image: big, Scenario: scUploadTLS, Run: 1, Wall: 1, ClientRSS: 31 << 20, DaemonRSS: 60 << 20, Verified: true},
	}
	r := newReport(config{Size: 4 << 30, SparseSize: 32 << 30, Runs: 3, Only: regexp.MustCompile("x")}, images, results)
	w, ok := r.find(main, scUploadTLS)
	if !ok {
		t.Fatal("no row for the HTTPS upload")
	}
	if w.Ratio != 1.2 || w.DaemonCPUPerGiB != 0.4 || w.Runs != 1 {
		t.Errorf("upload row = %+v, want ratio 1.2 (3.6 s over the median 3 s) and 0.4 daemon CPU-s per GiB", w)
	}
	got := map[string]bool{}
	for _, g := range r.Goals {
		got[g.What] = g.Met
	}
	want := map[string]bool{
		scUploadTLS + " time / qemu-img convert (4G)":               true,
		scDownloadTLS + " time / qemu-img convert (4G)":             false,
		"imageiod CPU per data GiB, " + scUploadTLS + " (4G)":       true,
		"imageiod CPU per data GiB, " + scDownloadTLS + " (4G)":     false,
		"imageio client peak RSS (largest of all daemon scenarios)": true,
		"imageiod peak RSS (largest of all daemon scenarios)":       false,
		"peak RSS flat, " + scUploadTLS + " (client / daemon)":      false,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("goals (-want +got):\n%s", diff)
	}
	for _, g := range r.Goals {
		if g.What == scDownloadTLS+" time / qemu-img convert (4G)" &&
			g.Got != "1.30x (each round against its own convert: 1.05 1.30 1.30; within the goal in 1 of 3)" {
			t.Errorf("download goal = %q, want the median over the median and each round's ratio", g.Got)
		}
		if g.What == scUploadTLS+" time / qemu-img convert (4G)" && g.Got != "1.20x" {
			t.Errorf("upload goal = %q, want no rounds for a single run", g.Got)
		}
	}
	var text, md strings.Builder
	r.Text(&text)
	r.Markdown(&md)
	for _, s := range []string{"skipped: nbdcopy not found", "error: imageio: exit status 1", "BENCH_RUNS=3", "MISSED"} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
	if !strings.Contains(md.String(), "| 4G | "+scUploadTLS+" | 3.60 | 1.20 |") {
		t.Errorf("markdown report lacks the upload row:\n%s", md.String())
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"4G", "32GiB", "512m", "0", "-1", "9223372036854775807", "8E"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil && n < 0 {
			t.Errorf("parseSize(%q) = %d", s, n)
		}
	})
}

func FuzzParseStat(f *testing.F) {
	f.Add([]byte("1234 (a b) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 130 7 3 20 0 1 0 100 1000 100\n"))
	f.Add([]byte("1 ()) Z"))
	f.Fuzz(func(t *testing.T, b []byte) {
		if pt, err := parseStat(b); err == nil && (pt.CPU() < 0 || pt.ChildCPU() < 0) {
			t.Errorf("parseStat(%q) = %+v", b, pt)
		}
	})
}

func TestParseMachineBusy(t *testing.T) {
	got, err := parseMachineBusy([]byte("cpu  100 20 30 5000 70 1 2 3 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := 1.56; got < want-1e-9 || got > want+1e-9 {
		t.Errorf("parseMachineBusy = %v, want %v (user+nice+system+irq+softirq+steal)", got, want)
	}
	for _, bad := range []string{"", "cpu 1 2", "intr 1 2 3 4 5 6 7 8 9", "cpu a b c d e f g h"} {
		if _, err := parseMachineBusy([]byte(bad)); err == nil {
			t.Errorf("parseMachineBusy(%q) succeeded, want an error", bad)
		}
	}
	if _, err := machineBusy(); err != nil {
		t.Errorf("machineBusy on this machine: %v", err)
	}
}

// runBenchJSON runs runBench with cfg (two minutes at most) and returns
// the report it wrote to results.json and what it printed.
func runBenchJSON(t *testing.T, cfg config) (rep report, stdout, stderr *strings.Builder) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stdout, stderr = &strings.Builder{}, &strings.Builder{}
	if err := runBench(ctx, cfg, stdout, stderr); err != nil {
		t.Fatalf("runBench: %v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(filepath.Join(cfg.Work, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("results.json: %v", err)
	}
	return rep, stdout, stderr
}
