//go:build unix

package devstack

import (
	"os"
	"syscall"
)

// signalGroup sends sig to the process group led by proc. Errors are ignored
// because the group may already be gone.
func signalGroup(proc *os.Process, sig syscall.Signal) {
	_ = syscall.Kill(-proc.Pid, sig)
}
