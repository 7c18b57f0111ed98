package nbd

import (
	"errors"
	"testing"

	"github.com/imageio/imageio/internal/testutil"
)

// TestErrorIs checks which sentinel each errno of an error reply matches.
func TestErrorIs(t *testing.T) {
	sentinels := []error{ErrNotSupported, ErrReadOnly, ErrNoSpace, ErrOutOfRange, ErrProtocol}
	tests := []struct {
		errno uint32
		want  error // nil: none
	}{
		{ENOTSUP, ErrNotSupported},
		{EPERM, ErrReadOnly},
		{ENOSPC, ErrNoSpace},
		{EIO, nil},
		{EINVAL, nil},
		{ENOMEM, nil},
		{ESHUTDOWN, nil},
	}
	for _, tc := range tests {
		t.Run(ErrnoName(tc.errno), func(t *testing.T) {
			err := &Error{Errno: tc.errno}
			for _, s := range sentinels {
				if got, want := errors.Is(err, s), s == tc.want; got != want {
					t.Errorf("errors.Is(%v, %v) = %v, want %v", err, s, got, want)
				}
			}
		})
	}
}

// TestNoSpaceFromNBDKit writes and zeroes through nbdkit's full plugin,
// whose every write fails with ENOSPC: both errors match ErrNoSpace, and
// the connection still serves reads afterwards.
func TestNoSpaceFromNBDKit(t *testing.T) {
	c := dial(t, nbdkit(t, "full", "size=4M"), Options{})
	ctx := testutil.Context(t)
	p := make([]byte, 64<<10)
	tests := []struct {
		name string
		call func() error
	}{
		{"write", func() error { return c.WriteAt(ctx, p, 0) }},
		{"zero", func() error { return c.Zero(ctx, 0, 1<<20, ZeroNoHole) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, ErrNoSpace) {
				t.Fatalf("error = %v, want ErrNoSpace", err)
			}
			if errnoOf(err) != ENOSPC {
				t.Errorf("errno of %v is not ENOSPC", err)
			}
		})
	}
	if err := c.ReadAt(ctx, p, 0); err != nil {
		t.Fatalf("read after ENOSPC: %v", err)
	}
}
