package transfer

import "golang.org/x/sys/unix"

// allocBuffer returns a buffer of size bytes mapped outside the Go heap, and
// the function that unmaps it. The buffers are most of a transfer's memory;
// kept out of the heap, they do not raise the garbage collector's target,
// so the process stays small (and the buffers are page aligned).
func allocBuffer(size int) ([]byte, func(), error) {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil, err
	}
	return b, func() { _ = unix.Munmap(b) }, nil
}
