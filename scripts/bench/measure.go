package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"time"
)

// scenarioOrder is the order in which the scenarios run within a round.
var scenarioOrder = []string{scenarioMint, scenarioKV, scenarioHydra, scenarioRotating}

// runPhases runs the memory phase on the fresh plugin, then every scenario
// at every level. Within a level the scenarios take turns for cfg.rounds
// rounds of cfg.duration/cfg.rounds each, so that a burst of other work on
// the machine, or a change of server state, falls on all of them alike.
func (b *bench) runPhases(ctx context.Context) error {
	memory, err := b.measureMemory(ctx)
	if err != nil {
		return err
	}
	b.report.Memory = memory

	for _, name := range scenarioOrder {
		b.report.Scenarios = append(b.report.Scenarios, scenarioResult{Name: name, Description: scenarioDescriptions[name]})
	}
	for _, concurrency := range b.cfg.levels {
		if err := b.measureLevel(ctx, concurrency); err != nil {
			return err
		}
		if concurrency == 1 {
			b.report.HydraAfterIdle, err = b.measureIdleControl(ctx)
			if err != nil {
				return err
			}
		}
		sample, err := b.sampleMemory(ctx)
		if err != nil {
			return err
		}
		b.report.Memory.AfterLevels = append(b.report.Memory.AfterLevels, levelMemory{Concurrency: concurrency, memorySample: sample})
	}

	end, err := readMemoryStatus(b.pluginPID)
	if err != nil {
		return err
	}
	vault, err := readMemoryStatus(b.vaultPID)
	if err != nil {
		return err
	}
	b.report.Memory.EndOfRun, b.report.Memory.EndOfRunVault = end, vault
	b.report.Memory.EndOfRunMints = int(b.mints.Load())
	return ctx.Err()
}

// measureLevel measures every scenario at concurrency and appends one
// levelResult to each scenario. When other programs took more than
// cfg.maxOtherCores of CPU during an attempt, it measures the level again,
// up to cfg.levelAttempts times, and keeps the attempt they disturbed
// least.
func (b *bench) measureLevel(ctx context.Context, concurrency int) error {
	var best map[string]levelResult
	bestNoise := 0.0
	for attempt := 1; attempt <= b.cfg.levelAttempts; attempt++ {
		levels, err := b.measureAttempt(ctx, concurrency)
		if err != nil {
			return err
		}
		noise := 0.0
		for _, level := range levels {
			noise = max(noise, level.OtherCores)
		}
		if best == nil || noise < bestNoise {
			best, bestNoise = levels, noise
		}
		for name := range best {
			level := best[name]
			level.Attempts = attempt
			best[name] = level
		}
		if noise <= b.cfg.maxOtherCores {
			break
		}
		progress("c=%d: other programs used up to %.2f cores, above %.2f; attempt %d of %d",
			concurrency, noise, b.cfg.maxOtherCores, attempt, b.cfg.levelAttempts)
	}
	for i := range b.report.Scenarios {
		scenario := &b.report.Scenarios[i]
		level := best[scenario.Name]
		scenario.Levels = append(scenario.Levels, level)
		progress("%s c=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors, %.2f cores used by other programs",
			scenario.Name, concurrency, level.RPS, level.P50Ms, level.P99Ms, level.Errors, level.OtherCores)
	}
	return nil
}

// measureAttempt runs every scenario at concurrency in interleaved rounds
// and returns the result of each, by scenario name.
func (b *bench) measureAttempt(ctx context.Context, concurrency int) (map[string]levelResult, error) {
	totals := map[string]*levelTotals{}
	for _, name := range scenarioOrder {
		totals[name] = &levelTotals{}
	}
	for round := range b.cfg.rounds {
		for _, name := range scenarioOrder {
			// Connections stay in the idle pool between rounds, so only
			// the first round needs a warm-up.
			if round == 0 && b.cfg.warmup > 0 {
				runLoad(ctx, loadSpec{concurrency: concurrency, duration: b.cfg.warmup}, b.requestFunc(name))
			}
			if err := b.measureRound(ctx, name, concurrency, totals[name]); err != nil {
				return nil, err
			}
		}
	}
	levels := map[string]levelResult{}
	for name, total := range totals {
		levels[name] = total.result(concurrency)
	}
	return levels, nil
}

// requestFunc returns the request of scenario name.
func (b *bench) requestFunc(name string) requestFunc {
	switch name {
	case scenarioKV:
		return b.targets.kvWrite
	case scenarioHydra:
		return b.targets.tokenRequest
	default:
		return b.countedMint
	}
}

// countedMint mints and counts the mints that succeeded.
func (b *bench) countedMint(ctx context.Context, worker, seq int) error {
	err := b.targets.mint(ctx, worker, seq)
	if err == nil {
		b.mints.Add(1)
	}
	return err
}

// measureRound runs one measured round of scenario name and adds it to
// totals. Scenario D also calls rotate-root during the round.
func (b *bench) measureRound(ctx context.Context, name string, concurrency int, totals *levelTotals) error {
	spec := loadSpec{
		concurrency: concurrency,
		duration:    b.cfg.duration / time.Duration(b.cfg.rounds),
		maxRequests: (b.cfg.maxRequests + b.cfg.rounds - 1) / b.cfg.rounds,
	}
	if name != scenarioRotating {
		return b.measureLoad(ctx, spec, b.requestFunc(name), totals)
	}

	if totals.rotation == nil {
		status, err := b.targets.status(ctx)
		if err != nil {
			return fmt.Errorf("read status before rotating: %w", err)
		}
		totals.rotation = &rotationTotals{generationBefore: status.Data.Generation}
	}
	rotateCtx, stopRotating := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.rotateEvery(rotateCtx, totals.rotation)
	}()
	err := b.measureLoad(ctx, spec, b.requestFunc(name), totals)
	stopRotating()
	<-done
	if err != nil {
		return err
	}

	status, err := b.targets.status(ctx)
	if err != nil {
		return fmt.Errorf("read status after rotating: %w", err)
	}
	totals.rotation.generationAfter = status.Data.Generation
	totals.rotation.stateAfter = status.Data.State
	return nil
}

// measureLoad runs one measured load and adds it, with the CPU time that
// each process spent on it, to totals.
func (b *bench) measureLoad(ctx context.Context, spec loadSpec, fn requestFunc, totals *levelTotals) error {
	before, err := b.readCPU()
	if err != nil {
		return err
	}
	result := runLoad(ctx, spec, fn)
	after, err := b.readCPU()
	if err != nil {
		return err
	}
	totals.add(result, after.sub(before))
	return ctx.Err()
}

// rotateEvery calls rotate-root at once and then every cfg.rotateEvery
// until ctx ends, and adds the calls to totals. A call that takes longer
// than the interval delays the next one rather than overlapping it.
func (b *bench) rotateEvery(ctx context.Context, totals *rotationTotals) {
	ticker := time.NewTicker(b.cfg.rotateEvery)
	defer ticker.Stop()
	for ctx.Err() == nil {
		begin := time.Now()
		// The call gets its own context: cutting one off when the load
		// ends would count as a failed rotation.
		callCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), requestTimeout)
		err := b.targets.rotateRoot(callCtx)
		cancel()
		totals.calls++
		if err != nil {
			totals.errors.errors++
			totals.errors.addErrorSample(err.Error())
		} else {
			totals.latencies = append(totals.latencies, time.Since(begin))
		}
		select {
		case <-ctx.Done():
		case <-ticker.C:
		}
	}
}

// levelTotals adds up the rounds of one scenario at one level.
type levelTotals struct {
	load     loadResult
	cpu      cpuTimes
	rotation *rotationTotals
}

// rotationTotals adds up the rotate-root calls of scenario D at one level.
type rotationTotals struct {
	calls            int
	latencies        []time.Duration
	errors           loadResult
	generationBefore int64
	generationAfter  int64
	stateAfter       string
}

func (t *levelTotals) add(result loadResult, cpu cpuTimes) {
	t.load.latencies = append(t.load.latencies, result.latencies...)
	t.load.errors += result.errors
	for _, sample := range result.errorSamples {
		t.load.addErrorSample(sample)
	}
	t.load.elapsed += result.elapsed
	t.load.window += result.window
	t.load.inWindow += result.inWindow
	t.cpu = t.cpu.add(cpu)
}

// result returns the level's statistics over all rounds.
func (t *levelTotals) result(concurrency int) levelResult {
	latencies := slices.Sorted(slices.Values(t.load.latencies))
	level := levelResult{
		Concurrency:  concurrency,
		Requests:     len(latencies),
		Errors:       t.load.errors,
		ErrorSamples: t.load.errorSamples,
		Seconds:      t.load.window.Seconds(),
		P50Ms:        milliseconds(percentile(latencies, 50)),
		P99Ms:        milliseconds(percentile(latencies, 99)),
		MaxMs:        milliseconds(percentile(latencies, 100)),
		MeanMs:       milliseconds(mean(latencies)),
	}
	if level.Seconds > 0 {
		level.RPS = float64(t.load.inWindow) / level.Seconds
	}
	// CPU time was read before the first start and after the last
	// response, so it is divided by the elapsed time.
	if elapsed := t.load.elapsed.Seconds(); elapsed > 0 {
		level.BusyCores = t.cpu.total() / elapsed
		level.OtherCores = t.cpu.others() / elapsed
	}
	if level.Requests > 0 {
		level.CPU = t.cpu.perRequest(level.Requests)
	}
	if r := t.rotation; r != nil {
		rotationLatencies := slices.Sorted(slices.Values(r.latencies))
		level.Rotation = &rotationResult{
			Calls:            r.calls,
			Errors:           r.errors.errors,
			ErrorSamples:     r.errors.errorSamples,
			P50Ms:            milliseconds(percentile(rotationLatencies, 50)),
			MaxMs:            milliseconds(percentile(rotationLatencies, 100)),
			GenerationBefore: r.generationBefore,
			GenerationAfter:  r.generationAfter,
			StateAfter:       r.stateAfter,
		}
	}
	return level
}

// cpuTimes is the CPU time of each process, and of the whole machine, in
// seconds.
type cpuTimes struct {
	vault, plugin, hydra, bench float64
	machine                     float64
}

func (b *bench) readCPU() (cpuTimes, error) {
	var (
		times cpuTimes
		err   error
	)
	for _, read := range []struct {
		pid  int
		into *float64
	}{
		{b.vaultPID, &times.vault},
		{b.pluginPID, &times.plugin},
		{b.hydraPID, &times.hydra},
		{os.Getpid(), &times.bench},
	} {
		if *read.into, err = cpuSeconds(read.pid); err != nil {
			return cpuTimes{}, err
		}
	}
	times.machine, err = machineBusySeconds()
	return times, err
}

func (c cpuTimes) sub(o cpuTimes) cpuTimes {
	return cpuTimes{
		vault:   c.vault - o.vault,
		plugin:  c.plugin - o.plugin,
		hydra:   c.hydra - o.hydra,
		bench:   c.bench - o.bench,
		machine: c.machine - o.machine,
	}
}

// total returns the CPU time of the four processes of the benchmark.
func (c cpuTimes) total() float64 { return c.vault + c.plugin + c.hydra + c.bench }

// others returns the CPU time that the rest of the machine used: other
// programs that competed with the benchmark for the same cores.
func (c cpuTimes) others() float64 { return max(c.machine-c.total(), 0) }

func (c cpuTimes) perRequest(requests int) cpuPerRequest {
	ms := 1000 / float64(requests)
	return cpuPerRequest{Vault: c.vault * ms, Plugin: c.plugin * ms, Hydra: c.hydra * ms, Bench: c.bench * ms}
}

func (c cpuTimes) add(o cpuTimes) cpuTimes {
	return cpuTimes{
		vault:   c.vault + o.vault,
		plugin:  c.plugin + o.plugin,
		hydra:   c.hydra + o.hydra,
		bench:   c.bench + o.bench,
		machine: c.machine + o.machine,
	}
}
