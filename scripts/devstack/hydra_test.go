package devstack

import (
	"context"
	"slices"
	"syscall"
	"testing"
	"time"
)

// startTestHydra starts Hydra for one test, building it first when the
// cache has no binary, and stops it when the test ends.
func startTestHydra(t *testing.T, opts HydraOptions) *Hydra {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Hydra server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if opts.Binary == "" {
		binary, err := ensureTool(ctx, hydraTool, t.Logf)
		if err != nil {
			t.Fatalf("ensure hydra: %v", err)
		}
		opts.Binary = binary
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	hydra, err := StartHydra(ctx, opts)
	if err != nil {
		t.Fatalf("start hydra: %v", err)
	}
	t.Cleanup(func() {
		if err := hydra.Close(); err != nil {
			t.Errorf("close hydra: %v", err)
		}
	})
	return hydra
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func TestHydraSeedAndIntrospect(t *testing.T) {
	hydra := startTestHydra(t, HydraOptions{AccessTokenTTL: 15 * time.Minute})
	ctx := testContext(t)

	client, err := hydra.CreateClient(ctx, ClientOptions{
		Scopes:   []string{"offline_access", "openid", "deploy:read", "deploy:write"},
		Audience: []string{"https://deploy.example.test"},
	})
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	if client.ID == "" || client.Secret == "" {
		t.Fatalf("created client has ID %q and a secret of %d bytes, want both set", client.ID, len(client.Secret))
	}

	seed, err := hydra.SeedRefreshToken(ctx, client, SeedOptions{})
	if err != nil {
		t.Fatalf("seed refresh token: %v", err)
	}

	tests := []struct {
		name         string
		token        string
		wantTokenUse string
	}{
		{name: "access token", token: seed.AccessToken, wantTokenUse: "access_token"},
		{name: "refresh token", token: seed.RefreshToken, wantTokenUse: "refresh_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := hydra.Introspect(ctx, tt.token)
			if err != nil {
				t.Fatalf("introspect: %v", err)
			}
			if !got.Active {
				t.Fatalf("active = false, want true")
			}
			if got.TokenUse != tt.wantTokenUse {
				t.Errorf("token_use = %q, want %q", got.TokenUse, tt.wantTokenUse)
			}
			if got.ClientID != client.ID {
				t.Errorf("client_id = %q, want %q", got.ClientID, client.ID)
			}
			for _, scope := range []string{"offline_access", "deploy:read", "deploy:write"} {
				if !slices.Contains(got.Scopes(), scope) {
					t.Errorf("scope = %q, want it to contain %q", got.Scope, scope)
				}
			}
			if tt.wantTokenUse == "access_token" {
				if !slices.Equal(got.Audience, client.Audience) {
					t.Errorf("aud = %q, want %q", got.Audience, client.Audience)
				}
				remaining := time.Until(got.ExpiresAt)
				// exp has whole seconds, so it may lie up to 1s past 15m.
				if remaining <= 10*time.Minute || remaining > 15*time.Minute+time.Second {
					t.Errorf("exp is %s away, want within the configured 15m", remaining)
				}
			}
		})
	}
}

func TestHydraRefreshReuse(t *testing.T) {
	tests := []struct {
		name        string
		gracePeriod time.Duration
		wantReuseOK bool
	}{
		// Without a grace period Hydra rejects the spent token, and the
		// reuse revokes the whole family, including the token just issued.
		{name: "no grace period", gracePeriod: 0, wantReuseOK: false},
		{name: "grace period", gracePeriod: time.Minute, wantReuseOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hydra := startTestHydra(t, HydraOptions{RotationGracePeriod: tt.gracePeriod})
			ctx := testContext(t)
			client, seed := seedTestGrant(t, ctx, hydra)

			rotated, err := hydra.Refresh(ctx, client, seed.RefreshToken)
			if err != nil {
				t.Fatalf("refresh: %v", err)
			}
			if rotated.RefreshToken == "" || rotated.RefreshToken == seed.RefreshToken {
				t.Fatalf("refresh returned no new refresh token")
			}

			_, err = hydra.Refresh(ctx, client, seed.RefreshToken)
			if tt.wantReuseOK {
				if err != nil {
					t.Fatalf("reuse within the grace period: %v", err)
				}
				return
			}
			if !IsOAuthError(err, "invalid_grant") {
				t.Fatalf("reuse: got error %v, want invalid_grant", err)
			}
			got, err := hydra.Introspect(ctx, rotated.RefreshToken)
			if err != nil {
				t.Fatalf("introspect: %v", err)
			}
			if got.Active {
				t.Errorf("newest refresh token after reuse: active = true, want false")
			}
		})
	}
}

func TestHydraClientCredentialsRevoke(t *testing.T) {
	hydra := startTestHydra(t, HydraOptions{})
	ctx := testContext(t)
	client, err := hydra.CreateClient(ctx, ClientOptions{
		Scopes:                  []string{"deploy:read"},
		Audience:                []string{"https://deploy.example.test"},
		TokenEndpointAuthMethod: AuthClientSecretPost,
	})
	if err != nil {
		t.Fatalf("create client: %v", err)
	}

	token, err := hydra.ClientCredentials(ctx, client, []string{"deploy:read"}, client.Audience)
	if err != nil {
		t.Fatalf("client credentials: %v", err)
	}
	before, err := hydra.Introspect(ctx, token.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !before.Active || before.Scope != "deploy:read" {
		t.Fatalf("before revocation: active = %t, scope = %q; want true, %q", before.Active, before.Scope, "deploy:read")
	}

	if err := hydra.RevokeToken(ctx, client, token.AccessToken); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	after, err := hydra.Introspect(ctx, token.AccessToken)
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if after.Active {
		t.Errorf("after revocation: active = true, want false")
	}
}

func TestHydraRestartStorage(t *testing.T) {
	tests := []struct {
		name           string
		sqlite         bool
		crash          bool
		external       bool // killed from outside, not through Kill
		wantClientKept bool
	}{
		{name: "memory restart", sqlite: false, wantClientKept: false},
		{name: "sqlite restart", sqlite: true, wantClientKept: true},
		{name: "sqlite kill", sqlite: true, crash: true, wantClientKept: true},
		{name: "sqlite exits alone", sqlite: true, external: true, wantClientKept: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hydra := startTestHydra(t, HydraOptions{SQLite: tt.sqlite})
			ctx := testContext(t)
			client, seed := seedTestGrant(t, ctx, hydra)

			switch {
			case tt.crash:
				if err := hydra.Kill(); err != nil {
					t.Fatalf("kill: %v", err)
				}
				if err := hydra.Start(ctx); err != nil {
					t.Fatalf("start after kill: %v", err)
				}
			case tt.external:
				if err := syscall.Kill(hydra.PID(), syscall.SIGKILL); err != nil {
					t.Fatalf("kill pid %d: %v", hydra.PID(), err)
				}
				deadline := time.Now().Add(10 * time.Second)
				for hydra.Running() && time.Now().Before(deadline) {
					time.Sleep(50 * time.Millisecond)
				}
				if err := hydra.Start(ctx); err != nil {
					t.Fatalf("start after the process died: %v", err)
				}
			default:
				if err := hydra.Restart(ctx); err != nil {
					t.Fatalf("restart: %v", err)
				}
			}

			_, err := hydra.Refresh(ctx, client, seed.RefreshToken)
			if gotKept := err == nil; gotKept != tt.wantClientKept {
				t.Errorf("refresh after restart: error %v, want success = %t", err, tt.wantClientKept)
			}
		})
	}
}

// seedTestGrant creates a client with every grant type and seeds a refresh
// token for it.
func seedTestGrant(t *testing.T, ctx context.Context, hydra *Hydra) (OAuth2Client, Token) {
	t.Helper()
	client, err := hydra.CreateClient(ctx, ClientOptions{
		Scopes:   []string{"offline_access", "deploy:read"},
		Audience: []string{"https://deploy.example.test"},
	})
	if err != nil {
		t.Fatalf("create client: %v", err)
	}
	seed, err := hydra.SeedRefreshToken(ctx, client, SeedOptions{})
	if err != nil {
		t.Fatalf("seed refresh token: %v", err)
	}
	return client, seed
}

// TestStartHydraAgainOnSameDir stops a SQLite Hydra and starts a new one on
// the same directory. The new server must keep the system secret, or it
// cannot decrypt its signing keys and every authorization request fails.
func TestStartHydraAgainOnSameDir(t *testing.T) {
	opts := HydraOptions{SQLite: true, Dir: t.TempDir()}
	first := startTestHydra(t, opts)
	ctx := testContext(t)
	client, _ := seedTestGrant(t, ctx, first)
	if err := first.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}

	second := startTestHydra(t, opts)
	if _, err := second.SeedRefreshToken(ctx, client, SeedOptions{}); err != nil {
		t.Errorf("seed refresh token after the second start: %v", err)
	}
}
