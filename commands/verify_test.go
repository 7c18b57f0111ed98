package commands

import (
	"fmt"

	"github.com/imageio/imageio/transfer"
)

func verifyExitCases() []struct {
	name string
	err  error
	want int
} {
	return []struct {
		name string
		err  error
		want int
	}{
		{"verify mismatch", fmt.Errorf("uploading: %w", &transfer.VerifyError{Algorithm: "blake2b", Local: "a", Remote: "b"}), 3},
		{"verify sentinel", transfer.ErrVerifyMismatch, 3},
	}
}
