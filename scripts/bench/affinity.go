package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// pinProcess restricts every thread of pid to cpu. Threads that the process
// starts later inherit the mask of the thread that starts them, so pinning
// the existing threads pins the process.
func pinProcess(pid, cpu int) error {
	tasks, err := os.ReadDir(filepath.Join("/proc", strconv.Itoa(pid), "task"))
	if err != nil {
		return fmt.Errorf("list threads of pid %d: %w", pid, err)
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, task := range tasks {
		tid, err := strconv.Atoi(task.Name())
		if err != nil {
			continue
		}
		// A thread that exited since the listing cannot be pinned and does
		// not need to be.
		if err := unix.SchedSetaffinity(tid, &set); err != nil && err != unix.ESRCH {
			return fmt.Errorf("pin thread %d of pid %d to CPU %d: %w", tid, pid, cpu, err)
		}
	}
	return nil
}

// separateCores pins Hydra to CPU 0, and Vault, the plugin and the
// benchmark to CPU 1, so that Hydra and Vault no longer compete for the same
// core. In production the upstream runs on other machines than Vault.
func (b *bench) separateCores() error {
	if b.report.Machine.CPUs < 2 {
		return fmt.Errorf("-separate-cores: needs 2 CPUs, the machine has %d", b.report.Machine.CPUs)
	}
	for _, pin := range []struct{ pid, cpu int }{
		{b.hydraPID, 0},
		{b.vaultPID, 1},
		{b.pluginPID, 1},
		{os.Getpid(), 1},
	} {
		if err := pinProcess(pin.pid, pin.cpu); err != nil {
			return err
		}
	}
	return nil
}
