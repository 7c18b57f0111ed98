package engine

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers branch on them with errors.Is.
var (
	// ErrStorageDomainNotFound means no storage domain has the given name.
	ErrStorageDomainNotFound = errors.New("storage domain not found")
	// ErrDiskNotFound means the engine answered 404 for the disk.
	ErrDiskNotFound = errors.New("disk not found")
	// ErrDiskIllegal means the disk is in the illegal status.
	ErrDiskIllegal = errors.New("disk is illegal")
	// ErrTransferNotFound means the engine answered 404 for the transfer.
	ErrTransferNotFound = errors.New("image transfer not found")
	// ErrAuth means the engine rejected the credentials or the token.
	ErrAuth = errors.New("engine authentication failed")
	// ErrTimeout means a wait ran past its Config timeout.
	ErrTimeout = errors.New("timed out")
)

// PhaseError is returned by StartTransfer when the transfer does not reach
// the transferring phase: it was paused by the system, failed, or was
// removed. The transfer has been cancelled when that was needed.
type PhaseError struct {
	TransferID string
	Phase      string // the phase seen, or "removed" after a 404
	Reason     string
}

func (e *PhaseError) Error() string {
	return fmt.Sprintf("image transfer %s is %s: %s", e.TransferID, e.Phase, e.Reason)
}

// FinalizeError is returned by Finalize when the engine did not accept the
// image: the transfer ended in finished_failure or paused_system, or was
// removed while the disk is not ok.
type FinalizeError struct {
	TransferID string
	DiskID     string
	Phase      string // last phase seen, or "removed"
	Reason     string
}

func (e *FinalizeError) Error() string {
	return fmt.Sprintf("finalizing image transfer %s of disk %s: %s (phase %s)", e.TransferID, e.DiskID, e.Reason, e.Phase)
}
