package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/internal/fakeissuer"
)

// testClock is a clock shared by the backend and the fake issuer that a
// test moves forward. It is safe for concurrent use.
type testClock struct {
	offset atomic.Int64
}

// Now returns the wall clock moved by every Advance so far.
func (c *testClock) Now() time.Time {
	return time.Now().Add(time.Duration(c.offset.Load()))
}

// Advance moves the clock forward by d.
func (c *testClock) Advance(d time.Duration) {
	c.offset.Add(int64(d))
}

// getClockedBackend returns a test backend whose clock, and the fake
// issuer's, is a testClock. Its cleanup also fails the test if the log
// contains any token of the fake issuer, including tokens whose response
// the test made the engine lose.
func getClockedBackend(t *testing.T, opts ...fakeissuer.Option) (*testEnv, *testClock) {
	t.Helper()
	clock := &testClock{}
	env := getTestBackend(t, append(opts, fakeissuer.WithClock(clock.Now))...)
	env.b.now = clock.Now
	t.Cleanup(func() {
		logs := env.logs.String()
		for _, marker := range secretMarkers {
			if strings.Contains(logs, marker) {
				t.Errorf("the backend's log contains a token of the fake issuer (%s...)", marker)
			}
		}
	})
	return env, clock
}

// configureWith writes a config seeded with a fresh grant, with extra
// fields on top of the base config, and returns the seed.
func configureWith(env *testEnv, extra map[string]interface{}) string {
	env.t.Helper()
	seed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(seed)
	data := env.baseConfig()
	for key, value := range extra {
		data[key] = value
	}
	data["refresh_token"] = seed
	env.mustRequest(logical.UpdateOperation, "config", data)
	return seed
}

// requestRotateRoot writes rotate-root and folds an error response into
// the error.
func requestRotateRoot(env *testEnv) (*logical.Response, error) {
	env.t.Helper()
	resp, err := env.request(logical.UpdateOperation, "rotate-root", nil)
	// A 400 carries its message in the response, beside ErrInvalidRequest.
	if resp != nil && resp.IsError() {
		err = resp.Error()
	}
	return resp, err
}

// requestCreds mints a token for role and records it as a secret.
func requestCreds(env *testEnv, role string) (*logical.Response, error) {
	env.t.Helper()
	resp, err := env.request(logical.UpdateOperation, "creds/"+role, nil)
	// A 400 carries its message in the response, beside ErrInvalidRequest.
	if resp != nil && resp.IsError() {
		err = resp.Error()
	}
	if err == nil && resp != nil {
		if token, ok := resp.Data["access_token"].(string); ok {
			env.addSecret(token)
		}
	}
	return resp, err
}

// addRoles writes a client_credentials role "cc" and a refresh role "rt".
func addRoles(env *testEnv) {
	env.t.Helper()
	env.mustRequest(logical.UpdateOperation, "roles/cc", map[string]interface{}{
		"strategy": strategyClientCredentials, "scopes": "deploy:read", "audience": testAudience,
	})
	env.mustRequest(logical.UpdateOperation, "roles/rt", map[string]interface{}{"strategy": strategyRefresh})
}

// runPeriodic runs the periodic function as Vault's rollback manager does.
func runPeriodic(env *testEnv) {
	env.t.Helper()
	req := &logical.Request{Operation: logical.RollbackOperation, Storage: env.storage}
	if err := env.b.periodic(context.Background(), req); err != nil {
		env.t.Fatalf("periodic: %v", err)
	}
}

// secretMarkers are prefixes of every token the fake issuer mints, so a
// leak check finds tokens the test never saw.
var secretMarkers = []string{"ory_rt_", "ory_at_", "ory_ac_"}

// assertNoSecrets fails the test if value, rendered as JSON and with %v,
// contains any recorded secret or a token of the fake issuer.
func assertNoSecrets(env *testEnv, source string, value interface{}) {
	env.t.Helper()
	rendered := fmt.Sprintf("%v", value)
	if encoded, err := json.Marshal(value); err == nil {
		rendered += string(encoded)
	}
	if err, ok := value.(error); ok && err != nil {
		rendered += err.Error()
	}
	env.secretsMu.Lock()
	candidates := append(append([]string(nil), env.secrets...), secretMarkers...)
	env.secretsMu.Unlock()
	for _, secret := range candidates {
		if secret != "" && strings.Contains(rendered, secret) {
			env.t.Errorf("%s contains a secret starting %q", source, secret[:min(len(secret), 8)])
		}
	}
}

// assertNoSecretsInReads checks status and the config read for leaks.
func assertNoSecretsInReads(env *testEnv) {
	env.t.Helper()
	assertNoSecrets(env, "status", env.status())
	resp, err := env.request(logical.ReadOperation, "config", nil)
	if err != nil {
		env.t.Fatalf("reading config: %v", err)
	}
	if resp != nil {
		assertNoSecrets(env, "config read", resp.Data)
	}
}

// eventRecorder records the types of events the backend sends.
type eventRecorder struct {
	mu    sync.Mutex
	types []string
}

func (r *eventRecorder) SendEvent(_ context.Context, eventType logical.EventType, _ *logical.EventData) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.types = append(r.types, string(eventType))
	return nil
}

func (r *eventRecorder) count(eventType string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, recorded := range r.types {
		if recorded == eventType {
			n++
		}
	}
	return n
}

// restartBackend replaces env's backend with a new one on the same
// storage, as after a crash or a leader change: everything the old one
// held only in memory is gone. It returns the new backend's event recorder.
func restartBackend(env *testEnv, now func() time.Time, replication consts.ReplicationState) *eventRecorder {
	env.t.Helper()
	events := &eventRecorder{}
	config := logical.TestBackendConfig()
	config.StorageView = env.storage
	config.Logger = hclog.New(&hclog.LoggerOptions{Output: env.logs, Level: hclog.Trace})
	config.System = &logical.StaticSystemView{
		DefaultLeaseTTLVal:  time.Hour,
		MaxLeaseTTLVal:      24 * time.Hour,
		ReplicationStateVal: replication,
	}
	config.EventsSender = events

	b := newBackend()
	if err := b.Setup(context.Background(), config); err != nil {
		env.t.Fatalf("setting up backend: %v", err)
	}
	if now != nil {
		b.now = now
	}
	env.b = b
	return events
}

// flakyStorage fails Put of the root grant while failures remain, for
// entries of at least fromGeneration: that is, after the upstream rotated.
type flakyStorage struct {
	logical.Storage

	mu             sync.Mutex
	failures       int
	fromGeneration int64
}

func (s *flakyStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	if entry.Key == rootStoragePath {
		var root rootGrant
		if err := json.Unmarshal(entry.Value, &root); err != nil {
			return err
		}
		s.mu.Lock()
		fail := s.failures > 0 && root.Generation >= s.fromGeneration
		if fail {
			s.failures--
		}
		s.mu.Unlock()
		if fail {
			return errors.New("storage unavailable")
		}
	}
	return s.Storage.Put(ctx, entry)
}

// failRootPuts makes the next n puts of a root grant of at least
// generation fail.
func (s *flakyStorage) failRootPuts(n int, generation int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = n
	s.fromGeneration = generation
}

// shortenStorageRetries makes putRoot retry without its pauses for the
// rest of the test. It changes a package variable, so a test that calls it
// must not run in parallel with others.
func shortenStorageRetries(t *testing.T) {
	saved := storageRetryDelays
	storageRetryDelays = []time.Duration{0, time.Millisecond, time.Millisecond, time.Millisecond}
	t.Cleanup(func() { storageRetryDelays = saved })
}

// rootWAL returns the root_refresh WAL entries in storage.
func rootWAL(env *testEnv) []*framework.WALEntry {
	env.t.Helper()
	return walEntries(env, walKindRootRefresh)
}

// walEntries returns the WAL entries of one kind in storage.
func walEntries(env *testEnv, kind string) []*framework.WALEntry {
	env.t.Helper()
	ctx := context.Background()
	ids, err := framework.ListWAL(ctx, env.storage)
	if err != nil {
		env.t.Fatalf("listing WAL: %v", err)
	}
	var entries []*framework.WALEntry
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, env.storage, id)
		if err != nil {
			env.t.Fatalf("reading WAL %s: %v", id, err)
		}
		if entry != nil && entry.Kind == kind {
			entries = append(entries, entry)
		}
	}
	return entries
}

// transientFault is a fault that leaves the grant untouched.
var transientFault = fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken}

func TestRotateRootTransient(t *testing.T) {
	tests := []struct {
		name           string
		fault          fakeissuer.Fault
		wantRetryAfter time.Duration
	}{
		{"503", fakeissuer.Fault{Kind: fakeissuer.FaultStatus}, 0},
		{"429 without Retry-After", fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Status: 429}, 0},
		{"429 with Retry-After", fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Status: 429, RetryAfter: "3600"}, time.Hour},
		{"HTML proxy page", fakeissuer.Fault{Kind: fakeissuer.FaultHTMLBody}, 0},
		{"reset before processing, retry too", fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection, Count: 2}, 0},
		{"delay beyond the timeout, retry too", fakeissuer.Fault{Kind: fakeissuer.FaultDelay, Delay: 3 * time.Second, Count: 2}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := getClockedBackend(t)
			configureWith(env, map[string]interface{}{"request_timeout": 1})
			before := env.root()

			tt.fault.Target = fakeissuer.TargetRefreshToken
			env.issuer.InjectFault(tt.fault)
			_, err := requestRotateRoot(env)
			if err == nil {
				t.Fatalf("rotate-root succeeded, want an error")
			}
			assertNoSecrets(env, "rotate-root error", err)

			root := env.root()
			if root.State != stateDegraded {
				t.Errorf("state = %s, want %s (last error %q)", root.State, stateDegraded, root.LastError)
			}
			if root.ConsecutiveFailures != 1 {
				t.Errorf("consecutive failures = %d, want 1", root.ConsecutiveFailures)
			}
			if root.RefreshToken != before.RefreshToken {
				t.Errorf("refresh token changed after a transient failure")
			}
			if root.Generation != before.Generation {
				t.Errorf("generation = %d, want %d", root.Generation, before.Generation)
			}
			if !env.issuer.Active(root.RefreshToken) {
				t.Errorf("refresh token no longer active upstream")
			}
			backoff := root.RetryAt.Sub(root.LastErrorAt)
			wantMin := max(rotationBackoffBase, tt.wantRetryAfter)
			if backoff < wantMin || backoff > max(rotationBackoffBase*6/5, tt.wantRetryAfter) {
				t.Errorf("retry after %s, want %s to %s", backoff, wantMin, max(rotationBackoffBase*6/5, tt.wantRetryAfter))
			}
			if got := env.status()["consecutive_failures"]; got != 1 {
				t.Errorf("status consecutive_failures = %v, want 1", got)
			}
			if got := rootWAL(env); len(got) != 0 {
				t.Errorf("root_refresh WAL entries = %d, want 0 after the failure was recorded", len(got))
			}

			env.issuer.InjectFault(transientFault)
			if _, err := requestRotateRoot(env); err == nil {
				t.Fatalf("second rotate-root succeeded, want an error")
			}
			root = env.root()
			if root.ConsecutiveFailures != 2 {
				t.Errorf("consecutive failures = %d, want 2", root.ConsecutiveFailures)
			}
			if backoff := root.RetryAt.Sub(root.LastErrorAt); backoff < 2*rotationBackoffBase {
				t.Errorf("second backoff = %s, want at least %s", backoff, 2*rotationBackoffBase)
			}

			resp, err := requestRotateRoot(env)
			if err != nil {
				t.Fatalf("rotate-root after the upstream recovered: %v", err)
			}
			if got := resp.Data["generation"]; got != before.Generation+1 {
				t.Errorf("generation = %v, want %d", got, before.Generation+1)
			}
			root = env.root()
			if root.State != stateHealthy || root.ConsecutiveFailures != 0 || !root.RetryAt.IsZero() {
				t.Errorf("after recovery: state %s, failures %d, retry at %s; want healthy, 0, zero", root.State, root.ConsecutiveFailures, root.RetryAt)
			}
			if got := env.issuer.Stats().ReuseDetections; got != 0 {
				t.Errorf("reuse detections = %d, want 0", got)
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestPeriodicHonoursRetryAfter(t *testing.T) {
	env, clock := getClockedBackend(t)
	env.configure()
	seeding := env.issuer.Stats().RefreshRequests
	clock.Advance(defaultRotationPeriod + time.Minute)

	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken, Status: 429, RetryAfter: "3600"})
	runPeriodic(env)
	if got := env.issuer.Stats().RefreshRequests - seeding; got != 1 {
		t.Fatalf("refresh requests after the first tick = %d, want 1", got)
	}

	steps := []struct {
		name         string
		advance      time.Duration
		wantRequests int
	}{
		{"tick before Retry-After", 10 * time.Minute, 1},
		{"tick just before Retry-After", 49 * time.Minute, 1},
		{"tick after Retry-After", 2 * time.Minute, 2},
		{"tick after the rotation", time.Minute, 2},
	}
	for _, step := range steps {
		clock.Advance(step.advance)
		runPeriodic(env)
		if got := env.issuer.Stats().RefreshRequests - seeding; got != step.wantRequests {
			t.Errorf("%s: refresh requests = %d, want %d", step.name, got, step.wantRequests)
		}
	}
	if got := env.root().State; got != stateHealthy {
		t.Errorf("state = %s, want %s", got, stateHealthy)
	}
}

func TestRotateRootTerminal(t *testing.T) {
	tests := []struct {
		name string
		// sentFirst makes a transient failure send the token once before
		// the terminal response, so an invalid_grant cannot mean reuse.
		sentFirst bool
		fault     fakeissuer.Fault
		wantError string
	}{
		{"invalid_client", false, fakeissuer.Fault{Kind: fakeissuer.FaultOAuthError, Status: 401, ErrorCode: "invalid_client"}, "invalid_client"},
		{"unauthorized_client", false, fakeissuer.Fault{Kind: fakeissuer.FaultOAuthError, ErrorCode: "unauthorized_client"}, "unauthorized_client"},
		{"invalid_grant for a token sent before", true, fakeissuer.Fault{Kind: fakeissuer.FaultOAuthError, ErrorCode: "invalid_grant"}, "response was lost"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, clock := getClockedBackend(t)
			env.configure()
			addRoles(env)
			before := env.root()
			if tt.sentFirst {
				env.issuer.InjectFault(transientFault)
				if _, err := requestRotateRoot(env); err == nil {
					t.Fatalf("rotate-root with a 503 succeeded")
				}
			}

			tt.fault.Target = fakeissuer.TargetRefreshToken
			env.issuer.InjectFault(tt.fault)
			_, err := requestRotateRoot(env)
			if err == nil {
				t.Fatalf("rotate-root succeeded, want an error")
			}
			root := env.root()
			if root.State != stateNeedsReseed {
				t.Errorf("state = %s, want %s", root.State, stateNeedsReseed)
			}
			if !strings.Contains(root.LastError, tt.wantError) {
				t.Errorf("last error = %q, want it to contain %q", root.LastError, tt.wantError)
			}
			if root.RefreshToken != before.RefreshToken {
				t.Errorf("refresh token changed, want it kept")
			}
			requests := env.issuer.Stats().RefreshRequests

			_, err = requestRotateRoot(env)
			if err == nil || !strings.Contains(err.Error(), "refresh_token=") {
				t.Errorf("rotate-root on a terminal grant: error = %v, want one saying how to reseed", err)
			}
			// Client credentials mints need no root grant. They run
			// before the clock moves, because x/oauth2 computes token
			// expiry from the wall clock.
			if _, err := requestCreds(env, "cc"); err != nil {
				t.Errorf("client_credentials mint: %v, want success without the root grant", err)
			}
			clock.Advance(2 * defaultRotationPeriod)
			runPeriodic(env)
			_, err = requestCreds(env, "rt")
			if err == nil || !strings.Contains(err.Error(), "refresh_token=") || !strings.Contains(err.Error(), "ci-tokens-seed") {
				t.Errorf("refresh role mint: error = %v, want one saying how to reseed", err)
			}
			assertNoSecrets(env, "mint error", err)
			if got := env.issuer.Stats().RefreshRequests; got != requests {
				t.Errorf("refresh requests = %d, want %d: nothing may refresh a terminal grant", got, requests)
			}

			if env.root().RefreshToken != before.RefreshToken {
				t.Errorf("refresh token deleted or replaced")
			}
			if resp, _ := env.request(logical.ReadOperation, "config", nil); resp == nil || resp.Data["client_id"] != testClientID {
				t.Errorf("config read after terminal failure = %v, want the config kept", resp)
			}
			status := env.status()
			if status["state"] != stateNeedsReseed || status["next_rotation_at"] != nil {
				t.Errorf("status state %v next_rotation_at %v, want %s and nil", status["state"], status["next_rotation_at"], stateNeedsReseed)
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestRotateRootAmbiguous(t *testing.T) {
	after := fakeissuer.AfterProcessing
	tests := []struct {
		name  string
		fault fakeissuer.Fault
		// spends is whether the faulted request rotated upstream.
		spends bool
	}{
		{"reset after processing", fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection, Phase: after}, true},
		{"delay after processing beyond the timeout", fakeissuer.Fault{Kind: fakeissuer.FaultDelay, Phase: after, Delay: 3 * time.Second}, true},
		{"truncated JSON", fakeissuer.Fault{Kind: fakeissuer.FaultTruncatedJSON, Phase: after}, true},
		{"non-JSON 200", fakeissuer.Fault{Kind: fakeissuer.FaultNonJSON200, Phase: after}, true},
		{"empty refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultEmptyRefreshToken, Phase: after}, true},
		{"non-string refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultNonStringRefreshToken, Phase: after}, true},
		{"reset before processing", fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection}, false},
		{"empty refresh_token without rotation", fakeissuer.Fault{Kind: fakeissuer.FaultEmptyRefreshToken}, false},
		{"non-string refresh_token without rotation", fakeissuer.Fault{Kind: fakeissuer.FaultNonStringRefreshToken}, false},
	}
	for _, grace := range []bool{true, false} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s grace=%v", tt.name, grace), func(t *testing.T) {
				var opts []fakeissuer.Option
				if grace {
					opts = append(opts, fakeissuer.WithGraceWindow(time.Minute))
				}
				env, _ := getClockedBackend(t, opts...)
				configureWith(env, map[string]interface{}{"request_timeout": 1})
				before := env.root()
				requests := env.issuer.Stats().RefreshRequests

				tt.fault.Target = fakeissuer.TargetRefreshToken
				env.issuer.InjectFault(tt.fault)
				_, err := requestRotateRoot(env)

				log := env.issuer.RefreshLog()[requests:]
				if len(log) != 2 {
					t.Fatalf("refresh requests = %d, want 2 (one retry)", len(log))
				}
				for i, rec := range log {
					if rec.Fingerprint != fakeissuer.Fingerprint(before.RefreshToken) {
						t.Errorf("request %d presented another token, want the newest one both times", i+1)
					}
				}

				root := env.root()
				survives := grace || !tt.spends
				if survives {
					if err != nil {
						t.Fatalf("rotate-root: %v, want success after the retry", err)
					}
					if root.State != stateHealthy || root.Generation != before.Generation+1 {
						t.Errorf("state %s generation %d, want healthy and %d", root.State, root.Generation, before.Generation+1)
					}
					if !env.issuer.Active(root.RefreshToken) {
						t.Errorf("stored refresh token is not active upstream")
					}
					if _, err := requestRotateRoot(env); err != nil {
						t.Errorf("next rotate-root: %v", err)
					}
				} else {
					if err == nil {
						t.Fatalf("rotate-root succeeded, want an error")
					}
					if root.State != stateNeedsReseed {
						t.Errorf("state = %s, want %s", root.State, stateNeedsReseed)
					}
					if !strings.Contains(root.LastError, "response was lost") {
						t.Errorf("last error = %q, want it to name a lost response", root.LastError)
					}
					if root.RefreshToken != before.RefreshToken {
						t.Errorf("refresh token replaced, want the last one received kept")
					}
				}
				assertNoSecrets(env, "rotate-root error", err)
				assertNoSecretsInReads(env)
			})
		}
	}
}

func TestRotateRootAmbiguousTwice(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	before := env.root()

	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection, Target: fakeissuer.TargetRefreshToken, Count: 2})
	if _, err := requestRotateRoot(env); err == nil {
		t.Fatalf("rotate-root succeeded, want an error")
	}
	root := env.root()
	if root.State != stateDegraded {
		t.Errorf("state = %s, want %s: two lost responses do not prove the grant lost", root.State, stateDegraded)
	}
	if !strings.Contains(root.LastError, "may have been spent") {
		t.Errorf("last error = %q, want it to say the token may have been spent", root.LastError)
	}
	if root.RetryAt.IsZero() {
		t.Errorf("retry at is zero, want a backoff")
	}

	if _, err := requestRotateRoot(env); err != nil {
		t.Fatalf("rotate-root after the resets: %v", err)
	}
	if got := env.root().Generation; got != before.Generation+1 {
		t.Errorf("generation = %d, want %d", got, before.Generation+1)
	}
}

func TestRotateRootResponseShapes(t *testing.T) {
	tests := []struct {
		name      string
		fault     fakeissuer.Fault
		wantErr   bool
		wantState string
		// wantKept is whether the refresh token must stay the same.
		wantKept bool
		wantGen  int64
	}{
		{"missing refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultMissingRefreshToken}, false, stateHealthy, true, 2},
		{"invalid_grant in 200", fakeissuer.Fault{Kind: fakeissuer.FaultErrorIn200}, true, stateCompromised, true, 1},
		{"temporarily_unavailable in 200", fakeissuer.Fault{Kind: fakeissuer.FaultErrorIn200, ErrorCode: "temporarily_unavailable"}, true, stateDegraded, true, 1},
		{"server_error in 200", fakeissuer.Fault{Kind: fakeissuer.FaultErrorIn200, ErrorCode: "server_error"}, true, stateDegraded, true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := getClockedBackend(t)
			env.configure()
			before := env.root()

			tt.fault.Target = fakeissuer.TargetRefreshToken
			env.issuer.InjectFault(tt.fault)
			_, err := requestRotateRoot(env)
			if (err != nil) != tt.wantErr {
				t.Fatalf("rotate-root error = %v, want error %v", err, tt.wantErr)
			}
			root := env.root()
			if root.State != tt.wantState {
				t.Errorf("state = %s, want %s", root.State, tt.wantState)
			}
			if got := root.RefreshToken == before.RefreshToken; got != tt.wantKept {
				t.Errorf("refresh token kept = %v, want %v", got, tt.wantKept)
			}
			if root.Generation != tt.wantGen {
				t.Errorf("generation = %d, want %d", root.Generation, tt.wantGen)
			}
			if tt.wantState == stateHealthy {
				if !env.issuer.Active(root.RefreshToken) {
					t.Errorf("kept refresh token is not active upstream")
				}
				if _, err := requestRotateRoot(env); err != nil {
					t.Errorf("next rotate-root: %v", err)
				}
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestRefreshRoleExpiresIn(t *testing.T) {
	tests := []struct {
		name    string
		format  fakeissuer.ExpiresInFormat
		wantTTL time.Duration
	}{
		{"number", fakeissuer.ExpiresInNumber, time.Hour - maxExpirySkew},
		{"numeric string", fakeissuer.ExpiresInString, time.Hour - maxExpirySkew},
		{"null", fakeissuer.ExpiresInNull, 10*time.Minute - maxExpirySkew},
		{"absent", fakeissuer.ExpiresInAbsent, 10*time.Minute - maxExpirySkew},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, _ := getClockedBackend(t, fakeissuer.WithExpiresInFormat(tt.format))
			configureWith(env, map[string]interface{}{"default_expires_in": 600})
			addRoles(env)

			resp, err := requestCreds(env, "rt")
			if err != nil {
				t.Fatalf("refresh role mint: %v", err)
			}
			// One second of slack: the lease is cut to whole seconds.
			if got := resp.Secret.TTL; got < tt.wantTTL-time.Second || got > tt.wantTTL {
				t.Errorf("lease TTL = %s, want %s", got, tt.wantTTL)
			}
			if got := env.root().Generation; got != 2 {
				t.Errorf("generation = %d, want 2", got)
			}
		})
	}
}

func TestReuseOutsideVault(t *testing.T) {
	env, clock := getClockedBackend(t)
	seed := env.configure()
	addRoles(env)
	events := restartBackend(env, clock.Now, 0)

	live, ok := env.issuer.LatestRefreshToken(seed)
	if !ok {
		t.Fatalf("issuer knows no refresh token for the seed's family")
	}
	spent, err := env.issuer.Spend(live)
	if err != nil {
		t.Fatalf("spending the live refresh token: %v", err)
	}
	env.addSecret(live, spent)

	if _, err := requestRotateRoot(env); err == nil {
		t.Fatalf("rotate-root succeeded, want an error")
	}
	if got := env.root().State; got != stateCompromised {
		t.Errorf("state = %s, want %s", got, stateCompromised)
	}
	requests := env.issuer.Stats().RefreshRequests

	if _, err := requestRotateRoot(env); err == nil {
		t.Errorf("second rotate-root succeeded, want an error")
	}
	if _, err := requestCreds(env, "rt"); err == nil {
		t.Errorf("refresh role mint succeeded, want an error")
	}
	clock.Advance(2 * defaultRotationPeriod)
	runPeriodic(env)
	if got := env.issuer.Stats().RefreshRequests; got != requests {
		t.Errorf("refresh requests = %d, want %d: no refresh after reuse was detected", got, requests)
	}

	var lines []string
	for _, line := range strings.Split(env.logs.String(), "\n") {
		if strings.Contains(line, "root refresh token reused outside vault") {
			lines = append(lines, line)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("reuse log lines = %d, want 1", len(lines))
	}
	if !strings.Contains(lines[0], "[ERROR]") || !strings.Contains(lines[0], "generation=1") {
		t.Errorf("reuse log line = %q, want an Error line with generation=1", lines[0])
	}
	if got := events.count(eventRootReused); got != 1 {
		t.Errorf("%s events = %d, want 1", eventRootReused, got)
	}
	status := env.status()
	if status["state"] != stateCompromised {
		t.Errorf("status state = %v, want %s", status["state"], stateCompromised)
	}
	assertNoSecretsInReads(env)
}

func TestSingleFlight(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	addRoles(env)
	// Make the schedule due without moving the clock: x/oauth2 computes
	// token expiry from the wall clock, so leases need the real time.
	root := env.root()
	root.LastRotatedAt = root.LastRotatedAt.Add(-defaultRotationPeriod - time.Minute)
	if err := env.b.putRoot(context.Background(), env.storage, root); err != nil {
		t.Fatalf("storing root grant: %v", err)
	}
	start := root.Generation
	startRequests := env.issuer.Stats().RefreshRequests

	const (
		clientCredentialsCalls = 200
		refreshRoleCalls       = 20
		rotateRootCalls        = 20
		periodicCalls          = 10
	)
	var wg sync.WaitGroup
	errs := make(chan error, clientCredentialsCalls+refreshRoleCalls+rotateRootCalls+periodicCalls)
	call := func(what string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fn(); err != nil {
				errs <- fmt.Errorf("%s: %w", what, err)
			}
		}()
	}
	for range clientCredentialsCalls {
		call("client_credentials mint", func() error { _, err := requestCreds(env, "cc"); return err })
	}
	for range refreshRoleCalls {
		call("refresh role mint", func() error { _, err := requestCreds(env, "rt"); return err })
	}
	for range rotateRootCalls {
		call("rotate-root", func() error { _, err := requestRotateRoot(env); return err })
	}
	for range periodicCalls {
		call("periodic", func() error {
			return env.b.periodic(context.Background(), &logical.Request{Storage: env.storage})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("%v", err)
	}

	advanced := int(env.root().Generation - start)
	stats := env.issuer.Stats()
	if got := stats.RefreshRequests - startRequests; got != advanced {
		t.Errorf("refresh requests = %d, generations advanced = %d, want equal", got, advanced)
	}
	if advanced < refreshRoleCalls {
		t.Errorf("generations advanced = %d, want at least %d", advanced, refreshRoleCalls)
	}
	if advanced > refreshRoleCalls+rotateRootCalls+1 {
		t.Errorf("generations advanced = %d, want at most %d", advanced, refreshRoleCalls+rotateRootCalls+1)
	}
	if stats.ReuseDetections != 0 {
		t.Errorf("reuse detections = %d, want 0", stats.ReuseDetections)
	}
	if got := stats.ClientCredentialsRequests; got != clientCredentialsCalls {
		t.Errorf("client_credentials requests = %d, want %d", got, clientCredentialsCalls)
	}
	log := env.issuer.RefreshLog()[startRequests:]
	for i, rec := range log {
		if rec.Outcome != fakeissuer.OutcomeRotated {
			t.Errorf("refresh %d outcome = %s, want %s", i+1, rec.Outcome, fakeissuer.OutcomeRotated)
		}
		if i > 0 && rec.Fingerprint != log[i-1].NewFingerprint {
			t.Errorf("refresh %d presented a token other than the one refresh %d issued", i+1, i)
		}
	}
	assertNoSecretsInReads(env)
}

func TestStorageFailureAfterRotation(t *testing.T) {
	tests := []struct {
		name     string
		failures int
		// wantHeld is whether the rotated grant must end up held in memory.
		wantHeld bool
	}{
		{"absorbed by the retries", 2, false},
		{"held in memory", len(storageRetryDelays) + 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shortenStorageRetries(t)
			env, _ := getClockedBackend(t)
			storage := &flakyStorage{Storage: env.storage}
			env.storage = storage
			env.configure()
			addRoles(env)
			first := env.root()

			storage.failRootPuts(tt.failures, first.Generation+1)
			_, err := requestRotateRoot(env)
			if got := err != nil; got != tt.wantHeld {
				t.Fatalf("rotate-root error = %v, want error %v", err, tt.wantHeld)
			}
			assertNoSecrets(env, "rotate-root error", err)
			status := env.status()
			if got := status["rotation_held_in_memory"]; got != tt.wantHeld {
				t.Errorf("rotation_held_in_memory = %v, want %v", got, tt.wantHeld)
			}
			if got := status["generation"]; got != first.Generation+1 {
				t.Errorf("status generation = %v, want %d", got, first.Generation+1)
			}
			inMemory := env.root()
			if inMemory.RefreshToken == first.RefreshToken {
				t.Fatalf("newest refresh token not kept after the upstream rotated")
			}
			if !env.issuer.Active(inMemory.RefreshToken) {
				t.Errorf("newest refresh token is not active upstream")
			}

			if _, err := requestCreds(env, "rt"); err != nil {
				t.Fatalf("refresh role mint once storage works: %v", err)
			}
			if _, err := requestRotateRoot(env); err != nil {
				t.Fatalf("rotate-root once storage works: %v", err)
			}
			if env.b.pendingRoot.Load() != nil {
				t.Errorf("a rotated grant is still held in memory, want it stored")
			}
			entry, err := storage.Storage.Get(context.Background(), rootStoragePath)
			if err != nil || entry == nil {
				t.Fatalf("reading stored root grant: %v", err)
			}
			var stored rootGrant
			if err := entry.DecodeJSON(&stored); err != nil {
				t.Fatalf("decoding stored root grant: %v", err)
			}
			env.addSecret(stored.RefreshToken)
			if stored.Generation != first.Generation+3 {
				t.Errorf("stored generation = %d, want %d", stored.Generation, first.Generation+3)
			}

			for i, rec := range env.issuer.RefreshLog() {
				if rec.Outcome != fakeissuer.OutcomeRotated {
					t.Errorf("refresh %d outcome = %s, want %s", i+1, rec.Outcome, fakeissuer.OutcomeRotated)
				}
			}
			for _, token := range []string{first.RefreshToken, inMemory.RefreshToken} {
				if got := env.issuer.TimesPresented(token); got != 1 {
					t.Errorf("a token of the chain was presented %d times, want 1", got)
				}
			}
			if got := env.issuer.Stats().ReuseDetections; got != 0 {
				t.Errorf("reuse detections = %d, want 0", got)
			}
			assertNoSecretsInReads(env)
		})
	}
}

func TestRotationSurvivesCallerCancel(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	before := env.root()
	seeding := env.issuer.Stats().RefreshRequests
	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultDelay, Target: fakeissuer.TargetRefreshToken, Phase: fakeissuer.AfterProcessing, Delay: 300 * time.Millisecond})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := env.b.rotateRoot(ctx, env.storage, before.Generation, "requested")
	if err != nil {
		t.Fatalf("rotateRoot with a canceled caller: %v, want the rotation finished", err)
	}
	root := env.root()
	if root.Generation != before.Generation+1 || root.State != stateHealthy {
		t.Errorf("generation %d state %s, want %d and healthy", root.Generation, root.State, before.Generation+1)
	}
	if !env.issuer.Active(root.RefreshToken) {
		t.Errorf("stored refresh token is not active upstream")
	}
	if got := env.issuer.Stats().RefreshRequests - seeding; got != 1 {
		t.Errorf("refresh requests = %d, want 1", got)
	}
}

func TestPeriodicOnlyWhereWritable(t *testing.T) {
	tests := []struct {
		name         string
		replication  consts.ReplicationState
		wantRequests int
	}{
		{"active node", 0, 1},
		{"performance standby", consts.ReplicationPerformanceStandby, 0},
		{"performance secondary", consts.ReplicationPerformanceSecondary, 0},
		{"DR secondary", consts.ReplicationDRSecondary, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env, clock := getClockedBackend(t)
			env.configure()
			seeding := env.issuer.Stats().RefreshRequests
			restartBackend(env, clock.Now, tt.replication)
			clock.Advance(defaultRotationPeriod + time.Minute)
			runPeriodic(env)
			if got := env.issuer.Stats().RefreshRequests - seeding; got != tt.wantRequests {
				t.Errorf("refresh requests = %d, want %d", got, tt.wantRequests)
			}
		})
	}
}

func TestRotatingPathsForward(t *testing.T) {
	env := getTestBackend(t)
	tests := []struct {
		pattern string
		op      logical.Operation
	}{
		{"rotate-root", logical.UpdateOperation},
		{"seed", logical.UpdateOperation},
		{"config", logical.CreateOperation},
		{"config", logical.UpdateOperation},
		{"config", logical.DeleteOperation},
		{pathCreds(env.b).Pattern, logical.ReadOperation},
		{pathCreds(env.b).Pattern, logical.UpdateOperation},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s %s", tt.op, tt.pattern), func(t *testing.T) {
			var handler framework.OperationHandler
			for _, path := range env.b.Paths {
				if path.Pattern == tt.pattern {
					handler = path.Operations[tt.op]
				}
			}
			if handler == nil {
				t.Fatalf("no %s handler for %s", tt.op, tt.pattern)
			}
			props := handler.Properties()
			if !props.ForwardPerformanceStandby || !props.ForwardPerformanceSecondary {
				t.Errorf("forwarding to the active node = %v/%v, want true/true", props.ForwardPerformanceStandby, props.ForwardPerformanceSecondary)
			}
		})
	}
}

func TestStandbyPromotion(t *testing.T) {
	env, clock := getClockedBackend(t)
	seed := env.configure()
	addRoles(env)
	events := restartBackend(env, clock.Now, 0)

	standbySeed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(standbySeed)
	data := env.baseConfig()
	data["standby_refresh_token"] = standbySeed
	env.mustRequest(logical.UpdateOperation, "config", data)
	if got := env.status()["standby_state"]; got != stateHealthy {
		t.Fatalf("standby_state = %v, want %s", got, stateHealthy)
	}

	if !env.issuer.Revoke(seed) {
		t.Fatalf("revoking the primary grant failed")
	}
	resp, err := requestRotateRoot(env)
	if err != nil {
		t.Fatalf("rotate-root after the primary was revoked: %v, want the standby promoted", err)
	}
	assertNoSecrets(env, "rotate-root response", resp.Data)
	statusResp := env.mustRequest(logical.ReadOperation, "status", nil)
	if got := statusResp.Data["state"]; got != stateHealthy {
		t.Errorf("state = %v, want %s", got, stateHealthy)
	}
	if got := statusResp.Data["standby_state"]; got != "promoted" {
		t.Errorf("standby_state = %v, want promoted", got)
	}
	if !strings.Contains(strings.Join(statusResp.Warnings, " "), "standby_refresh_token") {
		t.Errorf("status warnings = %q, want one asking for a new standby_refresh_token", statusResp.Warnings)
	}
	if got := events.count(eventStandbyActive); got != 1 {
		t.Errorf("%s events = %d, want 1", eventStandbyActive, got)
	}
	if _, err := requestCreds(env, "rt"); err != nil {
		t.Errorf("refresh role mint after promotion: %v", err)
	}
	latest, _ := env.issuer.LatestRefreshToken(standbySeed)
	if got := env.root().RefreshToken; got != latest {
		t.Errorf("root grant is not the standby's live token")
	}

	// Re-applying the config that seeded the standby changes nothing.
	requests := env.issuer.Stats().RefreshRequests
	resp = env.mustRequest(logical.UpdateOperation, "config", data)
	if resp == nil || len(resp.Warnings) == 0 {
		t.Errorf("re-applied standby seed gave no warning")
	}
	if got := env.issuer.Stats().RefreshRequests; got != requests {
		t.Errorf("refresh requests = %d, want %d after re-applying the standby seed", got, requests)
	}
	assertNoSecretsInReads(env)
}

func TestStandbySeededAfterPrimaryFailed(t *testing.T) {
	env, _ := getClockedBackend(t)
	seed := env.configure()
	addRoles(env)
	env.issuer.Revoke(seed)
	if _, err := requestRotateRoot(env); err == nil {
		t.Fatalf("rotate-root of a revoked grant succeeded")
	}
	if got := env.root().State; !(&rootGrant{State: got}).terminal() {
		t.Fatalf("state = %s, want a terminal state", got)
	}

	standbySeed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(standbySeed)
	data := env.baseConfig()
	data["standby_refresh_token"] = standbySeed
	env.mustRequest(logical.UpdateOperation, "config", data)

	if _, err := requestCreds(env, "rt"); err != nil {
		t.Fatalf("refresh role mint: %v, want the new standby promoted", err)
	}
	if got := env.status()["standby_state"]; got != "promoted" {
		t.Errorf("standby_state = %v, want promoted", got)
	}
}

func TestRotationPromotesReadyStandby(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	addRoles(env)
	standbySeed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(standbySeed)
	data := env.baseConfig()
	data["standby_refresh_token"] = standbySeed
	env.mustRequest(logical.UpdateOperation, "config", data)

	// A root grant stored as terminal next to a healthy standby, as when
	// storing the promotion failed.
	root := env.root()
	root.State = stateNeedsReseed
	root.LastError = "token endpoint returned invalid_grant (HTTP 400)"
	if err := env.b.putRoot(context.Background(), env.storage, root); err != nil {
		t.Fatalf("storing root grant: %v", err)
	}

	if _, err := requestCreds(env, "rt"); err != nil {
		t.Fatalf("refresh role mint: %v, want the standby promoted", err)
	}
	after := env.root()
	if after.State != stateHealthy || after.Standby != nil || !after.StandbyNeeded {
		t.Errorf("state %s, standby %v, standby needed %v; want healthy, nil, true", after.State, after.Standby, after.StandbyNeeded)
	}
	if latest, _ := env.issuer.LatestRefreshToken(standbySeed); after.RefreshToken != latest {
		t.Errorf("root grant is not the standby's live token")
	}
}

func TestStandbyRotatesOnSchedule(t *testing.T) {
	env, clock := getClockedBackend(t)
	env.configure()
	standbySeed := env.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	env.addSecret(standbySeed)
	data := env.baseConfig()
	data["standby_refresh_token"] = standbySeed
	env.mustRequest(logical.UpdateOperation, "config", data)
	before := env.root().Standby

	clock.Advance(time.Hour)
	runPeriodic(env)
	if got := env.root().Standby.Generation; got != before.Generation {
		t.Errorf("standby generation after an hour = %d, want %d", got, before.Generation)
	}

	clock.Advance(defaultRotationPeriod)
	runPeriodic(env)
	standby := env.root().Standby
	env.addSecret(standby.RefreshToken)
	if standby.Generation != before.Generation+1 {
		t.Errorf("standby generation after a period = %d, want %d", standby.Generation, before.Generation+1)
	}
	if standby.RefreshToken == before.RefreshToken || !env.issuer.Active(standby.RefreshToken) {
		t.Errorf("standby token not rotated to an active one")
	}

	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken, Count: 2})
	clock.Advance(defaultRotationPeriod)
	runPeriodic(env)
	requests := env.issuer.Stats().RefreshRequests
	clock.Advance(time.Second)
	runPeriodic(env)
	if got := env.issuer.Stats().RefreshRequests; got != requests {
		t.Errorf("refresh requests on the next tick = %d, want %d: a failed standby rotation backs off", got, requests)
	}
	if got := env.root().Standby.State; got != stateHealthy {
		t.Errorf("standby state after a 503 = %s, want %s", got, stateHealthy)
	}
}

func TestInterruptedRotation(t *testing.T) {
	tests := []struct {
		name      string
		grace     bool
		viaWAL    bool
		wantState string
	}{
		{"initialize with grace window", true, false, stateHealthy},
		{"initialize without grace window", false, false, stateNeedsReseed},
		{"WAL rollback with grace window", true, true, stateHealthy},
		{"WAL rollback without grace window", false, true, stateNeedsReseed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			shortenStorageRetries(t)
			var opts []fakeissuer.Option
			if tt.grace {
				opts = append(opts, fakeissuer.WithGraceWindow(10*time.Minute))
			}
			env, clock := getClockedBackend(t, opts...)
			storage := &flakyStorage{Storage: env.storage}
			env.storage = storage
			env.configure()
			before := env.root()
			seeding := env.issuer.Stats().RefreshRequests

			// The upstream rotates, then storage fails and the process
			// stops: the new token existed only in memory.
			storage.failRootPuts(len(storageRetryDelays), before.Generation+1)
			if _, err := requestRotateRoot(env); err == nil {
				t.Fatalf("rotate-root succeeded, want a storage error")
			}
			if got := len(rootWAL(env)); got != 1 {
				t.Fatalf("root_refresh WAL entries = %d, want 1", got)
			}
			env.storage = storage.Storage
			restartBackend(env, clock.Now, 0)

			if tt.viaWAL {
				entry := rootWAL(env)[0]
				req := &logical.Request{Operation: logical.RollbackOperation, Storage: env.storage}
				if err := env.b.walRollback(context.Background(), req, entry.Kind, entry.Data); err != nil {
					t.Fatalf("walRollback: %v", err)
				}
				runPeriodic(env)
			} else {
				if err := env.b.recoverInterruptedRotations(context.Background(), &logical.InitializationRequest{Storage: env.storage}); err != nil {
					t.Fatalf("recoverInterruptedRotations: %v", err)
				}
				waitFor(t, func() bool { return env.issuer.Stats().RefreshRequests-seeding == 2 })
				waitFor(t, func() bool { return env.root().State != stateHealthy || env.root().Generation > before.Generation })
			}

			root := env.root()
			if root.State != tt.wantState {
				t.Fatalf("state = %s, want %s (last error %q)", root.State, tt.wantState, root.LastError)
			}
			if got := env.issuer.Stats().RefreshRequests - seeding; got != 2 {
				t.Errorf("refresh requests = %d, want 2 (the lost one and one retry)", got)
			}
			if tt.wantState == stateHealthy {
				if !env.issuer.Active(root.RefreshToken) {
					t.Errorf("recovered refresh token is not active upstream")
				}
			} else if !strings.Contains(root.LastError, "response was lost") {
				t.Errorf("last error = %q, want it to name a lost response", root.LastError)
			}
			if !tt.viaWAL && len(rootWAL(env)) != 0 {
				t.Errorf("root_refresh WAL entries remain after recovery")
			}
			assertNoSecretsInReads(env)
		})
	}
}

// waitFor polls cond for up to five seconds.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestUpstreamEchoRedacted(t *testing.T) {
	env, _ := getClockedBackend(t)
	env.configure()
	root := env.root()
	body := fmt.Sprintf(`{"error":"invalid_grant","error_description":"refresh token %s of client %s:%s is not valid"}`, root.RefreshToken, testClientID, testClientSecret)
	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken, Status: 400, Body: body})

	_, err := requestRotateRoot(env)
	if err == nil {
		t.Fatalf("rotate-root succeeded, want an error")
	}
	assertNoSecrets(env, "rotate-root error", err)
	lastError := env.root().LastError
	if !strings.Contains(lastError, "[redacted]") {
		t.Errorf("last error = %q, want the echoed secrets redacted", lastError)
	}
	assertNoSecrets(env, "last error", lastError)
	assertNoSecretsInReads(env)
}
