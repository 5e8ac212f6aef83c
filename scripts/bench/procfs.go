package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicksPerSecond is USER_HZ, the unit of utime and stime in
// /proc/<pid>/stat and of /proc/stat, which `getconf CLK_TCK` prints.
// NOTE: it is 100 on x86 and arm Linux; a kernel with another value would
// scale every CPU figure.
const clockTicksPerSecond = 100

// memoryStatus is the memory use of one process, from /proc/<pid>/status.
type memoryStatus struct {
	// VmRSSKiB is the resident set size now.
	VmRSSKiB int64 `json:"vm_rss_kib"`

	// VmHWMKiB is the peak resident set size since the process started.
	VmHWMKiB int64 `json:"vm_hwm_kib"`
}

// readMemoryStatus reads VmRSS and VmHWM of pid.
func readMemoryStatus(pid int) (memoryStatus, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return memoryStatus{}, fmt.Errorf("read memory status of pid %d: %w", pid, err)
	}
	var status memoryStatus
	for _, line := range strings.Split(string(data), "\n") {
		name, value, found := strings.Cut(line, ":")
		if !found {
			continue
		}
		switch name {
		case "VmRSS":
			status.VmRSSKiB, err = parseKiB(value)
		case "VmHWM":
			status.VmHWMKiB, err = parseKiB(value)
		}
		if err != nil {
			return memoryStatus{}, fmt.Errorf("parse %s of pid %d: %w", name, pid, err)
		}
	}
	if status.VmRSSKiB == 0 || status.VmHWMKiB == 0 {
		return memoryStatus{}, fmt.Errorf("pid %d has no VmRSS or VmHWM in its status", pid)
	}
	return status, nil
}

// parseKiB parses a /proc/<pid>/status value such as "  12345 kB".
func parseKiB(value string) (int64, error) {
	number, unit, _ := strings.Cut(strings.TrimSpace(value), " ")
	if unit != "kB" {
		return 0, fmt.Errorf("unexpected unit %q", unit)
	}
	return strconv.ParseInt(number, 10, 64)
}

// statFields returns the fields of /proc/<pid>/stat after the command name,
// so that index 0 is field 3 (state). The command name is in parentheses
// and may itself contain spaces and parentheses.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, err
	}
	end := bytes.LastIndexByte(data, ')')
	if end < 0 {
		return nil, fmt.Errorf("malformed /proc/%d/stat", pid)
	}
	return strings.Fields(string(data[end+1:])), nil
}

// cpuSeconds returns the user plus system CPU time that pid has used.
func cpuSeconds(pid int) (float64, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, fmt.Errorf("read CPU time of pid %d: %w", pid, err)
	}
	// utime and stime are fields 14 and 15 of the stat line.
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	utime, err := strconv.ParseInt(fields[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse utime of pid %d: %w", pid, err)
	}
	stime, err := strconv.ParseInt(fields[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parse stime of pid %d: %w", pid, err)
	}
	return float64(utime+stime) / clockTicksPerSecond, nil
}

// machineBusySeconds returns the CPU time that all processes have used
// since boot, summed over every CPU: the busy fields of the first line of
// /proc/stat (user, nice, system, irq, softirq, steal).
func machineBusySeconds() (float64, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("read machine CPU time: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	if len(fields) < 9 || fields[0] != "cpu" {
		return 0, fmt.Errorf("unexpected first line of /proc/stat: %q", line)
	}
	var ticks int64
	for _, index := range []int{1, 2, 3, 6, 7, 8} {
		value, err := strconv.ParseInt(fields[index], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse /proc/stat field %d: %w", index, err)
		}
		ticks += value
	}
	return float64(ticks) / clockTicksPerSecond, nil
}

// loadAverage returns the 1-minute load average, or -1 when it cannot be
// read.
func loadAverage() float64 {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	first, _, _ := strings.Cut(string(data), " ")
	value, err := strconv.ParseFloat(first, 64)
	if err != nil {
		return -1
	}
	return value
}

// parentPID returns the parent process id of pid.
func parentPID(pid int) (int, error) {
	fields, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// ppid is field 4 of the stat line.
	if len(fields) < 2 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	return strconv.Atoi(fields[1])
}

// findChildByExe returns the pid of the child of parent whose executable is
// exe. Vault starts each external plugin as its own child process, so the
// plugin is the child that runs the plugin binary.
func findChildByExe(parent int, exe string) (int, error) {
	want, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return 0, fmt.Errorf("resolve plugin binary: %w", err)
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("list processes: %w", err)
	}
	var found []int
	for _, entry := range entries {
		pid, err := strconv.Atoi(entry.Name())
		if err != nil {
			continue
		}
		// Processes that exit during the scan leave unreadable entries.
		ppid, err := parentPID(pid)
		if err != nil || ppid != parent {
			continue
		}
		got, err := os.Readlink(filepath.Join("/proc", entry.Name(), "exe"))
		if err == nil && got == want {
			found = append(found, pid)
		}
	}
	switch len(found) {
	case 0:
		return 0, fmt.Errorf("no child of pid %d runs %s", parent, want)
	case 1:
		return found[0], nil
	default:
		return 0, fmt.Errorf("%d children of pid %d run %s, expected one", len(found), parent, want)
	}
}

// machineInfo describes the computer a run used.
type machineInfo struct {
	CPUModel string `json:"cpu_model"`
	CPUs     int    `json:"cpus"`
	MemKiB   int64  `json:"mem_total_kib"`
	Kernel   string `json:"kernel"`
	GoOSArch string `json:"go_os_arch"`
}

// readMachineInfo reads the CPU model, memory and kernel release from /proc.
// Fields it cannot read stay empty.
func readMachineInfo(cpus int, osArch string) machineInfo {
	info := machineInfo{CPUs: cpus, GoOSArch: osArch}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			name, value, found := strings.Cut(line, ":")
			if found && strings.TrimSpace(name) == "model name" {
				info.CPUModel = strings.TrimSpace(value)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if value, found := strings.CutPrefix(line, "MemTotal:"); found {
				info.MemKiB, _ = parseKiB(value)
				break
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		info.Kernel = strings.TrimSpace(string(data))
	}
	return info
}
