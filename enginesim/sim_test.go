package enginesim_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
	"github.com/imageio/imageio/internal/testutil"
)

func TestMain(m *testing.M) { testutil.Main(m) }

// connect returns an engine client for sim with short waits.
func connect(t *testing.T, sim *enginesim.Sim) *engine.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := engine.Connect(ctx, engine.Config{
		URL: sim.URL(), Username: sim.Username, Password: sim.Password, CAFile: sim.CAFile(),
		Timeout: 20 * time.Second, DiskTimeout: 20 * time.Second, TransferTimeout: 20 * time.Second,
		FinalizeTimeout: 30 * time.Second, PollInterval: 20 * time.Millisecond, MaxPollInterval: 200 * time.Millisecond,
		Logf: t.Logf,
	})
	if err != nil {
		t.Fatalf("connecting to simulator: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startTransfer starts a transfer of spec and fails the test if the
// engine refuses it.
func startTransfer(ctx context.Context, t *testing.T, c *engine.Client, spec engine.TransferSpec) *engine.Transfer {
	t.Helper()
	tr, err := c.StartTransfer(ctx, spec)
	if err != nil {
		t.Fatalf("starting transfer %+v: %v", spec, err)
	}
	return tr
}

// imagesClient returns an HTTP client trusting the simulator's CA.
func imagesClient(t *testing.T, sim *enginesim.Sim) *http.Client {
	t.Helper()
	pem, err := os.ReadFile(sim.CAFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in CA file")
	}
	return &http.Client{
		Timeout:   60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}},
	}
}

// content returns size bytes of test data: random blocks with zero runs.
func content(size int, seed uint64) []byte {
	b := make([]byte, size)
	rng := rand.New(rand.NewPCG(seed, seed+1))
	for off := 0; off < size; off += 64 << 10 {
		if (off/(64<<10))%3 == 1 {
			continue // zeros
		}
		end := min(off+64<<10, size)
		for i := off; i < end; i++ {
			b[i] = byte(rng.Uint32())
		}
	}
	return b
}

func put(t *testing.T, hc *http.Client, url string, data []byte) error {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url+"?flush=y", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("PUT: %s: %s", resp.Status, body)
	}
	return nil
}

func get(t *testing.T, hc *http.Client, url string) []byte {
	t.Helper()
	resp, err := hc.Get(url)
	if err != nil {
		t.Fatalf("GET: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading GET body: %v", err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET: %s: %s", resp.Status, body)
	}
	return body
}

// volumeContent reads the guest-visible content of a disk file.
func volumeContent(t *testing.T, path, format string) []byte {
	t.Helper()
	raw := filepath.Join(t.TempDir(), "content.raw")
	out, err := exec.Command("qemu-img", "convert", "-U", "-f", format, "-O", "raw", path, raw).CombinedOutput()
	if err != nil {
		t.Fatalf("qemu-img convert: %v: %s", err, out)
	}
	b, err := os.ReadFile(raw)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func newDisk(t *testing.T, c *engine.Client, format string, size int64) engine.Disk {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	spec, err := engine.PlanDisk(engine.ImageFacts{Format: format, VirtualSize: size, Required: size}, engine.PlanOptions{Name: t.Name(), StorageDomain: "data1"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := c.CreateDisk(ctx, spec)
	if err != nil {
		t.Fatalf("creating disk: %v", err)
	}
	if d.Status != engine.DiskOK {
		t.Fatalf("disk status %q, want ok", d.Status)
	}
	return d
}

func TestUploadDownload(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	hc := imagesClient(t, sim)
	const size = 4 << 20
	for i, format := range []string{"raw", "qcow2"} {
		t.Run(format, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			d := newDisk(t, c, format, size)
			if d.Format != format {
				t.Errorf("disk format %q, want %q", d.Format, format)
			}
			data := content(size, uint64(i))

			if _, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload, HostID: "00000000-0000-0000-0000-00000000dead"}); err == nil {
				t.Fatal("transfer on an unknown host started")
			}
			tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload, InactivityTimeout: 30, HostID: sim.HostID()})
			if err != nil {
				t.Fatalf("starting upload: %v", err)
			}
			if tr.HostID != sim.HostID() {
				t.Errorf("transfer host %q, want %q", tr.HostID, sim.HostID())
			}
			if err := c.Extend(ctx, tr); err != nil {
				t.Errorf("extending: %v", err)
			}
			if tr.TransferURL == "" || tr.ProxyURL == "" {
				t.Fatalf("transfer URLs: %q, %q", tr.TransferURL, tr.ProxyURL)
			}
			if tr.DiskID != d.ID {
				t.Errorf("transfer disk id %q, want %q", tr.DiskID, d.ID)
			}
			if status, _ := sim.Disk(d.ID); status != "locked" {
				t.Errorf("disk status during transfer %q, want locked", status)
			}
			if err := put(t, hc, tr.TransferURL, data); err != nil {
				t.Fatal(err)
			}
			if err := c.Finalize(ctx, tr); err != nil {
				t.Fatalf("finalizing upload: %v", err)
			}
			got, err := c.Disk(ctx, d.ID)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != engine.DiskOK {
				t.Errorf("disk status after upload %q, want ok", got.Status)
			}
			if !bytes.Equal(volumeContent(t, sim.DiskPath(d.ID), format), data) {
				t.Error("disk content differs from uploaded data")
			}

			dl, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Download})
			if err != nil {
				t.Fatalf("starting download: %v", err)
			}
			if !bytes.Equal(get(t, hc, dl.TransferURL), data) {
				t.Error("downloaded data differs from uploaded data")
			}
			if err := c.Finalize(ctx, dl); err != nil {
				t.Fatalf("finalizing download: %v", err)
			}
			if status, _ := sim.Disk(d.ID); status != "ok" {
				t.Errorf("disk status after download %q, want ok", status)
			}
		})
	}
}

func TestProxyFallback(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{Faults: enginesim.Faults{DeadTransferURL: true}})
	c := connect(t, sim)
	hc := imagesClient(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const size = 2 << 20
	d := newDisk(t, c, "qcow2", size)
	tr := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	data := content(size, 7)
	if err := put(t, hc, tr.TransferURL, data); err == nil {
		t.Fatal("PUT to the dead transfer_url succeeded")
	}
	if err := put(t, hc, tr.ProxyURL, data); err != nil {
		t.Fatalf("PUT to proxy_url: %v", err)
	}
	if err := c.Finalize(ctx, tr); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(volumeContent(t, sim.DiskPath(d.ID), "qcow2"), data) {
		t.Error("disk content differs from data sent through the proxy")
	}
}

func TestPausedSystem(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "raw", 1<<20)
	sim.SetFaults(enginesim.Faults{PausedSystem: true})
	_, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	var pe *engine.PhaseError
	if !errors.As(err, &pe) {
		t.Fatalf("StartTransfer error %v, want *engine.PhaseError", err)
	}
	if pe.Phase != engine.PhasePausedSystem {
		t.Errorf("phase %q, want %q", pe.Phase, engine.PhasePausedSystem)
	}
	// The client cancelled the transfer, so the engine removed the new disk.
	if _, ok := sim.Disk(d.ID); ok {
		t.Error("disk still exists after the paused transfer was cancelled")
	}
	if _, err := os.Stat(sim.DiskPath(d.ID)); !os.IsNotExist(err) {
		t.Errorf("disk file still exists: %v", err)
	}
	if phase, _ := sim.Transfer(pe.TransferID); phase != "finished_failure" {
		t.Errorf("transfer phase %q, want finished_failure", phase)
	}
}

func TestFinalizeFailure(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "qcow2", 1<<20)
	tr := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	sim.SetFaults(enginesim.Faults{FinalizeFailure: true})
	err := c.Finalize(ctx, tr)
	var fe *engine.FinalizeError
	if !errors.As(err, &fe) {
		t.Fatalf("Finalize error %v, want *engine.FinalizeError", err)
	}
	if fe.Phase != engine.PhaseFinishedFailure || fe.DiskID != d.ID {
		t.Errorf("FinalizeError phase %q disk %q, want %q %q", fe.Phase, fe.DiskID, engine.PhaseFinishedFailure, d.ID)
	}
	got, err := c.Disk(ctx, d.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != engine.DiskIllegal {
		t.Errorf("disk status %q, want illegal", got.Status)
	}
}

func TestCancelRemovesDisk(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	hc := imagesClient(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "qcow2", 1<<20)
	tr := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if err := put(t, hc, tr.TransferURL, content(512<<10, 3)); err != nil {
		t.Fatal(err)
	}
	transferURL := tr.TransferURL
	if err := c.Cancel(ctx, tr); err != nil {
		t.Fatalf("cancelling: %v", err)
	}
	if _, err := c.Disk(ctx, d.ID); !errors.Is(err, engine.ErrDiskNotFound) {
		t.Errorf("getting disk after cancel: %v, want ErrDiskNotFound", err)
	}
	if _, err := os.Stat(sim.DiskPath(d.ID)); !os.IsNotExist(err) {
		t.Errorf("disk file still exists: %v", err)
	}
	// The ticket is gone from the daemon.
	if err := put(t, hc, transferURL, []byte("x")); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("PUT after cancel: %v, want 403", err)
	}
}

func TestTokenExpiry(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "raw", 1<<20)
	sim.ExpireTokens()
	tr, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Download})
	if err != nil {
		t.Fatalf("starting transfer after token expiry: %v", err)
	}
	if err := c.Finalize(ctx, tr); err != nil {
		t.Fatal(err)
	}
	var logins, unauthorized int
	for _, r := range sim.Requests() {
		if r.Path == "/ovirt-engine/sso/oauth/token" {
			logins++
			if strings.Contains(string(r.Body), sim.Password) {
				t.Error("request log holds the password")
			}
		}
		if r.Status == http.StatusUnauthorized {
			unauthorized++
		}
	}
	if logins != 2 || unauthorized != 1 {
		t.Errorf("got %d logins and %d 401 answers, want 2 and 1", logins, unauthorized)
	}
}

func TestTokenLifetime(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{Faults: enginesim.Faults{TokenLifetime: 300 * time.Millisecond}})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "raw", 1<<20)
	time.Sleep(400 * time.Millisecond)
	if _, err := c.Disk(ctx, d.ID); err != nil {
		t.Fatalf("getting disk with an expired token: %v", err)
	}
}

func TestAuthFailure(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := engine.Connect(ctx, engine.Config{URL: sim.URL(), Username: sim.Username, Password: "wrong", CAFile: sim.CAFile()})
	if !errors.Is(err, engine.ErrAuth) {
		t.Fatalf("Connect with a wrong password: %v, want ErrAuth", err)
	}
}

func TestNotFound(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{StorageDomains: []string{"data1", "Data2", "block1:iscsi"}})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.StorageDomain(ctx, "nosuch"); !errors.Is(err, engine.ErrStorageDomainNotFound) {
		t.Errorf("StorageDomain(nosuch): %v, want ErrStorageDomainNotFound", err)
	}
	if _, err := c.StorageDomain(ctx, "data2"); !errors.Is(err, engine.ErrStorageDomainNotFound) {
		t.Errorf("StorageDomain(data2) is case-sensitive: %v, want ErrStorageDomainNotFound", err)
	}
	if sd, err := c.StorageDomain(ctx, "Data2"); err != nil || sd.Name != "Data2" {
		t.Errorf("StorageDomain(Data2) = %+v, %v", sd, err)
	}
	if _, err := c.CreateDisk(ctx, engine.DiskSpec{Name: "x", StorageDomain: "nosuch", Format: "raw", ProvisionedSize: 1 << 20}); !errors.Is(err, engine.ErrStorageDomainNotFound) {
		t.Errorf("CreateDisk on a missing domain: %v, want ErrStorageDomainNotFound", err)
	}
	sd, err := c.StorageDomain(ctx, "block1")
	if err != nil || !sd.Block() {
		t.Fatalf("StorageDomain(block1) = %+v, %v; want a block domain", sd, err)
	}
	if _, err := c.CreateDisk(ctx, engine.DiskSpec{Name: "x", StorageDomain: "block1", Format: "raw", ProvisionedSize: 1 << 20, Sparse: true}); err == nil {
		t.Error("sparse raw disk on a block domain was created")
	}
	spec, err := engine.PlanDisk(engine.ImageFacts{Format: "raw", VirtualSize: 1 << 20}, engine.PlanOptions{Name: "y", StorageDomain: "block1", BlockStorage: sd.Block()})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateDisk(ctx, spec); err != nil {
		t.Errorf("planned raw disk on a block domain: %v", err)
	}
	if _, err := c.Disk(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, engine.ErrDiskNotFound) {
		t.Errorf("Disk(missing): %v, want ErrDiskNotFound", err)
	}
	if _, err := c.Transfer(ctx, "00000000-0000-0000-0000-000000000000"); !errors.Is(err, engine.ErrTransferNotFound) {
		t.Errorf("Transfer(missing): %v, want ErrTransferNotFound", err)
	}
}

func TestStartErrors(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "imageiod")
	if err := os.WriteFile(broken, []byte("#!/bin/sh\necho 'imageiod: no luck today' >&2\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  enginesim.Config
		want string
	}{
		{"no storage", enginesim.Config{Imageiod: broken}, "no storage directory"},
		{"storage missing", enginesim.Config{Imageiod: broken, StorageDir: filepath.Join(dir, "nosuch")}, "is not a directory"},
		{"daemon fails", enginesim.Config{Imageiod: broken, StorageDir: dir}, "imageiod: no luck today"},
		{"bad listen address", enginesim.Config{Imageiod: broken, StorageDir: dir, Listen: "256.0.0.1:0"}, "listening on"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim, err := enginesim.Start(t.Context(), tc.cfg)
			if err == nil {
				sim.Close()
				t.Fatal("Start succeeded")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Start error %q does not contain %q", err, tc.want)
			}
		})
	}
}
