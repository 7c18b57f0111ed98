package enginesim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/imageio/imageio/engine"
	"github.com/imageio/imageio/enginesim"
)

func putAt(t *testing.T, hc *http.Client, url string, data []byte, off int64) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url+"?flush=y", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Range", fmt.Sprintf("bytes %d-%d/*", off, off+int64(len(data))-1))
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("PUT at %d: %s: %s", off, resp.Status, b)
	}
}

type dirtyExtent struct {
	Start  int64 `json:"start"`
	Length int64 `json:"length"`
	Dirty  bool  `json:"dirty"`
}

func dirtyExtents(t *testing.T, hc *http.Client, url string) []dirtyExtent {
	t.Helper()
	var ext []dirtyExtent
	if err := json.Unmarshal(get(t, hc, url+"/extents?context=dirty"), &ext); err != nil {
		t.Fatal(err)
	}
	var dirty []dirtyExtent
	for _, e := range ext {
		if e.Dirty {
			dirty = append(dirty, e)
		}
	}
	return dirty
}

// TestBackup runs a full and then an incremental backup through the SDK:
// the incremental one reports only what an upload changed in between.
func TestBackup(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	hc := imagesClient(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	const size = 4 << 20
	d := newDisk(t, c, "qcow2", size)
	data := content(size, 11)
	up := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if err := put(t, hc, up.TransferURL, data); err != nil {
		t.Fatal(err)
	}
	if err := c.Finalize(ctx, up); err != nil {
		t.Fatal(err)
	}

	// Full backup.
	full, err := c.StartBackup(ctx, engine.BackupSpec{VMID: "vm1", DiskIDs: []string{d.ID}})
	if err != nil {
		t.Fatalf("starting full backup: %v", err)
	}
	if full.ToCheckpoint == "" || full.FromCheckpoint != "" {
		t.Errorf("full backup checkpoints: from %q to %q", full.FromCheckpoint, full.ToCheckpoint)
	}
	disks, err := c.BackupDisks(ctx, full)
	if err != nil || len(disks) != 1 || disks[0].Mode != "full" || disks[0].ID != d.ID {
		t.Fatalf("full backup disks: %+v, %v", disks, err)
	}
	if _, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload}); err == nil {
		t.Error("upload to a disk in a running backup succeeded")
	}
	dl, err := c.StartTransfer(ctx, engine.TransferSpec{DiskID: d.ID, Direction: engine.Download, BackupID: full.ID})
	if err != nil {
		t.Fatalf("starting backup download: %v", err)
	}
	if !bytes.Equal(get(t, hc, dl.TransferURL), data) {
		t.Error("full backup data differs from the disk")
	}
	if err := c.Finalize(ctx, dl); err != nil {
		t.Fatal(err)
	}
	if err := c.FinalizeBackup(ctx, full); err != nil {
		t.Fatalf("finalizing full backup: %v", err)
	}

	// Change 64 KiB at 1 MiB.
	change := bytes.Repeat([]byte{0xa5}, 64<<10)
	up = startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	putAt(t, hc, up.TransferURL, change, 1<<20)
	if err := c.Finalize(ctx, up); err != nil {
		t.Fatalf("finalizing upload to a disk with a checkpoint: %v", err)
	}

	// Incremental backup.
	inc, err := c.StartBackup(ctx, engine.BackupSpec{VMID: "vm1", DiskIDs: []string{d.ID}, FromCheckpoint: full.ToCheckpoint})
	if err != nil {
		t.Fatalf("starting incremental backup: %v", err)
	}
	disks, err = c.BackupDisks(ctx, inc)
	if err != nil || len(disks) != 1 || disks[0].Mode != "incremental" {
		t.Fatalf("incremental backup disks: %+v, %v", disks, err)
	}
	dl = startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Download, BackupID: inc.ID})
	got := dirtyExtents(t, hc, dl.TransferURL)
	want := []dirtyExtent{{Start: 1 << 20, Length: 64 << 10, Dirty: true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dirty extents mismatch (-want +got):\n%s", diff)
	}
	if err := c.FinalizeBackup(ctx, inc); err == nil {
		t.Error("finalizing a backup with a running transfer succeeded")
	}
	if err := c.Finalize(ctx, dl); err != nil {
		t.Fatal(err)
	}
	if err := c.FinalizeBackup(ctx, inc); err != nil {
		t.Fatal(err)
	}

	cps, err := c.Checkpoints(ctx, "vm1")
	if err != nil {
		t.Fatal(err)
	}
	wantCps := []engine.Checkpoint{{ID: full.ToCheckpoint, State: "created"}, {ID: inc.ToCheckpoint, ParentID: full.ToCheckpoint, State: "created"}}
	if diff := cmp.Diff(wantCps, cps); diff != "" {
		t.Errorf("checkpoints mismatch (-want +got):\n%s", diff)
	}
	if err := c.RemoveCheckpoint(ctx, "vm1", inc.ToCheckpoint); err == nil {
		t.Error("removing a checkpoint that is not the root succeeded")
	}
	if err := c.RemoveCheckpoint(ctx, "vm1", full.ToCheckpoint); err != nil {
		t.Errorf("removing the root checkpoint: %v", err)
	}
	if cps, err := c.Checkpoints(ctx, "vm1"); err != nil || len(cps) != 1 || cps[0].ID != inc.ToCheckpoint {
		t.Errorf("checkpoints after removing the root: %+v, %v", cps, err)
	}
	if _, err := c.StartBackup(ctx, engine.BackupSpec{VMID: "vm1", DiskIDs: []string{d.ID}, FromCheckpoint: full.ToCheckpoint}); err == nil {
		t.Error("backup from a removed checkpoint succeeded")
	}
}

func TestInactivityTimeout(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{})
	c := connect(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "raw", 1<<20)
	tr := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload, InactivityTimeout: 1})
	// No client traffic: the engine cancels the upload (policy cancel) and
	// removes the disk.
	waitFor(t, "finished_failure", func() bool { p, _ := sim.Transfer(tr.ID); return p == "finished_failure" })
	if _, err := c.Disk(ctx, d.ID); !errors.Is(err, engine.ErrDiskNotFound) {
		t.Errorf("disk after inactivity cancel: %v, want ErrDiskNotFound", err)
	}
}

func TestOldEngine(t *testing.T) {
	sim := enginesim.StartTest(t, enginesim.Config{Faults: enginesim.Faults{OldEngine: true}})
	c := connect(t, sim)
	hc := imagesClient(t, sim)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	d := newDisk(t, c, "raw", 1<<20)
	tr := startTransfer(ctx, t, c, engine.TransferSpec{DiskID: d.ID, Direction: engine.Upload})
	if err := put(t, hc, tr.TransferURL, content(1<<20, 5)); err != nil {
		t.Fatal(err)
	}
	if err := c.Finalize(ctx, tr); err != nil {
		t.Fatalf("finalize with an engine that removes finished transfers: %v", err)
	}
	if tr.Phase != engine.PhaseRemoved && tr.Phase != engine.PhaseFinishedSuccess {
		t.Errorf("last phase %q", tr.Phase)
	}
}
