package backend

import (
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/internal/fakeissuer"
)

// writeConfig writes data to config and folds an error response into the
// error.
func writeConfig(env *testEnv, data map[string]interface{}) (*logical.Response, error) {
	env.t.Helper()
	resp, err := env.request(logical.UpdateOperation, "config", data)
	if err == nil && resp != nil && resp.IsError() {
		err = resp.Error()
	}
	return resp, err
}

// rotateTimes rotates the root grant n times.
func rotateTimes(env *testEnv, n int) {
	env.t.Helper()
	for range n {
		if _, err := requestRotateRoot(env); err != nil {
			env.t.Fatalf("rotate-root: %v", err)
		}
	}
}

func TestSeedReplayIsNoOp(t *testing.T) {
	tests := []struct {
		name string
		// rotations run between the first write and the replay.
		rotations int
		// replayLive replays the live refresh token instead of the seed.
		replayLive bool
	}{
		{"same body twice", 0, false},
		{"after a few rotations", 3, false},
		{"after more rotations than the consumed history", maxConsumedHashes + 8, false},
		{"live refresh token", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := getClockedBackend(t)
			seed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
			env.addSecret(seed)
			body := env.baseConfig()
			body["refresh_token"] = seed
			env.mustRequest(logical.UpdateOperation, "config", body)
			rotateTimes(env, tt.rotations)
			if tt.replayLive {
				live, _ := env.issuer.LatestRefreshToken(seed)
				body["refresh_token"] = live
			}
			before := env.root()
			stats := env.issuer.Stats()

			resp, err := writeConfig(env, body)
			if err != nil {
				t.Fatalf("replaying the config: %v", err)
			}
			if resp == nil || !strings.Contains(strings.Join(resp.Warnings, " "), "refresh_token") {
				t.Errorf("warnings = %v, want one naming refresh_token", resp)
			}
			after := env.root()
			if after.Generation != before.Generation || after.RefreshToken != before.RefreshToken {
				t.Errorf("generation %d, token changed %v; want %d and unchanged", after.Generation, after.RefreshToken != before.RefreshToken, before.Generation)
			}
			if got := env.issuer.Stats(); got != stats {
				t.Errorf("issuer counters = %+v, want %+v unchanged", got, stats)
			}
			if !env.issuer.Active(after.RefreshToken) {
				t.Errorf("live refresh token no longer active upstream")
			}
			if _, err := requestRotateRoot(env); err != nil {
				t.Errorf("rotate-root after the replay: %v", err)
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestSeedNewGrant(t *testing.T) {
	env, _ := getClockedBackend(t)
	first := env.configure()
	rotateTimes(env, 2)
	before := env.root()
	requests := env.issuer.Stats().RefreshRequests

	second := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(second)
	body := env.baseConfig()
	body["refresh_token"] = second
	resp, err := writeConfig(env, body)
	if err != nil {
		t.Fatalf("seeding a new grant: %v", err)
	}
	if resp != nil && len(resp.Warnings) > 0 {
		t.Errorf("warnings = %q, want none for a new seed", resp.Warnings)
	}
	if got := env.issuer.Stats().RefreshRequests - requests; got != 1 {
		t.Errorf("refresh requests = %d, want 1 redemption of the new seed", got)
	}
	after := env.root()
	if latest, _ := env.issuer.LatestRefreshToken(second); after.RefreshToken != latest {
		t.Errorf("root grant is not the new seed's live token")
	}
	if after.Generation != before.Generation+1 {
		t.Errorf("generation = %d, want %d", after.Generation, before.Generation+1)
	}
	if after.State != stateHealthy {
		t.Errorf("state = %s, want %s", after.State, stateHealthy)
	}

	// Both seeds stay known: replaying either is a no-op.
	for name, seed := range map[string]string{"first seed": first, "second seed": second} {
		body["refresh_token"] = seed
		resp, err := writeConfig(env, body)
		if err != nil {
			t.Fatalf("replaying the %s: %v", name, err)
		}
		if resp == nil || len(resp.Warnings) == 0 {
			t.Errorf("replaying the %s gave no warning", name)
		}
	}
	if got := env.root().Generation; got != after.Generation {
		t.Errorf("generation after replays = %d, want %d", got, after.Generation)
	}
	assertNoSecretsInReads(env)
}

func TestSeedRejected(t *testing.T) {
	tests := []struct {
		name  string
		seed  func(env *testEnv) string
		fault *fakeissuer.Fault
	}{
		{"unknown token", func(*testEnv) string { return "ory_rt_not-a-token-the-issuer-issued" }, nil},
		{"revoked grant", func(env *testEnv) string {
			seed := env.issuer.SeedGrant(testClientID, []string{"offline_access"})
			env.issuer.Revoke(seed)
			return seed
		}, nil},
		{"upstream unavailable", func(env *testEnv) string {
			return env.issuer.SeedGrant(testClientID, []string{"offline_access"})
		}, &fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := getClockedBackend(t)
			env.configure()
			before := env.root()
			seed := tt.seed(env)
			env.addSecret(seed)
			if tt.fault != nil {
				env.issuer.InjectFault(*tt.fault)
			}

			body := env.baseConfig()
			body["refresh_token"] = seed
			body["request_timeout"] = 7
			resp, err := env.request(logical.UpdateOperation, "config", body)
			if !errors.Is(err, logical.ErrInvalidRequest) || resp == nil || !resp.IsError() {
				t.Fatalf("config write = (%v, %v), want a 400 error response", resp, err)
			}
			msg := resp.Error().Error()
			if !strings.HasPrefix(msg, "refresh_token:") {
				t.Errorf("error = %q, want it to name refresh_token", msg)
			}
			assertNoSecrets(env, "config write error", msg)

			after := env.root()
			if after.RefreshToken != before.RefreshToken || after.Generation != before.Generation {
				t.Errorf("live grant changed by a rejected seed")
			}
			cfg := env.mustRequest(logical.ReadOperation, "config", nil).Data
			if got := cfg["request_timeout"]; got != int64(defaultRequestTimeout.Seconds()) {
				t.Errorf("request_timeout = %v, want %d: a rejected write stores nothing", got, int64(defaultRequestTimeout.Seconds()))
			}
			if _, err := requestRotateRoot(env); err != nil {
				t.Errorf("rotate-root of the live grant: %v", err)
			}

			if tt.fault != nil {
				// The seed was never redeemed, so writing it again works.
				if _, err := writeConfig(env, body); err != nil {
					t.Errorf("writing the seed again after the upstream recovered: %v", err)
				}
				if latest, _ := env.issuer.LatestRefreshToken(seed); env.root().RefreshToken != latest {
					t.Errorf("root grant is not the seed's live token")
				}
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestStandbySeedReplay(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	standby := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(standby)
	body := env.baseConfig()
	body["standby_refresh_token"] = standby
	env.mustRequest(logical.UpdateOperation, "config", body)
	before := env.root().Standby
	stats := env.issuer.Stats()

	resp, err := writeConfig(env, body)
	if err != nil {
		t.Fatalf("replaying the standby seed: %v", err)
	}
	if resp == nil || !strings.Contains(strings.Join(resp.Warnings, " "), "standby_refresh_token") {
		t.Errorf("warnings = %v, want one naming standby_refresh_token", resp)
	}
	if got := env.issuer.Stats(); got != stats {
		t.Errorf("issuer counters = %+v, want %+v unchanged", got, stats)
	}
	if after := env.root().Standby; after.RefreshToken != before.RefreshToken || after.Generation != before.Generation {
		t.Errorf("standby grant changed by a replayed seed")
	}
}

func TestStandbySeedWithoutPrimary(t *testing.T) {
	env, _ := getClockedBackend(t)
	standby := env.issuer.SeedGrant(testClientID, []string{"offline_access"})
	env.addSecret(standby)
	body := env.baseConfig()
	body["standby_refresh_token"] = standby
	resp, err := env.request(logical.UpdateOperation, "config", body)
	if !errors.Is(err, logical.ErrInvalidRequest) || resp == nil || !strings.HasPrefix(resp.Error().Error(), "standby_refresh_token:") {
		t.Errorf("config write = (%v, %v), want a 400 naming standby_refresh_token", resp, err)
	}
	if got := env.issuer.Stats().RefreshRequests; got != 0 {
		t.Errorf("refresh requests = %d, want 0", got)
	}
}

func TestSeedFromCode(t *testing.T) {
	env, _ := getClockedBackend(t)
	first := env.configure()
	before := env.root()
	verifier := strings.Repeat("v", 43)
	redirect := "http://127.0.0.1/callback"
	code := env.issuer.IssueCode(testClientID, redirect, []string{"offline_access", "openid"}, fakeissuer.S256Challenge(verifier))
	env.addSecret(code, verifier)

	resp := env.mustRequest(logical.UpdateOperation, "seed", map[string]interface{}{
		"code": code, "code_verifier": verifier, "redirect_uri": redirect,
	})
	assertNoSecrets(env, "seed response", resp.Data)
	if got := resp.Data["generation"]; got != before.Generation+1 {
		t.Errorf("generation = %v, want %d", got, before.Generation+1)
	}
	root := env.root()
	if root.State != stateHealthy || !env.issuer.Active(root.RefreshToken) {
		t.Errorf("state %s active %v, want healthy and active", root.State, env.issuer.Active(root.RefreshToken))
	}
	if got := env.issuer.Stats().RefreshRequests; got != 1 {
		t.Errorf("refresh requests = %d, want 1: the exchanged token is not redeemed", got)
	}
	if _, err := requestRotateRoot(env); err != nil {
		t.Errorf("rotate-root of the exchanged grant: %v", err)
	}

	// The seed of the replaced grant stays known.
	body := env.baseConfig()
	body["refresh_token"] = first
	resp, err := writeConfig(env, body)
	if err != nil {
		t.Fatalf("replaying the first seed: %v", err)
	}
	if resp == nil || len(resp.Warnings) == 0 {
		t.Errorf("replaying the first seed gave no warning")
	}
	assertNoSecretsInReads(env)
}

func TestSeedCodeReplay(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	verifier := strings.Repeat("w", 43)
	redirect := "http://127.0.0.1/callback"
	code := env.issuer.IssueCode(testClientID, redirect, []string{"offline_access", "openid"}, fakeissuer.S256Challenge(verifier))
	env.addSecret(code, verifier)
	body := map[string]interface{}{"code": code, "code_verifier": verifier, "redirect_uri": redirect}
	env.mustRequest(logical.UpdateOperation, "seed", body)
	rotateTimes(env, maxConsumedHashes+1)
	before := env.root()
	stats := env.issuer.Stats()

	// A client that retries the write after a lost response replays it.
	resp := env.mustRequest(logical.UpdateOperation, "seed", body)
	if !strings.Contains(strings.Join(resp.Warnings, " "), "already exchanged") {
		t.Errorf("warnings = %q, want one saying the code was already exchanged", resp.Warnings)
	}
	if got := resp.Data["generation"]; got != before.Generation {
		t.Errorf("generation = %v, want %d", got, before.Generation)
	}
	if got := env.issuer.Stats(); got != stats {
		t.Errorf("issuer counters = %+v, want %+v unchanged", got, stats)
	}
	if !env.issuer.Active(env.root().RefreshToken) {
		t.Errorf("live refresh token revoked by the replayed write")
	}
}
