package main

import (
	"context"
	"fmt"
	"time"
)

// memoryCheckpointFractions are the shares of -mints after which the memory
// phase reads the plugin's memory and Vault's lease count.
var memoryCheckpointFractions = []float64{0.05, 0.25, 0.5, 0.75, 1}

// memoryPhaseBound bounds each segment of the memory phase, so that a slow
// server shortens the phase instead of hanging it.
const memoryPhaseBound = 5 * time.Minute

// measureMemory mints cfg.mints tokens at cfg.mintConcurrency in segments,
// and after each segment reads the plugin's VmRSS and VmHWM and how many
// leases Vault holds. The role's TTL outlasts the run, so every mint adds
// a live lease.
func (b *bench) measureMemory(ctx context.Context) (memoryResult, error) {
	result := memoryResult{PluginPID: b.pluginPID}
	sample, err := b.sampleMemory(ctx)
	if err != nil {
		return result, err
	}
	result.Samples = append(result.Samples, sample)

	for _, fraction := range memoryCheckpointFractions {
		goal := int(float64(b.cfg.mints) * fraction)
		remaining := goal - int(b.mints.Load())
		if remaining <= 0 {
			continue
		}
		load := runLoad(ctx, loadSpec{
			concurrency: b.cfg.mintConcurrency,
			duration:    memoryPhaseBound,
			maxRequests: remaining,
		}, b.countedMint)
		result.Errors += load.errors
		result.ErrorSamples = append(result.ErrorSamples, load.errorSamples...)
		if ctx.Err() != nil {
			return result, ctx.Err()
		}
		sample, err := b.sampleMemory(ctx)
		if err != nil {
			return result, err
		}
		result.Samples = append(result.Samples, sample)
		progress("memory: %d mints, %d live leases, plugin VmRSS %.1f MiB, VmHWM %.1f MiB, %.0f mints/s",
			sample.Mints, sample.LiveLeases, kibToMiB(sample.VmRSSKiB), kibToMiB(sample.VmHWMKiB),
			float64(len(load.latencies))/load.elapsed.Seconds())
	}

	last := result.Samples[len(result.Samples)-1]
	result.HWMAfterMintsKiB = last.VmHWMKiB

	// The first sample precedes the first mint at this concurrency, before
	// the plugin has grown its connection pool and goroutines; the slope
	// starts after it.
	var leases, rss []float64
	for _, s := range result.Samples[1:] {
		leases = append(leases, float64(s.LiveLeases))
		rss = append(rss, float64(s.VmRSSKiB)*1024)
	}
	result.SlopeBytesPerLease = leastSquaresSlope(leases, rss)
	result.Flat = len(leases) >= 3 && result.SlopeBytesPerLease < flatSlopeBytesPerLease
	return result, nil
}

// sampleMemory reads the plugin's memory and Vault's live lease count.
func (b *bench) sampleMemory(ctx context.Context) (memorySample, error) {
	leases, err := b.targets.countLeases(ctx)
	if err != nil {
		return memorySample{}, fmt.Errorf("count leases: %w", err)
	}
	status, err := readMemoryStatus(b.pluginPID)
	if err != nil {
		return memorySample{}, err
	}
	return memorySample{Mints: int(b.mints.Load()), LiveLeases: leases, memoryStatus: status}, nil
}
