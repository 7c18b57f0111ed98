package engine

import (
	"errors"
	"fmt"
	"io"
)

// ImageFacts are what the caller learned about a local image with qemu-img;
// this package runs no tools itself.
type ImageFacts struct {
	// Format is qemu-img info's format ("raw", "qcow2", ...).
	Format string
	// VirtualSize is qemu-img info's virtual-size.
	VirtualSize int64
	// Required is qemu-img measure's "required" for qcow2 output; it is used
	// only for sparse qcow2 disks (0 leaves initial_size unset).
	Required int64
	// ISO reports an ISO 9660 image (see IsISO); only raw images count.
	ISO bool
}

// PlanOptions are the user's choices for a new disk.
type PlanOptions struct {
	Name          string
	Description   string
	StorageDomain string
	// Format of the disk: FormatRaw, FormatQcow2 or "" for the image's format
	// (raw stays raw, anything else becomes qcow2).
	Format string
	// Preallocated makes a non-sparse disk.
	Preallocated bool
	// BlockStorage says the storage domain is iSCSI or FC (StorageDomain.Block):
	// such domains cannot hold sparse raw disks, so a raw disk is preallocated.
	BlockStorage bool
	ID           string
}

// PlanDisk returns the disk to create for an image, following the engine's
// rules: provisioned_size is the virtual size; an ISO is a raw, preallocated
// disk with content type iso; a raw disk on block storage is preallocated;
// initial_size is the measured size of a sparse qcow2 disk; qcow2 disks get
// incremental backup.
func PlanDisk(f ImageFacts, o PlanOptions) (DiskSpec, error) {
	if f.VirtualSize <= 0 {
		return DiskSpec{}, fmt.Errorf("planning disk: invalid virtual size %d", f.VirtualSize)
	}
	s := DiskSpec{
		Name:            o.Name,
		Description:     o.Description,
		StorageDomain:   o.StorageDomain,
		ProvisionedSize: f.VirtualSize,
		Sparse:          !o.Preallocated,
		ID:              o.ID,
	}
	switch o.Format {
	case "":
		s.Format = FormatQcow2
		if f.Format == "raw" {
			s.Format = FormatRaw
		}
	case FormatRaw, FormatQcow2:
		s.Format = o.Format
	default:
		return DiskSpec{}, fmt.Errorf("planning disk: unsupported disk format %q", o.Format)
	}
	if f.ISO && f.Format == "raw" {
		s.ISO = true
		s.Format = FormatRaw
		s.Sparse = false
	}
	if s.Format == FormatRaw && o.BlockStorage {
		s.Sparse = false
	}
	if s.Format == FormatQcow2 {
		s.Backup = true
		if s.Sparse {
			s.InitialSize = f.Required
		}
	}
	return s, nil
}

// isoMagicOffset is where an ISO 9660 primary volume descriptor has its
// standard identifier "CD001" (sector 16, after the type byte).
const isoMagicOffset = 0x8001

// IsISO reports whether the raw image r holds an ISO 9660 file system. An
// image too short to hold the descriptor is not an ISO.
func IsISO(r io.ReaderAt) (bool, error) {
	var buf [5]byte
	_, err := r.ReadAt(buf[:], isoMagicOffset)
	if errors.Is(err, io.EOF) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading ISO 9660 descriptor: %w", err)
	}
	return string(buf[:]) == "CD001", nil
}
