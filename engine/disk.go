package engine

import (
	"context"
	"errors"
	"fmt"

	ovirtsdk4 "github.com/ovirt/go-ovirt"
)

// Disk formats as the engine client uses them. The engine calls qcow2 "cow".
const (
	FormatRaw   = "raw"
	FormatQcow2 = "qcow2"
)

// Disk statuses.
const (
	DiskOK      = "ok"
	DiskLocked  = "locked"
	DiskIllegal = "illegal"
)

// DiskSpec describes a disk to create.
type DiskSpec struct {
	Name          string
	Description   string
	StorageDomain string // storage domain name
	Format        string // FormatRaw or FormatQcow2
	// ProvisionedSize is the virtual size in bytes.
	ProvisionedSize int64
	// InitialSize is the allocation of a sparse qcow2 disk on block storage
	// (qemu-img measure's required size); 0 leaves it unset.
	InitialSize int64
	Sparse      bool
	ISO         bool   // content_type=iso
	Backup      bool   // backup=incremental (qcow2 only)
	ID          string // disk id to use; "" lets the engine choose
}

// Disk is what the engine reports about a disk.
type Disk struct {
	ID              string
	Name            string
	Status          string // DiskOK, DiskLocked, DiskIllegal
	Format          string // FormatRaw or FormatQcow2
	ContentType     string // "data", "iso", ...
	ProvisionedSize int64
	ActualSize      int64
	InitialSize     int64
	Sparse          bool
	Backup          bool
	// StorageDomainIDs lists the storage domains holding the disk.
	StorageDomainIDs []string
}

// StorageDomain is a storage domain found by name.
type StorageDomain struct {
	ID, Name string
	Type     string // "data", "iso", ...
	Storage  string // storage type: "nfs", "iscsi", "fcp", ...
}

// Block reports whether the domain is on block storage (iSCSI or FC),
// which cannot hold sparse raw disks.
func (sd StorageDomain) Block() bool {
	return sd.Storage == "iscsi" || sd.Storage == "fcp"
}

// StorageDomain finds the storage domain called name (case-sensitive).
func (c *Client) StorageDomain(ctx context.Context, name string) (StorageDomain, error) {
	var sd StorageDomain
	what := fmt.Sprintf("looking up storage domain %q", name)
	err := c.call(ctx, what, func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().StorageDomainsService().List().
			Search("name=" + name).CaseSensitive(true).Send()
		if err != nil {
			return err
		}
		list, ok := resp.StorageDomains()
		if !ok {
			return nil
		}
		for _, d := range list.Slice() {
			if n, _ := d.Name(); n != name {
				continue
			}
			sd.ID, _ = d.Id()
			sd.Name = name
			if t, ok := d.Type(); ok {
				sd.Type = string(t)
			}
			if st, ok := d.Storage(); ok {
				if t, ok := st.Type(); ok {
					sd.Storage = string(t)
				}
			}
			return nil
		}
		return nil
	})
	if err != nil {
		return StorageDomain{}, err
	}
	if sd.ID == "" {
		return StorageDomain{}, fmt.Errorf("storage domain %q not found: %w", name, ErrStorageDomainNotFound)
	}
	return sd, nil
}

// CreateDisk looks up the storage domain, creates the disk and waits until
// it is ok (bounded by Config.DiskTimeout). A disk that turns illegal is
// ErrDiskIllegal. On timeout the disk is left to the engine (it may still be
// being created) and the error wraps ErrTimeout and names the disk id.
func (c *Client) CreateDisk(ctx context.Context, spec DiskSpec) (Disk, error) {
	if spec.Format != FormatRaw && spec.Format != FormatQcow2 {
		return Disk{}, fmt.Errorf("creating disk: unsupported format %q", spec.Format)
	}
	if spec.ProvisionedSize <= 0 {
		return Disk{}, fmt.Errorf("creating disk: invalid provisioned size %d", spec.ProvisionedSize)
	}
	if _, err := c.StorageDomain(ctx, spec.StorageDomain); err != nil {
		return Disk{}, err
	}
	b := ovirtsdk4.NewDiskBuilder().
		Name(spec.Name).
		ProvisionedSize(spec.ProvisionedSize).
		Sparse(spec.Sparse).
		StorageDomainsOfAny(ovirtsdk4.NewStorageDomainBuilder().Name(spec.StorageDomain).MustBuild())
	if spec.ID != "" {
		b = b.Id(spec.ID)
	}
	if spec.Description != "" {
		b = b.Description(spec.Description)
	}
	if spec.Format == FormatQcow2 {
		b = b.Format(ovirtsdk4.DISKFORMAT_COW)
	} else {
		b = b.Format(ovirtsdk4.DISKFORMAT_RAW)
	}
	if spec.ISO {
		b = b.ContentType(ovirtsdk4.DISKCONTENTTYPE_ISO)
	} else {
		b = b.ContentType(ovirtsdk4.DISKCONTENTTYPE_DATA)
	}
	if spec.InitialSize > 0 {
		b = b.InitialSize(spec.InitialSize)
	}
	if spec.Backup {
		b = b.Backup(ovirtsdk4.DISKBACKUP_INCREMENTAL)
	}
	d, err := b.Build()
	if err != nil {
		return Disk{}, fmt.Errorf("creating disk: %w", err)
	}
	var id string
	err = c.call(ctx, fmt.Sprintf("creating disk %q", spec.Name), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().DisksService().Add().Disk(d).Send()
		if err != nil {
			return err
		}
		got, ok := resp.Disk()
		if !ok {
			return errors.New("engine returned no disk")
		}
		if id, ok = got.Id(); !ok {
			return errors.New("engine returned a disk without id")
		}
		return nil
	})
	if err != nil {
		return Disk{}, err
	}
	c.cfg.Logf("engine: created disk %s, waiting until it is ok", id)
	return c.WaitDisk(ctx, id)
}

// WaitDisk waits until the disk id is no longer locked, bounded by
// Config.DiskTimeout. It returns the disk when it is ok, ErrDiskIllegal when
// it is illegal and ErrDiskNotFound when it was removed.
func (c *Client) WaitDisk(ctx context.Context, id string) (Disk, error) {
	p := c.newPoller(c.cfg.DiskTimeout)
	for {
		d, err := c.Disk(ctx, id)
		if err != nil {
			return Disk{}, err
		}
		switch d.Status {
		case DiskOK:
			return d, nil
		case DiskIllegal:
			return d, fmt.Errorf("waiting for disk %s: %w", id, ErrDiskIllegal)
		}
		if err := p.wait(ctx); err != nil {
			return d, fmt.Errorf("waiting for disk %s to be ok (status %s): %w", id, d.Status, err)
		}
	}
}

// Disk returns the disk id; a missing disk is ErrDiskNotFound.
func (c *Client) Disk(ctx context.Context, id string) (Disk, error) {
	var out Disk
	err := c.call(ctx, fmt.Sprintf("getting disk %s", id), func(conn *ovirtsdk4.Connection) error {
		resp, err := conn.SystemService().DisksService().DiskService(id).Get().Send()
		if err != nil {
			return err
		}
		d, ok := resp.Disk()
		if !ok {
			return errors.New("engine returned no disk")
		}
		out = diskFrom(d)
		return nil
	})
	if err != nil {
		if isNotFound(err) {
			return Disk{}, fmt.Errorf("getting disk %s: %w", id, ErrDiskNotFound)
		}
		return Disk{}, err
	}
	return out, nil
}

// RemoveDisk deletes the disk id. A disk that does not exist is not an
// error.
func (c *Client) RemoveDisk(ctx context.Context, id string) error {
	err := c.call(ctx, fmt.Sprintf("removing disk %s", id), func(conn *ovirtsdk4.Connection) error {
		_, err := conn.SystemService().DisksService().DiskService(id).Remove().Send()
		return err
	})
	if err != nil && isNotFound(err) {
		return nil
	}
	return err
}

func diskFrom(d *ovirtsdk4.Disk) Disk {
	var out Disk
	out.ID, _ = d.Id()
	out.Name, _ = d.Name()
	if s, ok := d.Status(); ok {
		out.Status = string(s)
	}
	if f, ok := d.Format(); ok {
		out.Format = FormatRaw
		if f == ovirtsdk4.DISKFORMAT_COW {
			out.Format = FormatQcow2
		}
	}
	if ct, ok := d.ContentType(); ok {
		out.ContentType = string(ct)
	}
	out.ProvisionedSize, _ = d.ProvisionedSize()
	out.ActualSize, _ = d.ActualSize()
	out.InitialSize, _ = d.InitialSize()
	out.Sparse, _ = d.Sparse()
	if b, ok := d.Backup(); ok {
		out.Backup = b == ovirtsdk4.DISKBACKUP_INCREMENTAL
	}
	if sds, ok := d.StorageDomains(); ok {
		for _, sd := range sds.Slice() {
			if id, ok := sd.Id(); ok {
				out.StorageDomainIDs = append(out.StorageDomainIDs, id)
			}
		}
	}
	return out
}
