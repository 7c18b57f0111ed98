package engine

import (
	"context"
	"errors"
	"fmt"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// Transfer directions.
const (
	Upload   = "upload"
	Download = "download"
)

// Image transfer phases used by this package (the engine's values).
const (
	PhaseInitializing      = "initializing"
	PhaseTransferring      = "transferring"
	PhaseResuming          = "resuming"
	PhasePausedSystem      = "paused_system"
	PhasePausedUser        = "paused_user"
	PhaseCancelledSystem   = "cancelled_system"
	PhaseCancelledUser     = "cancelled_user"
	PhaseFinalizingSuccess = "finalizing_success"
	PhaseFinalizingFailure = "finalizing_failure"
	PhaseFinalizingCleanup = "finalizing_cleanup"
	PhaseFinishedSuccess   = "finished_success"
	PhaseFinishedFailure   = "finished_failure"
	PhaseFinishedCleanup   = "finished_cleanup"
	// PhaseRemoved is not an engine phase: the transfer is gone (404).
	PhaseRemoved = "removed"
)

// TransferSpec describes an image transfer to start.
type TransferSpec struct {
	DiskID    string
	Direction string // Upload or Download
	// InactivityTimeout is the engine's client inactivity timeout in
	// seconds; 0 leaves the engine default (60 s). The timeout policy is
	// always cancel, so an abandoned upload does not keep its disk locked.
	InactivityTimeout int
	// HostID asks for a specific host; "" lets the engine choose.
	HostID string
	// BackupID downloads the disk from a ready VM backup (see StartBackup).
	BackupID string
}

// Transfer is a started image transfer.
type Transfer struct {
	ID        string
	DiskID    string
	Direction string
	Phase     string // last phase seen
	// TransferURL is the imageio daemon on the host; ProxyURL the proxy on
	// the engine. Either may be empty; both are secrets (they hold the
	// ticket). The engine reports them only while transferring; once set,
	// they stay on the Transfer after Finalize and Cancel (for reports and
	// logs), although the ticket behind them is gone by then.
	TransferURL string
	ProxyURL    string
	HostID      string
}

// StartTransfer creates an image transfer with format raw and waits until it
// is transferring (bounded by Config.TransferTimeout). On paused_system or
// any unexpected phase the transfer is cancelled and a *PhaseError returned;
// on timeout the transfer is cancelled and the error wraps ErrTimeout.
func (c *Client) StartTransfer(ctx context.Context, spec TransferSpec) (*Transfer, error) {
	dir := ovirtsdk4.IMAGETRANSFERDIRECTION_UPLOAD
	switch spec.Direction {
	case Upload:
	case Download:
		dir = ovirtsdk4.IMAGETRANSFERDIRECTION_DOWNLOAD
	default:
		return nil, fmt.Errorf("starting image transfer: invalid direction %q", spec.Direction)
	}
	b := ovirtsdk4.NewImageTransferBuilder().
		Disk(ovirtsdk4.NewDiskBuilder().Id(spec.DiskID).MustBuild()).
		Direction(dir).
		Format(ovirtsdk4.DISKFORMAT_RAW).
		TimeoutPolicy(ovirtsdk4.IMAGETRANSFERTIMEOUTPOLICY_CANCEL)
	if spec.InactivityTimeout > 0 {
		b = b.InactivityTimeout(int64(spec.InactivityTimeout))
	}
	if spec.BackupID != "" {
		b = b.Backup(ovirtsdk4.NewBackupBuilder().Id(spec.BackupID).MustBuild())
	}
	if spec.HostID != "" {
		b = b.Host(ovirtsdk4.NewHostBuilder().Id(spec.HostID).MustBuild())
	}
	it, err := b.Build()
	if err != nil {
		return nil, fmt.Errorf("starting image transfer: %w", err)
	}
	t := &Transfer{DiskID: spec.DiskID, Direction: spec.Direction}
	err = c.call(ctx, fmt.Sprintf("creating %s transfer for disk %s", spec.Direction, spec.DiskID), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().ImageTransfersService().Add().ImageTransfer(it).Send()
		if err != nil {
			return err
		}
		got, ok := resp.ImageTransfer()
		if !ok {
			return errors.New("engine returned no image transfer")
		}
		if t.ID, ok = got.Id(); !ok {
			return errors.New("engine returned an image transfer without id")
		}
		t.update(got)
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.cfg.Logf("engine: created image transfer %s, phase %s", t.ID, t.Phase)
	p := c.newPoller(c.cfg.TransferTimeout)
	for {
		switch t.Phase {
		case PhaseTransferring:
			if t.TransferURL == "" && t.ProxyURL == "" {
				c.cleanup(ctx, t)
				return nil, &PhaseError{TransferID: t.ID, Phase: t.Phase, Reason: "engine gave no transfer_url or proxy_url"}
			}
			return t, nil
		case PhaseInitializing, PhaseResuming, "":
		case PhaseRemoved:
			return nil, &PhaseError{TransferID: t.ID, Phase: t.Phase, Reason: "the transfer was removed by the engine"}
		case PhaseFinishedFailure:
			return nil, &PhaseError{TransferID: t.ID, Phase: t.Phase, Reason: "the engine failed the transfer"}
		case PhasePausedSystem:
			c.cleanup(ctx, t)
			return nil, &PhaseError{TransferID: t.ID, Phase: PhasePausedSystem, Reason: "the engine paused the transfer (is the imageio daemon running on the host?); transfer cancelled"}
		default:
			phase := t.Phase
			c.cleanup(ctx, t)
			return nil, &PhaseError{TransferID: t.ID, Phase: phase, Reason: "unexpected phase while waiting for transferring; transfer cancelled"}
		}
		if err := p.wait(ctx); err != nil {
			phase := t.Phase
			c.cleanup(ctx, t)
			return nil, fmt.Errorf("waiting for image transfer %s to start (phase %s): %w", t.ID, phase, err)
		}
		if err := c.refresh(ctx, t); err != nil {
			c.cleanup(ctx, t)
			return nil, err
		}
	}
}

// cleanup cancels t with a context that outlives ctx, after a failed start.
func (c *Client) cleanup(ctx context.Context, t *Transfer) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.cfg.TransferTimeout+c.cfg.Timeout)
	defer cancel()
	if err := c.Cancel(cctx, t); err != nil {
		c.cfg.Logf("engine: cancelling image transfer %s: %v", t.ID, err)
	}
}

// Transfer returns the current state of the transfer id. A transfer that
// does not exist is ErrTransferNotFound.
func (c *Client) Transfer(ctx context.Context, id string) (Transfer, error) {
	t := Transfer{ID: id}
	err := c.call(ctx, fmt.Sprintf("getting image transfer %s", id), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().ImageTransfersService().ImageTransferService(id).Get().Send()
		if err != nil {
			return err
		}
		got, ok := resp.ImageTransfer()
		if !ok {
			return errors.New("engine returned no image transfer")
		}
		t.update(got)
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return Transfer{}, fmt.Errorf("getting image transfer %s: %w", id, ErrTransferNotFound)
		}
		return Transfer{}, err
	}
	return t, nil
}

// refresh reads the phase and URLs of t; a 404 sets PhaseRemoved. URLs
// are only replaced by new ones, never cleared.
func (c *Client) refresh(ctx context.Context, t *Transfer) error {
	got, err := c.Transfer(ctx, t.ID)
	if errors.Is(err, ErrTransferNotFound) {
		t.Phase = PhaseRemoved
		return nil
	}
	if err != nil {
		return err
	}
	t.Phase = got.Phase
	// The engine drops the URLs once the transfer leaves transferring;
	// keep the last ones seen.
	if got.TransferURL != "" || got.ProxyURL != "" {
		t.TransferURL, t.ProxyURL = got.TransferURL, got.ProxyURL
	}
	if got.HostID != "" {
		t.HostID = got.HostID
	}
	if t.DiskID == "" {
		t.DiskID = got.DiskID
	}
	return nil
}

// update copies what the engine reports. The engine names the disk in the
// deprecated <image id> element, so DiskID comes from Image when Disk is
// absent. The URLs are only read while transferring.
func (t *Transfer) update(it *ovirtsdk4.ImageTransfer) {
	if p, ok := it.Phase(); ok {
		t.Phase = string(p)
	}
	if d, ok := it.Direction(); ok && t.Direction == "" {
		t.Direction = string(d)
	}
	if h, ok := it.Host(); ok {
		t.HostID, _ = h.Id()
	}
	if t.DiskID == "" {
		if d, ok := it.Disk(); ok {
			t.DiskID, _ = d.Id()
		} else if im, ok := it.Image(); ok {
			t.DiskID, _ = im.Id()
		}
	}
	t.TransferURL, t.ProxyURL = "", ""
	if t.Phase == PhaseTransferring {
		t.TransferURL, _ = it.TransferUrl()
		t.ProxyURL, _ = it.ProxyUrl()
	}
}

// action runs one of the transfer's actions.
func (c *Client) action(ctx context.Context, t *Transfer, name string) error {
	return c.call(ctx, fmt.Sprintf("sending %s to image transfer %s", name, t.ID), func(conn *ovirtsdk4.Connection) error {
		svc := conn.SystemService().ImageTransfersService().ImageTransferService(t.ID)
		var err error
		switch name {
		case "finalize":
			_, err = svc.Finalize().Send()
		case "cancel":
			_, err = svc.Cancel().Send()
		case "extend":
			_, err = svc.Extend().Send()
		default:
			err = fmt.Errorf("unknown action %q", name)
		}
		return err
	})
}

// Extend refreshes the transfer on the engine (a keepalive); data moving
// through the imageio daemon keeps it alive as well.
func (c *Client) Extend(ctx context.Context, t *Transfer) error {
	return c.action(ctx, t, "extend")
}

// Finalize asks the engine to finalize the transfer and waits for the
// outcome, bounded by Config.FinalizeTimeout. finished_success, or a removed
// transfer whose disk is ok, is success; finished_failure, paused_system, or
// a removed transfer whose disk is missing or not ok is a *FinalizeError. For
// an upload, Finalize also waits until the disk is unlocked; a download
// does not look at the disk (a backup may keep it locked).
func (c *Client) Finalize(ctx context.Context, t *Transfer) error {
	if err := c.action(ctx, t, "finalize"); err != nil {
		return err
	}
	p := c.newPoller(c.cfg.FinalizeTimeout)
	for {
		if err := p.wait(ctx); err != nil {
			return fmt.Errorf("waiting for image transfer %s to finalize (phase %s): %w", t.ID, t.Phase, err)
		}
		if err := c.refresh(ctx, t); err != nil {
			return err
		}
		switch t.Phase {
		case PhaseFinishedSuccess:
			if t.Direction != Upload {
				return nil // a download leaves the disk as it was (a backup may keep it locked)
			}
			return c.finalizedDisk(ctx, t, p)
		case PhaseFinishedFailure:
			return &FinalizeError{TransferID: t.ID, DiskID: t.DiskID, Phase: t.Phase, Reason: "the engine could not verify the image; an uploaded disk is removed"}
		case PhasePausedSystem:
			return &FinalizeError{TransferID: t.ID, DiskID: t.DiskID, Phase: t.Phase, Reason: "the engine paused the transfer while finalizing; the disk may be illegal"}
		case PhaseRemoved:
			if t.Direction != Upload {
				return nil
			}
			d, err := c.Disk(ctx, t.DiskID)
			switch {
			case errors.Is(err, ErrDiskNotFound):
				return &FinalizeError{TransferID: t.ID, DiskID: t.DiskID, Phase: t.Phase, Reason: "the transfer and the disk were removed"}
			case err != nil:
				return err
			case d.Status == DiskOK:
				return nil
			case d.Status == DiskLocked:
				return c.finalizedDisk(ctx, t, p)
			default:
				return &FinalizeError{TransferID: t.ID, DiskID: t.DiskID, Phase: t.Phase, Reason: "the disk is " + d.Status}
			}
		}
	}
}

// finalizedDisk waits until the disk of a successful transfer is unlocked.
func (c *Client) finalizedDisk(ctx context.Context, t *Transfer, p *poller) error {
	for {
		d, err := c.Disk(ctx, t.DiskID)
		if err != nil {
			return err
		}
		switch d.Status {
		case DiskOK:
			return nil
		case DiskIllegal:
			return &FinalizeError{TransferID: t.ID, DiskID: t.DiskID, Phase: t.Phase, Reason: "the disk is illegal"}
		}
		if err := p.wait(ctx); err != nil {
			return fmt.Errorf("waiting for disk %s to be ok after transfer %s: %w", t.DiskID, t.ID, err)
		}
	}
}

// Cancel asks the engine to cancel the transfer and waits until it has
// finished (or is gone), bounded by Config.TransferTimeout. For an upload the
// engine then removes the disk; Cancel waits for that too. Cancelling a
// transfer that has already finished or is gone is not an error.
func (c *Client) Cancel(ctx context.Context, t *Transfer) error {
	err := c.action(ctx, t, "cancel")
	if err != nil && !isNotFound(err) {
		return err
	}
	p := c.newPoller(c.cfg.TransferTimeout)
	for done := false; !done; {
		if err := c.refresh(ctx, t); err != nil {
			return err
		}
		switch t.Phase {
		case PhaseFinishedFailure, PhaseFinishedSuccess, PhaseFinishedCleanup, PhaseRemoved:
			done = true
			continue
		}
		if err := p.wait(ctx); err != nil {
			return fmt.Errorf("waiting for image transfer %s to be cancelled (phase %s): %w", t.ID, t.Phase, err)
		}
	}
	if t.Direction != Upload || t.DiskID == "" {
		return nil
	}
	for {
		d, err := c.Disk(ctx, t.DiskID)
		if errors.Is(err, ErrDiskNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if d.Status != DiskLocked {
			return nil
		}
		if err := p.wait(ctx); err != nil {
			return fmt.Errorf("waiting for disk %s to be removed after cancel: %w", t.DiskID, err)
		}
	}
}
