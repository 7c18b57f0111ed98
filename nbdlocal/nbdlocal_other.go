//go:build !linux

package nbdlocal

import "syscall"

// sysProcAttr puts qemu-nbd in its own process group; there is no
// parent-death signal outside Linux.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// directIO is false outside Linux: qemu-nbd uses the page cache.
func directIO(string) bool { return false }
