package backend

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

// seedRequest carries the seeds of a config write.
type seedRequest struct {
	primary string
	standby string
}

// seedError is a seed that the upstream did not accept; it becomes a 400
// naming the field.
type seedError struct {
	field string
	err   error
}

func (e *seedError) Error() string {
	return fmt.Sprintf("%s: the upstream did not accept the seed, so the live grant is unchanged: %s", e.field, e.err)
}

func (e *seedError) Unwrap() error { return e.err }

// seedErrorResponse turns a seeding error into a 400 when the seed itself
// was refused, and passes other failures (storage) on as errors.
func seedErrorResponse(err error) (*logical.Response, error) {
	var se *seedError
	if errors.As(err, &se) {
		return logical.ErrorResponse(se.Error()), logical.ErrInvalidRequest
	}
	return nil, err
}

// seedGrants takes custody of new seeds. A seed equal to a refresh token the
// engine holds or has consumed is skipped with a warning, so a re-applied
// config changes nothing. A new seed is redeemed once before it replaces
// anything: only a seed that works displaces the live grant.
func (b *backend) seedGrants(ctx context.Context, s logical.Storage, eng *engine, seeds seedRequest) ([]string, error) {
	b.rootMu.Lock()
	defer b.rootMu.Unlock()

	root, err := b.rootForUpdate(ctx, s)
	if err != nil {
		return nil, err
	}

	var warnings []string
	if seeds.primary != "" {
		known, err := b.knownToken(ctx, s, root, seeds.primary)
		if err != nil {
			return nil, err
		}
		if known {
			warnings = append(warnings, "refresh_token is one the engine already holds or has consumed; the live root grant is unchanged.")
		} else if err := b.seedPrimary(ctx, s, eng, root, seeds.primary); err != nil {
			return nil, err
		}
	}

	if seeds.standby != "" {
		if root.RefreshToken == "" {
			return nil, &seedError{field: "standby_refresh_token", err: errors.New("seed refresh_token first")}
		}
		known, err := b.knownToken(ctx, s, root, seeds.standby)
		if err != nil {
			return nil, err
		}
		if known {
			warnings = append(warnings, "standby_refresh_token is one the engine already holds or has consumed; the standby grant is unchanged.")
		} else if err := b.seedStandby(ctx, s, eng, root, seeds.standby); err != nil {
			return nil, err
		} else if root.StandbyNeeded {
			warnings = append(warnings, "The root grant needed reseeding, so the new standby grant replaced it; seed a new standby_refresh_token.")
		}
	}
	return warnings, nil
}

// knownToken reports whether token is the primary or standby refresh token,
// or one consumed by either.
func (b *backend) knownToken(ctx context.Context, s logical.Storage, root *rootGrant, token string) (bool, error) {
	hash, err := b.hashToken(ctx, s, token)
	if err != nil {
		return false, err
	}
	grants := []*grant{&root.grant}
	if root.Standby != nil {
		grants = append(grants, &root.Standby.grant)
	}
	for _, g := range grants {
		if g.RefreshToken == token || g.hasSeen(hash) {
			return true, nil
		}
	}
	return false, nil
}

// redeemSeed redeems a new seed once and returns the grant it starts,
// numbered after generation.
func (b *backend) redeemSeed(ctx context.Context, s logical.Storage, eng *engine, field, seed string, generation int64) (*grant, error) {
	g := &grant{RefreshToken: seed, Generation: generation}
	attempt, err := b.redeem(ctx, s, eng, g, slotSeed, nil)
	if attempt.walID != "" {
		defer b.deleteWAL(ctx, s, attempt.walID)
	}
	if err != nil {
		var upstreamErr *upstream.Error
		if errors.As(err, &upstreamErr) {
			return nil, &seedError{field: field, err: upstreamErr}
		}
		return nil, err
	}
	g.SentHash = attempt.redeemedHash
	g.rememberSeed(attempt.redeemedHash)
	g.advance(attempt.redeemedHash, attempt.token, b.now().UTC())
	return g, nil
}

// seedPrimary replaces the root grant with a redeemed seed. The replaced
// grant's hashes are kept, so replaying its seed stays a no-op.
func (b *backend) seedPrimary(ctx context.Context, s logical.Storage, eng *engine, root *rootGrant, seed string) error {
	// Hash the replaced token first: once the seed is redeemed, a failure
	// would lose the refresh token that replaced it.
	previous := root.grant
	var previousHash string
	if previous.RefreshToken != "" {
		var err error
		if previousHash, err = b.hashToken(ctx, s, previous.RefreshToken); err != nil {
			return err
		}
	}

	g, err := b.redeemSeed(ctx, s, eng, "refresh_token", seed, root.Generation)
	if err != nil {
		return err
	}
	g.inherit(&previous)
	g.remember(previousHash)
	installGrant(root, g)
	if err := b.putRoot(ctx, s, root); err != nil {
		return err
	}
	b.Logger().Info("root grant seeded", "generation", root.Generation, "replaced_generation", previous.Generation)
	return nil
}

// installGrant makes g the root grant and clears the old grant's health.
func installGrant(root *rootGrant, g *grant) {
	root.grant = *g
	root.State = stateHealthy
	root.ConsecutiveFailures = 0
	root.LastError = ""
	root.LastErrorAt = time.Time{}
	root.RetryAt = time.Time{}
	root.RotateNow = false
}

// seedStandby installs a redeemed seed as the standby grant.
func (b *backend) seedStandby(ctx context.Context, s logical.Storage, eng *engine, root *rootGrant, seed string) error {
	var generation int64
	if root.Standby != nil {
		generation = root.Standby.Generation
	}
	g, err := b.redeemSeed(ctx, s, eng, "standby_refresh_token", seed, generation)
	if err != nil {
		return err
	}
	root.Standby = &standbyGrant{grant: *g, State: stateHealthy}
	root.StandbyNeeded = false
	if root.terminal() {
		// The root grant failed before a standby existed; the new standby
		// takes its place at once, so mints work again.
		b.Logger().Info("standby grant seeded", "generation", g.Generation)
		return b.promoteStandby(ctx, s, root)
	}
	if err := b.putRoot(ctx, s, root); err != nil {
		return err
	}
	b.Logger().Info("standby grant seeded", "generation", g.Generation)
	return nil
}

// exchangePreparation holds the root grant and the hashes that installing
// a grant from a code exchange needs. They are gathered before the
// exchange, so that nothing but storing the result can fail once the code
// is spent.
type exchangePreparation struct {
	root         *rootGrant
	codeHash     string
	previousHash string
}

// prepareExchange stores a pending grant, reads the root grant and hashes
// the code and the current refresh token. Callers hold rootMu.
func (b *backend) prepareExchange(ctx context.Context, s logical.Storage, code string) (*exchangePreparation, error) {
	root, err := b.rootForUpdate(ctx, s)
	if err != nil {
		return nil, err
	}
	prep := &exchangePreparation{root: root}
	if prep.codeHash, err = b.hashToken(ctx, s, code); err != nil {
		return nil, err
	}
	if root.RefreshToken != "" {
		if prep.previousHash, err = b.hashToken(ctx, s, root.RefreshToken); err != nil {
			return nil, err
		}
	}
	return prep, nil
}

// installExchangedGrant makes a refresh token fresh from a code exchange the
// root grant. It has never been sent, so nothing is redeemed. The code's
// hash is kept with the seeds, so a replayed write is recognised without
// asking the upstream. Callers hold rootMu.
func (b *backend) installExchangedGrant(ctx context.Context, s logical.Storage, prep *exchangePreparation, tok *upstream.Token) (*rootGrant, error) {
	root := prep.root
	g := &grant{RefreshToken: tok.RefreshToken, Generation: root.Generation + 1, LastRotatedAt: b.now().UTC()}
	g.inherit(&root.grant)
	g.remember(prep.previousHash)
	g.rememberSeed(prep.codeHash)
	installGrant(root, g)
	if err := b.putRoot(ctx, s, root); err != nil {
		return nil, err
	}
	b.Logger().Info("root grant seeded from an authorization", "generation", root.Generation)
	return root, nil
}

// rotateStandbyIfDue keeps the standby grant fresh on the root grant's
// schedule. Transient failures back off like the root grant's. A standby
// that the upstream rejects is marked needs_reseed, which status reports.
func (b *backend) rotateStandbyIfDue(ctx context.Context, s logical.Storage, cfg *engineConfig) error {
	b.rootMu.Lock()
	defer b.rootMu.Unlock()

	root, err := b.getRoot(ctx, s)
	if err != nil || root == nil || root.Standby == nil {
		return err
	}
	now := b.now()
	due, err := standbyDueAt(cfg, root.Standby, now)
	if err != nil || due.IsZero() || now.Before(due) {
		return err
	}
	eng, err := b.getEngine(ctx, s)
	if err != nil || eng == nil {
		return err
	}

	standby := root.Standby
	persistSent := func() error { return b.putRoot(ctx, s, root) }
	attempt, err := b.redeem(ctx, s, eng, &standby.grant, slotStandby, persistSent)
	recordStandbyOutcome(standby, attempt, err, now.UTC())
	if err != nil && standby.State == stateNeedsReseed {
		b.Logger().Error("standby grant rejected by the upstream; seed a new standby", "generation", standby.Generation, "error", err)
	}
	if putErr := b.putRoot(ctx, s, root); putErr != nil {
		return putErr
	}
	if attempt.walID != "" {
		b.deleteWAL(ctx, s, attempt.walID)
	}
	return err
}

// recordStandbyOutcome applies the result of one standby refresh.
func recordStandbyOutcome(standby *standbyGrant, attempt redeemAttempt, err error, now time.Time) {
	if err == nil {
		standby.advance(attempt.redeemedHash, attempt.token, now)
		standby.LastError = ""
		standby.ConsecutiveFailures = 0
		standby.RetryAt = time.Time{}
		standby.RotateNow = false
		return
	}
	standby.LastError = err.Error()
	if upstream.ClassOf(err) == upstream.Terminal {
		standby.State = stateNeedsReseed
		return
	}
	var retryAfter time.Duration
	var upstreamErr *upstream.Error
	if errors.As(err, &upstreamErr) {
		retryAfter = upstreamErr.RetryAfter
	}
	standby.ConsecutiveFailures++
	standby.RetryAt = now.Add(rotationBackoff(standby.ConsecutiveFailures, retryAfter))
}

// rootForUpdate stores a pending grant first, then returns the root grant to
// change, or an empty, unconfigured one. Callers hold rootMu.
func (b *backend) rootForUpdate(ctx context.Context, s logical.Storage) (*rootGrant, error) {
	if err := b.storePending(ctx, s); err != nil {
		return nil, err
	}
	root, err := b.getRoot(ctx, s)
	if err != nil || root != nil {
		return root, err
	}
	return &rootGrant{State: stateUnconfigured}, nil
}
