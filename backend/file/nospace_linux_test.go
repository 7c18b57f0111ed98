package file_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imageio/imageio/backend"
	"github.com/imageio/imageio/backend/file"
	"github.com/imageio/imageio/internal/testutil"
)

// shmDir is a tmpfs that every user may write to on most Linux systems.
const shmDir = "/dev/shm"

// TestZeroNoSpace gets a real ENOSPC from the kernel without filling
// anything: on tmpfs, allocating a range larger than the whole file
// system fails at once with ENOSPC before a page is allocated. The image
// is a sparse file larger than the tmpfs, and Zero without punch must
// allocate the whole range. The test skips when /dev/shm is not a tmpfs
// with a size limit.
func TestZeroNoSpace(t *testing.T) {
	var st unix.Statfs_t
	if err := unix.Statfs(shmDir, &st); err != nil {
		t.Skipf("statfs %s: %v", shmDir, err)
	}
	if st.Type != unix.TMPFS_MAGIC || st.Blocks == 0 {
		t.Skipf("%s is not a tmpfs with a size limit", shmDir)
	}
	dir, err := os.MkdirTemp(shmDir, "imageio-test-")
	if err != nil {
		t.Skipf("cannot write to %s: %v", shmDir, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// Larger than the file system by 2 GiB, a multiple of 1 MiB.
	size := (int64(st.Blocks)*int64(st.Bsize) + 2<<30) &^ (1<<20 - 1)
	path := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Skipf("making a sparse file of %d bytes on %s: %v", size, shmDir, err)
	}
	b, err := file.Open(path, file.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	err = b.Zero(context.Background(), 0, size, false)
	t.Logf("Zero: %v", err)
	if !errors.Is(err, backend.ErrNoSpace) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Zero of %d bytes on a smaller tmpfs: got %v, want ErrNoSpace and ENOSPC", size, err)
	}
	if errors.Is(err, backend.ErrOutOfRange) || errors.Is(err, backend.ErrReadOnly) {
		t.Errorf("Zero error %v matches another sentinel", err)
	}
	if n := testutil.Allocated(t, path); n > 1<<20 {
		t.Errorf("%d bytes allocated after the failed zero, want none", n)
	}
	// The backend still works for ranges that fit.
	if err := b.WriteAt(context.Background(), make([]byte, 4096), 0); err != nil {
		t.Errorf("small write after ENOSPC: %v", err)
	}
}
