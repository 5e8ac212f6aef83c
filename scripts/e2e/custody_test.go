package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// Log messages of the engine that the custody tests count.
const (
	logReusedOutsideVault  = "root refresh token reused outside vault"
	logInterruptedRotation = "found an interrupted rotation"
)

// terminalStates are the status states that report a root grant which
// needs an operator.
var terminalStates = []string{"needs_reseed", "compromised"}

func TestConfigReapply(t *testing.T) {
	st := newTestStack(t, devstack.Options{})
	ctx := testContext(t, 3*time.Minute)
	st.writeGrantRole(t, ctx)

	// A Terraform apply sends every argument of the resource each time,
	// the refresh_token of the first apply included.
	body := st.ConfigRequest()
	body["client_auth_method"] = "client_secret_basic"
	body["request_timeout"] = 30
	body["rotation_period"] = 86400
	start := st.mustStatus(t, ctx)

	writeAgain := func(t *testing.T) {
		t.Helper()
		hydraBefore := st.hydraTokenRequests(t)
		secret, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/config", body)
		if err != nil {
			st.record(err.Error())
			t.Fatalf("write the same config again: %v", err)
		}
		var warnings []string
		if secret != nil {
			warnings = secret.Warnings
		}
		st.record(strings.Join(warnings, "\n"))
		if !strings.Contains(strings.Join(warnings, " "), "refresh_token") {
			t.Errorf("warnings = %q, want one saying refresh_token changed nothing", warnings)
		}
		// Hydra's log is written as requests finish, so a replayed seed
		// would show up here before the status read below returns.
		got := st.mustStatus(t, ctx)
		if got.Generation != start.Generation {
			t.Errorf("generation after re-write = %d, want %d (unchanged)", got.Generation, start.Generation)
		}
		if got.State != "healthy" {
			t.Errorf("state after re-write = %q, want healthy", got.State)
		}
		if hydraAfter := st.hydraTokenRequests(t); hydraAfter != hydraBefore {
			t.Errorf("hydra token endpoint requests during the re-write = %d, want 0", hydraAfter-hydraBefore)
		}
	}

	t.Run("first re-write", writeAgain)
	t.Run("second re-write", writeAgain)
	t.Run("live grant still works", func(t *testing.T) {
		tok := st.mustMint(t, ctx)
		if got := st.introspect(t, ctx, tok.AccessToken); !got.Active {
			t.Errorf("hydra introspection of a CI token: active = false, want true")
		}
		data, err := st.rotateRoot(ctx, st.Vault.Client)
		if err != nil {
			t.Fatalf("rotate-root after re-apply: %v", err)
		}
		if got, _ := asInt64(data["generation"]); got != start.Generation+1 {
			t.Errorf("rotate-root generation = %d, want %d", got, start.Generation+1)
		}
		st.assertRootGrantWorks(t, ctx)
	})
	t.Run("re-write after rotations", func(t *testing.T) {
		start = st.mustStatus(t, ctx)
		writeAgain(t)
		st.assertRootGrantWorks(t, ctx)
	})
}

func TestRootRefreshTokenReuse(t *testing.T) {
	st := newTestStack(t, devstack.Options{})
	ctx := testContext(t, 3*time.Minute)
	st.writeGrantRole(t, ctx)

	// The operator keeps a copy of the seed. The engine redeems it at once,
	// so the copy is spent, and spending it again is reuse.
	seed, err := st.Hydra.SeedRefreshToken(ctx, st.EngineClient, devstack.SeedOptions{
		Scopes:   devstack.EngineScopes,
		Audience: []string{devstack.Audience},
	})
	if err != nil {
		t.Fatalf("seed a refresh token: %v", err)
	}
	st.rememberToken("copied seed", seed)
	if _, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/config", map[string]any{
		"refresh_token": seed.RefreshToken,
	}); err != nil {
		t.Fatalf("write the seed to config: %v", err)
	}
	st.assertRootGrantWorks(t, ctx)

	_, err = st.Hydra.Refresh(ctx, st.EngineClient, seed.RefreshToken)
	if !devstack.IsOAuthError(err, "invalid_grant") {
		t.Fatalf("refresh of the spent seed outside vault: error = %v, want invalid_grant", err)
	}

	// A rotation that fails for an upstream reason returns HTTP 500, which
	// the API client would retry. One attempt per request keeps the counts
	// below exact.
	client := noRetryClient(t, st.Vault)
	reusedBefore := st.countInVaultLog(t, logReusedOutsideVault)
	if _, err := st.rotateRoot(ctx, client); err == nil {
		t.Fatalf("rotate-root after Hydra revoked the grant succeeded, want an error")
	}

	var afterReuse rootStatus
	t.Run("status says compromised", func(t *testing.T) {
		afterReuse = st.mustStatus(t, ctx)
		if afterReuse.State != "compromised" {
			t.Errorf("state = %q, want compromised", afterReuse.State)
		}
		if !strings.Contains(afterReuse.LastError, "invalid_grant") {
			t.Errorf("last_error = %q, want the upstream's invalid_grant named", afterReuse.LastError)
		}
		if afterReuse.LastErrorAt == "" {
			t.Errorf("last_error_at is empty, want the time of the failure")
		}
	})
	t.Run("error log line", func(t *testing.T) {
		if got := st.countInVaultLog(t, logReusedOutsideVault) - reusedBefore; got != 1 {
			t.Errorf("log lines %q = %d, want 1", logReusedOutsideVault, got)
		}
	})
	t.Run("no further refresh", func(t *testing.T) {
		hydraBefore := st.hydraTokenRequests(t)
		if _, err := st.rotateRoot(ctx, client); err == nil {
			t.Errorf("second rotate-root succeeded, want an error")
		}
		_, err := st.checkRootGrant(ctx, client)
		if err == nil {
			t.Errorf("mint of a refresh role succeeded, want an error")
		} else if !strings.Contains(err.Error(), "refresh_token") {
			t.Errorf("mint error = %q, want it to say how to seed refresh_token", err)
		}
		if got := st.hydraTokenRequests(t) - hydraBefore; got != 0 {
			t.Errorf("hydra token endpoint requests after the grant was compromised = %d, want 0", got)
		}
		got := st.mustStatus(t, ctx)
		if got.ConsecutiveFailures != afterReuse.ConsecutiveFailures {
			t.Errorf("consecutive_failures = %d, want %d (no new attempt)", got.ConsecutiveFailures, afterReuse.ConsecutiveFailures)
		}
		if got.State != "compromised" {
			t.Errorf("state = %q, want compromised until reseeded", got.State)
		}
	})
	t.Run("client credentials mints keep working", func(t *testing.T) {
		tok := st.mustMint(t, ctx)
		if got := st.introspect(t, ctx, tok.AccessToken); !got.Active {
			t.Errorf("hydra introspection of a client_credentials token: active = false, want true")
		}
	})
	t.Run("reseed recovers", func(t *testing.T) {
		st.configure(t, ctx)
		if got := st.mustStatus(t, ctx); got.State != "healthy" || got.LastError != "" {
			t.Errorf("after reseed: state = %q, last_error = %q; want healthy and empty", got.State, got.LastError)
		}
		st.assertRootGrantWorks(t, ctx)
	})
}

// grantVerdict is what a check after a crash found about the root grant.
type grantVerdict int

const (
	grantSurvived grantVerdict = iota
	grantLostWithCause
	grantLostSilently
)

// crashTally counts the outcomes of one crash test configuration.
type crashTally struct {
	kills int

	// interrupted counts kills that cut a rotate-root request short, as
	// the test's own client saw it.
	interrupted int

	// recovered counts restarts after which the engine logged that it
	// found an interrupted rotation in its write-ahead log.
	recovered int

	survived     int
	lostNamed    int
	lostSilently int
	rotations    int64

	// causes counts status state and last_error prefix of lost grants.
	causes map[string]int

	// blamedOnReuse counts crashes reported as reuse outside Vault. Vault
	// itself interrupted the rotation, so the right state is needs_reseed.
	blamedOnReuse int
}

func (c crashTally) String() string {
	causes := make([]string, 0, len(c.causes))
	for cause, n := range c.causes {
		causes = append(causes, fmt.Sprintf("%dx %s", n, cause))
	}
	sort.Strings(causes)
	return fmt.Sprintf("%d kills, %d interrupted a rotate-root request, %d left a rotation in the write-ahead log, %d grants survived, %d lost with the cause in status, %d lost silently, %d completed rotations; causes: [%s]",
		c.kills, c.interrupted, c.recovered, c.survived, c.lostNamed, c.lostSilently, c.rotations, strings.Join(causes, "; "))
}

// crashKills is the number of kills per configuration.
const crashKills = 30

func TestRotationCrash(t *testing.T) {
	tests := []struct {
		name  string
		grace time.Duration
	}{
		{name: "hydra with rotation grace period", grace: time.Minute},
		{name: "hydra without rotation grace period", grace: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newTestStack(t, devstack.Options{
				PersistentVault:     true,
				HydraSQLite:         true,
				RotationGracePeriod: tt.grace,
			})
			ctx := testContext(t, 8*time.Minute)
			st.writeGrantRole(t, ctx)

			seed := uint64(time.Now().UnixNano())
			t.Logf("random seed %d", seed)
			rng := rand.New(rand.NewPCG(seed, seed))

			tally := st.crashLoop(t, ctx, rng, crashKills)
			t.Logf("%s: %s", tt.name, tally)

			if tally.kills < crashKills {
				t.Errorf("kills = %d, want %d", tally.kills, crashKills)
			}
			if tally.interrupted == 0 {
				t.Errorf("no kill interrupted a rotate-root request, so the test proved nothing; want at least 1")
			}
			if tally.lostSilently > 0 {
				t.Errorf("grants lost without status naming a cause = %d, want 0", tally.lostSilently)
			}
			if tally.blamedOnReuse > 0 {
				t.Errorf("crashes reported as reuse outside vault (state compromised) = %d, want 0 (needs_reseed)", tally.blamedOnReuse)
			}
			if tt.grace > 0 && tally.survived != tally.kills {
				t.Errorf("grants survived = %d of %d kills, want every one with a grace period", tally.survived, tally.kills)
			}
		})
	}
}

// crashLoop kills Vault kills times while a goroutine rotates the root grant
// in a loop, restarts it, and judges the grant after each restart. A lost
// grant is reseeded so that the next kill starts from a working one.
func (st *testStack) crashLoop(t *testing.T, ctx context.Context, rng *rand.Rand, kills int) crashTally {
	t.Helper()
	tally := crashTally{causes: map[string]int{}}
	client := noRetryClient(t, st.Vault)

	for range kills {
		recoveredBefore := st.countInVaultLog(t, logInterruptedRotation)

		var (
			rotations   atomic.Int64
			killedAt    atomic.Int64 // Unix nanoseconds, 0 before the kill
			interrupted atomic.Bool
			wg          sync.WaitGroup
		)
		stop := make(chan struct{})
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				reqCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				started := time.Now().UnixNano()
				_, err := st.rotateRoot(reqCtx, client)
				cancel()
				if err == nil {
					rotations.Add(1)
				} else if k := killedAt.Load(); k != 0 && started < k {
					interrupted.Store(true)
				}
			}
		})
		time.Sleep(50*time.Millisecond + time.Duration(rng.Int64N(int64(500*time.Millisecond))))
		killedAt.Store(time.Now().UnixNano())
		if err := st.Vault.Kill(); err != nil {
			t.Fatalf("kill vault: %v", err)
		}
		close(stop)
		wg.Wait()
		tally.kills++
		tally.rotations += rotations.Load()

		if err := st.Vault.Start(ctx); err != nil {
			t.Fatalf("start vault after kill %d: %v", tally.kills, err)
		}
		if interrupted.Load() {
			tally.interrupted++
		}
		verdict, status := st.judgeGrant(t, ctx)
		if st.countInVaultLog(t, logInterruptedRotation) > recoveredBefore {
			tally.recovered++
		}

		switch verdict {
		case grantSurvived:
			tally.survived++
			continue
		case grantLostWithCause:
			tally.lostNamed++
			if status.State == "compromised" {
				tally.blamedOnReuse++
			}
		case grantLostSilently:
			tally.lostSilently++
		}
		cause, _, _ := strings.Cut(status.LastError, ":")
		tally.causes[status.State+": "+cause]++
		t.Logf("kill %d lost the grant: state %q, last_error %q", tally.kills, status.State, status.LastError)
		st.configure(t, ctx)
	}
	return tally
}

// judgeGrant decides after a restart whether the root grant still works,
// by Hydra's introspection of a token from a fresh rotation, and returns the
// status read when it does not.
func (st *testStack) judgeGrant(t *testing.T, ctx context.Context) (grantVerdict, rootStatus) {
	t.Helper()
	var status rootStatus
	for attempt := range 3 {
		got, err := st.checkRootGrant(ctx, st.Vault.Client)
		if err == nil && got.Active && got.Subject == seedSubject {
			return grantSurvived, status
		}
		status = st.mustStatus(t, ctx)
		terminal := false
		for _, state := range terminalStates {
			terminal = terminal || status.State == state
		}
		if terminal && status.LastError != "" {
			return grantLostWithCause, status
		}
		// A healthy or degraded state with a failing grant may be a
		// transient upstream error; retry before calling it silent.
		t.Logf("grant check attempt %d failed (error %v, active %t) with state %q", attempt+1, err, got.Active, status.State)
		time.Sleep(time.Second)
	}
	return grantLostSilently, status
}
