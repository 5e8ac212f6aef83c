package devstack

import "syscall"

// childSysProcAttr puts a server in its own process group, so that signals
// reach its children too. It also sets the parent-death signal, so the
// kernel sends the server SIGTERM when the thread that started it exits.
// SIGTERM rather than SIGKILL lets Vault stop its plugin processes on the
// way out, because after a SIGKILL they would live on as orphans.
//
// NOTE: Pdeathsig follows the starting OS thread, not the Go program. The Go
// runtime keeps threads alive unless a goroutine exits while locked to one,
// which nothing here does.
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
