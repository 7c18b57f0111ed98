package commands

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/qemuimg"
)

// engineFlags are the connection flags for sim.
func engineFlags(sim *enginesim.Sim) []string {
	return []string{"--engine-url", sim.URL(), "--username", sim.Username, "--cafile", sim.CAFile()}
}

// jsonRun runs the app with --json and returns the progress steps and the
// result object it printed.
func jsonRun(t *testing.T, ctx context.Context, args ...string) ([]progressStep, uploadResult, string, int) {
	t.Helper()
	stdout, stderr, code := runApp(t, ctx, append(args, "--json")...)
	var steps []progressStep
	var res uploadResult
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, `{"result"`) {
			dec := json.NewDecoder(strings.NewReader(line))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&res); err != nil {
				t.Fatalf("result line %q: %v", line, err)
			}
			continue
		}
		var s progressStep
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("stdout line %q is not a progress object: %v", line, err)
		}
		steps = append(steps, s)
	}
	return steps, res, stderr, code
}

// phases lists the distinct phases in order.
func phases(steps []progressStep) []string {
	var out []string
	for _, s := range steps {
		if len(out) == 0 || out[len(out)-1] != s.Phase {
			out = append(out, s.Phase)
		}
	}
	return out
}

// compareImages fails the test when the images do not read the same.
func compareImages(t *testing.T, a, b string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := qemuimg.Compare(ctx, a, b, qemuimg.CompareOptions{}); err != nil {
		t.Errorf("%s and %s differ: %v", a, b, err)
	}
}

func TestEngineUploadDownload(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	c := testClient(t, sim)
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	raw := sampleImage(t, dir, "disk.raw", "raw")
	ovaPath := filepath.Join(dir, "vm.ova")
	makeOVA(t, ovaPath, qcow)
	iso := filepath.Join(dir, "cd.iso")
	isoData := make([]byte, 4<<20)
	copy(isoData[0x8001:], "CD001")
	copy(isoData[1<<20:], "some file data")
	if err := os.WriteFile(iso, isoData, 0o644); err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name       string
		file       string
		upload     []string
		diskFormat string // want on the engine
		download   []string
		content    string // image with the same content, for qemu-img compare
	}{
		{"qcow2 new disk", qcow, []string{"-s", "data1"}, "qcow2", []string{"-f", "qcow2"}, qcow},
		{"raw new disk as raw", raw, []string{"--storage-domain", "data1", "--name", "r1"}, "raw", []string{"-f", "raw"}, raw},
		{"raw to qcow2 disk, verify", raw, []string{"-s", "data1", "--format", "qcow2", "--verify"}, "qcow2", []string{"--verify"}, raw},
		{"ova member via proxy", ovaPath, []string{"-s", "data1", "--member", "disk.qcow2", "--use-proxy"}, "qcow2", []string{"--use-proxy", "-f", "raw"}, qcow},
		{"iso", iso, []string{"-s", "data1"}, "raw", []string{"-f", "raw"}, iso},
		{"preallocated raw, flags first", raw, []string{"--preallocated", "-s", "data1", "-f", "raw", "--max-workers", "2", "--buffer-size", "256k"}, "raw", nil, raw},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"upload", tc.file}, tc.upload...)
			args = append(args, engineFlags(sim)...)
			steps, res, stderr, code := jsonRun(t, context.Background(), args...)
			if code != 0 {
				t.Fatalf("upload: exit %d: %s", code, stderr)
			}
			want := []string{phaseInspecting, phaseCreatingDisk, phaseCreatingTransfer, phaseUploading}
			got := phases(steps)
			if len(got) < len(want) || strings.Join(got[:len(want)], ",") != strings.Join(want, ",") || got[len(got)-1] != phaseDone {
				t.Errorf("upload phases %q, want %q ... %q", got, want, phaseDone)
			}
			if res.Result != "ok" || res.DiskID == "" || res.TransferID == "" || res.Size != 4<<20 || res.Bytes <= 0 || res.Bytes > res.Size {
				t.Errorf("upload result %+v", res)
			}
			if strings.Contains(strings.Join(tc.upload, " "), "--verify") && (res.Checksum == nil || res.Checksum.Checksum == "") {
				t.Errorf("upload --verify result has no checksum: %+v", res)
			}
			disk, err := c.Disk(context.Background(), res.DiskID)
			if err != nil {
				t.Fatal(err)
			}
			if disk.Status != "ok" || disk.Format != tc.diskFormat || disk.ProvisionedSize != 4<<20 {
				t.Errorf("disk %+v, want ok, %s, 4 MiB", disk, tc.diskFormat)
			}
			if isISO := tc.file == iso; (disk.ContentType == "iso") != isISO || (isISO && disk.Sparse) {
				t.Errorf("disk content type %q, sparse %v; want iso and preallocated only for the ISO", disk.ContentType, disk.Sparse)
			}
			if phase, _ := sim.Transfer(res.TransferID); phase != "finished_success" {
				t.Errorf("transfer phase %q, want finished_success", phase)
			}
			if tc.download == nil {
				return
			}
			out := filepath.Join(t.TempDir(), "out.img")
			dargs := append([]string{"download", "--disk-id", res.DiskID, out}, tc.download...)
			dargs = append(dargs, engineFlags(sim)...)
			dsteps, dres, stderr, code := jsonRun(t, context.Background(), dargs...)
			if code != 0 {
				t.Fatalf("download: exit %d: %s", code, stderr)
			}
			if got := phases(dsteps); !contains(got, phaseDownloading) || got[len(got)-1] != phaseDone {
				t.Errorf("download phases %q", got)
			}
			if dres.DiskID != res.DiskID || dres.TransferID == "" || dres.Size != 4<<20 {
				t.Errorf("download result %+v", dres)
			}
			compareImages(t, tc.content, out)
		})
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func TestEngineUploadExistingDisk(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	_, first, stderr, code := jsonRun(t, context.Background(), append([]string{"upload", qcow, "-s", "data1"}, engineFlags(sim)...)...)
	if code != 0 {
		t.Fatalf("upload: exit %d: %s", code, stderr)
	}
	// Again into the same disk, flags before the file this time.
	args := append(engineFlags(sim), "--disk-id", first.DiskID, qcow)
	steps, res, stderr, code := jsonRun(t, context.Background(), append([]string{"upload"}, args...)...)
	if code != 0 {
		t.Fatalf("upload --disk-id: exit %d: %s", code, stderr)
	}
	if contains(phases(steps), phaseCreatingDisk) || res.DiskID != first.DiskID {
		t.Errorf("phases %q, disk %s; want no new disk and disk %s", phases(steps), res.DiskID, first.DiskID)
	}
	out := filepath.Join(t.TempDir(), "out.qcow2")
	if _, _, stderr, code := jsonRun(t, context.Background(), append([]string{"download", out, "--disk-id", first.DiskID}, engineFlags(sim)...)...); code != 0 {
		t.Fatalf("download: exit %d: %s", code, stderr)
	}
	compareImages(t, qcow, out)

	// A disk smaller than the image is refused before any transfer.
	big := filepath.Join(dir, "big.qcow2")
	testutil.MakeImage(t, big, "qcow2", 8<<20, nil, 2)
	_, stderr, code = runApp(t, context.Background(), append([]string{"upload", big, "--disk-id", first.DiskID}, engineFlags(sim)...)...)
	if code != ExitFailure || !strings.Contains(stderr, "smaller than the image") {
		t.Errorf("upload of a larger image: exit %d, stderr %q", code, stderr)
	}
}

// storageFiles lists the disk files in the simulator's storage directory.
func storageFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestEngineUploadFailures(t *testing.T) {
	storage := t.TempDir()
	sim := startSim(t, enginesim.Config{StorageDir: storage})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	cases := []struct {
		name   string
		faults enginesim.Faults
		args   []string
		code   int
		want   string
	}{
		{"unknown storage domain", enginesim.Faults{}, []string{"-s", "nope"}, ExitFailure, "nope"},
		{"paused by system", enginesim.Faults{PausedSystem: true}, []string{"-s", "data1"}, ExitFailure, "paused_system"},
		{"finalize failure", enginesim.Faults{FinalizeFailure: true}, []string{"-s", "data1"}, ExitFailure, "finaliz"},
		{"dead transfer url, proxy used", enginesim.Faults{DeadTransferURL: true}, []string{"-s", "data1"}, ExitOK, ""},
		{"unknown disk", enginesim.Faults{}, []string{"--disk-id", "0b1e8c8a-6a44-4bd6-9e4b-0f6f0b0e7b8f"}, ExitFailure, "not found"},
		{"wrong password", enginesim.Faults{}, []string{"-s", "data1", "--password-file", "WRONG"}, ExitFailure, "authentication"},
	}
	wrong := filepath.Join(dir, "wrong")
	os.WriteFile(wrong, []byte("not-the-password\n"), 0o600)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sim.SetFaults(tc.faults)
			defer sim.SetFaults(enginesim.Faults{})
			args := append([]string{"upload", qcow, "-q"}, tc.args...)
			for i, a := range args {
				if a == "WRONG" {
					args[i] = wrong
				}
			}
			stdout, stderr, code := runApp(t, context.Background(), append(args, engineFlags(sim)...)...)
			t.Logf("stderr: %s", stderr)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, tc.code, tc.want)
			}
			if code == ExitOK {
				if strings.TrimSpace(stdout) == "" {
					t.Errorf("no disk id on stdout")
				}
				return
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing after a failure", stdout)
			}
			// Nothing left behind: the new disk was removed.
			deadline := time.Now().Add(10 * time.Second)
			for len(storageFiles(t, storage)) > countOK(t, sim, storage) && time.Now().Before(deadline) {
				time.Sleep(100 * time.Millisecond)
			}
			if n, ok := len(storageFiles(t, storage)), countOK(t, sim, storage); n > ok {
				t.Errorf("%d disk files left, %d of them from successful uploads", n, ok)
			}
		})
	}
}

// countOK counts the disks in storage that the simulator reports ok: the
// successful uploads of earlier cases.
func countOK(t *testing.T, sim *enginesim.Sim, storage string) int {
	n := 0
	for _, name := range storageFiles(t, storage) {
		if st, ok := sim.Disk(name); ok && st == "ok" {
			n++
		}
	}
	return n
}

func TestEngineProfile(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	conf := "[sim]\nengine_url = " + sim.URL() + "\nusername = " + sim.Username + "\npassword = " + sim.Password + "\ncafile = " + sim.CAFile() + "\nsecure = yes\n"
	if err := os.WriteFile(filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "imageio.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(PasswordEnv, "")
	// -c goes after the command name or, as in the README, before it.
	_, up, stderr, code := jsonRun(t, context.Background(), "upload", qcow, "-c", "sim", "-s", "data1")
	if code != 0 {
		t.Fatalf("upload with a profile: exit %d: %s", code, stderr)
	}
	_, up2, stderr, code := jsonRun(t, context.Background(), "-c", "sim", "upload", qcow, "-s", "data1")
	if code != 0 {
		t.Fatalf("upload with -c before the command: exit %d: %s", code, stderr)
	}
	if up.DiskID == "" || up2.DiskID == "" || up.DiskID == up2.DiskID {
		t.Errorf("disks %q and %q, want two new disks", up.DiskID, up2.DiskID)
	}
	for _, args := range [][]string{
		{"download", "--disk-id", up.DiskID, "-c", "sim"},
		{"--debug", "-c", "sim", "download", "--disk-id", up2.DiskID},
	} {
		out := filepath.Join(t.TempDir(), "out.qcow2")
		if _, _, stderr, code := jsonRun(t, context.Background(), append(args, out)...); code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		compareImages(t, qcow, out)
	}
	for _, args := range [][]string{
		{"upload", qcow, "-c", "other", "-s", "data1"},
		{"-c", "other", "upload", qcow, "-s", "data1"},
	} {
		_, stderr, code := runApp(t, context.Background(), args...)
		if code != ExitUsage || !strings.Contains(stderr, `"other"`) {
			t.Errorf("%q: unknown profile: exit %d, stderr %q", args, code, stderr)
		}
	}
}

// buildImageio builds the imageio program into a test temp dir.
func buildImageio(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "imageio")
	cmd := exec.Command("go", "build", "-o", bin, "..")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building imageio: %v\n%s", err, out)
	}
	return bin
}

// qemuNBDFor lists running qemu-nbd processes whose command line names path.
func qemuNBDFor(path string) []string {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var found []string
	for _, d := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) > 0 && strings.HasSuffix(args[0], "qemu-nbd") && strings.Contains(string(cmdline), path) {
			found = append(found, d)
		}
	}
	return found
}

// interrupt runs the imageio binary with args and --json, sends sig once
// a progress object of the phase appears, and returns the exit status, the
// phases seen and stderr.
func interrupt(t *testing.T, bin string, sig syscall.Signal, phase string, args ...string) (int, []string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(args, "--json")...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	sent := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var s progressStep
		if json.Unmarshal(sc.Bytes(), &s) != nil {
			continue
		}
		if len(seen) == 0 || seen[len(seen)-1] != s.Phase {
			seen = append(seen, s.Phase)
		}
		if !sent && s.Phase == phase {
			cmd.Process.Signal(sig)
			sent = true
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running imageio: %v", err)
	}
	if !sent {
		t.Fatalf("phase %q never came; phases %q; stderr %s", phase, seen, stderr.String())
	}
	return cmd.ProcessState.ExitCode(), seen, stderr.String()
}

// TestEngineInterrupt sends SIGINT during an upload and SIGTERM during a
// download to the real program: the upload's transfer is cancelled and its
// disk removed, the download's transfer finalized and its partial file
// removed, no qemu-nbd is left, and the exit statuses are 130 and 143.
func TestEngineInterrupt(t *testing.T) {
	storage := t.TempDir()
	sim := startSim(t, enginesim.Config{StorageDir: storage})
	bin := buildImageio(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "big.qcow2")
	testutil.MakeImage(t, img, "qcow2", 256<<20, []testutil.Run{{Off: 0, Len: 192 << 20, Kind: testutil.Data}}, 3)
	slow := []string{"--max-workers", "1", "--buffer-size", "64k"}

	code, seen, stderr := interrupt(t, bin, syscall.SIGINT, phaseUploading, append(append([]string{"upload", img, "-s", "data1"}, slow...), engineFlags(sim)...)...)
	if code != 130 {
		t.Errorf("upload: exit %d, want 130; stderr %s", code, stderr)
	}
	if !contains(seen, phaseCancelling) || contains(seen, phaseDone) {
		t.Errorf("upload phases %q, want cancelling and no done", seen)
	}
	if !strings.Contains(stderr, "interrupted by SIGINT") {
		t.Errorf("stderr %q lacks the interruption", stderr)
	}
	if files := storageFiles(t, storage); len(files) != 0 {
		t.Errorf("disks left after an interrupted upload: %q", files)
	}
	if p := qemuNBDFor(img); len(p) != 0 {
		t.Errorf("qemu-nbd left running: %q", p)
	}

	// A disk to download: upload the image fully first.
	_, res, stderr, code := jsonRun(t, context.Background(), append([]string{"upload", img, "-s", "data1"}, engineFlags(sim)...)...)
	if code != 0 {
		t.Fatalf("upload: exit %d: %s", code, stderr)
	}
	out := filepath.Join(dir, "out.qcow2")
	code, seen, stderr = interrupt(t, bin, syscall.SIGTERM, phaseDownloading, append(append([]string{"download", "--disk-id", res.DiskID, out}, slow...), engineFlags(sim)...)...)
	if code != 143 {
		t.Errorf("download: exit %d, want 143; stderr %s", code, stderr)
	}
	if !contains(seen, phaseFinalizing) {
		t.Errorf("download phases %q, want finalizing", seen)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("partial download %s left behind (%v)", out, err)
	}
	if st, ok := sim.Disk(res.DiskID); !ok || st != "ok" {
		t.Errorf("disk after interrupted download: %q, %v; want ok", st, ok)
	}
	if p := qemuNBDFor(out); len(p) != 0 {
		t.Errorf("qemu-nbd left running: %q", p)
	}
}

// TestDebugLog checks that --debug (anywhere on the line) logs to stderr
// only, and never the password or a ticket id.
func TestDebugLog(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	_, res, stderr, code := jsonRun(t, context.Background(), append([]string{"upload", qcow, "-s", "data1", "--debug"}, engineFlags(sim)...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stderr, "level=DEBUG") {
		t.Errorf("stderr has no debug log:\n%s", stderr)
	}
	if strings.Contains(stderr, sim.Password) {
		t.Errorf("the debug log shows the password")
	}
	t.Logf("debug log:\n%s", stderr)
	if res.TransferID == "" {
		t.Errorf("result %+v has no transfer id", res)
	}
	if strings.Contains(stderr, "/images/") && !strings.Contains(stderr, "/images/***") {
		t.Errorf("the debug log shows a transfer URL with its ticket:\n%s", stderr)
	}
}

// TestEngineUploadCopyFailure makes the copy itself fail (the host's
// daemon cannot be reached and there is no proxy): the transfer is
// cancelled and the new disk removed.
func TestEngineUploadCopyFailure(t *testing.T) {
	storage := t.TempDir()
	sim := startSim(t, enginesim.Config{StorageDir: storage, NoProxy: true, Faults: enginesim.Faults{DeadTransferURL: true}})
	qcow := sampleImage(t, t.TempDir(), "disk.qcow2", "qcow2")
	steps, _, stderr, code := jsonRun(t, context.Background(), append([]string{"upload", qcow, "-s", "data1"}, engineFlags(sim)...)...)
	t.Logf("stderr: %s", stderr)
	if code != ExitFailure || !strings.Contains(stderr, "refused") {
		t.Errorf("exit %d, stderr %q; want 1 and the connection error", code, stderr)
	}
	if got := phases(steps); !contains(got, phaseCancelling) || contains(got, phaseFinalizing) {
		t.Errorf("phases %q, want cancelling and no finalizing", got)
	}
	if files := storageFiles(t, storage); len(files) != 0 {
		t.Errorf("disks left after a failed upload: %q", files)
	}
}

// TestEngineDashFileName uploads and downloads files named like options,
// given after "--"; qemu-img and qemu-nbd must take them as files.
func TestEngineDashFileName(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	dir := t.TempDir()
	sampleImage(t, dir, "-odd.qcow2", "qcow2")
	t.Chdir(dir)
	// run runs the app with --json ahead of "--" and returns the result.
	run := func(args ...string) uploadResult {
		t.Helper()
		n := len(args)
		args = append(append(append(args[:n-1:n-1], engineFlags(sim)...), "--json", "--"), args[n-1])
		stdout, stderr, code := runApp(t, context.Background(), args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stdout), "\n")
		var res uploadResult
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.Result != "ok" {
			t.Fatalf("%q: last line of stdout %q: %v", args, lines[len(lines)-1], err)
		}
		return res
	}
	up := run("upload", "-s", "data1", "-odd.qcow2")
	if up.File != "-odd.qcow2" {
		t.Errorf("upload result file %q, want %q", up.File, "-odd.qcow2")
	}
	down := run("download", "--disk-id", up.DiskID, "--verify", "-out.qcow2")
	if down.File != "-out.qcow2" {
		t.Errorf("download result file %q, want %q", down.File, "-out.qcow2")
	}
	compareImages(t, filepath.Join(dir, "-odd.qcow2"), filepath.Join(dir, "-out.qcow2"))
}

// TestEngineTextOutput checks the output without --json, as docs/cli.md
// and the man page describe it: stdout holds only the disk id of an engine
// upload (nothing for a download), and stderr one line per phase and a
// summary line.
func TestEngineTextOutput(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	phaseLine := regexp.MustCompile(`^\[ +[0-9]+\.[0-9] \] (.+)$`)
	// check returns the phases of stderr and fails on any other line but
	// one summary line matching summary.
	check := func(t *testing.T, stderr string, summary *regexp.Regexp) []string {
		t.Helper()
		var got []string
		summaries := 0
		for _, line := range strings.Split(strings.TrimSuffix(stderr, "\n"), "\n") {
			if m := phaseLine.FindStringSubmatch(line); m != nil {
				got = append(got, m[1])
				continue
			}
			if summary.MatchString(line) {
				summaries++
				continue
			}
			t.Errorf("unexpected stderr line %q", line)
		}
		if summaries != 1 {
			t.Errorf("stderr %q: got %d summary lines matching %s, want 1", stderr, summaries, summary)
		}
		return got
	}

	stdout, stderr, code := runApp(t, context.Background(), append([]string{"upload", qcow, "-s", "data1", "--verify"}, engineFlags(sim)...)...)
	if code != 0 {
		t.Fatalf("upload: exit %d: %s", code, stderr)
	}
	id := strings.TrimSuffix(stdout, "\n")
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
		t.Fatalf("upload stdout %q, want the disk id and a newline", stdout)
	}
	got := check(t, stderr, regexp.MustCompile(`^uploaded 4 MiB \([0-9.]+ [KM]iB of data\) in [0-9]+\.[0-9] s, disk `+id+`, verified blake2b [0-9a-f]{64}$`))
	want := []string{phaseInspecting, phaseCreatingDisk, phaseCreatingTransfer, phaseUploading, phaseFlushing, phaseVerifying, phaseFinalizing}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("upload phases (-want +got):\n%s", diff)
	}

	// Into the existing disk: its id is printed as well.
	stdout, stderr, code = runApp(t, context.Background(), append([]string{"upload", qcow, "--disk-id", id}, engineFlags(sim)...)...)
	if code != 0 || stdout != id+"\n" {
		t.Fatalf("upload --disk-id: exit %d, stdout %q, want %q: %s", code, stdout, id+"\n", stderr)
	}
	check(t, stderr, regexp.MustCompile(`^uploaded 4 MiB .* disk `+id+`$`))

	out := filepath.Join(t.TempDir(), "out.qcow2")
	stdout, stderr, code = runApp(t, context.Background(), append([]string{"download", "--disk-id", id, out}, engineFlags(sim)...)...)
	if code != 0 || stdout != "" {
		t.Fatalf("download: exit %d, stdout %q, want nothing: %s", code, stdout, stderr)
	}
	got = check(t, stderr, regexp.MustCompile(`^downloaded 4 MiB \(.* of data\) in [0-9]+\.[0-9] s, disk `+id+`$`))
	want = []string{phaseCreatingTransfer, phaseDownloading, phaseFlushing, phaseFinalizing}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("download phases (-want +got):\n%s", diff)
	}

	// --quiet: the disk id alone.
	stdout, stderr, code = runApp(t, context.Background(), append([]string{"upload", qcow, "-q", "--disk-id", id}, engineFlags(sim)...)...)
	if code != 0 || stdout != id+"\n" || stderr != "" {
		t.Errorf("upload -q: exit %d, stdout %q, stderr %q; want the disk id only", code, stdout, stderr)
	}
}
