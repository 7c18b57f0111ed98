package file

import (
	"errors"
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// errUnsupported is wrapped by the Linux calls when the file system or
// device does not implement the operation.
var errUnsupported = errors.New("not supported by the file system")

// openFile opens path with O_DIRECT when direct is true and the file system
// accepts it, else buffered. It reports whether O_DIRECT is in use.
func openFile(path string, flag int, direct bool) (*os.File, bool, error) {
	if direct {
		f, err := os.OpenFile(path, flag|unix.O_DIRECT, 0)
		if err == nil {
			return f, true, nil
		}
		if !errors.Is(err, unix.EINVAL) {
			return nil, false, err
		}
	}
	f, err := os.OpenFile(path, flag, 0)
	return f, false, err
}

// probeBlockSize returns the offset alignment direct I/O on f needs: the
// kernel's answer (statx STATX_DIOALIGN) when it gives one, else the
// smallest of 1, 512 and 4096 bytes a read at offset 0 accepts, else 4096.
func probeBlockSize(f *os.File, size int64) int {
	var stx unix.Statx_t
	var serr error
	err := control(f, func(fd int) error {
		serr = unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &stx)
		return nil
	})
	if err == nil && serr == nil && stx.Mask&unix.STATX_DIOALIGN != 0 && stx.Dio_offset_align > 0 {
		return int(max(stx.Dio_offset_align, stx.Dio_mem_align))
	}
	if size == 0 {
		return pageSize // nothing to read; reads at EOF check nothing
	}
	buf := AlignedBuffer(pageSize)
	for _, bs := range []int{1, 512, 4096} {
		if _, err := f.ReadAt(buf[:bs], 0); err == nil || err == io.EOF {
			return bs
		}
	}
	return pageSize
}

// control runs fn with f's descriptor, safely against a concurrent Close.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}

func fallocate(f *os.File, mode uint32, off, length int64) error {
	err := control(f, func(fd int) error {
		for {
			err := unix.Fallocate(fd, mode, off, length)
			if err != unix.EINTR {
				return err
			}
		}
	})
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.ENOTTY) {
		return errors.Join(errUnsupported, err)
	}
	if err != nil {
		return &os.SyscallError{Syscall: "fallocate", Err: err}
	}
	return nil
}

func punchHole(f *os.File, off, length int64) error {
	return fallocate(f, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func zeroRange(f *os.File, off, length int64) error {
	return fallocate(f, unix.FALLOC_FL_ZERO_RANGE|unix.FALLOC_FL_KEEP_SIZE, off, length)
}

func allocate(f *os.File, off, length int64) error {
	return fallocate(f, 0, off, length)
}

// zeroOut zeroes a range of a block device with the BLKZEROOUT ioctl.
func zeroOut(f *os.File, off, length int64) error {
	r := [2]uint64{uint64(off), uint64(length)}
	err := control(f, func(fd int) error {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.BLKZEROOUT, uintptr(unsafe.Pointer(&r[0])))
		if errno != 0 {
			return errno
		}
		return nil
	})
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return errors.Join(errUnsupported, err)
	}
	if err != nil {
		return &os.SyscallError{Syscall: "ioctl BLKZEROOUT", Err: err}
	}
	return nil
}
