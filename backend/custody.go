package backend

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

// walKindRootRefresh marks a refresh of a root or standby grant in flight.
// An entry left behind means the process stopped between sending the
// refresh token and storing its replacement.
const walKindRootRefresh = "root_refresh"

// Grant slots named in WAL entries and logs.
const (
	slotPrimary = "primary"
	slotStandby = "standby"
	slotSeed    = "seed"
)

// Backoff after transient rotation failures: base doubled per failure, at
// most max, with up to 20 % jitter so that many mounts do not retry at once.
const (
	rotationBackoffBase = 30 * time.Second
	rotationBackoffMax  = time.Hour
)

// Event types sent on the Vault event bus (where events are enabled).
const (
	eventRootRotated   = "ci-tokens/root-rotated"
	eventRootReused    = "ci-tokens/root-reused"
	eventRootRejected  = "ci-tokens/root-rejected"
	eventStandbyActive = "ci-tokens/standby-promoted"
)

var (
	errNotConfigured = errors.New("the mount is not configured; write config first")
	errNoRootGrant   = errors.New("the mount holds no root grant; seed one with refresh_token at config or with the ci-tokens-seed command")
)

// rootRefreshWAL is the intent recorded before a refresh request.
type rootRefreshWAL struct {
	Slot       string    `json:"slot"`
	Generation int64     `json:"generation"`
	StartedAt  time.Time `json:"started_at"`
}

// rotationResult describes a completed rotation of the root grant.
type rotationResult struct {
	Generation int64
	RotatedAt  time.Time

	// Token is the response of this caller's own refresh, or nil when the
	// caller shared a rotation that another caller made.
	Token *upstream.Token
}

// rotateRoot rotates the root grant. A caller that saw generation
// seenGeneration and finds, once it holds the lock, that a rotation already
// moved the generation past it shares that rotation instead of sending
// another refresh; seenGeneration < 0 always sends one.
func (b *backend) rotateRoot(ctx context.Context, s logical.Storage, seenGeneration int64, reason string) (*rotationResult, error) {
	b.rootMu.Lock()
	defer b.rootMu.Unlock()

	eng, err := b.getEngine(ctx, s)
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return nil, errNotConfigured
	}
	if err := b.storePending(ctx, s); err != nil {
		return nil, err
	}
	root, err := b.getRoot(ctx, s)
	if err != nil {
		return nil, err
	}
	if root == nil || root.RefreshToken == "" {
		return nil, errNoRootGrant
	}
	if seenGeneration >= 0 && root.Generation > seenGeneration {
		return &rotationResult{Generation: root.Generation, RotatedAt: root.LastRotatedAt}, nil
	}
	return b.rotateLocked(ctx, s, eng, root, reason)
}

// rotateLocked redeems the root grant once and records the outcome.
// Callers hold rootMu.
func (b *backend) rotateLocked(ctx context.Context, s logical.Storage, eng *engine, root *rootGrant, reason string) (*rotationResult, error) {
	if root.terminal() {
		// A standby seeded after the root grant failed takes over here.
		if !root.standbyReady() {
			return nil, reseedError(root)
		}
		if err := b.promoteStandby(ctx, s, root); err != nil {
			return nil, err
		}
	}

	persistSent := func() error { return b.putRoot(ctx, s, root) }
	attempt, err := b.redeem(ctx, s, eng, &root.grant, slotPrimary, persistSent)
	if err != nil {
		promoted, err := b.recordRootFailure(ctx, s, root, attempt, err)
		if promoted {
			return b.rotateLocked(ctx, s, eng, root, reason)
		}
		return nil, err
	}

	now := b.now().UTC()
	root.advance(attempt.redeemedHash, attempt.token, now)
	root.State = stateHealthy
	root.ConsecutiveFailures = 0
	root.LastError = ""
	root.LastErrorAt = time.Time{}
	root.RetryAt = time.Time{}
	root.RotateNow = false
	if err := b.putRoot(ctx, s, root); err != nil {
		// The WAL entry stays, so the rotation counts as unfinished until
		// the pending grant is stored.
		return nil, err
	}
	b.deleteWAL(ctx, s, attempt.walID)

	b.Logger().Info("root grant rotated", "generation", root.Generation, "reason", reason)
	b.sendEvent(ctx, eventRootRotated, "generation", fmt.Sprint(root.Generation), "reason", reason)
	return &rotationResult{Generation: root.Generation, RotatedAt: now, Token: attempt.token}, nil
}

// advance moves g to the token in a successful refresh response.
// previousHash is the salted hash of the token that was redeemed.
func (g *grant) advance(previousHash string, tok *upstream.Token, now time.Time) {
	g.remember(previousHash)
	if tok.RefreshToken != "" {
		g.RefreshToken = tok.RefreshToken
	}
	g.Generation++
	g.LastRotatedAt = now
}

// redeemAttempt is the outcome of redeem besides the token.
type redeemAttempt struct {
	token *upstream.Token
	walID string

	// redeemedHash is the salted hash of the redeemed token, computed
	// before the request so that nothing but storing the result can fail
	// once the upstream has rotated.
	redeemedHash string

	// sentBefore is true when the token had already been sent upstream
	// before this attempt's final request, so an invalid_grant for it is not
	// proof that someone else used it.
	sentBefore bool
}

// redeem sends one refresh of g's token, with a WAL entry recording the
// intent and, if the first response is lost, one retry with the same (the
// newest) token. persistSent, when set, stores the marker that the token has
// been sent before the request leaves. Callers hold rootMu and delete the
// WAL entry once the outcome is stored.
func (b *backend) redeem(ctx context.Context, s logical.Storage, eng *engine, g *grant, slot string, persistSent func() error) (redeemAttempt, error) {
	var attempt redeemAttempt
	hash, err := b.hashToken(ctx, s, g.RefreshToken)
	if err != nil {
		return attempt, err
	}
	attempt.redeemedHash = hash
	attempt.sentBefore = g.SentHash == hash

	attempt.walID, err = framework.PutWAL(ctx, s, walKindRootRefresh, &rootRefreshWAL{
		Slot:       slot,
		Generation: g.Generation,
		StartedAt:  b.now().UTC(),
	})
	if err != nil {
		return attempt, fmt.Errorf("writing WAL entry before refresh: %w", err)
	}
	if !attempt.sentBefore && persistSent != nil {
		g.SentHash = hash
		if err := persistSent(); err != nil {
			b.deleteWAL(ctx, s, attempt.walID)
			return attempt, err
		}
	}

	// Once sent, a refresh must run to its end even if the caller gives up:
	// its response carries the only copy of the new refresh token. The
	// HTTP client's request_timeout still bounds each request.
	sendCtx := context.WithoutCancel(ctx)
	attempt.token, err = eng.client.Refresh(sendCtx, g.RefreshToken)
	if upstream.ClassOf(err) == upstream.Ambiguous {
		b.Logger().Warn("refresh response lost; retrying once with the same refresh token", "slot", slot, "generation", g.Generation, "error", err)
		attempt.sentBefore = true
		attempt.token, err = eng.client.Refresh(sendCtx, g.RefreshToken)
	}
	if err != nil {
		attempt.token = nil
	}
	return attempt, err
}

// recordRootFailure stores what a failed refresh means for the root grant
// and returns the error for the caller. When the root grant is lost and a
// healthy standby grant exists, it promotes the standby and returns
// promoted, so the caller can rotate again.
func (b *backend) recordRootFailure(ctx context.Context, s logical.Storage, root *rootGrant, attempt redeemAttempt, cause error) (promoted bool, err error) {
	var upstreamErr *upstream.Error
	if !errors.As(cause, &upstreamErr) {
		// Storage or salt errors: nothing was learned about the grant.
		if attempt.walID != "" {
			b.deleteWAL(ctx, s, attempt.walID)
		}
		return false, cause
	}

	now := b.now().UTC()
	root.LastError = upstreamErr.Error()
	root.LastErrorAt = now
	root.ConsecutiveFailures++

	switch upstreamErr.Class {
	case upstream.Transient, upstream.Ambiguous:
		// A refresh and its retry that both got no usable response do not
		// prove the grant lost: the upstream may never have processed
		// them. The token is kept, and the next attempt shows which it
		// was, because a spent token then comes back as invalid_grant.
		root.State = stateDegraded
		root.RetryAt = now.Add(rotationBackoff(root.ConsecutiveFailures, upstreamErr.RetryAfter))
		if upstreamErr.Class == upstream.Ambiguous {
			root.LastError = "the refresh and its retry got no usable response, so the refresh token may have been spent; the next attempt shows whether it still works: " + upstreamErr.Error()
		}
		b.Logger().Warn("root grant rotation failed; will retry", "generation", root.Generation, "consecutive_failures", root.ConsecutiveFailures, "retry_at", root.RetryAt.Format(time.RFC3339), "error", upstreamErr)
	default:
		if upstreamErr.Code == "invalid_grant" && !attempt.sentBefore {
			root.State = stateCompromised
			root.LastError = "the upstream rejected a refresh token the engine had never sent, so someone else used it: " + upstreamErr.Error()
			b.Logger().Error("root refresh token reused outside vault", "generation", root.Generation, "error", upstreamErr)
			b.sendEvent(ctx, eventRootReused, "generation", fmt.Sprint(root.Generation))
		} else {
			root.State = stateNeedsReseed
			if upstreamErr.Code == "invalid_grant" {
				root.LastError = "the upstream rejected a refresh token the engine had sent before, so an earlier response was lost (timeout, broken connection or restart during rotation): " + upstreamErr.Error()
			}
			b.Logger().Error("root grant rejected by the upstream; reseed required", "generation", root.Generation, "error", upstreamErr)
			b.sendEvent(ctx, eventRootRejected, "generation", fmt.Sprint(root.Generation), "code", upstreamErr.Code)
		}
	}

	if err := b.putRoot(ctx, s, root); err != nil {
		return false, err
	}
	if attempt.walID != "" {
		b.deleteWAL(ctx, s, attempt.walID)
	}

	if root.terminal() && root.standbyReady() {
		if err := b.promoteStandby(ctx, s, root); err != nil {
			return false, err
		}
		return true, nil
	}
	if root.terminal() {
		return false, reseedError(root)
	}
	return false, fmt.Errorf("rotating root grant: %w", upstreamErr)
}

// promoteStandby makes the standby grant the root grant. Callers hold rootMu.
func (b *backend) promoteStandby(ctx context.Context, s logical.Storage, root *rootGrant) error {
	lost := root.grant
	standby := root.Standby
	root.grant = standby.grant
	// Generations keep growing across a promotion, so that a generation
	// number names one refresh token for the life of the mount.
	root.Generation = max(lost.Generation, standby.Generation) + 1
	root.inherit(&lost)
	root.State = stateHealthy
	root.ConsecutiveFailures = 0
	root.RetryAt = time.Time{}
	root.Standby = nil
	root.StandbyNeeded = true
	if err := b.putRoot(ctx, s, root); err != nil {
		return err
	}
	// Warn, not Error: the loss of the root grant was logged as an error,
	// and mints keep working.
	b.Logger().Warn("standby grant promoted to root grant; seed a new standby", "generation", root.Generation, "lost_generation", lost.Generation)
	b.sendEvent(ctx, eventStandbyActive, "generation", fmt.Sprint(root.Generation))
	return nil
}

// rotationBackoff returns the delay before the next attempt after failures
// consecutive transient failures, at least what Retry-After asked for.
func rotationBackoff(failures int, retryAfter time.Duration) time.Duration {
	delay := rotationBackoffBase
	for i := 1; i < failures && delay < rotationBackoffMax; i++ {
		delay *= 2
	}
	delay = min(delay, rotationBackoffMax)
	delay += time.Duration(rand.Int64N(int64(delay) / 5))
	return max(delay, retryAfter)
}

// reseedError explains to a caller that the root grant needs an operator.
func reseedError(root *rootGrant) error {
	return &grantUnusableError{state: root.State, cause: root.LastError}
}

// grantUnusableError means the root grant needs an operator before it can be
// used again. Paths return it as HTTP 400 rather than 500, so that clients
// do not retry a request that only a reseed can fix.
type grantUnusableError struct {
	state string
	cause string
}

func (e *grantUnusableError) Error() string {
	return fmt.Sprintf("the root grant is %s (%s); seed a new refresh token with \"vault write <mount>/config refresh_token=...\" or the ci-tokens-seed command", e.state, e.cause)
}

// isGrantUnusable reports whether err means the root grant needs an operator.
func isGrantUnusable(err error) bool {
	var unusable *grantUnusableError
	return errors.As(err, &unusable)
}

// walDeleteTimeout bounds a WAL delete, which outlives the request that
// started it.
const walDeleteTimeout = time.Minute

// deleteWAL removes a WAL entry; a failure only delays cleanup, because the
// rollback of a root_refresh entry checks the stored generation first.
func (b *backend) deleteWAL(ctx context.Context, s logical.Storage, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), walDeleteTimeout)
	defer cancel()
	if err := framework.DeleteWAL(ctx, s, id); err != nil {
		b.Logger().Warn("deleting WAL entry failed", "wal_id", id, "error", err)
	}
}

// sendEvent publishes an event; a Vault without the event bus is fine.
func (b *backend) sendEvent(ctx context.Context, eventType string, metadata ...string) {
	err := logical.SendEvent(ctx, b, eventType, metadata...)
	if err != nil && !errors.Is(err, framework.ErrNoEvents) {
		b.Logger().Debug("sending event failed", "event_type", eventType, "error", err)
	}
}
