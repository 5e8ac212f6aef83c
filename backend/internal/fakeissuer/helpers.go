package fakeissuer

import (
	"strings"
)

// Introspection is the RFC 7662 introspection response, with Hydra's
// token_use member.
type Introspection struct {
	Active    bool     `json:"active"`
	Scope     string   `json:"scope,omitempty"`
	ClientID  string   `json:"client_id,omitempty"`
	Audience  []string `json:"aud,omitempty"`
	ExpiresAt int64    `json:"exp,omitempty"` // Unix seconds, access tokens only
	IssuedAt  int64    `json:"iat,omitempty"` // Unix seconds
	// TokenType is "Bearer" for access tokens and "" for refresh tokens.
	TokenType string `json:"token_type,omitempty"`
	// TokenUse is "access_token" or "refresh_token".
	TokenUse string `json:"token_use,omitempty"`
}

// Introspect returns what the introspection endpoint would return for
// token. Only Active is set for a token that is unknown, revoked, expired or
// spent. A spent refresh token is active while the grace window still
// allows a reuse.
func (i *Issuer) Introspect(token string) Introspection {
	i.mu.Lock()
	defer i.mu.Unlock()

	t, ok := i.tokens[token]
	if !ok || !i.isActive(t, i.now()) {
		return Introspection{}
	}

	info := Introspection{
		Active:   true,
		Scope:    strings.Join(t.scopes, " "),
		ClientID: t.family.clientID,
		Audience: append([]string(nil), t.family.audience...),
		IssuedAt: t.issuedAt.Unix(),
		TokenUse: "refresh_token",
	}
	if t.kind == kindAccess {
		info.ExpiresAt = t.expiresAt.Unix()
		info.TokenType = "Bearer"
		info.TokenUse = "access_token"
	}

	return info
}

// Active reports whether token is known, not revoked, not expired and, for a
// refresh token, still usable.
func (i *Issuer) Active(token string) bool {
	return i.Introspect(token).Active
}

// Spend uses refreshToken as an outside party would, with the same rules as
// the token endpoint: it returns the new refresh token, or ErrInvalidGrant
// when the token is unknown, revoked or spent. Spending a spent token outside
// the grace window revokes its family. Stats and RefreshLog do not change.
// Under WithoutRotation it returns refreshToken itself.
func (i *Issuer) Spend(refreshToken string) (newRefresh string, err error) {
	i.mu.Lock()
	defer i.mu.Unlock()

	res := i.refresh(refreshToken, "", i.settings.rotate)
	if res.errCode != "" {
		return "", ErrInvalidGrant
	}

	if res.pair.refresh == nil {
		return refreshToken, nil
	}

	return res.pair.refresh.value, nil
}

// LatestRefreshToken returns the newest refresh token of the family that
// token belongs to. token may be any access or refresh token ever issued in
// the family, so a test can spend the live refresh token a client holds
// without reading it from the client. ok is false for an unknown token or a
// family without refresh tokens. The family may be revoked.
func (i *Issuer) LatestRefreshToken(token string) (refreshToken string, ok bool) {
	i.mu.Lock()
	defer i.mu.Unlock()

	t, found := i.tokens[token]
	if !found || t.family.latest == nil {
		return "", false
	}

	return t.family.latest.value, true
}

// Revoke revokes every token of the family that token belongs to, as an
// administrator revoking consent would. It counts no reuse detection and
// returns false for an unknown token.
func (i *Issuer) Revoke(token string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()

	t, ok := i.tokens[token]
	if !ok {
		return false
	}

	i.revokeFamily(t.family)

	return true
}
