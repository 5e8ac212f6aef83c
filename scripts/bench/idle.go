package main

import (
	"context"
	"fmt"
	"io"
	"time"
)

// idleControl is scenario C at concurrency 1 with a pause before each
// request, as long as Hydra waits between two of the engine's token
// requests during A at concurrency 1 (A's p50 less C's). It shows how much
// slower Hydra responds after idling, as it does before every mint, than
// back to back, as in C. It is for reference, because the targets use C.
type idleControl struct {
	PauseMs  float64 `json:"pause_ms"`
	Requests int     `json:"requests"`
	Errors   int     `json:"errors"`
	P50Ms    float64 `json:"p50_ms"`

	// BackToBackP50Ms is C's p50 at concurrency 1.
	BackToBackP50Ms float64 `json:"back_to_back_p50_ms"`

	// LatencyRatio is A's p50 over B's p50 plus P50Ms, at concurrency 1.
	LatencyRatio float64 `json:"latency_a_over_b_plus_idle_c_c1"`
}

// measureIdleControl runs the idle control for cfg.duration when level 1
// was measured, and returns nil otherwise.
func (b *bench) measureIdleControl(ctx context.Context) (*idleControl, error) {
	a, kv, c := b.report.level(scenarioMint, 1), b.report.level(scenarioKV, 1), b.report.level(scenarioHydra, 1)
	if a == nil || kv == nil || c == nil {
		return nil, nil
	}
	pause := time.Duration(max(a.P50Ms-c.P50Ms, 0) * float64(time.Millisecond))
	progress("C at c=1 with a pause of %s before each request", pause.Round(time.Microsecond))
	result := runLoad(ctx, loadSpec{concurrency: 1, duration: b.cfg.duration, pause: pause}, b.targets.tokenRequest)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	control := &idleControl{
		PauseMs:         milliseconds(pause),
		Requests:        len(result.latencies),
		Errors:          result.errors,
		P50Ms:           milliseconds(percentile(result.latencies, 50)),
		BackToBackP50Ms: c.P50Ms,
	}
	if floor := kv.P50Ms + control.P50Ms; floor > 0 {
		control.LatencyRatio = a.P50Ms / floor
	}
	return control, nil
}

// writeIdleControl describes the idle control, when it ran.
func (r *report) writeIdleControl(w io.Writer) {
	control := r.HydraAfterIdle
	if control == nil {
		return
	}
	fmt.Fprintf(w, "\nC at c=1 with a pause of %.2f ms before each request (how long Hydra waits between the engine's requests in A): p50 %.2f ms against %.2f ms back to back, %d requests, %d errors. For reference, A / (B + C after a pause) = %.2f x; the targets use C back to back.\n",
		control.PauseMs, control.P50Ms, control.BackToBackP50Ms, control.Requests, control.Errors, control.LatencyRatio)
}
