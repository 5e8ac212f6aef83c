package fakeissuer

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
)

// seedRedirectURI is the redirect URI SeedGrant uses for its code. No
// request is ever sent to it.
const seedRedirectURI = "http://127.0.0.1/callback"

// oauthError is an error response of RFC 6749 section 5.2.
type oauthError struct {
	status      int
	code        string
	description string
}

func invalidRequest(description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_request", description: description}
}

func invalidGrant(description string) *oauthError {
	return &oauthError{status: http.StatusBadRequest, code: "invalid_grant", description: description}
}

// clientCredentials runs the client_credentials grant. Every requested scope
// must be allowed for the client (else invalid_scope) and every requested
// audience too (else invalid_request, as Hydra v2.3.0 returns). The caller
// holds i.mu.
func (i *Issuer) clientCredentials(c *client, scopes, audiences []string) (tokenPair, *oauthError) {
	for _, s := range scopes {
		if !slices.Contains(c.scopes, s) {
			return tokenPair{}, &oauthError{
				status:      http.StatusBadRequest,
				code:        "invalid_scope",
				description: "The client may not request scope " + quote(s) + ".",
			}
		}
	}

	for _, a := range audiences {
		if !slices.Contains(c.audiences, a) {
			return tokenPair{}, invalidRequest("The client may not request audience " + quote(a) + ".")
		}
	}

	f := &family{clientID: c.id, scopes: slices.Clone(scopes), audience: slices.Clone(audiences)}

	return i.issuePair(f, scopes, false), nil
}

// exchangeCode runs the authorization_code grant with PKCE (S256 only). A
// refresh token is issued only when the code's scopes include offline or
// offline_access. Replaying a code revokes the tokens issued for it, as RFC
// 6749 section 4.1.2 recommends. The caller holds i.mu.
func (i *Issuer) exchangeCode(c *client, value, redirectURI, verifier string) (tokenPair, *oauthError) {
	code, ok := i.codes[value]
	if !ok || code.clientID != c.id {
		return tokenPair{}, invalidGrant("The authorization code is not valid for this client.")
	}

	if code.used {
		if code.family != nil {
			i.revokeFamily(code.family)
		}
		return tokenPair{}, invalidGrant("The authorization code was already used; its tokens were revoked.")
	}

	if !i.now().Before(code.expiresAt) {
		return tokenPair{}, invalidGrant("The authorization code expired.")
	}

	if redirectURI != code.redirectURI {
		return tokenPair{}, invalidGrant("The redirect_uri does not match the authorization request.")
	}

	if problem := checkPKCE(code.codeChallenge, verifier); problem != "" {
		return tokenPair{}, invalidGrant(problem)
	}

	code.used = true
	code.family = &family{clientID: c.id, scopes: slices.Clone(code.scopes)}

	return i.issuePair(code.family, code.scopes, grantsOfflineAccess(code.scopes)), nil
}

// grantsOfflineAccess reports whether scopes include offline or
// offline_access. Hydra v2.3.0 issues a refresh token for an authorization
// code only then, and allows no refresh of a grant without them.
func grantsOfflineAccess(scopes []string) bool {
	return slices.Contains(scopes, "offline_access") || slices.Contains(scopes, "offline")
}

// checkPKCE compares verifier with the S256 challenge of RFC 7636 and returns
// what is wrong, or "" when it matches. An empty challenge means the code
// was issued without PKCE, so a verifier must not be sent either.
func checkPKCE(challenge, verifier string) string {
	if challenge == "" {
		if verifier != "" {
			return "The code_verifier was sent but the authorization request had no code_challenge."
		}
		return ""
	}

	if len(verifier) < 43 || len(verifier) > 128 {
		return "The code_verifier must be 43 to 128 characters long."
	}

	computed := S256Challenge(verifier)
	if subtle.ConstantTimeCompare([]byte(computed), []byte(challenge)) != 1 {
		return "The code_verifier does not match the code_challenge."
	}

	return ""
}

// S256Challenge returns the RFC 7636 S256 code_challenge for verifier.
func S256Challenge(verifier string) string {
	sum := sha256.Sum256([]byte(verifier))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// IssueCode mints a single-use authorization code, valid for 10 minutes, as
// if the user had approved scopes for clientID. codeChallenge is the S256
// PKCE challenge, and "" issues a code without PKCE. The token request must
// send the same redirectURI. An unknown client or a scope the client may not
// request fails the test and returns "".
func (i *Issuer) IssueCode(clientID, redirectURI string, scopes []string, codeChallenge string) string {
	i.tb.Helper()

	i.mu.Lock()
	defer i.mu.Unlock()

	value, problem := i.issueCode(clientID, redirectURI, scopes, codeChallenge)
	if problem != "" {
		i.tb.Errorf("fakeissuer: IssueCode: %s", problem)
	}

	return value
}

// issueCode stores a new code and returns it, or returns what is wrong.
// The caller holds i.mu.
func (i *Issuer) issueCode(clientID, redirectURI string, scopes []string, challenge string) (string, string) {
	c, ok := i.clients[clientID]
	if !ok {
		return "", "client " + quote(clientID) + " not found"
	}

	for _, s := range scopes {
		if !slices.Contains(c.scopes, s) {
			return "", "client " + quote(clientID) + " may not request scope " + quote(s)
		}
	}

	value := newTokenValue(prefixCode)
	i.codes[value] = &authorizationCode{
		clientID:      clientID,
		redirectURI:   redirectURI,
		scopes:        slices.Clone(scopes),
		codeChallenge: challenge,
		expiresAt:     i.now().Add(authorizationCodeLifetime),
	}

	return value, ""
}

// SeedGrant creates a refresh family for clientID with the granted scopes
// and returns its first refresh token. It mints a PKCE code and exchanges it
// on the authorization_code path, without HTTP, so Stats and RefreshLog do
// not change. scopes must include offline_access (or offline), because
// Hydra issues no refresh token without it. A missing offline scope, an
// unknown client or a scope the client may not request fails the test and
// returns "".
func (i *Issuer) SeedGrant(clientID string, scopes []string) (refreshToken string) {
	i.tb.Helper()

	if !grantsOfflineAccess(scopes) {
		i.tb.Errorf("fakeissuer: SeedGrant: scopes %q lack offline_access, so no refresh token would be issued", scopes)
		return ""
	}

	verifier := newTokenValue("")

	i.mu.Lock()
	defer i.mu.Unlock()

	code, problem := i.issueCode(clientID, seedRedirectURI, scopes, S256Challenge(verifier))
	if problem != "" {
		i.tb.Errorf("fakeissuer: SeedGrant: %s", problem)
		return ""
	}

	pair, oerr := i.exchangeCode(i.clients[clientID], code, seedRedirectURI, verifier)
	if oerr != nil {
		i.tb.Errorf("fakeissuer: SeedGrant: code exchange failed: %s", oerr.code)
		return ""
	}

	return pair.refresh.value
}

// splitParameter returns the space-separated values of a form parameter,
// accepting the parameter more than once as fosite does for audience.
func splitParameter(values []string) []string {
	var out []string
	for _, v := range values {
		out = append(out, strings.Fields(v)...)
	}

	return out
}
