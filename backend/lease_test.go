package backend

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/internal/fakeissuer"
)

func TestComputeLeaseTTL(t *testing.T) {
	const h = time.Hour
	tests := []struct {
		name    string
		limits  leaseLimits
		want    time.Duration
		wantErr bool
	}{
		{name: "requested wins when smallest", limits: leaseLimits{requested: 5 * time.Minute, roleTTL: 10 * time.Minute, roleMaxTTL: h, mountDefault: h, mountMax: 24 * h, usable: h}, want: 5 * time.Minute},
		{name: "role ttl when nothing requested", limits: leaseLimits{roleTTL: 10 * time.Minute, mountDefault: h, mountMax: 24 * h, usable: h}, want: 10 * time.Minute},
		{name: "mount default when role has none", limits: leaseLimits{mountDefault: 20 * time.Minute, mountMax: 24 * h, usable: h}, want: 20 * time.Minute},
		{name: "token lifetime when nothing else", limits: leaseLimits{usable: 50 * time.Minute}, want: 50 * time.Minute},
		{name: "requested capped by role max", limits: leaseLimits{requested: 2 * h, roleMaxTTL: h, usable: 3 * h}, want: h},
		{name: "requested capped by mount max", limits: leaseLimits{requested: 2 * h, mountMax: 30 * time.Minute, usable: 3 * h}, want: 30 * time.Minute},
		{name: "role ttl capped by token lifetime", limits: leaseLimits{roleTTL: 2 * h, roleMaxTTL: 3 * h, usable: 55 * time.Minute}, want: 55 * time.Minute},
		{name: "mount default capped by token lifetime", limits: leaseLimits{mountDefault: 24 * h, usable: 10 * time.Minute}, want: 10 * time.Minute},
		{name: "every limit above token lifetime", limits: leaseLimits{requested: 4 * h, roleTTL: 3 * h, roleMaxTTL: 5 * h, mountDefault: 2 * h, mountMax: 6 * h, usable: 90 * time.Second}, want: 90 * time.Second},
		{name: "fractional seconds truncated", limits: leaseLimits{usable: 90*time.Second + 700*time.Millisecond}, want: 90 * time.Second},
		{name: "token already too short", limits: leaseLimits{roleTTL: time.Minute, usable: 500 * time.Millisecond}, wantErr: true},
		{name: "token expired", limits: leaseLimits{roleTTL: time.Minute, usable: -time.Minute}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := computeLeaseTTL(tt.limits)
			if tt.wantErr {
				if !errors.Is(err, errTokenTooShort) {
					t.Fatalf("computeLeaseTTL() error = %v, want errTokenTooShort", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("computeLeaseTTL() error = %v", err)
			}
			if got != tt.want {
				t.Errorf("computeLeaseTTL() = %v, want %v", got, tt.want)
			}
		})
	}
}

// mintFor writes a role and mints one token for it.
func (e *testEnv) mintFor(role map[string]interface{}, request map[string]interface{}) *logical.Response {
	e.t.Helper()
	e.mustRequest(logical.UpdateOperation, "roles/deploy", role)
	resp := e.mustRequest(logical.UpdateOperation, "creds/deploy", request)
	e.addSecret(resp.Data["access_token"].(string))
	return resp
}

func TestCredsLeaseNeverOutlivesToken(t *testing.T) {
	tests := []struct {
		name          string
		tokenLifetime time.Duration
		format        fakeissuer.ExpiresInFormat
		role          map[string]interface{}
		request       map[string]interface{}
		wantTTL       time.Duration
		wantRenewable bool
	}{
		{name: "role ttl below token lifetime", tokenLifetime: time.Hour, role: map[string]interface{}{"ttl": 600}, wantTTL: 10 * time.Minute, wantRenewable: true},
		{name: "role ttl above token lifetime", tokenLifetime: 5 * time.Minute, role: map[string]interface{}{"ttl": 3600}, wantTTL: 4*time.Minute + 30*time.Second},
		{name: "requested above role max", tokenLifetime: time.Hour, role: map[string]interface{}{"ttl": 60, "max_ttl": 120}, request: map[string]interface{}{"ttl": 600}, wantTTL: 2 * time.Minute},
		{name: "mount default above token lifetime", tokenLifetime: 20 * time.Minute, role: map[string]interface{}{}, wantTTL: 19*time.Minute + 30*time.Second},
		{name: "expires_in as string", tokenLifetime: 20 * time.Minute, format: fakeissuer.ExpiresInString, role: map[string]interface{}{}, wantTTL: 19*time.Minute + 30*time.Second},
		{name: "short token keeps a tenth as margin", tokenLifetime: 2 * time.Minute, role: map[string]interface{}{"ttl": 600}, wantTTL: 108 * time.Second},
		{name: "expires_in absent uses default_expires_in", tokenLifetime: time.Hour, format: fakeissuer.ExpiresInAbsent, role: map[string]interface{}{}, wantTTL: 9*time.Minute + 30*time.Second},
		{name: "expires_in null uses default_expires_in", tokenLifetime: time.Hour, format: fakeissuer.ExpiresInNull, role: map[string]interface{}{}, wantTTL: 9*time.Minute + 30*time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := getTestBackend(t, fakeissuer.WithAccessTokenLifetime(tt.tokenLifetime), fakeissuer.WithExpiresInFormat(tt.format))
			env.configure()
			role := map[string]interface{}{"scopes": "deploy:read", "audience": testAudience}
			for k, v := range tt.role {
				role[k] = v
			}

			before := time.Now().UTC()
			resp := env.mintFor(role, tt.request)

			// A second of slack: the issuer's clock starts the lifetime a
			// moment before the engine reads the response.
			if diff := resp.Secret.TTL - tt.wantTTL; diff > 0 || diff < -time.Second {
				t.Errorf("lease TTL = %v, want %v", resp.Secret.TTL, tt.wantTTL)
			}
			if resp.Secret.Renewable != tt.wantRenewable {
				t.Errorf("renewable = %v, want %v", resp.Secret.Renewable, tt.wantRenewable)
			}
			expiresAt, err := time.Parse(time.RFC3339, resp.Data["expires_at"].(string))
			if err != nil {
				t.Fatalf("expires_at %q is not RFC 3339: %v", resp.Data["expires_at"], err)
			}
			if diff := expiresAt.Sub(before.Add(resp.Secret.TTL)); diff < -time.Second || diff > time.Second {
				t.Errorf("expires_at = %v, want within 1s of lease end %v", expiresAt, before.Add(resp.Secret.TTL))
			}
			info := env.issuer.Introspect(resp.Data["access_token"].(string))
			if info.ExpiresAt > 0 && expiresAt.After(time.Unix(info.ExpiresAt, 0)) {
				t.Errorf("lease ends %v, after the token expires at %v", expiresAt, time.Unix(info.ExpiresAt, 0))
			}
		})
	}
}

func TestCredsResponseFields(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	resp := env.mintFor(map[string]interface{}{"scopes": "deploy:read", "audience": testAudience}, nil)

	token := resp.Data["access_token"].(string)
	want := map[string]interface{}{
		"token_type": "bearer",
		"scope":      "deploy:read",
		"role":       "deploy",
		"token_id":   tokenID(token),
	}
	for field, value := range want {
		if got := resp.Data[field]; !strings.EqualFold(got.(string), value.(string)) {
			t.Errorf("%s = %v, want %v", field, got, value)
		}
	}
	if got := resp.Data["audience"].([]string); len(got) != 1 || got[0] != testAudience {
		t.Errorf("audience = %v, want [%s]", got, testAudience)
	}
	if resp.Secret == nil || resp.Secret.InternalData["secret_type"] != secretTypeCIToken {
		t.Fatalf("secret type = %v, want %s", resp.Secret, secretTypeCIToken)
	}
	if strings.Contains(resp.Data["token_id"].(string), token[:8]) {
		t.Errorf("token_id %q contains part of the token", resp.Data["token_id"])
	}
	info := env.issuer.Introspect(token)
	if !info.Active || len(info.Audience) != 1 || info.Audience[0] != testAudience {
		t.Errorf("introspection = %+v, want active with audience %s", info, testAudience)
	}
}

// revoke revokes a lease as Vault's expiration manager would.
func (e *testEnv) revoke(resp *logical.Response) error {
	e.t.Helper()
	req := &logical.Request{Operation: logical.RevokeOperation, Secret: resp.Secret, Data: resp.Data, Storage: e.storage}
	_, err := e.b.HandleRequest(e.t.(*testing.T).Context(), req)
	return err
}

// renew renews a lease by increment, as Vault would.
func (e *testEnv) renew(resp *logical.Response, increment time.Duration) (*logical.Response, error) {
	e.t.Helper()
	secret := *resp.Secret
	secret.Increment = increment
	req := &logical.Request{Operation: logical.RenewOperation, Secret: &secret, Data: resp.Data, Storage: e.storage}
	return e.b.HandleRequest(e.t.(*testing.T).Context(), req)
}

func TestRevocation(t *testing.T) {
	role := map[string]interface{}{"scopes": "deploy:read", "audience": testAudience}
	tests := []struct {
		name    string
		options []fakeissuer.Option
		before  func(env *testEnv, token string)
		wantErr bool
		// wantStillActive is set where the engine rightly sends nothing
		// upstream: the token ends on its own.
		wantStillActive bool
	}{
		{name: "active token"},
		{name: "already revoked upstream", before: func(env *testEnv, token string) { env.issuer.Revoke(token) }},
		{name: "role deleted", before: func(env *testEnv, _ string) { env.mustRequest(logical.DeleteOperation, "roles/deploy", nil) }},
		{name: "config changed", before: func(env *testEnv, _ string) {
			env.mustRequest(logical.UpdateOperation, "config", map[string]interface{}{"request_timeout": 5, "client_auth_method": "client_secret_post"})
		}},
		{name: "config deleted by force", before: func(env *testEnv, _ string) {
			env.mustRequest(logical.DeleteOperation, "config", map[string]interface{}{"force": true})
		}},
		{name: "token expired", before: func(env *testEnv, _ string) {
			env.b.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
		}, wantStillActive: true},
		{name: "no revocation endpoint", options: []fakeissuer.Option{fakeissuer.WithoutRevocationEndpoint()}, wantStillActive: true},
		{name: "upstream unavailable", before: func(env *testEnv, _ string) {
			env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRevocation, Status: 503})
		}, wantErr: true},
		{name: "upstream connection reset", before: func(env *testEnv, _ string) {
			env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection, Target: fakeissuer.TargetRevocation})
		}, wantErr: true},
		{name: "client rejected", before: func(env *testEnv, _ string) {
			env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultOAuthError, Target: fakeissuer.TargetRevocation, Status: 401, ErrorCode: "invalid_client"})
		}, wantStillActive: true},
		{name: "client secret rotated", before: func(env *testEnv, _ string) {
			env.issuer.AddClient(testClientID, "rotated-secret-for-tests", []string{"offline_access", "openid", "deploy:read", "deploy:write"}, []string{testAudience})
			env.addSecret("rotated-secret-for-tests")
			env.mustRequest(logical.UpdateOperation, "config", map[string]interface{}{"client_secret": "rotated-secret-for-tests"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := getTestBackend(t, tt.options...)
			env.configure()
			resp := env.mintFor(role, nil)
			token := resp.Data["access_token"].(string)
			if tt.before != nil {
				tt.before(env, token)
			}

			err := env.revoke(resp)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("revoke succeeded, want an error")
				}
				if errors.Is(err, logical.ErrUnrecoverable) {
					t.Errorf("a transient failure is marked unrecoverable: %v", err)
				}
				if strings.Contains(err.Error(), token) {
					t.Errorf("revocation error contains the token")
				}
				return
			}
			if err != nil {
				t.Fatalf("revoke: %v", err)
			}
			if got := env.issuer.Active(token); got != tt.wantStillActive {
				t.Errorf("token active upstream after revocation = %v, want %v", got, tt.wantStillActive)
			}
		})
	}
}

func TestRevocationRetrySucceedsAfterOutage(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	resp := env.mintFor(map[string]interface{}{"scopes": "deploy:read"}, nil)
	token := resp.Data["access_token"].(string)

	env.issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRevocation, Status: 503, RetryAfter: "1"})
	if err := env.revoke(resp); err == nil {
		t.Fatalf("first revoke succeeded during the outage, want an error")
	}
	if !env.issuer.Active(token) {
		t.Fatalf("token inactive although the revocation failed")
	}
	if err := env.revoke(resp); err != nil {
		t.Fatalf("second revoke: %v", err)
	}
	if env.issuer.Active(token) {
		t.Errorf("token still active after the retried revocation")
	}
}

func TestRenewal(t *testing.T) {
	env := getTestBackend(t, fakeissuer.WithAccessTokenLifetime(time.Hour))
	env.configure()
	resp := env.mintFor(map[string]interface{}{"ttl": 300, "max_ttl": 3600}, nil)

	renewed, err := env.renew(resp, 20*time.Minute)
	if err != nil || renewed.IsError() {
		t.Fatalf("renew within the token's lifetime: err=%v resp=%v", err, respError(renewed))
	}
	if renewed.Secret.TTL != 20*time.Minute {
		t.Errorf("renewed TTL = %v, want 20m", renewed.Secret.TTL)
	}

	capped, err := env.renew(resp, 5*time.Hour)
	if err != nil || capped.IsError() {
		t.Fatalf("renew past the token's lifetime: err=%v resp=%v", err, respError(capped))
	}
	if capped.Secret.TTL > 59*time.Minute+30*time.Second || capped.Secret.TTL < 59*time.Minute {
		t.Errorf("capped TTL = %v, want about 59m30s (token lifetime less 30s skew)", capped.Secret.TTL)
	}
	if len(capped.Warnings) == 0 {
		t.Errorf("capped renewal has no warning")
	}

	env.b.now = func() time.Time { return time.Now().Add(time.Hour) }
	expired, err := env.renew(resp, time.Minute)
	if err == nil && !expired.IsError() {
		t.Fatalf("renew after the token expired succeeded, want an error")
	}
	if !strings.Contains(respError(expired).Error(), "fetch a new token") {
		t.Errorf("renew error = %v, want a hint to fetch a new token", respError(expired))
	}
}

func TestConfigDeleteWithOutstandingLeases(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	resp := env.mintFor(map[string]interface{}{"scopes": "deploy:read"}, nil)

	refused, err := env.request(logical.DeleteOperation, "config", nil)
	if !errors.Is(err, logical.ErrInvalidRequest) || !strings.Contains(respError(refused).Error(), "1 CI token leases are outstanding") {
		t.Fatalf("delete with an outstanding lease: err=%v resp=%v, want 400 naming the lease count", err, respError(refused))
	}
	if cfg, _ := env.b.getConfig(t.Context(), env.storage); cfg == nil {
		t.Fatalf("config deleted although the delete was refused")
	}

	if err := env.revoke(resp); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	refused, err = env.request(logical.DeleteOperation, "config", nil)
	if !errors.Is(err, logical.ErrInvalidRequest) || !strings.Contains(respError(refused).Error(), "root grant") {
		t.Fatalf("delete with a root grant and no force: err=%v resp=%v, want 400 naming the root grant", err, respError(refused))
	}
	env.mustRequest(logical.DeleteOperation, "config", map[string]interface{}{"force": true})
	if got := env.status()["state"]; got != stateUnconfigured {
		t.Errorf("state after delete = %v, want %s", got, stateUnconfigured)
	}
}

func TestMintRollbackRevokesToken(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	resp := env.mintFor(map[string]interface{}{"scopes": "deploy:read"}, nil)
	token := resp.Data["access_token"].(string)

	// A WAL entry for the mint, as a crash before the response would leave.
	if err := env.b.rollbackMint(t.Context(), env.storage, resp.Secret.InternalData); err != nil {
		t.Fatalf("rollbackMint: %v", err)
	}
	if env.issuer.Active(token) {
		t.Errorf("token still active after the mint was rolled back")
	}
	outstanding, err := countOutstandingLeases(t.Context(), env.storage, time.Now())
	if err != nil || outstanding != 0 {
		t.Errorf("outstanding leases after rollback = %d (err %v), want 0", outstanding, err)
	}
}

// walDeleteGate holds every delete of a WAL entry until release is closed.
type walDeleteGate struct {
	logical.Storage
	release chan struct{}
}

func (s *walDeleteGate) Delete(ctx context.Context, key string) error {
	if strings.HasPrefix(key, framework.WALPrefix) {
		select {
		case <-s.release:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.Storage.Delete(ctx, key)
}

func TestMintReturnsBeforeWALDelete(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	gate := &walDeleteGate{Storage: env.storage, release: make(chan struct{})}
	env.storage = gate

	// mintFor returns although no WAL delete can finish yet.
	resp := env.mintFor(map[string]interface{}{"scopes": "deploy:read"}, nil)
	if got := len(walEntries(env, walKindMint)); got != 1 {
		t.Fatalf("mint WAL entries while the delete waits = %d, want 1", got)
	}
	close(gate.release)
	env.b.background.wait()
	if got := len(walEntries(env, walKindMint)); got != 0 {
		t.Errorf("mint WAL entries after the delete = %d, want 0", got)
	}
	if token := resp.Data["access_token"].(string); !env.issuer.Active(token) {
		t.Errorf("the minted token is not active at the issuer")
	}
}

func TestConfigDeleteRevokesRootGrant(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	live := env.root().RefreshToken
	if !env.issuer.Active(live) {
		t.Fatalf("root refresh token inactive before the delete")
	}

	env.mustRequest(logical.DeleteOperation, "config", map[string]interface{}{"force": true})
	if env.issuer.Active(live) {
		t.Errorf("root refresh token still active upstream after config was deleted")
	}
}

func TestConfigRewriteSurvivesDiscoveryOutage(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	cfg, err := env.b.getConfig(t.Context(), env.storage)
	if err != nil {
		t.Fatalf("reading config: %v", err)
	}

	// The stored issuer stops responding, while the metadata found earlier
	// still names the working endpoints.
	cfg.Issuer = "http://127.0.0.1:1"
	if err := env.b.putConfig(t.Context(), env.storage, cfg); err != nil {
		t.Fatalf("storing config: %v", err)
	}
	resp := env.mustRequest(logical.UpdateOperation, "config", map[string]interface{}{"request_timeout": 5})
	if resp == nil || len(resp.Warnings) == 0 || !strings.Contains(resp.Warnings[0], "Discovery failed") {
		t.Fatalf("rewrite with an unreachable issuer: resp = %v, want a discovery warning", resp)
	}
	env.mustRequest(logical.UpdateOperation, "rotate-root", nil)

	_, err = env.request(logical.UpdateOperation, "config", map[string]interface{}{"issuer": "http://127.0.0.1:2"})
	if !errors.Is(err, logical.ErrInvalidRequest) {
		t.Errorf("config write with a new, unreachable issuer: err = %v, want a 400", err)
	}
}

func TestConfigWarnsWhenClientChangesWithoutSeed(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	env.issuer.AddClient("other-client", "other-secret", []string{"offline_access"}, nil)
	env.addSecret("other-secret")

	resp := env.mustRequest(logical.UpdateOperation, "config", map[string]interface{}{"client_id": "other-client", "client_secret": "other-secret"})
	if resp == nil || len(resp.Warnings) != 1 || !strings.Contains(resp.Warnings[0], "seed a new refresh_token") {
		t.Errorf("warnings = %v, want one asking for a new seed", resp)
	}
}
