//go:build unix && !linux

package devstack

import "syscall"

// childSysProcAttr puts a server in its own process group, so that signals
// reach its children too. Outside Linux there is no parent-death signal, so a
// server outlives a test binary that is killed before Close runs.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
