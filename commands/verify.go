package commands

import (
	"errors"

	"github.com/imageio/imageio/transfer"
)

// isVerifyMismatch reports whether err says the two ends of a copy differ.
func isVerifyMismatch(err error) bool {
	return errors.Is(err, transfer.ErrVerifyMismatch)
}
