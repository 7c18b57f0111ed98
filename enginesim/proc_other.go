//go:build !linux

package enginesim

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
