package backend

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// day0 is a Monday at midnight UTC; the schedule tables count from it.
var day0 = time.Date(2030, time.January, 7, 0, 0, 0, 0, time.UTC)

// at returns day0 moved by days and a clock time.
func at(days int, hour, minute int) time.Time {
	return day0.AddDate(0, 0, days).Add(time.Duration(hour)*time.Hour + time.Duration(minute)*time.Minute)
}

func TestNextRotation(t *testing.T) {
	period := &engineConfig{RotationPeriod: 24 * time.Hour}
	cron := &engineConfig{RotationSchedule: "0 3 * * *"}
	window := &engineConfig{RotationSchedule: "0 3 * * *", RotationWindow: time.Hour}
	disabled := &engineConfig{RotationPeriod: 24 * time.Hour, DisableAutomatedRotation: true}
	tests := []struct {
		name string
		cfg  *engineConfig
		last time.Time
		now  time.Time
		want time.Time
	}{
		{"period not yet due", period, at(0, 0, 0), at(0, 1, 0), at(1, 0, 0)},
		{"period missed catches up", period, at(0, 0, 0), at(3, 0, 0), at(1, 0, 0)},
		{"rotation disabled", disabled, at(0, 0, 0), at(3, 0, 0), time.Time{}},
		{"cron not yet due", cron, at(0, 0, 0), at(0, 1, 0), at(0, 3, 0)},
		{"cron missed catches up", cron, at(0, 3, 0), at(3, 5, 0), at(1, 3, 0)},
		{"cron after catching up", cron, at(3, 5, 0), at(3, 5, 1), at(4, 3, 0)},
		{"cron rotated at the time", cron, at(0, 3, 0), at(0, 3, 1), at(1, 3, 0)},
		{"cron with time zone", cron, at(0, 0, 0).In(time.FixedZone("UTC+5", 5*3600)), at(0, 1, 0), at(0, 3, 0)},
		{"window before it opens", window, at(0, 3, 0), at(1, 2, 0), at(1, 3, 0)},
		{"window open", window, at(0, 3, 0), at(1, 3, 30), at(1, 3, 0)},
		{"window missed waits for the next", window, at(0, 3, 0), at(1, 4, 30), at(2, 3, 0)},
		{"window missed for days", window, at(0, 3, 0), at(5, 12, 0), at(6, 3, 0)},
		{"window rotated inside it", window, at(1, 3, 1), at(1, 3, 30), at(2, 3, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := nextRotation(tt.cfg, tt.last, tt.now)
			if err != nil {
				t.Fatalf("nextRotation: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("nextRotation = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestNextRotationInvalidSchedule(t *testing.T) {
	cfg := &engineConfig{RotationSchedule: "every day"}
	if _, err := nextRotation(cfg, day0, day0); err == nil {
		t.Errorf("nextRotation with an invalid schedule: error nil, want one")
	}
}

func TestRootDueAt(t *testing.T) {
	period := &engineConfig{RotationPeriod: 24 * time.Hour}
	disabled := &engineConfig{RotationPeriod: 24 * time.Hour, DisableAutomatedRotation: true}
	now := at(0, 12, 0)
	grant := func(state string, retryAt time.Time, rotateNow bool) *rootGrant {
		return &rootGrant{
			grant:     grant{RefreshToken: "held", Generation: 3, LastRotatedAt: at(0, 0, 0)},
			State:     state,
			RetryAt:   retryAt,
			RotateNow: rotateNow,
		}
	}
	tests := []struct {
		name string
		cfg  *engineConfig
		root *rootGrant
		want time.Time
	}{
		{"healthy", period, grant(stateHealthy, time.Time{}, false), at(1, 0, 0)},
		{"backoff after the due time", period, grant(stateDegraded, at(1, 0, 30), false), at(1, 0, 30)},
		{"backoff before the due time", period, grant(stateDegraded, at(0, 12, 30), false), at(1, 0, 0)},
		{"interrupted rotation", period, grant(stateHealthy, time.Time{}, true), now},
		{"interrupted rotation in backoff", period, grant(stateDegraded, at(0, 12, 30), true), at(0, 12, 30)},
		{"interrupted rotation, rotation disabled", disabled, grant(stateHealthy, time.Time{}, true), now},
		{"rotation disabled", disabled, grant(stateHealthy, time.Time{}, false), time.Time{}},
		{"needs reseed", period, grant(stateNeedsReseed, time.Time{}, false), time.Time{}},
		{"compromised", period, grant(stateCompromised, time.Time{}, true), time.Time{}},
		{"no refresh token", period, &rootGrant{State: stateUnconfigured}, time.Time{}},
		{"no root grant", period, nil, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rootDueAt(tt.cfg, tt.root, now)
			if err != nil {
				t.Fatalf("rootDueAt: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("rootDueAt = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestStandbyDueAt(t *testing.T) {
	period := &engineConfig{RotationPeriod: 24 * time.Hour}
	disabled := &engineConfig{RotationPeriod: 24 * time.Hour, DisableAutomatedRotation: true}
	now := at(0, 12, 0)
	standby := func(state string, retryAt time.Time, rotateNow bool) *standbyGrant {
		return &standbyGrant{
			grant:     grant{RefreshToken: "held", LastRotatedAt: at(0, 0, 0)},
			State:     state,
			RetryAt:   retryAt,
			RotateNow: rotateNow,
		}
	}
	tests := []struct {
		name    string
		cfg     *engineConfig
		standby *standbyGrant
		want    time.Time
	}{
		{"healthy", period, standby(stateHealthy, time.Time{}, false), at(1, 0, 0)},
		{"backoff after the due time", period, standby(stateHealthy, at(1, 1, 0), false), at(1, 1, 0)},
		{"interrupted rotation", period, standby(stateHealthy, time.Time{}, true), now},
		{"interrupted rotation in backoff", period, standby(stateHealthy, at(0, 13, 0), true), at(0, 13, 0)},
		{"rotation disabled", disabled, standby(stateHealthy, time.Time{}, false), time.Time{}},
		{"needs reseed", period, standby(stateNeedsReseed, time.Time{}, false), time.Time{}},
		{"no standby", period, nil, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := standbyDueAt(tt.cfg, tt.standby, now)
			if err != nil {
				t.Fatalf("standbyDueAt: %v", err)
			}
			if !got.Equal(tt.want) {
				t.Errorf("standbyDueAt = %s, want %s", got, tt.want)
			}
		})
	}
}

// Set moves the clock so that Now returns about t.
func (c *testClock) Set(t time.Time) {
	c.offset.Store(int64(time.Until(t)))
}

// scheduleStep is one tick of the periodic function at a given time, on a
// new backend over the same storage, and the generation expected after it.
type scheduleStep struct {
	at             time.Time
	wantGeneration int64
}

func TestScheduleAcrossRestarts(t *testing.T) {
	tests := []struct {
		name   string
		config map[string]interface{}
		steps  []scheduleStep
	}{
		{
			name:   "period",
			config: map[string]interface{}{},
			steps: []scheduleStep{
				{at(0, 23, 0), 1},
				{at(1, 1, 1), 2}, // due: rotates
				{at(1, 1, 2), 2}, // restarted right after: no double
				{at(2, 0, 0), 2}, // not yet due
				{at(2, 1, 5), 3}, // due after a restart: no skip
				{at(6, 0, 0), 4}, // days missed: one catch-up
				{at(6, 0, 1), 4}, // and only one
			},
		},
		{
			name:   "schedule with window",
			config: map[string]interface{}{"rotation_schedule": "0 3 * * *", "rotation_window": 3600},
			steps: []scheduleStep{
				{at(0, 2, 0), 1},
				{at(0, 3, 30), 2}, // inside the window: rotates
				{at(0, 3, 40), 2}, // restarted inside the window: no double
				{at(1, 4, 30), 2}, // window missed: waits
				{at(1, 23, 0), 2},
				{at(2, 3, 5), 3}, // next window: rotates
			},
		},
		{
			name:   "schedule without window",
			config: map[string]interface{}{"rotation_schedule": "0 3 * * *"},
			steps: []scheduleStep{
				{at(0, 2, 0), 1},
				{at(3, 12, 0), 2}, // times missed: one catch-up
				{at(3, 12, 1), 2}, // and only one
				{at(4, 3, 1), 3},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, clock := getClockedBackend(t)
			clock.Set(at(0, 1, 0))
			configureWith(env, tt.config)
			for _, step := range tt.steps {
				clock.Set(step.at)
				restartBackend(env, clock.Now, 0)
				runPeriodic(env)
				if got := env.root().Generation; got != step.wantGeneration {
					t.Errorf("at %s: generation = %d, want %d", step.at.Format(time.RFC3339), got, step.wantGeneration)
				}
			}
			if got := env.issuer.Stats().ReuseDetections; got != 0 {
				t.Errorf("reuse detections = %d, want 0", got)
			}
		})
	}
}

func TestOldConfigEntry(t *testing.T) {
	tests := []struct {
		name         string
		stored       map[string]interface{}
		wantPeriod   time.Duration
		wantSchedule string
		wantOff      bool
	}{
		{"no rotation fields", map[string]interface{}{}, defaultRotationPeriod, "", false},
		{"zero period", map[string]interface{}{"rotation_period": 0, "schema_version": 0}, defaultRotationPeriod, "", false},
		{"schedule", map[string]interface{}{"rotation_schedule": "0 3 * * *"}, 0, "0 3 * * *", false},
		{"explicitly off", map[string]interface{}{"disable_automated_rotation": true}, defaultRotationPeriod, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, clock := getClockedBackend(t)
			env.configure()

			stored := map[string]interface{}{
				"token_endpoint": env.issuer.TokenURL(),
				"client_id":      testClientID,
				"client_secret":  testClientSecret,
			}
			for key, value := range tt.stored {
				stored[key] = value
			}
			raw, err := json.Marshal(stored)
			if err != nil {
				t.Fatalf("encoding config: %v", err)
			}
			if err := env.storage.Put(context.Background(), &logical.StorageEntry{Key: configStoragePath, Value: raw}); err != nil {
				t.Fatalf("storing config: %v", err)
			}
			restartBackend(env, clock.Now, 0)

			cfg, err := env.b.getConfig(context.Background(), env.storage)
			if err != nil || cfg == nil {
				t.Fatalf("getConfig: cfg=%v err=%v", cfg, err)
			}
			if cfg.RotationPeriod != tt.wantPeriod {
				t.Errorf("rotation period = %s, want %s", cfg.RotationPeriod, tt.wantPeriod)
			}
			if cfg.RotationSchedule != tt.wantSchedule {
				t.Errorf("rotation schedule = %q, want %q", cfg.RotationSchedule, tt.wantSchedule)
			}
			if cfg.RequestTimeout != defaultRequestTimeout {
				t.Errorf("request timeout = %s, want %s", cfg.RequestTimeout, defaultRequestTimeout)
			}
			due, err := rootDueAt(cfg, env.root(), clock.Now())
			if err != nil {
				t.Fatalf("rootDueAt: %v", err)
			}
			if got := due.IsZero(); got != tt.wantOff {
				t.Errorf("rotation off = %v, want %v", got, tt.wantOff)
			}
			if got := env.status()["next_rotation_at"] == nil; got != tt.wantOff {
				t.Errorf("status next_rotation_at is nil = %v, want %v", got, tt.wantOff)
			}
		})
	}
}
