package enginesim

import "syscall"

// sysProcAttr makes a daemon die with the simulator if the simulator is
// killed without a chance to stop it.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
