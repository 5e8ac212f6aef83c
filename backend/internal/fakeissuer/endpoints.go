package fakeissuer

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// handleDiscovery serves both RFC 8414 and OpenID Connect discovery with
// the same document, as Hydra does.
func (i *Issuer) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}

	base := i.URL()
	doc := map[string]any{
		"issuer":                                base,
		"authorization_endpoint":                base + pathAuthorize,
		"token_endpoint":                        base + pathToken,
		"introspection_endpoint":                base + pathIntrospect,
		"jwks_uri":                              base + pathJWKS,
		"grant_types_supported":                 []string{grantAuthorizationCode, grantClientCredentials, grantRefreshToken},
		"response_types_supported":              []string{"code"},
		"token_endpoint_auth_methods_supported": []string{AuthMethodBasic, AuthMethodPost},
		"code_challenge_methods_supported":      []string{"S256"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	}
	if !i.settings.omitRevocation {
		doc["revocation_endpoint"] = base + pathRevoke
		doc["revocation_endpoint_auth_methods_supported"] = []string{AuthMethodBasic, AuthMethodPost}
	}

	body, _ := json.Marshal(doc)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// handleJWKS serves an empty key set. The issuer signs nothing, but OpenID
// Connect discovery requires jwks_uri.
func handleJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"keys":[]}`))
}

// handleRevoke serves RFC 7009 revocation, applying faults aimed at
// TargetRevocation around the real processing.
func (i *Issuer) handleRevoke(w http.ResponseWriter, r *http.Request) {
	if oerr := parsePost(w, r); oerr != nil {
		writeOAuthError(w, oerr)
		return
	}

	i.mu.Lock()
	i.stats.RevocationRequests++
	fault, faulted := i.takeFault(TargetRevocation)
	i.mu.Unlock()

	if faulted && fault.Phase == BeforeProcessing {
		if !i.wait(r, fault.Delay) {
			return
		}
		if fault.Kind != FaultDelay {
			writeFault(w, fault, nil)
			return
		}
		faulted = false
	}

	oerr := i.revokeRequest(r)

	if faulted {
		if !i.wait(r, fault.Delay) {
			return
		}
		if fault.Kind != FaultDelay {
			writeFault(w, fault, nil)
			return
		}
	}

	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}

	w.WriteHeader(http.StatusOK)
}

// revokeRequest authenticates the client and revokes the family of the
// presented token. The token_type_hint is ignored because token values are
// unique.
//
// Like fosite v0.49.0, it returns 200 and revokes nothing for an unknown,
// missing or revoked token, a refresh token already spent outside the grace
// window, and a token of another client. Only client authentication errors
// and an empty body get an error response.
func (i *Issuer) revokeRequest(r *http.Request) *oauthError {
	i.mu.Lock()
	defer i.mu.Unlock()

	c, _, oerr := i.authenticateClient(r)
	if oerr != nil {
		return oerr
	}

	t, ok := i.tokens[r.PostForm.Get("token")]
	if !ok || t.family.clientID != c.id || t.revoked || t.family.revoked {
		return nil
	}

	now := i.now()
	if t.kind == kindRefresh && !t.spentAt.IsZero() && !i.graceAllows(t, now) {
		return nil
	}

	if i.familyActive(t.family, now) {
		i.stats.Revocations++
	}
	i.revokeFamily(t.family)

	return nil
}

// familyActive reports whether any token of f is active. The caller holds
// i.mu.
func (i *Issuer) familyActive(f *family, now time.Time) bool {
	for _, member := range f.members {
		if i.isActive(member, now) {
			return true
		}
	}

	return false
}

// handleIntrospect serves RFC 7662 introspection to any authenticated client.
func (i *Issuer) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	if oerr := parsePost(w, r); oerr != nil {
		writeOAuthError(w, oerr)
		return
	}

	i.mu.Lock()
	i.stats.IntrospectionRequests++
	_, _, oerr := i.authenticateClient(r)
	i.mu.Unlock()

	if oerr != nil {
		writeOAuthError(w, oerr)
		return
	}

	value := r.PostForm.Get("token")
	if value == "" {
		writeOAuthError(w, invalidRequest("The token parameter is missing."))
		return
	}

	body, _ := json.Marshal(i.Introspect(value))
	writeJSON(w, http.StatusOK, body)
}

// handleAuthorize approves every valid authorization request at once, as if
// the user had logged in and consented, and redirects with a code. Only
// response_type=code is served, and code_challenge_method must be S256 when
// a challenge is sent. Any redirect_uri is accepted because clients
// register none here.
func (i *Issuer) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirectURI := q.Get("redirect_uri")

	// RFC 6749 section 4.1.2.1 forbids redirecting for an unknown client.
	if !i.hasClient(q.Get("client_id")) {
		http.Error(w, "invalid_request: the client_id parameter names no registered client", http.StatusBadRequest)
		return
	}

	target, err := url.Parse(redirectURI)
	if redirectURI == "" || err != nil || !target.IsAbs() {
		http.Error(w, "invalid_request: the redirect_uri parameter is missing or not an absolute URL", http.StatusBadRequest)
		return
	}

	result := target.Query()
	if state := q.Get("state"); state != "" {
		result.Set("state", state)
	}

	code, problem := i.authorize(q)
	if problem != "" {
		result.Set("error", problem)
	} else {
		result.Set("code", code)
	}

	target.RawQuery = result.Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

// authorize checks an authorization request and mints its code, or returns
// the OAuth error code to redirect with.
func (i *Issuer) authorize(q url.Values) (code, problem string) {
	if q.Get("response_type") != "code" {
		return "", "unsupported_response_type"
	}

	challenge := q.Get("code_challenge")
	if challenge != "" && q.Get("code_challenge_method") != "S256" {
		return "", "invalid_request"
	}

	i.mu.Lock()
	defer i.mu.Unlock()

	code, reason := i.issueCode(q.Get("client_id"), q.Get("redirect_uri"), strings.Fields(q.Get("scope")), challenge)
	if reason != "" {
		return "", "invalid_scope"
	}

	return code, ""
}

func (i *Issuer) hasClient(id string) bool {
	i.mu.Lock()
	defer i.mu.Unlock()

	_, ok := i.clients[id]

	return ok
}
