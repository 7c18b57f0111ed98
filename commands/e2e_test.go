package commands

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
	"github.com/imageio/imageio/qemuimg"
)

// startSim starts an engine simulator with real imageiod daemons and puts
// its password in $IMAGEIO_PASSWORD for the commands.
func startSim(t *testing.T, cfg enginesim.Config) *enginesim.Sim {
	t.Helper()
	testutil.Need(t, "qemu-img", "qemu-nbd", "qemu-io")
	sim := enginesim.StartTest(t, cfg)
	t.Setenv(PasswordEnv, sim.Password)
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	return sim
}

// testClient logs in to sim for test setup and checks.
func testClient(t *testing.T, sim *enginesim.Sim) *engine.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := engine.Connect(ctx, engine.Config{URL: sim.URL(), Username: sim.Username, Password: sim.Password, CAFile: sim.CAFile()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// openTransfer creates a raw disk of size on sim and starts a transfer
// in direction on it; the transfer is finalized when the test ends.
func openTransfer(t *testing.T, sim *enginesim.Sim, c *engine.Client, size int64, direction string) *engine.Transfer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d, err := c.CreateDisk(ctx, engine.DiskSpec{Name: "test", StorageDomain: "data1", Format: engine.FormatRaw, ProvisionedSize: size, Sparse: true})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: direction})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if direction == engine.Upload {
			c.Cancel(ctx, tr)
		} else {
			c.Finalize(ctx, tr)
		}
	})
	return tr
}

// TestRemoteChecksum asks a real imageiod for the checksum of a new
// (zero) disk and compares it with the local checksum of a zero image;
// it also checks the messages for an untrusted certificate and an unknown
// ticket.
func TestRemoteChecksum(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	c := testClient(t, sim)
	const size = 8 << 20
	tr := openTransfer(t, sim, c, size, engine.Download)

	zero := filepath.Join(t.TempDir(), "zero.raw")
	if err := os.WriteFile(zero, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(zero, size); err != nil {
		t.Fatal(err)
	}
	local, stderr, code := runApp(t, context.Background(), "checksum", zero)
	if code != 0 {
		t.Fatalf("local checksum: exit %d: %s", code, stderr)
	}
	for _, url := range []string{tr.TransferURL, tr.ProxyURL} {
		remote, stderr, code := runApp(t, context.Background(), "checksum", url, "--cafile", sim.CAFile())
		if code != 0 {
			t.Fatalf("remote checksum: exit %d: %s", code, stderr)
		}
		if remote != local {
			t.Errorf("remote checksum %s differs from local %s", remote, local)
		}
	}

	t.Run("untrusted certificate", func(t *testing.T) {
		stdout, stderr, code := runApp(t, context.Background(), "checksum", tr.TransferURL)
		t.Logf("stderr: %s", stderr)
		if code != ExitFailure || !strings.Contains(stderr, "--cafile") || !strings.Contains(stderr, "not trusted") {
			t.Errorf("exit %d, stderr %q; want 1 and a hint to use --cafile", code, stderr)
		}
		if stdout != "" || strings.Contains(stderr, ticketOf(tr.TransferURL)) {
			t.Errorf("stdout %q, stderr %q: want nothing on stdout and no ticket id", stdout, stderr)
		}
	})
	t.Run("unknown ticket", func(t *testing.T) {
		bad := tr.TransferURL[:strings.LastIndex(tr.TransferURL, "/")+1] + "0b1e8c8a-6a44-4bd6-9e4b-0f6f0b0e7b8f"
		_, stderr, code := runApp(t, context.Background(), "checksum", bad, "--cafile", sim.CAFile())
		t.Logf("stderr: %s", stderr)
		if code != ExitFailure || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "expired") || strings.Count(stderr, "\n") != 1 {
			t.Errorf("exit %d, stderr %q; want 1 and one line naming the 403", code, stderr)
		}
	})
}

// ticketOf returns the last path element of a transfer URL.
func ticketOf(url string) string {
	return url[strings.LastIndex(url, "/")+1:]
}

// TestTransferURL uploads to and downloads from transfer URLs opened by
// someone else (no engine flags), in both flag orders.
func TestTransferURL(t *testing.T) {
	sim := startSim(t, enginesim.Config{})
	c := testClient(t, sim)
	dir := t.TempDir()
	qcow := sampleImage(t, dir, "disk.qcow2", "qcow2")
	ca := sim.CAFile()

	up := openTransfer(t, sim, c, 4<<20, engine.Upload)
	orders := [][]string{
		{"upload", qcow, "--transfer-url", up.TransferURL, "--cafile", ca, "--verify"},
		{"upload", "--transfer-url=" + up.TransferURL, "--cafile", ca, "--max-workers", "2", qcow},
	}
	for _, args := range orders {
		steps, res, stderr, code := jsonRun(t, context.Background(), args...)
		if code != 0 {
			t.Fatalf("%q: exit %d: %s", args, code, stderr)
		}
		if res.Size != 4<<20 || res.DiskID != "" || res.TransferID != "" || !contains(phases(steps), phaseUploading) {
			t.Errorf("result %+v, phases %q", res, phases(steps))
		}
		if strings.Contains(strings.Join(args, " "), "--verify") && res.Checksum == nil {
			t.Errorf("--verify gave no checksum: %+v", res)
		}
	}

	// Download the disk back through a new transfer whose transfer URL is
	// dead, with the proxy as fallback; then refuse to overwrite the file.
	t.Run("download", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		upURL := up.TransferURL
		if err := c.Finalize(ctx, up); err != nil {
			t.Fatalf("finalizing the upload: %v", err)
		}
		sim.SetFaults(enginesim.Faults{DeadTransferURL: true})
		tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: up.DiskID, Direction: engine.Download})
		sim.SetFaults(enginesim.Faults{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Finalize(context.Background(), tr)
		out := filepath.Join(t.TempDir(), "out.raw")
		_, res, stderr, code := jsonRun(t, context.Background(), "download", tr.TransferURL, out, "--proxy-url", tr.ProxyURL, "--cafile", ca, "-f", "raw", "--verify")
		if code != 0 {
			t.Fatalf("download: exit %d: %s", code, stderr)
		}
		if !strings.Contains(stderr, "proxy") {
			t.Errorf("stderr %q does not report the proxy fallback", stderr)
		}
		if res.Checksum == nil || res.Size != 4<<20 {
			t.Errorf("result %+v", res)
		}
		ctxc, cancelc := context.WithTimeout(context.Background(), time.Minute)
		defer cancelc()
		if err := qemuimg.Compare(ctxc, qcow, out, qemuimg.CompareOptions{}); err != nil {
			t.Errorf("downloaded image differs: %v", err)
		}
		// The upload's ticket is gone now that its transfer finished.
		_, stderr, code = runApp(t, context.Background(), "upload", qcow, "--transfer-url", upURL, "--cafile", ca)
		if code != ExitFailure || !strings.Contains(stderr, "403") || !strings.Contains(stderr, "expired") || strings.Contains(stderr, ticketOf(upURL)) {
			t.Errorf("upload to a finished transfer: exit %d, stderr %q", code, stderr)
		}
		// The file exists now: a second download must not overwrite it.
		_, stderr, code = runApp(t, context.Background(), "download", tr.ProxyURL, out, "--cafile", ca, "-q")
		if code != ExitFailure || !strings.Contains(stderr, "exists") {
			t.Errorf("download over an existing file: exit %d, stderr %q", code, stderr)
		}
	})
}
