package backend

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

// walKindMint marks a minted token whose response has not been returned
// yet; rolling it back revokes the token upstream.
const walKindMint = "mint"

// maxExpirySkew is the largest margin kept between a lease's end and the
// upstream token's expiry, for clock skew between Vault and the upstream.
const maxExpirySkew = 30 * time.Second

// pathCreds returns the creds/<role> path.
func pathCreds(b *backend) *framework.Path {
	operation := &framework.PathOperation{
		Callback:                    b.pathCredsMint,
		ForwardPerformanceStandby:   true,
		ForwardPerformanceSecondary: true,
	}
	return &framework.Path{
		Pattern: "creds/" + framework.GenericNameRegex("role"),
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "ci-tokens",
			OperationVerb:   "generate",
			OperationSuffix: "token",
		},
		Fields: map[string]*framework.FieldSchema{
			"role": {
				Type:        framework.TypeString,
				Description: "Name of the role to mint a token for, matched exactly (role names are case-sensitive, as Vault policies are).",
				Required:    true,
			},
			"ttl": {
				Type:        framework.TypeDurationSecond,
				Description: "Requested lease TTL in seconds. Capped by the role, the mount and the token's real lifetime. Default: the role's ttl.",
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation:   operation,
			logical.UpdateOperation: operation,
		},
		HelpSynopsis:    pathCredsHelpSynopsis,
		HelpDescription: pathCredsHelpDescription,
	}
}

func (b *backend) pathCredsMint(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	roleName := d.Get("role").(string)
	requested := d.Get("ttl").(int)
	if requested < 0 {
		return logical.ErrorResponse("ttl: must not be negative, got %d", requested), logical.ErrInvalidRequest
	}
	role, err := b.getRole(ctx, req.Storage, roleName)
	if err != nil {
		return nil, err
	}
	if role == nil {
		return logical.ErrorResponse("role: no role named %q", roleName), logical.ErrInvalidRequest
	}
	eng, err := b.getEngine(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), logical.ErrInvalidRequest
	}

	issuedAt := b.now().UTC()
	tok, err := b.mint(ctx, req.Storage, eng, role)
	if err != nil {
		b.Logger().Warn("minting failed", "role", roleName, "error", err)
		b.recordMintFailure(err)
		if isGrantUnusable(err) || errors.Is(err, errNoRootGrant) {
			return logical.ErrorResponse("role %q needs the root grant: %s", roleName, err), logical.ErrInvalidRequest
		}
		if upstream.ClassOf(err) == upstream.Terminal {
			// The upstream refused the role's scopes or audience, or the
			// client: retrying the same request cannot help, so no 500.
			return logical.ErrorResponse("role %q: the upstream rejected the token request: %s", roleName, err), logical.ErrInvalidRequest
		}
		return nil, fmt.Errorf("minting a token for role %q: %w", roleName, err)
	}
	lease, err := b.leaseFor(role, eng.cfg, tok, time.Duration(requested)*time.Second, issuedAt)
	if err != nil {
		b.revokeUnreturned(ctx, eng, role, tok)
		return nil, err
	}

	internal := revocationData(eng.cfg, role, roleName, tok, lease.tokenExpiresAt)
	record := &leaseRecord{Role: roleName, IssuedAt: issuedAt, ExpiresAt: lease.tokenExpiresAt}
	walID, err := b.recordMint(ctx, req.Storage, internal, record)
	if err != nil {
		b.revokeUnreturned(ctx, eng, role, tok)
		return nil, err
	}

	resp := b.Secret(secretTypeCIToken).Response(credsResponseData(role, roleName, tok, lease), internal.toMap())
	resp.Secret.TTL = lease.ttl
	resp.Secret.MaxTTL = lease.maxTTL
	resp.Secret.Renewable = lease.renewable
	b.deleteMintWALAfterReturn(req.Storage, walID)

	b.tokensMinted.Add(1)
	b.observedLifetime.Store(int64(lease.tokenExpiresAt.Sub(issuedAt)))
	b.Logger().Debug("token minted", "role", roleName, "token_id", internal.TokenID, "ttl", int64(lease.ttl.Seconds()))
	return resp, nil
}

// recordMint writes the WAL entry of a minted token and its lease record.
// The two writes are independent, so they go to storage at once: each is a
// round trip from the plugin to Vault on the mint's critical path. On error
// it deletes whichever of the two was written; a failed delete leaves a WAL
// entry that the rollback revokes, or a record that expires with the token.
func (b *backend) recordMint(ctx context.Context, s logical.Storage, internal *tokenRevocation, record *leaseRecord) (string, error) {
	var (
		wg        sync.WaitGroup
		walID     string
		walErr    error
		recordErr error
	)
	wg.Add(1)
	go func() {
		defer wg.Done()
		walID, walErr = framework.PutWAL(ctx, s, walKindMint, internal)
	}()
	recordErr = putLeaseRecord(ctx, s, internal.RecordKey, record)
	wg.Wait()

	switch {
	case walErr != nil:
		if recordErr == nil {
			_ = b.deleteLeaseRecord(ctx, s, internal)
		}
		return "", fmt.Errorf("writing WAL entry for the minted token: %w", walErr)
	case recordErr != nil:
		b.deleteWAL(ctx, s, walID)
		return "", recordErr
	}
	return walID, nil
}

// deleteMintWALAfterReturn deletes the WAL entry of a token handed to Vault
// in the background, which takes a storage round trip off the mint. The
// entry is written before the response, so a token whose lease Vault never
// stores is still revoked by the rollback. If the process stops before the
// delete, or the delete fails, the rollback revokes a token whose lease
// Vault may hold: the engine errs on the side of revoking.
func (b *backend) deleteMintWALAfterReturn(s logical.Storage, walID string) {
	b.background.goRun(func() {
		b.deleteWAL(context.Background(), s, walID)
	})
}

// mint requests a token from the upstream with the role's strategy.
func (b *backend) mint(ctx context.Context, s logical.Storage, eng *engine, role *roleEntry) (*upstream.Token, error) {
	if role.Strategy == strategyRefresh {
		result, err := b.rotateRoot(ctx, s, -1, "mint")
		if err != nil {
			return nil, err
		}
		return result.Token, nil
	}
	return eng.client.ClientCredentials(ctx, role.Scopes, role.Audience)
}

// lease is the computed lease of a CI token.
type lease struct {
	ttl            time.Duration
	maxTTL         time.Duration
	renewable      bool
	expiresAt      time.Time
	tokenExpiresAt time.Time
}

// leaseFor computes the lease: the requested TTL (else the role's, else the
// mount's default), capped by the role's and the mount's maximum and by the
// token's real remaining lifetime less a skew margin.
func (b *backend) leaseFor(role *roleEntry, cfg *engineConfig, tok *upstream.Token, requested time.Duration, issuedAt time.Time) (lease, error) {
	mountDefault, mountMax := b.mountTTLs()

	tokenExpiresAt := tok.ExpiresAt
	if tokenExpiresAt.IsZero() {
		tokenExpiresAt = issuedAt.Add(cfg.DefaultExpiresIn)
	}
	remaining := tokenExpiresAt.Sub(issuedAt)
	usable := remaining - expirySkew(remaining)

	ttl, err := computeLeaseTTL(leaseLimits{
		requested:    requested,
		roleTTL:      role.TTL,
		roleMaxTTL:   role.MaxTTL,
		mountDefault: mountDefault,
		mountMax:     mountMax,
		usable:       usable,
	})
	if err != nil {
		return lease{}, err
	}

	maxTTL := usable.Truncate(time.Second)
	for _, limit := range []time.Duration{role.MaxTTL, mountMax} {
		if limit > 0 && limit < maxTTL {
			maxTTL = limit
		}
	}
	return lease{
		ttl:            ttl,
		maxTTL:         maxTTL,
		renewable:      ttl < maxTTL,
		expiresAt:      issuedAt.Add(ttl).Truncate(time.Second),
		tokenExpiresAt: tokenExpiresAt.UTC(),
	}, nil
}

// leaseLimits are the inputs of a lease TTL; zero means unset.
type leaseLimits struct {
	requested    time.Duration
	roleTTL      time.Duration
	roleMaxTTL   time.Duration
	mountDefault time.Duration
	mountMax     time.Duration

	// usable is the token's remaining lifetime less the skew margin.
	usable time.Duration
}

// errTokenTooShort means the upstream's token expires before a lease of at
// least one second could end safely.
var errTokenTooShort = errors.New("the upstream token expires too soon for a lease; raise its lifetime at the upstream")

// computeLeaseTTL returns min(requested or role ttl or mount default, role
// max_ttl, mount max, usable), in whole seconds.
func computeLeaseTTL(l leaseLimits) (time.Duration, error) {
	ttl := l.requested
	for _, fallback := range []time.Duration{l.roleTTL, l.mountDefault} {
		if ttl <= 0 {
			ttl = fallback
		}
	}
	if ttl <= 0 {
		ttl = l.usable
	}
	for _, limit := range []time.Duration{l.roleMaxTTL, l.mountMax, l.usable} {
		if limit > 0 && ttl > limit {
			ttl = limit
		}
	}
	ttl = ttl.Truncate(time.Second)
	if ttl < time.Second || l.usable < time.Second {
		return 0, errTokenTooShort
	}
	return ttl, nil
}

// expirySkew returns the margin kept before a token's expiry: a tenth of
// its lifetime, at most maxExpirySkew.
func expirySkew(remaining time.Duration) time.Duration {
	return min(remaining/10, maxExpirySkew)
}

// credsResponseData builds the data a caller of creds/<role> receives:
// everything a template needs, from one lease.
func credsResponseData(role *roleEntry, roleName string, tok *upstream.Token, l lease) map[string]interface{} {
	scope := tok.Scope
	if scope == "" {
		scope = strings.Join(role.Scopes, " ")
	}
	tokenType := tok.TokenType
	if tokenType == "" {
		tokenType = "Bearer"
	}
	return map[string]interface{}{
		"access_token": tok.AccessToken,
		"token_type":   tokenType,
		"expires_at":   l.expiresAt.Format(time.RFC3339),
		"scope":        scope,
		"audience":     nonNil(role.Audience),
		"role":         roleName,
		"token_id":     tokenID(tok.AccessToken),
	}
}

// tokenID returns a non-secret fingerprint of a token for audit trails:
// "sha256:" and the first 16 hex digits of its SHA-256.
func tokenID(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// revokeUnreturned revokes a token that was minted but will not reach the
// caller.
func (b *backend) revokeUnreturned(ctx context.Context, eng *engine, role *roleEntry, tok *upstream.Token) {
	if role.Strategy == strategyRefresh {
		return
	}
	data := revocationData(eng.cfg, role, "", tok, tok.ExpiresAt)
	if err := b.revokeUpstream(context.WithoutCancel(ctx), nil, data); err != nil {
		b.Logger().Warn("revoking a token that was not returned failed", "token_id", data.TokenID, "error", err)
	}
}

// rollbackMint revokes a token whose response was never returned.
func (b *backend) rollbackMint(ctx context.Context, s logical.Storage, data interface{}) error {
	var entry tokenRevocation
	if err := mapToStruct(data, &entry); err != nil {
		b.Logger().Warn("dropping malformed WAL entry", "kind", walKindMint, "error", err)
		return nil
	}
	b.Logger().Info("revoking a token minted by a request that did not finish", "token_id", entry.TokenID, "role", entry.Role)
	if err := b.revokeUpstream(ctx, s, &entry); err != nil {
		return err
	}
	return b.deleteLeaseRecord(ctx, s, &entry)
}

const pathCredsHelpSynopsis = `Mint a CI token for a role.`

const pathCredsHelpDescription = `
Mints an upstream access token narrowed to the role and returns it with a
Vault lease: access_token, token_type, expires_at (the lease end, RFC 3339
UTC), scope, audience, role and token_id (a non-secret fingerprint for audit
trails). The lease never outlives the token; when it ends, the token is
revoked upstream (RFC 7009). Read and write both mint.
`

// mintFailure is the last failed mint, for status.
type mintFailure struct {
	message string
	at      time.Time
}

// recordMintFailure counts a failed mint and keeps its message, which
// carries no secret because upstream errors never do.
func (b *backend) recordMintFailure(err error) {
	b.mintFailures.Add(1)
	b.lastMintFailure.Store(&mintFailure{message: err.Error(), at: b.now().UTC()})
}

// mountTTLCacheFor is how long the mount's default and maximum lease TTL
// are reused. Each read is a round trip from the plugin to Vault on every
// mint. Vault itself caps a lease by the mount's maximum when it registers
// it, so after a tune only expires_at and renewable lag, for at most this
// long.
const mountTTLCacheFor = 10 * time.Second

// mountTTLs caches the mount's lease TTLs.
type mountTTLs struct {
	defaultTTL time.Duration
	maxTTL     time.Duration
	readAt     time.Time
}

// mountTTLs returns the mount's default and maximum lease TTL, read from
// Vault at most every mountTTLCacheFor.
func (b *backend) mountTTLs() (time.Duration, time.Duration) {
	now := time.Now()
	if cached := b.mountTTLCache.Load(); cached != nil && now.Sub(cached.readAt) < mountTTLCacheFor {
		return cached.defaultTTL, cached.maxTTL
	}
	system := b.System()
	if system == nil {
		return 0, 0
	}
	fresh := &mountTTLs{defaultTTL: system.DefaultLeaseTTL(), maxTTL: system.MaxLeaseTTL(), readAt: now}
	b.mountTTLCache.Store(fresh)
	return fresh.defaultTTL, fresh.maxTTL
}
