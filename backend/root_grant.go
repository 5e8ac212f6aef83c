package backend

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

const rootStoragePath = "root"

// States of the root grant, as status reports them.
const (
	stateUnconfigured = "unconfigured"
	stateHealthy      = "healthy"
	stateDegraded     = "degraded"
	stateNeedsReseed  = "needs_reseed"
	stateCompromised  = "compromised"
)

// maxConsumedHashes bounds the salted hashes of consumed refresh tokens kept
// to recognise a replayed seed. A Terraform re-apply replays the last seed,
// so a short history is enough.
const maxConsumedHashes = 32

// maxSeedHashes bounds the salted hashes of seeds kept. Seeds come from
// operators, so the list grows only with reseeding, never with rotation.
const maxSeedHashes = 32

// grant is one refresh token chain held by the engine.
type grant struct {
	// RefreshToken is the newest refresh token; it is the only one the
	// engine will ever send.
	RefreshToken string `json:"refresh_token"`

	// Generation grows by one with every successful rotation.
	Generation int64 `json:"generation"`

	LastRotatedAt time.Time `json:"last_rotated_at"`

	// SentHash is the salted hash of the last refresh token sent upstream.
	// When it equals the hash of RefreshToken, the current token has been
	// sent at least once, so an invalid_grant for it may be the engine's own
	// doing (a lost response) rather than reuse by someone else.
	SentHash string `json:"sent_hash,omitempty"`

	// Consumed holds salted hashes of seeds and spent refresh tokens, newest
	// last, at most maxConsumedHashes.
	Consumed []string `json:"consumed,omitempty"`

	// Seeds holds salted hashes of the refresh tokens written as seeds of
	// this grant and of the grants it replaced, newest last, at most
	// maxSeedHashes. Rotations never push a seed out of this list, so a
	// re-applied configuration stays a no-op however often the grant
	// rotated since. Redeeming a spent seed again would make most
	// upstreams revoke the live grant.
	Seeds []string `json:"seeds,omitempty"`
}

// rootGrant is the stored custody record of the mount's root grant and the
// optional standby grant. The storage entry is seal-wrapped.
type rootGrant struct {
	grant

	State               string    `json:"state"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	LastError           string    `json:"last_error,omitempty"`
	LastErrorAt         time.Time `json:"last_error_at,omitempty"`

	// RetryAt delays the next scheduled attempt after a transient failure.
	RetryAt time.Time `json:"retry_at,omitempty"`

	// RotateNow makes the next tick rotate regardless of the schedule,
	// after an interrupted rotation was found.
	RotateNow bool `json:"rotate_now,omitempty"`

	// Standby is the optional second grant, or nil.
	Standby *standbyGrant `json:"standby,omitempty"`

	// StandbyNeeded is set after the standby was promoted, until an operator
	// seeds a new one.
	StandbyNeeded bool `json:"standby_needed,omitempty"`
}

// standbyGrant is the fallback grant and its own health.
type standbyGrant struct {
	grant

	State     string `json:"state"`
	LastError string `json:"last_error,omitempty"`

	// ConsecutiveFailures and RetryAt back off scheduled rotations of the
	// standby after transient failures, as for the root grant.
	ConsecutiveFailures int       `json:"consecutive_failures,omitempty"`
	RetryAt             time.Time `json:"retry_at,omitempty"`

	// RotateNow makes the next tick rotate the standby regardless of the
	// schedule, because a rotation of it was interrupted.
	RotateNow bool `json:"rotate_now,omitempty"`
}

// clone returns a deep copy, so a failed update never changes the caller's
// record.
func (r *rootGrant) clone() *rootGrant {
	c := *r
	c.Consumed = slices.Clone(r.Consumed)
	c.Seeds = slices.Clone(r.Seeds)
	if r.Standby != nil {
		standby := *r.Standby
		standby.Consumed = slices.Clone(r.Standby.Consumed)
		standby.Seeds = slices.Clone(r.Standby.Seeds)
		c.Standby = &standby
	}
	return &c
}

// terminal reports whether the grant can no longer be used without an
// operator.
func (r *rootGrant) terminal() bool {
	return r.State == stateNeedsReseed || r.State == stateCompromised
}

// standbyReady reports whether a healthy standby grant can replace the
// root grant.
func (r *rootGrant) standbyReady() bool {
	return r.Standby != nil && r.Standby.State == stateHealthy
}

// remember records a salted hash in the bounded consumed list.
func (g *grant) remember(hash string) {
	g.Consumed = appendBounded(g.Consumed, hash, maxConsumedHashes)
}

// rememberSeed records the salted hash of a seed.
func (g *grant) rememberSeed(hash string) {
	g.Seeds = appendBounded(g.Seeds, hash, maxSeedHashes)
}

// inherit takes over the hashes of a grant that g replaces, so replaying
// anything the old grant knew stays a no-op.
func (g *grant) inherit(old *grant) {
	for _, hash := range old.Consumed {
		g.remember(hash)
	}
	for _, hash := range old.Seeds {
		g.rememberSeed(hash)
	}
}

// hasSeen reports whether hash is one of g's seeds or consumed tokens.
func (g *grant) hasSeen(hash string) bool {
	return slices.Contains(g.Seeds, hash) || slices.Contains(g.Consumed, hash)
}

// appendBounded appends hash to list unless it is empty or present, and
// drops the oldest entries beyond limit.
func appendBounded(list []string, hash string, limit int) []string {
	if hash == "" || slices.Contains(list, hash) {
		return list
	}
	list = append(list, hash)
	if len(list) > limit {
		list = list[len(list)-limit:]
	}
	return list
}

// getRoot returns the newest root grant: the one held in memory after a
// failed store, else the stored one, else nil.
func (b *backend) getRoot(ctx context.Context, s logical.Storage) (*rootGrant, error) {
	if pending := b.pendingRoot.Load(); pending != nil {
		return pending.clone(), nil
	}
	entry, err := s.Get(ctx, rootStoragePath)
	if err != nil {
		return nil, fmt.Errorf("reading root grant: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	root := &rootGrant{}
	if err := entry.DecodeJSON(root); err != nil {
		return nil, fmt.Errorf("decoding root grant: %w", err)
	}
	return root, nil
}

// storageRetryDelays are the pauses between attempts to store a rotated
// root grant. A refresh token that the upstream already rotated must not be
// dropped for a brief storage hiccup.
var storageRetryDelays = []time.Duration{0, 50 * time.Millisecond, 250 * time.Millisecond, time.Second}

// putRoot stores root, retrying briefly. When every attempt fails, root is
// kept in memory as the pending grant, and the next use of the grant stores
// it first. Callers hold rootMu.
func (b *backend) putRoot(ctx context.Context, s logical.Storage, root *rootGrant) error {
	entry, err := logical.StorageEntryJSON(rootStoragePath, root)
	if err != nil {
		return fmt.Errorf("encoding root grant: %w", err)
	}

	// A rotated token must reach storage even if the request that caused
	// the rotation was canceled meanwhile.
	ctx = context.WithoutCancel(ctx)
	var putErr error
	for attempt, delay := range storageRetryDelays {
		time.Sleep(delay)
		if putErr = s.Put(ctx, entry); putErr == nil {
			b.pendingRoot.Store(nil)
			return nil
		}
		b.Logger().Warn("storing root grant failed", "attempt", attempt+1, "generation", root.Generation, "error", putErr)
	}

	b.pendingRoot.Store(root.clone())
	b.Logger().Error("root grant held in memory until storage accepts it", "generation", root.Generation, "error", putErr)
	return fmt.Errorf("storing root grant generation %d: %w; the new refresh token is held in memory and will be stored on the next attempt", root.Generation, putErr)
}

// storePending stores a grant left in memory by a failed putRoot. Callers
// hold rootMu.
func (b *backend) storePending(ctx context.Context, s logical.Storage) error {
	pending := b.pendingRoot.Load()
	if pending == nil {
		return nil
	}
	return b.putRoot(ctx, s, pending)
}

// hashToken returns the mount-salted hash of a refresh token.
func (b *backend) hashToken(ctx context.Context, s logical.Storage, token string) (string, error) {
	sl, err := b.getSalt(ctx, s)
	if err != nil {
		return "", fmt.Errorf("loading salt: %w", err)
	}
	return sl.SaltID(token), nil
}
