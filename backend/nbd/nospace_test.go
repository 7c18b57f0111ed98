package nbd_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/nbd"
	"github.com/imageio/imageio/internal/testutil"
)

// TestNoSpace writes and zeroes an export of nbdkit's full plugin, which
// fails every write with ENOSPC: each error matches backend.ErrNoSpace and
// no other sentinel, and the backend still reads afterwards.
func TestNoSpace(t *testing.T) {
	b := open(t, nbdkit(t, "full", "size=8M"), nbd.Options{Sparse: true})
	defer b.Close()
	ctx := testutil.Context(t)
	p := make([]byte, 1<<20)
	tests := []struct {
		name string
		call func() error
	}{
		{"write", func() error { return b.WriteAt(ctx, p, 0) }},
		{"zero", func() error { return b.Zero(ctx, 0, 4<<20, false) }},
		{"zero punch", func() error { return b.Zero(ctx, 4<<20, 4<<20, true) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call()
			if !errors.Is(err, backend.ErrNoSpace) {
				t.Fatalf("got %v, want ErrNoSpace", err)
			}
			for _, s := range []error{backend.ErrReadOnly, backend.ErrNotSupported, backend.ErrOutOfRange, backend.ErrCanceled} {
				if errors.Is(err, s) {
					t.Errorf("%v also matches %v", err, s)
				}
			}
			if !strings.Contains(err.Error(), "ENOSPC") {
				t.Errorf("message %q does not name ENOSPC", err)
			}
		})
	}
	if err := b.ReadAt(ctx, p, 0); err != nil {
		t.Fatalf("read after ENOSPC: %v", err)
	}
}
