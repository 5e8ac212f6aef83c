package main

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

func pendingReply(code string) vaultReply {
	return vaultReply{status: http.StatusBadRequest, errors: []string{code + ": the upstream has not issued a token yet"}}
}

func TestPollDeviceSeed(t *testing.T) {
	tests := []struct {
		name          string
		replies       []vaultReply
		wantIntervals []time.Duration
		wantErr       string
	}{
		{
			name:          "pending then approved",
			replies:       []vaultReply{pendingReply("authorization_pending"), pendingReply("authorization_pending"), seededReply},
			wantIntervals: []time.Duration{5 * time.Second, 5 * time.Second, 5 * time.Second},
		},
		{
			name:          "slow_down adds five seconds for good",
			replies:       []vaultReply{pendingReply("slow_down"), pendingReply("authorization_pending"), pendingReply("slow_down"), seededReply},
			wantIntervals: []time.Duration{5 * time.Second, 10 * time.Second, 10 * time.Second, 15 * time.Second},
		},
		{
			name:          "denied",
			replies:       []vaultReply{pendingReply("authorization_pending"), {status: http.StatusBadRequest, errors: []string{"access_denied: the user denied the request"}}},
			wantIntervals: []time.Duration{5 * time.Second, 5 * time.Second},
			wantErr:       "access_denied",
		},
		{
			name:          "expired",
			replies:       []vaultReply{{status: http.StatusBadRequest, errors: []string{"expired_token: the device code expired"}}},
			wantIntervals: []time.Duration{5 * time.Second},
			wantErr:       "expired before it was approved",
		},
		{
			name:          "server error stops polling",
			replies:       []vaultReply{{status: http.StatusInternalServerError, errors: []string{"storage unavailable"}}},
			wantIntervals: []time.Duration{5 * time.Second},
			wantErr:       "storage unavailable",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fv, client := newFakeVault(t, nil, tt.replies...)
			s, _ := newTestSeeder(client)
			var intervals []time.Duration
			s.sleep = func(ctx context.Context, d time.Duration) error {
				intervals = append(intervals, d)
				return nil
			}

			result, err := s.pollDeviceSeed(context.Background(), "device-code-value", 5*time.Second)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("pollDeviceSeed: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("pollDeviceSeed error: got %v, want it to contain %q", err, tt.wantErr)
			}
			if tt.wantErr == "" && result.generation != "1" {
				t.Errorf("generation: got %s, want 1", result.generation)
			}
			if !equalDurations(intervals, tt.wantIntervals) {
				t.Errorf("poll intervals: got %v, want %v", intervals, tt.wantIntervals)
			}
			for i, seed := range fv.seedWrites() {
				if seed["device_code"] != "device-code-value" || len(seed) != 1 {
					t.Errorf("seed write %d: got %v, want only device_code", i, seed)
				}
			}
		})
	}
}

func TestPollDeviceSeedStopsAtDeadline(t *testing.T) {
	replies := make([]vaultReply, 100)
	for i := range replies {
		replies[i] = pendingReply("authorization_pending")
	}
	fv, client := newFakeVault(t, nil, replies...)
	s, _ := newTestSeeder(client)
	s.sleep = sleepContext

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := s.pollDeviceSeed(ctx, "device-code-value", 20*time.Millisecond)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error: got %v, want a deadline error", err)
	}
	if n := len(fv.seedWrites()); n == 0 || n > 10 {
		t.Errorf("seed writes: got %d, want between 1 and 10 in 200ms at a 20ms interval", n)
	}
}

func TestSeedWithDeviceCode(t *testing.T) {
	var deviceForm url.Values
	var deviceAuthorization string
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			http.Error(w, "bad form", http.StatusBadRequest)
			return
		}
		deviceForm = r.PostForm
		deviceAuthorization = r.Header.Get("Authorization")
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]interface{}{
			"device_code":      "device-code-value",
			"user_code":        "WDJB-MJHT",
			"verification_uri": "https://auth.example.test/device",
			"expires_in":       600,
			"interval":         2,
		})
	}))
	defer upstream.Close()

	fv, client := newFakeVault(t, map[string]interface{}{
		"client_id":                     "ci-tokens-engine",
		"device_authorization_endpoint": upstream.URL + "/device/code",
	}, pendingReply("authorization_pending"), seededReply)
	s, out := newTestSeeder(client)
	var intervals []time.Duration
	s.sleep = func(ctx context.Context, d time.Duration) error {
		intervals = append(intervals, d)
		return nil
	}

	result, err := s.run(context.Background(), &options{flow: flowDevice, scopes: []string{"offline_access"}})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if result.state != "healthy" {
		t.Errorf("state: got %q, want healthy", result.state)
	}

	if got := deviceForm.Get("client_id"); got != "ci-tokens-engine" {
		t.Errorf("device request client_id: got %q, want ci-tokens-engine", got)
	}
	if got := deviceForm.Get("scope"); got != "offline_access" {
		t.Errorf("device request scope: got %q, want offline_access", got)
	}
	if deviceAuthorization != "" || deviceForm.Has("client_secret") {
		t.Errorf("device request carries client credentials; it must be a public request")
	}
	if !equalDurations(intervals, []time.Duration{2 * time.Second, 2 * time.Second}) {
		t.Errorf("poll intervals: got %v, want the upstream's 2s twice", intervals)
	}
	if n := len(fv.seedWrites()); n != 2 {
		t.Errorf("seed writes: got %d, want 2", n)
	}
	for _, want := range []string{"https://auth.example.test/device", "WDJB-MJHT"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not show %q:\n%s", want, out)
		}
	}
	if strings.Contains(out.String(), "device-code-value") {
		t.Errorf("output shows the device code:\n%s", out)
	}
}

func equalDurations(got, want []time.Duration) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if got[i] != want[i] {
			return false
		}
	}
	return true
}
