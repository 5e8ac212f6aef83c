package fakeissuer

import (
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"time"
)

// Stats counts the requests the issuer received over HTTP. The Go helpers
// (SeedGrant, Spend, Revoke, Introspect) change no counter.
type Stats struct {
	// RefreshRequests counts grant_type=refresh_token requests, faulted
	// ones included.
	RefreshRequests int
	// Rotations counts refresh requests that issued a new refresh token,
	// grace reuses included. It counts a rotation whose response an
	// AfterProcessing fault lost.
	Rotations int
	// GraceReuses counts rotations that reused a spent refresh token inside
	// the grace window.
	GraceReuses int
	// ReuseDetections counts spent refresh tokens presented outside the
	// grace window, each of which revoked its family.
	ReuseDetections int
	// ClientCredentialsRequests counts grant_type=client_credentials requests.
	ClientCredentialsRequests int
	// AuthorizationCodeRequests counts grant_type=authorization_code requests.
	AuthorizationCodeRequests int
	// RevocationRequests counts requests to the revocation endpoint.
	RevocationRequests int
	// Revocations counts revocation requests that revoked at least one
	// active token.
	Revocations int
	// IntrospectionRequests counts requests to the introspection endpoint.
	IntrospectionRequests int
	// FaultsApplied counts fault applications taken from the queue.
	FaultsApplied int
}

// Outcome is the result of one refresh request.
type Outcome string

// Refresh outcomes.
const (
	// OutcomeRotated means a new access and refresh token were issued and
	// the presented refresh token is spent.
	OutcomeRotated Outcome = "rotated"
	// OutcomeGraceRotated means a spent refresh token was reused inside the
	// grace window and a new pair was issued.
	OutcomeGraceRotated Outcome = "grace_rotated"
	// OutcomeNotRotated means only a new access token was issued and the
	// presented refresh token stays valid.
	OutcomeNotRotated Outcome = "not_rotated"
	// OutcomeReused means a spent refresh token was presented outside the
	// grace window: invalid_grant, and the family is revoked.
	OutcomeReused Outcome = "reused"
	// OutcomeInvalidGrant means the token was unknown, revoked or issued to
	// another client.
	OutcomeInvalidGrant Outcome = "invalid_grant"
	// OutcomeInvalidScope means the scope parameter named a scope outside
	// the grant.
	OutcomeInvalidScope Outcome = "invalid_scope"
	// OutcomeInvalidClient means client authentication failed.
	OutcomeInvalidClient Outcome = "invalid_client"
	// OutcomeInvalidRequest means the request was malformed, for example
	// without a refresh_token parameter.
	OutcomeInvalidRequest Outcome = "invalid_request"
	// OutcomeNotProcessed means a BeforeProcessing fault sent the response, or the
	// client gave up during a BeforeProcessing delay.
	OutcomeNotProcessed Outcome = "not_processed"
)

// RefreshRecord describes one refresh request received over HTTP. It
// contains fingerprints, never token values.
type RefreshRecord struct {
	Time time.Time
	// ClientID is the authenticated client, or "" when authentication failed.
	ClientID string
	// AuthMethod is AuthMethodBasic, AuthMethodPost or "" when no
	// credentials were sent.
	AuthMethod string
	// Fingerprint identifies the presented refresh token ("" when none).
	Fingerprint string
	Outcome     Outcome
	// Fault is the kind of the fault applied to the request, or 0.
	Fault FaultKind
	// NewFingerprint identifies the refresh token issued by this request,
	// even when a fault kept it out of the response ("" when none).
	NewFingerprint string
}

// Fingerprint returns "sha256:" and the first 16 hex digits of the SHA-256
// of token, the same form as the engine's token_id. It returns "" for "".
func Fingerprint(token string) string {
	if token == "" {
		return ""
	}

	sum := sha256.Sum256([]byte(token))

	return "sha256:" + hex.EncodeToString(sum[:8])
}

// Stats returns a snapshot of the counters.
func (i *Issuer) Stats() Stats {
	i.mu.Lock()
	defer i.mu.Unlock()

	return i.stats
}

// RefreshLog returns a copy of the refresh records in arrival order.
func (i *Issuer) RefreshLog() []RefreshRecord {
	i.mu.Lock()
	defer i.mu.Unlock()

	return slices.Clone(i.log)
}

// TimesPresented returns how many refresh requests presented refreshToken,
// so a test can assert that a spent token was never sent again.
func (i *Issuer) TimesPresented(refreshToken string) int {
	fp := Fingerprint(refreshToken)

	i.mu.Lock()
	defer i.mu.Unlock()

	n := 0
	for _, rec := range i.log {
		if fp != "" && rec.Fingerprint == fp {
			n++
		}
	}

	return n
}

// recordRefresh appends rec and updates the refresh counters. The caller
// holds i.mu.
func (i *Issuer) recordRefresh(rec RefreshRecord) {
	rec.Time = i.now()

	switch rec.Outcome {
	case OutcomeRotated:
		i.stats.Rotations++
	case OutcomeGraceRotated:
		i.stats.Rotations++
		i.stats.GraceReuses++
	case OutcomeReused:
		i.stats.ReuseDetections++
	}

	i.log = append(i.log, rec)
}
