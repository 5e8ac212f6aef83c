package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// maxErrorSamples bounds the distinct error messages kept per run.
const maxErrorSamples = 3

// requestFunc sends one request. worker and seq identify it, so that a
// request can write to a key of its own.
type requestFunc func(ctx context.Context, worker, seq int) error

// loadSpec bounds one run of a closed-loop load: concurrency workers each
// send a request, wait for the response and send the next one.
type loadSpec struct {
	concurrency int

	// duration is how long workers keep starting requests.
	duration time.Duration

	// maxRequests, when above zero, also ends the run once that many
	// requests were started.
	maxRequests int

	// pause is how long each worker waits after a response before it sends
	// the next request. It is not part of any latency.
	pause time.Duration
}

// loadResult is the measurement of one run. Latencies are those of
// successful requests only, so fast failures cannot improve the percentiles.
type loadResult struct {
	latencies    []time.Duration
	errors       int
	errorSamples []string

	// elapsed is the wall time from the first start to the last response.
	elapsed time.Duration

	// window is the time from the first start to the deadline, or to the
	// last response when the budget of requests ran out first, and
	// inWindow the successful requests that finished within it.
	// Throughput is inWindow/window: requests still in flight at the
	// deadline end the run but would make elapsed overstate the time that
	// the workers kept the servers busy.
	window   time.Duration
	inWindow int
}

// runLoad runs fn under spec and returns the latencies of the requests that
// succeeded, the number that failed and the wall time from the first start
// to the last response.
func runLoad(ctx context.Context, spec loadSpec, fn requestFunc) loadResult {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		started  atomic.Int64
		mu       sync.Mutex
		result   loadResult
		wg       sync.WaitGroup
		deadline = time.Now().Add(spec.duration)
	)
	begin := time.Now()
	for worker := range spec.concurrency {
		wg.Go(func() {
			w := runWorker(ctx, worker, deadline, spec, &started, fn)
			mu.Lock()
			defer mu.Unlock()
			result.latencies = append(result.latencies, w.latencies...)
			result.inWindow += w.inWindow
			for _, err := range w.errors {
				result.errors++
				result.addErrorSample(err.Error())
			}
		})
	}
	wg.Wait()
	result.elapsed = time.Since(begin)
	result.window = min(result.elapsed, deadline.Sub(begin))
	slices.Sort(result.latencies)
	return result
}

// workerResult is the measurement of one worker.
type workerResult struct {
	latencies []time.Duration
	errors    []error

	// inWindow counts the successful requests that finished before the
	// deadline.
	inWindow int
}

// runWorker sends requests one after another, spec.pause apart, until the
// deadline passes, the shared budget of spec.maxRequests is spent or ctx
// ends.
func runWorker(ctx context.Context, worker int, deadline time.Time, spec loadSpec, started *atomic.Int64, fn requestFunc) workerResult {
	var result workerResult
	for seq := 0; ctx.Err() == nil && time.Now().Before(deadline); seq++ {
		if spec.maxRequests > 0 && started.Add(1) > int64(spec.maxRequests) {
			break
		}
		if seq > 0 && spec.pause > 0 {
			time.Sleep(spec.pause)
			if !time.Now().Before(deadline) {
				break
			}
		}
		begin := time.Now()
		err := fn(ctx, worker, seq)
		end := time.Now()
		if err != nil {
			result.errors = append(result.errors, err)
			continue
		}
		result.latencies = append(result.latencies, end.Sub(begin))
		if !end.After(deadline) {
			result.inWindow++
		}
	}
	return result
}

// addErrorSample keeps the first few distinct error messages, cut to a
// readable length.
func (r *loadResult) addErrorSample(message string) {
	const maxLength = 300
	if len(message) > maxLength {
		message = message[:maxLength] + "..."
	}
	if len(r.errorSamples) < maxErrorSamples && !slices.Contains(r.errorSamples, message) {
		r.errorSamples = append(r.errorSamples, message)
	}
}

// percentile returns the nearest-rank percentile p (0 < p <= 100) of sorted
// latencies, or zero when there are none.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted))*p/100)) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// mean returns the arithmetic mean of latencies, or zero when there are none.
func mean(latencies []time.Duration) time.Duration {
	if len(latencies) == 0 {
		return 0
	}
	var sum time.Duration
	for _, latency := range latencies {
		sum += latency
	}
	return sum / time.Duration(len(latencies))
}
