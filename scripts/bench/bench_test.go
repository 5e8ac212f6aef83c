package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	sorted := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	tests := []struct {
		name   string
		values []time.Duration
		p      float64
		want   time.Duration
	}{
		{name: "median of ten", values: sorted, p: 50, want: 5},
		{name: "p99 of ten is the max", values: sorted, p: 99, want: 10},
		{name: "p100 is the max", values: sorted, p: 100, want: 10},
		{name: "p10 of ten", values: sorted, p: 10, want: 1},
		{name: "single value", values: []time.Duration{7}, p: 50, want: 7},
		{name: "empty", values: nil, p: 50, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.values, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.values, tt.p, got, tt.want)
			}
		})
	}
}

func TestParseLevels(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    []int
		wantErr bool
	}{
		{name: "default", value: "1,8,64,256", want: []int{1, 8, 64, 256}},
		{name: "spaces", value: " 2, 4 ", want: []int{2, 4}},
		{name: "zero", value: "0", wantErr: true},
		{name: "too large", value: "5000", wantErr: true},
		{name: "not a number", value: "1,x", wantErr: true},
		{name: "empty", value: "", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseLevels(tt.value)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("parseLevels(%q) error = %v, want error %t", tt.value, err, tt.wantErr)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("parseLevels(%q) = %v, want %v", tt.value, got, tt.want)
			}
		})
	}
}

func TestLeastSquaresSlope(t *testing.T) {
	tests := []struct {
		name string
		x, y []float64
		want float64
	}{
		{name: "line", x: []float64{0, 1, 2, 3}, y: []float64{5, 7, 9, 11}, want: 2},
		{name: "flat", x: []float64{1, 2, 3}, y: []float64{4, 4, 4}, want: 0},
		{name: "x constant", x: []float64{2, 2}, y: []float64{1, 3}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := leastSquaresSlope(tt.x, tt.y); got != tt.want {
				t.Errorf("leastSquaresSlope(%v, %v) = %v, want %v", tt.x, tt.y, got, tt.want)
			}
		})
	}
}

func TestRunLoadStopsAtMaxRequests(t *testing.T) {
	tests := []struct {
		name        string
		concurrency int
		maxRequests int
		failEvery   int64
		wantOK      int
		wantErrors  int
	}{
		{name: "one worker", concurrency: 1, maxRequests: 10, wantOK: 10},
		{name: "more workers than requests", concurrency: 8, maxRequests: 5, wantOK: 5},
		{name: "every third fails", concurrency: 4, maxRequests: 30, failEvery: 3, wantOK: 20, wantErrors: 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var calls atomic.Int64
			fn := func(context.Context, int, int) error {
				if n := calls.Add(1); tt.failEvery > 0 && n%tt.failEvery == 0 {
					return errors.New("refused")
				}
				return nil
			}
			spec := loadSpec{concurrency: tt.concurrency, duration: time.Minute, maxRequests: tt.maxRequests}
			result := runLoad(context.Background(), spec, fn)
			if got := len(result.latencies); got != tt.wantOK {
				t.Errorf("successful requests = %d, want %d", got, tt.wantOK)
			}
			if result.errors != tt.wantErrors {
				t.Errorf("errors = %d, want %d", result.errors, tt.wantErrors)
			}
			if tt.wantErrors > 0 && !slices.Equal(result.errorSamples, []string{"refused"}) {
				t.Errorf("error samples = %q, want one %q", result.errorSamples, "refused")
			}
		})
	}
}

func TestRunLoadStopsAtDuration(t *testing.T) {
	spec := loadSpec{concurrency: 2, duration: 50 * time.Millisecond}
	fn := func(ctx context.Context, _, _ int) error {
		time.Sleep(time.Millisecond)
		return nil
	}
	result := runLoad(context.Background(), spec, fn)
	if result.elapsed > time.Second {
		t.Errorf("elapsed = %v, want about %v", result.elapsed, spec.duration)
	}
	if len(result.latencies) == 0 {
		t.Error("no request succeeded, want some")
	}
}

func TestRunLoadPausesBetweenRequests(t *testing.T) {
	const pause = 20 * time.Millisecond
	var (
		mu    sync.Mutex
		sends []time.Time
	)
	fn := func(context.Context, int, int) error {
		mu.Lock()
		defer mu.Unlock()
		sends = append(sends, time.Now())
		return nil
	}
	result := runLoad(context.Background(), loadSpec{concurrency: 1, duration: 200 * time.Millisecond, pause: pause}, fn)

	if len(sends) < 2 || len(sends) > 11 {
		t.Fatalf("requests in 200ms with a 20ms pause = %d, want 2 to 11", len(sends))
	}
	for i := 1; i < len(sends); i++ {
		if gap := sends[i].Sub(sends[i-1]); gap < pause {
			t.Errorf("gap before request %d = %v, want at least %v", i, gap, pause)
		}
	}
	for _, latency := range result.latencies {
		if latency >= pause {
			t.Errorf("latency %v includes the pause", latency)
		}
	}
}

func TestParseKiB(t *testing.T) {
	tests := []struct {
		name    string
		value   string
		want    int64
		wantErr bool
	}{
		{name: "status value", value: "\t   12345 kB", want: 12345},
		{name: "other unit", value: "12 MB", wantErr: true},
		{name: "not a number", value: "x kB", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseKiB(tt.value)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Fatalf("parseKiB(%q) error = %v, want error %t", tt.value, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("parseKiB(%q) = %d, want %d", tt.value, got, tt.want)
			}
		})
	}
}

func TestReadMemoryStatusOfSelf(t *testing.T) {
	status, err := readMemoryStatus(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if status.VmRSSKiB <= 0 || status.VmHWMKiB < status.VmRSSKiB {
		t.Errorf("VmRSS %d KiB, VmHWM %d KiB, want 0 < VmRSS <= VmHWM", status.VmRSSKiB, status.VmHWMKiB)
	}
}

func TestFindChildByExe(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep binary")
	}
	cmd := exec.Command(sleep, "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})

	got, err := findChildByExe(os.Getpid(), sleep)
	if err != nil {
		t.Fatalf("findChildByExe(self, %s): %v", sleep, err)
	}
	if got != cmd.Process.Pid {
		t.Errorf("findChildByExe(self, %s) = %d, want %d", sleep, got, cmd.Process.Pid)
	}
	if _, err := findChildByExe(cmd.Process.Pid, sleep); err == nil {
		t.Errorf("findChildByExe(sleep's pid, %s) found a child, want an error", sleep)
	}
}

func TestCPUSecondsGrows(t *testing.T) {
	before, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	for x := 0; time.Now().Before(deadline); x++ {
		_ = x * x
	}
	after, err := cpuSeconds(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("CPU time after 100ms of work = %v s, want more than %v s", after, before)
	}
	machine, err := machineBusySeconds()
	if err != nil {
		t.Fatal(err)
	}
	if machine < after {
		t.Errorf("machine busy time %v s is below this process's %v s", machine, after)
	}
}

func TestRunLoadWindowExcludesDrain(t *testing.T) {
	spec := loadSpec{concurrency: 1, duration: 100 * time.Millisecond}
	fn := func(context.Context, int, int) error {
		time.Sleep(60 * time.Millisecond)
		return nil
	}
	result := runLoad(context.Background(), spec, fn)
	if got := len(result.latencies); got != 2 {
		t.Errorf("successful requests = %d, want 2 (one ends after the deadline)", got)
	}
	if result.inWindow != 1 {
		t.Errorf("requests in window = %d, want 1", result.inWindow)
	}
	if result.window > spec.duration {
		t.Errorf("window = %v, want at most %v", result.window, spec.duration)
	}
	if result.elapsed <= result.window {
		t.Errorf("elapsed = %v, want more than the window %v", result.elapsed, result.window)
	}
}
