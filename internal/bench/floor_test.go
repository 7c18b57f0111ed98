package main

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/internal/testutil"
)

// floorHarness is a harness that can run floors: this test binary as the
// floor-peer program, certificates and a scratch directory.
func floorHarness(t *testing.T) *harness {
	t.Helper()
	t.Setenv(asProgram, "1")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &harness{cfg: config{Runs: 1}, work: dir, tmp: dir, self: self, stderr: testWriter{t},
		tls: testutil.NewTLS(t, dir)}
}

// testWriter sends the harness's progress lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// liveChildren lists the processes whose parent is this one and that have
// not exited.
func liveChildren(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, "stat"))
		if err != nil {
			continue // gone meanwhile
		}
		i := strings.LastIndexByte(string(b), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == os.Getpid() {
			found = append(found, string(b[:i+1]))
		}
	}
	return found
}

// TestFloors runs every floor on 64 MiB: the measured process moved every
// byte and spent some CPU, and no floor-peer process is left.
func TestFloors(t *testing.T) {
	h := floorHarness(t)
	const size = 64 << 20
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	for _, fl := range floors {
		t.Run(fl.Name, func(t *testing.T) {
			res := h.runFloor(ctx, fl, size)
			if res.Error != "" {
				t.Fatalf("runFloor: %s", res.Error)
			}
			if res.Bytes != size {
				t.Errorf("bytes = %d, want %d", res.Bytes, size)
			}
			per := res.PerGiB()
			if !(per > 0) || math.IsInf(per, 0) || !(res.Wall > 0) || res.User < 0 || res.System < 0 {
				t.Errorf("result %+v: CPU per GiB %v, want positive and finite numbers", res, per)
			}
			if fl.Kind != floorAES && !(res.PeerCPU > 0) {
				t.Errorf("peer CPU = %v, want above 0", res.PeerCPU)
			}
			if res.OtherLoad < -1 || res.OtherLoad > 100 {
				t.Errorf("other load = %v %%, want -1 (unknown) or 0 to 100", res.OtherLoad)
			}
			if fl.Kind == floorTLS && !strings.HasPrefix(res.TLS, "TLS 1.3 ") {
				t.Errorf("TLS = %q, want TLS 1.3 as imageiod negotiates with Go clients", res.TLS)
			}
			if left := liveChildren(t); len(left) > 0 {
				t.Errorf("processes left running: %v", left)
			}
			if len(h.servers) != 0 {
				t.Errorf("harness still owns %d processes", len(h.servers))
			}
		})
	}
}

// TestFloorFails checks that a floor whose measured end cannot start (no
// certificate) is an error, with the peer gone too.
func TestFloorFails(t *testing.T) {
	h := floorHarness(t)
	h.tls.CertFile = filepath.Join(t.TempDir(), "missing.pem")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res := h.runFloor(ctx, floor{Name: flTLSReceive, Kind: floorTLS, Op: opReceive}, 8<<20)
	if !strings.Contains(res.Error, "loading TLS certificate") {
		t.Errorf("error = %q, want it to say that the certificate did not load", res.Error)
	}
	if left := liveChildren(t); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
}

// TestFloorPeerCanceled checks that a floor canceled in the middle ends
// with an error at once, its processes stopped.
func TestFloorPeerCanceled(t *testing.T) {
	h := floorHarness(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan floorResult, 1)
	go func() { done <- h.runFloor(ctx, floor{Name: flTCPReceive, Kind: floorTCP, Op: opReceive}, 1<<40) }()
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case res := <-done:
		if res.Error == "" {
			t.Errorf("runFloor of 1 TiB canceled after 200 ms succeeded: %+v", res)
		}
		t.Logf("canceled floor: %s", res.Error)
	case <-time.After(30 * time.Second):
		t.Fatal("runFloor did not return 30 s after its context was canceled")
	}
	if left := liveChildren(t); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
}

func TestParseFloorSpec(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    floorSpec
		wantErr string
	}{
		{name: "tcp", in: `{"kind":"tcp","op":"send","size":1048576,"timeout":1000000000}`,
			want: floorSpec{Kind: floorTCP, Op: opSend, Size: 1 << 20, Timeout: time.Second}},
		{name: "tls server", in: `{"kind":"tls","op":"receive","server":true,"buffered":true,"size":5,"timeout":1,"cert_file":"c","key_file":"k","ca_file":"a"}`,
			want: floorSpec{Kind: floorTLS, Op: opReceive, Server: true, Buffered: true, Size: 5, Timeout: 1, CertFile: "c", KeyFile: "k", CAFile: "a"}},
		{name: "aes", in: `{"kind":"aes-128-gcm","op":"open","size":5,"timeout":1}`,
			want: floorSpec{Kind: floorAES, Op: opOpen, Size: 5, Timeout: 1}},
		{name: "not json", in: `tcp`, wantErr: "parsing floor spec"},
		{name: "unknown field", in: `{"kind":"tcp","op":"send","size":5,"timeout":1,"x":1}`, wantErr: "unknown field"},
		{name: "unknown kind", in: `{"kind":"udp","op":"send","size":5,"timeout":1}`, wantErr: "unknown kind"},
		{name: "wrong op", in: `{"kind":"tcp","op":"seal","size":5,"timeout":1}`, wantErr: "has no op"},
		{name: "no size", in: `{"kind":"tcp","op":"send","timeout":1}`, wantErr: "must be positive"},
		{name: "negative timeout", in: `{"kind":"unix","op":"send","size":5,"timeout":-1}`, wantErr: "must be positive"},
		{name: "buffered unix", in: `{"kind":"unix","op":"send","size":5,"timeout":1,"buffered":true}`, wantErr: "cannot be buffered"},
		{name: "tls server without key", in: `{"kind":"tls","op":"send","server":true,"size":5,"timeout":1,"ca_file":"a","cert_file":"c"}`, wantErr: "key_file"},
		{name: "tls client without CA", in: `{"kind":"tls","op":"send","size":5,"timeout":1}`, wantErr: "ca_file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseFloorSpec(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("parseFloorSpec(%s) error = %v, want one containing %q", tc.in, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseFloorSpec (-want +got):\n%s", diff)
			}
		})
	}
}

func FuzzParseFloorSpec(f *testing.F) {
	f.Add(`{"kind":"tcp","op":"send","size":1048576,"timeout":1000000000}`)
	f.Add(`{"kind":"tls","op":"receive","server":true,"size":5,"timeout":1,"cert_file":"c","key_file":"k","ca_file":"a"}`)
	f.Add(`{"kind":"aes-128-gcm","op":"open","size":-5,"timeout":1}`)
	f.Add(`{}`)
	f.Fuzz(func(t *testing.T, s string) {
		spec, err := parseFloorSpec(s)
		if err != nil {
			return
		}
		if spec.Size <= 0 || spec.Timeout <= 0 || spec.Kind == "" || spec.Op == "" {
			t.Errorf("parseFloorSpec(%q) = %+v, want it refused", s, spec)
		}
		b, err := json.Marshal(spec)
		if err != nil {
			t.Fatal(err)
		}
		again, err := parseFloorSpec(string(b))
		if err != nil || again != spec {
			t.Errorf("spec %+v does not survive JSON: %+v, %v", spec, again, err)
		}
	})
}

func TestConfigFloorSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr string
	}{
		{in: "", want: 2 << 30},
		{in: "512M", want: 512 << 20},
		{in: "1M", want: 1 << 20},
		{in: "0", want: 0},
		{in: "1K", wantErr: "BENCH_FLOOR_SIZE: 1024 bytes is smaller than 1M (0 skips the floors)"},
		{in: "2Q", wantErr: `BENCH_FLOOR_SIZE: parsing size "2Q"`},
		{in: "-1G", wantErr: `BENCH_FLOOR_SIZE: parsing size "-1G"`},
	}
	for _, tc := range tests {
		name := tc.in
		if name == "" {
			name = "unset"
		}
		t.Run(name, func(t *testing.T) {
			cfg, err := configFromEnv(func(k string) string {
				if k == "BENCH_FLOOR_SIZE" {
					return tc.in
				}
				return ""
			})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("configFromEnv error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.FloorSize != tc.want {
				t.Errorf("FloorSize = %d, want %d", cfg.FloorSize, tc.want)
			}
		})
	}
}

func TestReportFloors(t *testing.T) {
	const main = "4G"
	images := []*image{{Label: main, Stats: imageStats{Size: 4 << 30, Data: 2 << 30}}}
	results := []result{
		{Image: main, Scenario: scUploadTLS, Run: 1, Wall: 4, DaemonCPU: 2.6, Verified: true},
		{Image: main, Scenario: scDownloadTLS, Run: 1, Error: "imageio: exit status 1"},
	}
	const g = 1 << 30
	floorResults := []floorResult{
		{Floor: flTLSReceive, Run: 1, Bytes: g, CPU: 0.6, System: 0.3, Wall: 1, PeerCPU: 0.5, TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256", OtherLoad: 20},
		{Floor: flTLSReceive, Run: 2, Bytes: g, CPU: 0.5, System: 0.3, Wall: 1, PeerCPU: 0.5, TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256", OtherLoad: 5},
		{Floor: flTLSReceive, Run: 3, Bytes: g, CPU: 0.7, System: 0.3, Wall: 1, PeerCPU: 0.5, TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256", OtherLoad: 10},
		{Floor: flTLSReceiveB, Run: 1, Bytes: g, CPU: 0.55, System: 0.25, Wall: 1, PeerCPU: 0.5, TLS: "TLS 1.3 TLS_AES_128_GCM_SHA256"},
		{Floor: flUnixSend, Run: 1, Bytes: g, CPU: 0.2, System: 0.2, Wall: 0.5, PeerCPU: 0.1, OtherLoad: -1},
		{Floor: flUnixReceive, Run: 1, Bytes: g, CPU: 0.1, System: 0.1, Wall: 0.5, PeerCPU: 0.2},
		{Floor: flTLSSend, Run: 1, Error: "floor-peer tls send: exit status 1: boom\nmore"},
		{Floor: flAESSeal, Run: 1, Bytes: 2 * g, CPU: 0.3, Wall: 0.3},
	}
	cfg := config{Size: 4 << 30, Runs: 3, FloorSize: g}
	r := newReport(cfg, images, results)
	r.addFloors(cfg, floorResults)

	type floorGot struct {
		Floor          string
		Runs           int
		CPU, Min, Max  float64
		GiBps, PeerCPU float64
		Note           string
		HasTLS         bool
	}
	var gotFloors []floorGot
	for _, w := range r.Floors {
		gotFloors = append(gotFloors, floorGot{w.Floor, w.Runs, w.CPUPerGiB, w.MinPerGiB, w.MaxPerGiB, w.GiBps, w.PeerCPUPerGiB, w.Note, w.TLS != ""})
	}
	wantFloors := []floorGot{
		{flTLSReceive, 3, 0.6, 0.5, 0.7, 1, 0.5, "", true},
		{flTLSSend, 0, 0, 0, 0, 0, 0, "error: floor-peer tls send: exit status 1: boom", false},
		{flTLSReceiveB, 1, 0.55, 0.55, 0.55, 1, 0.5, "", true},
		{flUnixReceive, 1, 0.1, 0.1, 0.1, 2, 0.2, "", false},
		{flUnixSend, 1, 0.2, 0.2, 0.2, 2, 0.1, "", false},
		{flAESSeal, 1, 0.15, 0.15, 0.15, 2 / 0.3, 0, "", false},
	}
	if diff := cmp.Diff(wantFloors, gotFloors, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })); diff != "" {
		t.Errorf("floors (-want +got):\n%s", diff)
	}

	// The HTTPS upload takes the cheaper TLS receive; the HTTPS download
	// lacks a TLS send floor, so it has no row.
	wantDaemon := []daemonFloor{
		{Path: "HTTPS upload", Parts: []string{flTLSReceiveB, flUnixSend}, Floor: 0.75, Min: 0.75, Max: 0.75, Goal: 0.5,
			Scenario: scUploadTLS, Image: main, Imageiod: 1.3},
		{Path: "Unix socket upload", Parts: []string{flUnixReceive, flUnixSend}, Floor: 0.3, Min: 0.3, Max: 0.3, Scenario: scUploadUnix},
		{Path: "Unix socket download", Parts: []string{flUnixReceive, flUnixSend}, Floor: 0.3, Min: 0.3, Max: 0.3, Scenario: scDownUnix},
	}
	if diff := cmp.Diff(wantDaemon, r.DaemonFloors, cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) < 1e-9 })); diff != "" {
		t.Errorf("daemon floors (-want +got):\n%s", diff)
	}

	var text, md strings.Builder
	r.Text(&text)
	r.Markdown(&md)
	for _, s := range []string{
		"floors: 1G moved per floor", "medians of 3 runs; TLS: TLS 1.3 TLS_AES_128_GCM_SHA256",
		"tls receive ", "0.600", "0.500-0.700", "error: floor-peer tls send: exit status 1: boom",
		"imageiod floors", "HTTPS upload", "1.30 (4G)", "tls receive buffered + unix send", "BENCH_FLOOR_SIZE=1G",
	} {
		if !strings.Contains(text.String(), s) {
			t.Errorf("text report lacks %q:\n%s", s, text.String())
		}
	}
	for _, s := range []string{
		"| tls receive | 0.600 | 0.500-0.700 | 0.300 | 1.00 | 0.500 | 10 |",
		"| unix send | 0.200 | 0.200-0.200 | 0.200 | 2.00 | 0.100 | - |",
		"| HTTPS upload | 0.750 | 0.750-0.750 | 0.50 | 1.30 (4G) | tls receive buffered + unix send |",
		"| Unix socket upload | 0.300 | 0.300-0.300 | - | - | unix receive + unix send |",
	} {
		if !strings.Contains(md.String(), s) {
			t.Errorf("markdown report lacks %q:\n%s", s, md.String())
		}
	}

	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back report
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Floors) != 6 || len(back.DaemonFloors) != 3 || len(back.FloorResults) != len(floorResults) || back.FloorSize != g {
		t.Errorf("JSON round trip lost floors: %s", b)
	}
}

// TestRunBenchFloors runs "bench run" with only floors selected: no image
// is built, and the floors are in the table and in results.json.
func TestRunBenchFloors(t *testing.T) {
	testutil.Need(t, "qemu-img", "qemu-io", "qemu-nbd")
	t.Setenv(asProgram, "1")
	work := t.TempDir()
	cfg := config{Work: work, Bin: filepath.Join(work, "no-bin"), Size: 8 << 20, Runs: 2, Seed: 1, FloorSize: 16 << 20,
		Only: regexp.MustCompile(`^floor (unix|aes-128-gcm seal)`)}
	rep, stdout, stderr := runBenchJSON(t, cfg)
	var names []string
	for _, w := range rep.Floors {
		names = append(names, w.Floor)
		if w.Runs != 2 || !(w.CPUPerGiB > 0) || w.MinPerGiB > w.CPUPerGiB || w.CPUPerGiB > w.MaxPerGiB {
			t.Errorf("floor row %+v, want 2 runs and min <= median <= max, all above 0", w)
		}
	}
	want := []string{flUnixReceive, flUnixSend, flAESSeal}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Errorf("floors (-want +got):\n%s\nstderr:\n%s", diff, stderr.String())
	}
	if len(rep.Images) != 0 || len(rep.Rows) != 0 {
		t.Errorf("a floors-only run has images %v and rows %v", rep.Images, rep.Rows)
	}
	paths := map[string]bool{}
	for _, d := range rep.DaemonFloors {
		paths[d.Path] = true
	}
	if diff := cmp.Diff(map[string]bool{"Unix socket upload": true, "Unix socket download": true}, paths); diff != "" {
		t.Errorf("daemon floors (-want +got):\n%s", diff)
	}
	for _, s := range []string{"floors: 16M moved per floor", "unix receive + unix send"} {
		if !strings.Contains(stdout.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, stdout.String())
		}
	}
	if entries, _ := os.ReadDir(work); len(entries) != 2 {
		t.Errorf("work directory holds %v, want only results.json and results.md", entries)
	}
	if left := liveChildren(t); len(left) > 0 {
		t.Errorf("processes left running: %v", left)
	}
}
