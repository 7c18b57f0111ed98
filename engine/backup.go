package engine

import (
	"context"
	"errors"
	"fmt"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// Backup phases (the engine's values).
const (
	BackupInitializing = "initializing"
	BackupStarting     = "starting"
	BackupReady        = "ready"
	BackupFinalizing   = "finalizing"
	BackupSucceeded    = "succeeded"
	BackupFailed       = "failed"
)

// ErrBackupFailed means the engine reported the backup as failed.
var ErrBackupFailed = errors.New("backup failed")

// BackupSpec describes a VM backup to start.
type BackupSpec struct {
	VMID    string
	DiskIDs []string
	// FromCheckpoint makes an incremental backup of the changes since that
	// checkpoint; "" makes a full backup.
	FromCheckpoint string
	Description    string
}

// Backup is a started VM backup.
type Backup struct {
	ID, VMID       string
	Phase          string
	FromCheckpoint string
	// ToCheckpoint is the checkpoint this backup creates: the
	// FromCheckpoint of the next incremental backup.
	ToCheckpoint string
}

// BackupDisk is a disk of a backup with its mode: "incremental" (download
// the dirty extents) or "full" (download everything), which can be full
// even in an incremental backup.
type BackupDisk struct {
	Disk
	Mode string
}

// Checkpoint is a VM checkpoint.
type Checkpoint struct {
	ID, ParentID string
	State        string // "created" or "invalid"
}

// StartBackup starts a VM backup and waits until it is ready (bounded by
// Config.TransferTimeout). A backup that fails is ErrBackupFailed. Disks
// are then downloaded with StartTransfer and TransferSpec.BackupID, and the
// backup ended with FinalizeBackup.
func (c *Client) StartBackup(ctx context.Context, spec BackupSpec) (*Backup, error) {
	var disks []*ovirtsdk4.Disk
	for _, id := range spec.DiskIDs {
		disks = append(disks, ovirtsdk4.NewDiskBuilder().Id(id).MustBuild())
	}
	bb := ovirtsdk4.NewBackupBuilder().DisksOfAny(disks...)
	if spec.FromCheckpoint != "" {
		bb = bb.FromCheckpointId(spec.FromCheckpoint)
	}
	if spec.Description != "" {
		bb = bb.Description(spec.Description)
	}
	req, err := bb.Build()
	if err != nil {
		return nil, fmt.Errorf("starting backup: %w", err)
	}
	b := &Backup{VMID: spec.VMID}
	err = c.call(ctx, fmt.Sprintf("starting backup of VM %s", spec.VMID), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().VmsService().VmService(spec.VMID).BackupsService().Add().Backup(req).Send()
		if err != nil {
			return err
		}
		got, ok := resp.Backup()
		if !ok {
			return errors.New("engine returned no backup")
		}
		if b.ID, ok = got.Id(); !ok {
			return errors.New("engine returned a backup without id")
		}
		b.update(got)
		return nil
	})
	if err != nil {
		return nil, err
	}
	p := c.newPoller(c.cfg.TransferTimeout)
	for {
		switch b.Phase {
		case BackupReady:
			return b, nil
		case BackupFailed:
			return nil, fmt.Errorf("starting backup %s of VM %s: %w", b.ID, b.VMID, ErrBackupFailed)
		}
		if err := p.wait(ctx); err != nil {
			return nil, fmt.Errorf("waiting for backup %s to be ready (phase %s): %w", b.ID, b.Phase, err)
		}
		if err := c.refreshBackup(ctx, b); err != nil {
			return nil, err
		}
	}
}

func (b *Backup) update(got *ovirtsdk4.Backup) {
	if ph, ok := got.Phase(); ok {
		b.Phase = string(ph)
	}
	b.FromCheckpoint, _ = got.FromCheckpointId()
	b.ToCheckpoint, _ = got.ToCheckpointId()
}

func (c *Client) refreshBackup(ctx context.Context, b *Backup) error {
	return c.call(ctx, fmt.Sprintf("getting backup %s", b.ID), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().VmsService().VmService(b.VMID).BackupsService().BackupService(b.ID).Get().Send()
		if err != nil {
			return err
		}
		got, ok := resp.Backup()
		if !ok {
			return errors.New("engine returned no backup")
		}
		b.update(got)
		return nil
	})
}

// BackupDisks lists the disks of a backup with their backup mode.
func (c *Client) BackupDisks(ctx context.Context, b *Backup) ([]BackupDisk, error) {
	var out []BackupDisk
	err := c.call(ctx, fmt.Sprintf("listing disks of backup %s", b.ID), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().VmsService().VmService(b.VMID).BackupsService().BackupService(b.ID).DisksService().List().Send()
		if err != nil {
			return err
		}
		disks, ok := resp.Disks()
		if !ok {
			return nil
		}
		for _, d := range disks.Slice() {
			bd := BackupDisk{Disk: diskFrom(d), Mode: "full"}
			if m, ok := d.BackupMode(); ok {
				bd.Mode = string(m)
			}
			out = append(out, bd)
		}
		return nil
	})
	return out, err
}

// FinalizeBackup ends the backup and waits until it has succeeded (bounded
// by Config.FinalizeTimeout). Every image transfer of the backup must be
// finalized first.
func (c *Client) FinalizeBackup(ctx context.Context, b *Backup) error {
	err := c.call(ctx, fmt.Sprintf("finalizing backup %s", b.ID), func(conn *ovirtsdk4.Connection) error {
		_, err := conn.SystemService().VmsService().VmService(b.VMID).BackupsService().BackupService(b.ID).Finalize().Send()
		return err
	})
	if err != nil {
		return err
	}
	p := c.newPoller(c.cfg.FinalizeTimeout)
	for {
		if err := c.refreshBackup(ctx, b); err != nil {
			return err
		}
		switch b.Phase {
		case BackupSucceeded:
			return nil
		case BackupFailed:
			return fmt.Errorf("finalizing backup %s: %w", b.ID, ErrBackupFailed)
		}
		if err := p.wait(ctx); err != nil {
			return fmt.Errorf("waiting for backup %s to finish (phase %s): %w", b.ID, b.Phase, err)
		}
	}
}

// Checkpoints lists the checkpoints of a VM, as the engine orders them.
func (c *Client) Checkpoints(ctx context.Context, vmID string) ([]Checkpoint, error) {
	var out []Checkpoint
	err := c.call(ctx, fmt.Sprintf("listing checkpoints of VM %s", vmID), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().VmsService().VmService(vmID).CheckpointsService().List().Send()
		if err != nil {
			return err
		}
		cps, ok := resp.Checkpoints()
		if !ok {
			return nil
		}
		for _, cp := range cps.Slice() {
			var x Checkpoint
			x.ID, _ = cp.Id()
			x.ParentID, _ = cp.ParentId()
			if st, ok := cp.State(); ok {
				x.State = string(st)
			}
			out = append(out, x)
		}
		return nil
	})
	return out, err
}

// RemoveCheckpoint removes a VM checkpoint; the engine allows only the
// root (oldest) one.
func (c *Client) RemoveCheckpoint(ctx context.Context, vmID, id string) error {
	return c.call(ctx, fmt.Sprintf("removing checkpoint %s of VM %s", id, vmID), func(conn *ovirtsdk4.Connection) error {
		_, err := conn.SystemService().VmsService().VmService(vmID).CheckpointsService().CheckpointService(id).Remove().Send()
		return err
	})
}
