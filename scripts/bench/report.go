package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Scenario names, as in the tables and the JSON.
const (
	scenarioMint     = "A"
	scenarioKV       = "B"
	scenarioHydra    = "C"
	scenarioRotating = "D"
)

// scenarioDescriptions describe the request of each scenario.
var scenarioDescriptions = map[string]string{
	scenarioMint:     "vault write ci-tokens/creds/deploy (client_credentials role) over the HTTP API",
	scenarioKV:       "kv-v2 write of a payload as large as a mint response's data, on the same Vault",
	scenarioHydra:    "the engine's client_credentials request sent straight to Hydra's token endpoint",
	scenarioRotating: "A while ci-tokens/rotate-root is called every second",
}

// report is the JSON document of one run.
type report struct {
	StartedAt  time.Time   `json:"started_at"`
	FinishedAt time.Time   `json:"finished_at"`
	Machine    machineInfo `json:"machine"`

	// LoadAverage is the machine's 1-minute load average when the servers
	// were ready, before any load.
	LoadAverage float64  `json:"load_average_before"`
	Versions    versions `json:"versions"`
	Settings    settings `json:"settings"`

	Scenarios []scenarioResult `json:"scenarios"`
	Ratios    ratios           `json:"ratios"`

	// HydraAfterIdle is set when level 1 was measured.
	HydraAfterIdle *idleControl `json:"hydra_after_idle,omitempty"`

	Memory  memoryResult   `json:"memory"`
	Targets []targetResult `json:"targets"`
}

// versions names the software that was measured.
type versions struct {
	Go     string `json:"go"`
	Vault  string `json:"vault"`
	Hydra  string `json:"hydra"`
	Plugin string `json:"plugin"`
	Commit string `json:"commit"`
}

// settings are the flags that shaped the run.
type settings struct {
	Levels          []int   `json:"levels"`
	DurationSeconds float64 `json:"duration_seconds"`
	Rounds          int     `json:"rounds"`
	MaxRequests     int     `json:"max_requests"`
	WarmupSeconds   float64 `json:"warmup_seconds"`
	Mints           int     `json:"memory_mints"`
	MintConcurrency int     `json:"memory_concurrency"`
	RotateEverySecs float64 `json:"rotate_every_seconds"`
	SeparateCores   bool    `json:"separate_cores"`
	VaultLogLevel   string  `json:"vault_log_level"`
	MaxOtherCores   float64 `json:"max_other_cores"`
	LevelAttempts   int     `json:"level_attempts"`
	KVPayloadBytes  int     `json:"kv_payload_bytes"`
}

// scenarioResult holds one scenario at every level.
type scenarioResult struct {
	Name        string        `json:"name"`
	Description string        `json:"description"`
	Levels      []levelResult `json:"levels"`
}

// levelResult is one scenario at one concurrency. Requests and the
// latencies count every successful request. RPS counts only those that
// finished within Seconds, the measured time without the wait for the
// requests still in flight at its end.
type levelResult struct {
	Concurrency  int      `json:"concurrency"`
	Requests     int      `json:"requests"`
	Errors       int      `json:"errors"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	Seconds      float64  `json:"seconds"`
	RPS          float64  `json:"rps"`
	P50Ms        float64  `json:"p50_ms"`
	P99Ms        float64  `json:"p99_ms"`
	MaxMs        float64  `json:"max_ms"`
	MeanMs       float64  `json:"mean_ms"`

	// CPU is the CPU time each process used per successful request.
	CPU cpuPerRequest `json:"cpu_ms_per_request"`

	// BusyCores is the CPU time of all four processes divided by the wall
	// time, waits included: how many of the machine's cores the run kept
	// busy.
	BusyCores float64 `json:"busy_cores"`

	// OtherCores is the same for every other process on the machine. Above
	// about 0.1 other work took CPU from the servers during the run.
	OtherCores float64 `json:"other_cores"`

	// Attempts is how many times the level was measured because other
	// programs disturbed it; the result is from the least disturbed one.
	Attempts int `json:"attempts"`

	// Rotation is set for scenario D only.
	Rotation *rotationResult `json:"rotation,omitempty"`
}

// cpuPerRequest is CPU milliseconds per successful request, by process.
type cpuPerRequest struct {
	Vault  float64 `json:"vault"`
	Plugin float64 `json:"plugin"`
	Hydra  float64 `json:"hydra"`
	Bench  float64 `json:"bench"`
}

// rotationResult is the outcome of the rotate-root calls of scenario D.
type rotationResult struct {
	Calls            int      `json:"calls"`
	Errors           int      `json:"errors"`
	ErrorSamples     []string `json:"error_samples,omitempty"`
	P50Ms            float64  `json:"p50_ms"`
	MaxMs            float64  `json:"max_ms"`
	GenerationBefore int64    `json:"generation_before"`
	GenerationAfter  int64    `json:"generation_after"`
	StateAfter       string   `json:"state_after"`
}

// ratios compares A with the floors B and C.
type ratios struct {
	// LatencyC1 is A's p50 over the sum of B's and C's p50 at concurrency 1.
	LatencyC1 *float64 `json:"latency_a_over_b_plus_c_c1"`

	// Throughput maps a concurrency to A's requests per second over the
	// smaller of B's and C's.
	Throughput map[int]float64 `json:"throughput_a_over_min_b_c"`
}

// memorySample is the plugin's memory at one point of the memory phase.
type memorySample struct {
	Mints      int `json:"mints"`
	LiveLeases int `json:"live_leases"`
	memoryStatus
}

// levelMemory is the plugin's memory after one concurrency level.
type levelMemory struct {
	Concurrency int `json:"concurrency"`
	memorySample
}

// memoryResult is the memory phase: mints at one concurrency, with the
// plugin's memory read at several lease counts.
type memoryResult struct {
	PluginPID    int            `json:"plugin_pid"`
	Samples      []memorySample `json:"samples"`
	Errors       int            `json:"errors"`
	ErrorSamples []string       `json:"error_samples,omitempty"`

	// HWMAfterMintsKiB is the plugin's peak RSS when the phase ended.
	HWMAfterMintsKiB int64 `json:"vm_hwm_kib_after_mints"`

	// SlopeBytesPerLease is the least-squares slope of VmRSS over live
	// leases, from the first sample after minting started.
	SlopeBytesPerLease float64 `json:"slope_bytes_per_lease"`

	// Flat reports whether the slope stays under flatSlopeBytesPerLease.
	Flat bool `json:"flat"`

	// AfterLevels is the plugin's memory after each concurrency level of
	// the scenarios, which shows how it grows with concurrency.
	AfterLevels []levelMemory `json:"after_levels"`

	// EndOfRun is the plugin's memory after every scenario, when it had
	// served EndOfRunMints mints in all.
	EndOfRun      memoryStatus `json:"end_of_run"`
	EndOfRunMints int          `json:"end_of_run_mints"`
	EndOfRunVault memoryStatus `json:"end_of_run_vault"`
}

// targetResult is one target of the benchmark and whether the run met it.
type targetResult struct {
	Name string `json:"name"`
	Want string `json:"want"`
	Got  string `json:"got"`
	Met  bool   `json:"met"`
}

// level returns the result of scenario name at concurrency, or nil.
func (r *report) level(name string, concurrency int) *levelResult {
	for i := range r.Scenarios {
		if r.Scenarios[i].Name != name {
			continue
		}
		for j := range r.Scenarios[i].Levels {
			if r.Scenarios[i].Levels[j].Concurrency == concurrency {
				return &r.Scenarios[i].Levels[j]
			}
		}
	}
	return nil
}

// writeJSON writes the report to path, creating its directory.
func (r *report) writeJSON(path string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("create results directory: %w", err)
	}
	if err := os.WriteFile(path, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}

// writeTables writes the results as Markdown tables, which read as plain
// text on a terminal and paste into a README unchanged.
func (r *report) writeTables(w io.Writer) {
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %.1f GiB RAM, Linux %s, load average %.2f before the run; Vault %s, Hydra %s, plugin %s (%s), %s.\n\n",
		r.Machine.CPUModel, r.Machine.CPUs, float64(r.Machine.MemKiB)/(1<<20), r.Machine.Kernel, r.LoadAverage,
		r.Versions.Vault, r.Versions.Hydra, r.Versions.Plugin, r.Versions.Commit, r.Versions.Go)
	if r.Settings.SeparateCores {
		fmt.Fprintln(w, "Hydra pinned to CPU 0; Vault, the plugin and the benchmark pinned to CPU 1.")
		fmt.Fprintln(w)
	}

	fmt.Fprintln(w, "| scenario | c | req/s | p50 ms | p99 ms | max ms | errors | CPU ms/req vault / plugin / hydra / bench | busy cores | other cores |")
	fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
	for _, scenario := range r.Scenarios {
		for _, l := range scenario.Levels {
			fmt.Fprintf(w, "| %s | %d | %.0f | %.2f | %.2f | %.2f | %d | %.2f / %.2f / %.2f / %.2f | %.2f | %.2f |\n",
				scenario.Name, l.Concurrency, l.RPS, l.P50Ms, l.P99Ms, l.MaxMs, l.Errors,
				l.CPU.Vault, l.CPU.Plugin, l.CPU.Hydra, l.CPU.Bench, l.BusyCores, l.OtherCores)
		}
	}
	fmt.Fprintln(w)
	for _, scenario := range r.Scenarios {
		fmt.Fprintf(w, "- %s: %s\n", scenario.Name, scenario.Description)
	}

	r.writeIdleControl(w)
	r.writeRotation(w)
	r.writeMemory(w)

	fmt.Fprintln(w, "\n| target | wanted | measured | met |")
	fmt.Fprintln(w, "|---|---|---|---|")
	for _, target := range r.Targets {
		met := "no"
		if target.Met {
			met = "yes"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s |\n", target.Name, target.Want, target.Got, met)
	}
}

func (r *report) writeRotation(w io.Writer) {
	fmt.Fprintln(w, "\n| D at c | rotate-root calls | failed | p50 ms | max ms | generation before → after | state after |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|---|---|")
	for _, scenario := range r.Scenarios {
		if scenario.Name != scenarioRotating {
			continue
		}
		for _, l := range scenario.Levels {
			if rot := l.Rotation; rot != nil {
				fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.1f | %d → %d | %s |\n", l.Concurrency,
					rot.Calls, rot.Errors, rot.P50Ms, rot.MaxMs, rot.GenerationBefore, rot.GenerationAfter, rot.StateAfter)
			}
		}
	}
}

func (r *report) writeMemory(w io.Writer) {
	m := r.Memory
	fmt.Fprintln(w, "\n| mints | live leases | plugin VmRSS MiB | plugin VmHWM MiB |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|")
	for _, s := range m.Samples {
		fmt.Fprintf(w, "| %d | %d | %.1f | %.1f |\n", s.Mints, s.LiveLeases, kibToMiB(s.VmRSSKiB), kibToMiB(s.VmHWMKiB))
	}
	fmt.Fprintln(w, "\n| after level c | mints | live leases | plugin VmRSS MiB | plugin VmHWM MiB |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|")
	for _, s := range m.AfterLevels {
		fmt.Fprintf(w, "| %d | %d | %d | %.1f | %.1f |\n", s.Concurrency, s.Mints, s.LiveLeases, kibToMiB(s.VmRSSKiB), kibToMiB(s.VmHWMKiB))
	}
	fmt.Fprintf(w, "\nRSS slope over live leases: %.0f bytes per lease. At the end of the run, after %d mints: plugin VmRSS %.1f MiB, VmHWM %.1f MiB; Vault VmRSS %.1f MiB.\n",
		m.SlopeBytesPerLease, m.EndOfRunMints, kibToMiB(m.EndOfRun.VmRSSKiB), kibToMiB(m.EndOfRun.VmHWMKiB), kibToMiB(m.EndOfRunVault.VmRSSKiB))
}

func kibToMiB(kib int64) float64 { return float64(kib) / 1024 }

// milliseconds converts d to fractional milliseconds.
func milliseconds(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
