package e2e

import (
	"context"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// deployPolicy lets a token mint CI tokens of the deploy role and nothing
// else.
const deployPolicy = `path "ci-tokens/creds/deploy" { capabilities = ["read", "update"] }`

// Bounds on how long the tests wait for Vault's asynchronous revocation.
const (
	cascadeTimeout = 30 * time.Second
	retryTimeout   = 90 * time.Second
)

func TestLeaseRevocation(t *testing.T) {
	st := newTestStack(t, devstack.Options{})
	ctx := testContext(t, 5*time.Minute)

	tests := []struct {
		name string

		// change runs between mint and revocation; it may return a
		// function that restores what it changed.
		change func(t *testing.T, tok ciToken) (restore func())
	}{
		{
			name: "token revoked upstream by hand",
			change: func(t *testing.T, tok ciToken) func() {
				if err := st.Hydra.RevokeToken(ctx, st.EngineClient, tok.AccessToken); err != nil {
					t.Fatalf("revoke at hydra: %v", err)
				}
				if st.introspect(t, ctx, tok.AccessToken).Active {
					t.Fatalf("hydra introspection after revoking by hand: active = true, want false")
				}
				return nil
			},
		},
		{
			name: "role deleted",
			change: func(t *testing.T, _ ciToken) func() {
				if _, err := st.Vault.Client.Logical().DeleteWithContext(ctx, mount+"/roles/"+devstack.RoleName); err != nil {
					t.Fatalf("delete role: %v", err)
				}
				return func() {
					if err := st.WriteRole(ctx); err != nil {
						t.Fatalf("write role again: %v", err)
					}
				}
			},
		},
		{
			name: "config rewritten with other timeouts",
			change: func(t *testing.T, _ ciToken) func() {
				if _, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/config", map[string]any{
					"request_timeout":    45,
					"default_expires_in": 300,
				}); err != nil {
					t.Fatalf("write config: %v", err)
				}
				return nil
			},
		},
		{
			name: "config switched to another client",
			change: func(t *testing.T, _ ciToken) func() {
				st.switchEngineClient(t, ctx)
				return nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := st.mustMint(t, ctx)
			if restore := tt.change(t, tok); restore != nil {
				defer restore()
			}
			output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID)
			if err != nil {
				t.Fatalf("%v\n%s", err, output)
			}
			if !leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
				t.Errorf("lease %s still exists after vault lease revoke", tok.LeaseID)
			}
			if st.introspect(t, ctx, tok.AccessToken).Active {
				t.Errorf("hydra introspection after vault lease revoke: active = true, want false")
			}
		})
	}

	t.Run("token revoke cascades to three CI tokens", func(t *testing.T) {
		assertTokenRevokeCascades(t, ctx, st)
	})
	t.Run("config delete with outstanding leases", func(t *testing.T) {
		assertConfigDeleteNeedsForce(t, ctx, st)
	})
	t.Run("secrets disable with outstanding leases", func(t *testing.T) {
		assertSecretsDisable(t, ctx, st)
	})
}

// switchEngineClient creates a second Hydra client, seeds a grant for it and
// writes both to config, so that leases minted before carry credentials the
// config no longer has. New mints then come from the new client.
func (st *testStack) switchEngineClient(t *testing.T, ctx context.Context) {
	t.Helper()
	client, err := st.Hydra.CreateClient(ctx, devstack.ClientOptions{
		Name:     "ci-tokens engine, second client",
		Scopes:   devstack.EngineScopes,
		Audience: []string{devstack.Audience},
	})
	if err != nil {
		t.Fatalf("create second hydra client: %v", err)
	}
	st.remember("second client secret", client.Secret)
	seed, err := st.Hydra.SeedRefreshToken(ctx, client, devstack.SeedOptions{
		Scopes:   devstack.EngineScopes,
		Audience: []string{devstack.Audience},
	})
	if err != nil {
		t.Fatalf("seed a grant for the second client: %v", err)
	}
	st.rememberToken("second client seed", seed)
	if _, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/config", map[string]any{
		"client_id":     client.ID,
		"client_secret": client.Secret,
		"refresh_token": seed.RefreshToken,
	}); err != nil {
		t.Fatalf("write config with the second client: %v", err)
	}

	tok := st.mustMint(t, ctx)
	if got := st.introspect(t, ctx, tok.AccessToken); got.ClientID != client.ID {
		t.Errorf("client_id of a token minted after the switch = %q, want %q", got.ClientID, client.ID)
	}
}

// childClient creates a token with the deploy policy only and returns a
// client that uses it, and the token.
func (st *testStack) childClient(t *testing.T, ctx context.Context) (*api.Client, string) {
	t.Helper()
	if err := st.Vault.Client.Sys().PutPolicyWithContext(ctx, "ci-deploy", deployPolicy); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	secret, err := st.Vault.Client.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{
		Policies: []string{"ci-deploy"},
		TTL:      "15m",
	})
	if err != nil {
		t.Fatalf("create child token: %v", err)
	}
	token := secret.Auth.ClientToken
	st.remember("child vault token", token)
	client, err := st.Vault.Client.Clone()
	if err != nil {
		t.Fatalf("clone vault client: %v", err)
	}
	client.SetToken(token)
	return client, token
}

// assertTokenRevokeCascades mints three CI tokens with a child token,
// revokes the child token with the CLI and waits for all three to turn
// inactive at Hydra.
func assertTokenRevokeCascades(t *testing.T, ctx context.Context, st *testStack) {
	client, token := st.childClient(t, ctx)
	var minted []ciToken
	for range 3 {
		tok, err := st.mint(ctx, client, devstack.RoleName, false, nil)
		if err != nil {
			t.Fatalf("mint with the child token: %v", err)
		}
		minted = append(minted, tok)
	}

	output, err := st.vaultCLI(ctx, "token", "revoke", token)
	if err != nil {
		t.Fatalf("vault token revoke: %v\n%s", err, output)
	}
	for i, tok := range minted {
		if !st.waitInactive(t, ctx, tok.AccessToken, cascadeTimeout) {
			t.Errorf("CI token %d of 3 (%s) still active at hydra %s after vault token revoke", i+1, tok.TokenID, cascadeTimeout)
		}
		if !leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
			t.Errorf("lease %s still exists after vault token revoke", tok.LeaseID)
		}
	}
}

// assertConfigDeleteNeedsForce checks that deleting config with a lease
// outstanding is rejected, that force deletes it and revokes the root grant
// at Hydra, and that the lease still revokes afterwards with what it stored.
// It reseeds the mount at the end.
func assertConfigDeleteNeedsForce(t *testing.T, ctx context.Context, st *testStack) {
	st.writeGrantRole(t, ctx)
	grantToken, err := st.mint(ctx, st.Vault.Client, grantRoleName, false, nil)
	if err != nil {
		t.Fatalf("mint through the root grant: %v", err)
	}
	tok := st.mustMint(t, ctx)
	path := mount + "/config"

	_, err = st.Vault.Client.Logical().DeleteWithContext(ctx, path)
	if err != nil {
		st.record(err.Error())
	}
	assertBadRequest(t, err, "force")
	if config, err := st.Vault.Client.Logical().ReadWithContext(ctx, path); err != nil || config == nil {
		t.Fatalf("config after the rejected delete: %v, %v; want it kept", config, err)
	}

	secret, err := st.Vault.Client.Logical().DeleteWithDataWithContext(ctx, path, map[string][]string{"force": {"true"}})
	if err != nil {
		t.Fatalf("delete config with force: %v", err)
	}
	if secret != nil {
		st.record(strings.Join(secret.Warnings, "\n"))
	}
	if config, err := st.Vault.Client.Logical().ReadWithContext(ctx, path); err != nil || config != nil {
		t.Errorf("config read after the forced delete = %v, %v; want nothing", config, err)
	}
	if st.introspect(t, ctx, grantToken.AccessToken).Active {
		t.Errorf("hydra introspection of the root grant's access token after the forced delete: active = true, want false (grant revoked)")
	}

	if output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID); err != nil {
		t.Fatalf("revoke after the forced delete: %v\n%s", err, output)
	}
	if st.introspect(t, ctx, tok.AccessToken).Active {
		t.Errorf("hydra introspection after revoking with the config deleted: active = true, want false")
	}
	st.configure(t, ctx)
}

// assertSecretsDisable disables the mount while it holds leases, one of
// whose tokens is already revoked upstream, and checks that the command
// succeeds and every token ends inactive.
func assertSecretsDisable(t *testing.T, ctx context.Context, st *testStack) {
	var minted []ciToken
	for range 3 {
		minted = append(minted, st.mustMint(t, ctx))
	}
	if err := st.Hydra.RevokeToken(ctx, st.EngineClient, minted[0].AccessToken); err != nil {
		t.Fatalf("revoke at hydra: %v", err)
	}

	start := time.Now()
	output, err := st.vaultCLI(ctx, "secrets", "disable", mount)
	if err != nil {
		t.Fatalf("%v\n%s", err, output)
	}
	t.Logf("vault secrets disable took %s", time.Since(start).Round(time.Millisecond))
	for i, tok := range minted {
		if st.introspect(t, ctx, tok.AccessToken).Active {
			t.Errorf("CI token %d of %d still active at hydra after secrets disable", i+1, len(minted))
		}
	}
	mounts, err := st.Vault.Client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		t.Fatalf("list mounts: %v", err)
	}
	if _, ok := mounts[mount+"/"]; ok {
		t.Errorf("mount %s/ still exists after secrets disable", mount)
	}
}

func TestLeaseRevocationUpstreamDown(t *testing.T) {
	// SQLite keeps Hydra's tokens across its restart.
	st := newTestStack(t, devstack.Options{HydraSQLite: true})
	ctx := testContext(t, 5*time.Minute)

	t.Run("hydra stopped", func(t *testing.T) {
		first, queued := st.mustMint(t, ctx), st.mustMint(t, ctx)
		if err := st.Hydra.Stop(); err != nil {
			t.Fatalf("stop hydra: %v", err)
		}
		startHydra := func() {
			if !st.Hydra.Running() {
				if err := st.Hydra.Start(ctx); err != nil {
					t.Fatalf("start hydra: %v", err)
				}
			}
		}
		defer startHydra()

		assertRevokeFailsFast(t, ctx, st, first, 5*time.Second, "connection refused")
		assertNotBlocked(t, ctx, st)
		if output, err := st.vaultCLI(ctx, "lease", "revoke", queued.LeaseID); err != nil {
			t.Fatalf("queue revocation: %v\n%s", err, output)
		}

		startHydra()
		if output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", first.LeaseID); err != nil {
			t.Fatalf("revoke after hydra is back: %v\n%s", err, output)
		}
		if st.introspect(t, ctx, first.AccessToken).Active {
			t.Errorf("hydra introspection after the repeated revoke: active = true, want false")
		}
		assertQueuedRevocationCompletes(t, ctx, st, queued)
	})

	t.Run("hydra hung", func(t *testing.T) {
		tok := st.mustMint(t, ctx)
		pid := st.Hydra.PID()
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			t.Fatalf("pause hydra: %v", err)
		}
		resumed := false
		resume := func() {
			if !resumed {
				resumed = true
				if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
					t.Errorf("resume hydra: %v", err)
				}
			}
		}
		defer resume()

		done := make(chan struct{})
		go func() {
			defer close(done)
			// The engine bounds one revocation request to 10 seconds.
			assertRevokeFailsFast(t, ctx, st, tok, 15*time.Second, "timed out")
		}()
		time.Sleep(time.Second)
		assertNotBlocked(t, ctx, st)
		<-done
		resume()

		if output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID); err != nil {
			t.Fatalf("revoke after hydra resumed: %v\n%s", err, output)
		}
		if st.introspect(t, ctx, tok.AccessToken).Active {
			t.Errorf("hydra introspection after the repeated revoke: active = true, want false")
		}
	})
}

// assertRevokeFailsFast runs a synchronous revoke that must fail within
// bound with an error naming the transient cause, and leave the lease for
// a later attempt.
func assertRevokeFailsFast(t *testing.T, ctx context.Context, st *testStack, tok ciToken, bound time.Duration, wantCause string) {
	start := time.Now()
	output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID)
	elapsed := time.Since(start)
	if err == nil {
		t.Errorf("vault lease revoke -sync with hydra unreachable succeeded, want an error")
	}
	if elapsed > bound {
		t.Errorf("vault lease revoke -sync took %s, want at most %s", elapsed.Round(time.Millisecond), bound)
	}
	if !strings.Contains(output, wantCause) {
		t.Errorf("revoke output = %q, want it to name the cause %q", output, wantCause)
	}
	if leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
		t.Errorf("lease %s is gone after a failed revocation, want it kept for a retry", tok.LeaseID)
	}
}

// assertNotBlocked checks that status and role reads return quickly while a
// revocation cannot reach the upstream.
func assertNotBlocked(t *testing.T, ctx context.Context, st *testStack) {
	const bound = 2 * time.Second
	for _, path := range []string{mount + "/status", mount + "/roles/" + devstack.RoleName} {
		reqCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		_, err := st.Vault.Client.Logical().ReadWithContext(reqCtx, path)
		elapsed := time.Since(start)
		cancel()
		if err != nil {
			t.Errorf("read %s while hydra is unreachable: %v", path, err)
		}
		if elapsed > bound {
			t.Errorf("read %s took %s while hydra is unreachable, want at most %s", path, elapsed.Round(time.Millisecond), bound)
		}
	}
}

// assertQueuedRevocationCompletes waits for Vault's own retry of a queued
// revocation and checks the token at Hydra.
func assertQueuedRevocationCompletes(t *testing.T, ctx context.Context, st *testStack, tok ciToken) {
	t.Helper()
	start := time.Now()
	for !leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
		if time.Since(start) > retryTimeout {
			t.Fatalf("queued revocation of %s not done %s after hydra came back", tok.LeaseID, retryTimeout)
		}
		time.Sleep(time.Second)
	}
	t.Logf("vault retried the queued revocation within %s", time.Since(start).Round(time.Second))
	if st.introspect(t, ctx, tok.AccessToken).Active {
		t.Errorf("hydra introspection after the queued revocation: active = true, want false")
	}
}

func TestLeaseRevocationAfterExpiry(t *testing.T) {
	const tokenLifetime = 20 * time.Second
	st := newTestStack(t, devstack.Options{HydraSQLite: true, AccessTokenTTL: tokenLifetime})
	ctx := testContext(t, 3*time.Minute)

	tok := st.mustMint(t, ctx)
	hydraView := st.introspect(t, ctx, tok.AccessToken)
	if !hydraView.Active {
		t.Fatalf("hydra introspection of a new CI token: active = false, want true")
	}
	if tokenLeft := hydraView.ExpiresAt.Sub(tok.MintedAt); tok.LeaseDuration > tokenLeft {
		t.Errorf("lease TTL = %s, token lifetime left at hydra = %s, want TTL <= that", tok.LeaseDuration, tokenLeft)
	}

	// With Hydra down, Vault's revocation at the end of the lease fails
	// and stays queued until the token has expired.
	if err := st.Hydra.Stop(); err != nil {
		t.Fatalf("stop hydra: %v", err)
	}
	defer func() {
		if !st.Hydra.Running() {
			_ = st.Hydra.Start(ctx)
		}
	}()
	time.Sleep(time.Until(hydraView.ExpiresAt.Add(1500 * time.Millisecond)))

	if leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
		t.Logf("vault's own retry revoked the lease after the token expired")
	} else {
		output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID)
		if err != nil {
			t.Errorf("revoke of an expired token with hydra down: %v\n%s", err, output)
		}
	}
	if !leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
		t.Errorf("lease %s still exists after its token expired, want it revoked", tok.LeaseID)
	}

	if err := st.Hydra.Start(ctx); err != nil {
		t.Fatalf("start hydra: %v", err)
	}
	if st.introspect(t, ctx, tok.AccessToken).Active {
		t.Errorf("hydra introspection after expiry: active = true, want false")
	}
	if output, err := st.vaultCLI(ctx, "secrets", "disable", mount); err != nil {
		t.Errorf("%v\n%s", err, output)
	}
}
