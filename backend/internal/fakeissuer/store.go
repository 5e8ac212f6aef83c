package fakeissuer

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"slices"
	"time"
)

// ErrInvalidGrant is returned by Spend when the refresh token is unknown,
// revoked or already spent, matching the token endpoint's invalid_grant.
var ErrInvalidGrant = errors.New("invalid_grant")

// Prefixes of the opaque token values. Ory Hydra v2 tokens carry the same
// prefixes, which lets a leak test search logs for them.
const (
	prefixAccessToken  = "ory_at_"
	prefixRefreshToken = "ory_rt_"
	prefixCode         = "ory_ac_"
)

// client is a registered confidential client.
type client struct {
	id         string
	secret     string
	scopes     []string
	audiences  []string
	authMethod string // "" accepts both client_secret_basic and client_secret_post
}

// tokenKind distinguishes access tokens from refresh tokens.
type tokenKind int

const (
	kindAccess tokenKind = iota + 1
	kindRefresh
)

// family is the set of tokens that come from one authorization, which Hydra
// and fosite call a request id. Revocation and reuse detection act on it.
type family struct {
	clientID string
	scopes   []string
	audience []string
	revoked  bool
	latest   *token   // newest refresh token, nil for client_credentials
	members  []*token // every token issued in the family
}

// token is an issued access or refresh token.
type token struct {
	value     string
	kind      tokenKind
	family    *family
	scopes    []string
	issuedAt  time.Time
	expiresAt time.Time // zero for a refresh token without a lifetime

	// Refresh tokens only.
	spentAt   time.Time // first use; zero while unused
	graceUsed int       // reuses inside the grace window
	pair      *token    // access token issued together with this refresh token
	revoked   bool
}

// authorizationCode is a code minted by IssueCode or /authorize.
type authorizationCode struct {
	clientID      string
	redirectURI   string
	scopes        []string
	codeChallenge string
	expiresAt     time.Time
	used          bool
	family        *family // set once exchanged, so a replay can revoke it
}

// tokenPair is the access token, and the optional refresh token, issued by
// a successful grant.
type tokenPair struct {
	access  *token
	refresh *token // nil when no refresh token is issued
}

// refreshResult is the outcome of presenting a refresh token.
type refreshResult struct {
	pair    tokenPair
	outcome Outcome
	errCode string
	errText string
}

// newTokenValue returns a random opaque token with the given prefix.
func newTokenValue(prefix string) string {
	buf := make([]byte, 32)
	_, _ = rand.Read(buf) // crypto/rand.Read never returns an error since Go 1.24

	return prefix + base64.RawURLEncoding.EncodeToString(buf)
}

// AddClient registers a confidential client, or replaces one with the same
// id. scopes and audiences are the values the client may request. Both
// client_secret_basic and client_secret_post are accepted until
// SetClientAuthMethod restricts the client to one.
func (i *Issuer) AddClient(id, secret string, scopes, audiences []string) {
	i.mu.Lock()
	defer i.mu.Unlock()

	i.clients[id] = &client{
		id:        id,
		secret:    secret,
		scopes:    slices.Clone(scopes),
		audiences: slices.Clone(audiences),
	}
}

// Client authentication methods of RFC 6749 section 2.3.1.
const (
	AuthMethodBasic = "client_secret_basic"
	AuthMethodPost  = "client_secret_post"
)

// SetClientAuthMethod restricts a client to AuthMethodBasic or AuthMethodPost,
// as a Hydra client's token_endpoint_auth_method does. A request that
// authenticates the other way gets 401 invalid_client. An empty method
// accepts both again.
func (i *Issuer) SetClientAuthMethod(id, method string) {
	i.tb.Helper()

	if method != "" && method != AuthMethodBasic && method != AuthMethodPost {
		i.tb.Errorf("fakeissuer: SetClientAuthMethod(%q): unsupported method %q", id, method)
		return
	}

	i.mu.Lock()
	defer i.mu.Unlock()

	c, ok := i.clients[id]
	if !ok {
		i.tb.Errorf("fakeissuer: SetClientAuthMethod: client %q not found", id)
		return
	}

	c.authMethod = method
}

// issuePair issues an access token, and a refresh token when withRefresh is
// set, in family f. The caller holds i.mu.
func (i *Issuer) issuePair(f *family, scopes []string, withRefresh bool) tokenPair {
	now := i.now()
	access := &token{
		value:     newTokenValue(prefixAccessToken),
		kind:      kindAccess,
		family:    f,
		scopes:    slices.Clone(scopes),
		issuedAt:  now,
		expiresAt: now.Add(i.settings.accessTokenLifetime),
	}
	i.tokens[access.value] = access
	f.members = append(f.members, access)

	if !withRefresh {
		return tokenPair{access: access}
	}

	refresh := &token{
		value:    newTokenValue(prefixRefreshToken),
		kind:     kindRefresh,
		family:   f,
		scopes:   slices.Clone(scopes),
		issuedAt: now,
		pair:     access,
	}
	if i.settings.refreshTokenLifetime > 0 {
		refresh.expiresAt = now.Add(i.settings.refreshTokenLifetime)
	}
	i.tokens[refresh.value] = refresh
	f.members = append(f.members, refresh)
	f.latest = refresh

	return tokenPair{access: access, refresh: refresh}
}

// refresh runs the refresh_token grant for value presented by clientID. An
// empty clientID skips the client check, for Spend. When rotate is false the
// presented token stays valid and only an access token is issued. The
// caller holds i.mu.
//
// The checks follow fosite v0.49.0, the library inside Hydra v2.3.0, in its
// order: a spent token triggers reuse detection before the client is
// compared, so another client presenting a spent token also revokes the
// family. The request's scope parameter is ignored, narrower or wider: the
// new tokens carry the scopes granted originally.
func (i *Issuer) refresh(value, clientID string, rotate bool) refreshResult {
	t, ok := i.tokens[value]
	if !ok || t.kind != kindRefresh || t.revoked || t.family.revoked {
		return refreshResult{
			outcome: OutcomeInvalidGrant, errCode: "invalid_grant",
			errText: "The refresh token is malformed, not valid, or was revoked.",
		}
	}

	now := i.now()
	grace := false
	if !t.spentAt.IsZero() {
		if !i.graceAllows(t, now) {
			i.revokeFamily(t.family)
			return refreshResult{
				outcome: OutcomeReused, errCode: "invalid_grant",
				errText: "The refresh token was already used. All tokens of this grant were revoked.",
			}
		}
		grace = true
	}

	if !t.expiresAt.IsZero() && !now.Before(t.expiresAt) {
		return refreshResult{
			outcome: OutcomeInvalidGrant, errCode: "invalid_grant",
			errText: "The refresh token expired.",
		}
	}

	if clientID != "" && t.family.clientID != clientID {
		return refreshResult{
			outcome: OutcomeInvalidGrant, errCode: "invalid_grant",
			errText: "The refresh token was issued to another client.",
		}
	}

	// A client whose allowed scopes shrank since the grant cannot refresh it.
	if c, ok := i.clients[t.family.clientID]; ok {
		for _, s := range t.family.scopes {
			if !slices.Contains(c.scopes, s) {
				return refreshResult{
					outcome: OutcomeInvalidScope, errCode: "invalid_scope",
					errText: "The client may no longer request the granted scope " + quote(s) + ".",
				}
			}
		}
	}

	return i.rotate(t, now, grace, rotate)
}

// graceAllows reports whether spent refresh token t may be used again now.
// The caller holds i.mu.
func (i *Issuer) graceAllows(t *token, now time.Time) bool {
	if i.settings.graceWindow <= 0 || now.After(t.spentAt.Add(i.settings.graceWindow)) {
		return false
	}

	return i.settings.graceReuses < 0 || t.graceUsed < i.settings.graceReuses
}

// rotate issues new tokens for refresh token t, which has passed every
// check. The caller holds i.mu.
//
// Hydra v2.3.0 rotates in two ways. Without a grace period (strict), it
// revokes every access token of the family and spends every refresh token
// of it, so one chain remains. With a grace period, it spends only the
// presented refresh token and revokes only the access token issued with it,
// so tokens from earlier uses inside the window keep working.
func (i *Issuer) rotate(t *token, now time.Time, grace, rotate bool) refreshResult {
	f := t.family

	if !rotate {
		pair := i.issuePair(f, f.scopes, false)
		return refreshResult{pair: pair, outcome: OutcomeNotRotated}
	}

	switch {
	case grace:
		t.graceUsed++
		t.pair.revoked = true
	case i.settings.graceWindow > 0:
		t.spentAt = now
		t.pair.revoked = true
	default:
		for _, member := range f.members {
			if member.kind == kindAccess {
				member.revoked = true
			} else if member.spentAt.IsZero() {
				member.spentAt = now
			}
		}
	}

	pair := i.issuePair(f, f.scopes, true)
	if grace {
		return refreshResult{pair: pair, outcome: OutcomeGraceRotated}
	}

	return refreshResult{pair: pair, outcome: OutcomeRotated}
}

// revokeFamily revokes every token of f. The caller holds i.mu.
func (i *Issuer) revokeFamily(f *family) {
	f.revoked = true
}

// isActive reports whether t can still be used. The caller holds i.mu.
func (i *Issuer) isActive(t *token, now time.Time) bool {
	if t.revoked || t.family.revoked {
		return false
	}

	if !t.expiresAt.IsZero() && !now.Before(t.expiresAt) {
		return false
	}

	return t.kind == kindAccess || t.spentAt.IsZero() || i.graceAllows(t, now)
}

// quote wraps s in single quotes for error descriptions, which Hydra also
// uses to name a scope.
func quote(s string) string { return "'" + s + "'" }
