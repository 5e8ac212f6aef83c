package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"
)

// idleControl is scenario C at concurrency 1, with and without a pause as
// long as Hydra idles between mints in A, to show whether Hydra responds
// slower after idling. The targets do not use it.
type idleControl struct {
	PauseMs float64 `json:"pause_ms"`

	Paused     idleRun `json:"paused"`
	BackToBack idleRun `json:"back_to_back"`

	// LatencyRatio is A's p50 over B's p50 plus Paused.P50Ms, at
	// concurrency 1.
	LatencyRatio float64 `json:"latency_a_over_b_plus_paused_c_c1"`
}

// idleRun is one side of the idle control.
type idleRun struct {
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50Ms    float64 `json:"p50_ms"`
}

// measureIdleControl runs the idle control for cfg.duration on each side
// when level 1 was measured, and returns nil otherwise.
func (b *bench) measureIdleControl(ctx context.Context) (*idleControl, error) {
	a, kv, c := b.report.level(scenarioMint, 1), b.report.level(scenarioKV, 1), b.report.level(scenarioHydra, 1)
	if a == nil || kv == nil || c == nil {
		return nil, nil
	}
	pause := time.Duration(max(a.P50Ms-c.P50Ms, 0) * float64(time.Millisecond))
	progress("C at c=1 with and without a pause of %s before each request", pause.Round(time.Microsecond))

	var paused, backToBack loadResult
	round := b.cfg.duration / time.Duration(b.cfg.rounds)
	for range b.cfg.rounds {
		backToBack.merge(runLoad(ctx, loadSpec{concurrency: 1, duration: round}, b.targets.tokenRequest))
		paused.merge(runLoad(ctx, loadSpec{concurrency: 1, duration: round, pause: pause}, b.targets.tokenRequest))
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	control := &idleControl{
		PauseMs:    milliseconds(pause),
		Paused:     paused.idleRun(),
		BackToBack: backToBack.idleRun(),
	}
	if floor := kv.P50Ms + control.Paused.P50Ms; floor > 0 {
		control.LatencyRatio = a.P50Ms / floor
	}
	return control, nil
}

// merge adds the latencies and errors of another run to r.
func (r *loadResult) merge(other loadResult) {
	r.latencies = append(r.latencies, other.latencies...)
	r.errors += other.errors
}

// idleRun summarizes r for the idle control.
func (r *loadResult) idleRun() idleRun {
	slices.Sort(r.latencies)
	return idleRun{
		Requests: len(r.latencies),
		Errors:   r.errors,
		P50Ms:    milliseconds(percentile(r.latencies, 50)),
	}
}

// writeIdleControl describes the idle control, when it ran.
func (r *report) writeIdleControl(w io.Writer) {
	control := r.HydraAfterIdle
	if control == nil {
		return
	}
	fmt.Fprintf(w, "\nC at c=1 right after level 1, in alternating rounds: p50 %.2f ms with a pause of %.2f ms before each request (how long Hydra waits between the engine's requests in A), %.2f ms back to back (%d and %d requests, %d errors). For reference, A / (B + C with the pause) = %.2f x; the targets use C back to back.\n",
		control.Paused.P50Ms, control.PauseMs, control.BackToBack.P50Ms, control.Paused.Requests, control.BackToBack.Requests,
		control.Paused.Errors+control.BackToBack.Errors, control.LatencyRatio)
}
