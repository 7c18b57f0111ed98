package file

import (
	"errors"
	"io"
	"os"
	"syscall"
	"testing"

	"github.com/imageio/imageio/backend"
)

// TestNoSpace checks which errors noSpace marks as backend.ErrNoSpace; the
// cause stays reachable with errors.Is.
func TestNoSpace(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"ENOSPC from pwrite", &os.PathError{Op: "write", Path: "disk", Err: syscall.ENOSPC}, true},
		{"EDQUOT from pwrite", &os.PathError{Op: "write", Path: "disk", Err: syscall.EDQUOT}, true},
		{"ENOSPC from fallocate", os.NewSyscallError("fallocate", syscall.ENOSPC), true},
		{"EIO", &os.PathError{Op: "write", Path: "disk", Err: syscall.EIO}, false},
		{"short read", io.ErrUnexpectedEOF, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := noSpace(tc.err)
			if errors.Is(got, backend.ErrNoSpace) != tc.want {
				t.Errorf("noSpace(%v) = %v; ErrNoSpace: got %v, want %v", tc.err, got, !tc.want, tc.want)
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("noSpace(%v) = %v lost the cause", tc.err, got)
			}
		})
	}
}
