package main

import (
	"fmt"
	"math"
)

// Targets of the benchmark: what the engine may add on top of Vault's own
// request path (B) and the upstream's token endpoint (C).
const (
	// maxLatencyRatio bounds A's p50 at concurrency 1 by B's plus C's.
	maxLatencyRatio = 1.2

	// minThroughputRatio bounds A's requests per second at high
	// concurrency from below by the slower of B and C.
	minThroughputRatio = 0.8

	// maxRotatingP99Ratio bounds D's p99 by A's p99 at the same level.
	maxRotatingP99Ratio = 2.0

	// maxPluginHWMKiB bounds the plugin's peak RSS after the memory phase.
	maxPluginHWMKiB = 64 << 10

	// flatSlopeBytesPerLease is the RSS growth per live lease below which
	// memory counts as flat. 100 bytes per lease is 2 MB over 20,000
	// leases. Anything the plugin kept per lease in memory, such as a map
	// entry keyed by a token ID, would cost more than that.
	flatSlopeBytesPerLease = 100
)

// throughputLevels are the concurrencies whose throughput is compared.
var throughputLevels = []int{64, 256}

// computeRatios fills r.Ratios from the scenario results.
func (r *report) computeRatios() {
	r.Ratios.Throughput = map[int]float64{}
	a, b, c := r.level(scenarioMint, 1), r.level(scenarioKV, 1), r.level(scenarioHydra, 1)
	if a != nil && b != nil && c != nil && b.P50Ms+c.P50Ms > 0 {
		ratio := a.P50Ms / (b.P50Ms + c.P50Ms)
		r.Ratios.LatencyC1 = &ratio
	}
	for _, concurrency := range throughputLevels {
		a, b, c := r.level(scenarioMint, concurrency), r.level(scenarioKV, concurrency), r.level(scenarioHydra, concurrency)
		if a == nil || b == nil || c == nil {
			continue
		}
		if floor := math.Min(b.RPS, c.RPS); floor > 0 {
			r.Ratios.Throughput[concurrency] = a.RPS / floor
		}
	}
}

// evaluateTargets fills r.Targets. A target whose inputs were not measured
// (a level left out with -levels) counts as missed.
func (r *report) evaluateTargets() {
	r.Targets = nil
	latency := targetResult{
		Name: "latency at c=1",
		Want: fmt.Sprintf("A p50 <= %.1f x (B p50 + C p50)", maxLatencyRatio),
		Got:  "not measured",
	}
	if ratio := r.Ratios.LatencyC1; ratio != nil {
		latency.Got = fmt.Sprintf("%.2f x", *ratio)
		latency.Met = *ratio <= maxLatencyRatio
	}
	r.Targets = append(r.Targets, latency)

	for _, concurrency := range throughputLevels {
		target := targetResult{
			Name: fmt.Sprintf("throughput at c=%d", concurrency),
			Want: fmt.Sprintf("A req/s >= %.1f x min(B, C), no errors", minThroughputRatio),
			Got:  "not measured",
		}
		ratio, measured := r.Ratios.Throughput[concurrency]
		if a := r.level(scenarioMint, concurrency); measured && a != nil {
			target.Got = fmt.Sprintf("%.2f x, %d errors", ratio, a.Errors)
			target.Met = ratio >= minThroughputRatio && a.Errors == 0
		}
		r.Targets = append(r.Targets, target)
	}

	r.Targets = append(r.Targets, r.rotatingTargets()...)
	r.Targets = append(r.Targets, r.memoryTargets()...)
}

// rotatingTargets compares D with A at every level that has both.
func (r *report) rotatingTargets() []targetResult {
	var results []targetResult
	for _, concurrency := range r.Settings.Levels {
		a, d := r.level(scenarioMint, concurrency), r.level(scenarioRotating, concurrency)
		target := targetResult{
			Name: fmt.Sprintf("rotation at c=%d", concurrency),
			Want: fmt.Sprintf("D: no failed mints, p99 <= %.0f x A p99", maxRotatingP99Ratio),
			Got:  "not measured",
		}
		if a != nil && d != nil && a.P99Ms > 0 {
			ratio := d.P99Ms / a.P99Ms
			target.Got = fmt.Sprintf("%d failed, p99 %.2f x", d.Errors, ratio)
			target.Met = d.Errors == 0 && ratio <= maxRotatingP99Ratio
			if d.Rotation != nil && d.Rotation.Calls == 0 {
				target.Got += ", but no rotation ran"
				target.Met = false
			}
		}
		results = append(results, target)
	}
	return results
}

// memoryTargets checks the plugin's peak RSS and its growth with leases.
func (r *report) memoryTargets() []targetResult {
	m := r.Memory
	peak := targetResult{
		Name: fmt.Sprintf("plugin RSS after %d mints", r.Settings.Mints),
		Want: fmt.Sprintf("VmHWM < %d MiB", maxPluginHWMKiB>>10),
		Got:  fmt.Sprintf("%.1f MiB", kibToMiB(m.HWMAfterMintsKiB)),
		Met:  m.HWMAfterMintsKiB > 0 && m.HWMAfterMintsKiB < maxPluginHWMKiB,
	}
	flat := targetResult{
		Name: "plugin RSS over live leases",
		Want: fmt.Sprintf("flat: slope < %d bytes per lease", flatSlopeBytesPerLease),
		Got:  fmt.Sprintf("%.0f bytes per lease over %d samples", m.SlopeBytesPerLease, len(m.Samples)),
		Met:  m.Flat,
	}
	return []targetResult{peak, flat}
}

// leastSquaresSlope returns the slope of y over x, or 0 when x does not
// vary.
func leastSquaresSlope(x, y []float64) float64 {
	n := float64(len(x))
	var sumX, sumY, sumXY, sumXX float64
	for i := range x {
		sumX += x[i]
		sumY += y[i]
		sumXY += x[i] * y[i]
		sumXX += x[i] * x[i]
	}
	denominator := n*sumXX - sumX*sumX
	if denominator == 0 {
		return 0
	}
	return (n*sumXY - sumX*sumY) / denominator
}
