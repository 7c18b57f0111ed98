package nbdlocal

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// sysProcAttr puts qemu-nbd in its own process group, out of reach of the
// terminal's Ctrl-C, and makes the kernel send it SIGTERM when the thread
// that started it dies, so a crashed or killed caller leaves no server
// behind. Go threads do not exit while the process runs (unless a goroutine
// locked to one exits), so in practice this is the caller's death.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// directIO reports whether path can be opened with O_DIRECT, which qemu-nbd
// needs for --cache=none (file systems such as tmpfs refuse it).
func directIO(path string) bool {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
