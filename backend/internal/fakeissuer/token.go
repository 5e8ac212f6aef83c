package fakeissuer

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// maxFormBytes caps request bodies, which are small form posts.
const maxFormBytes = 1 << 20

// Grant types served by the token endpoint.
const (
	grantRefreshToken      = "refresh_token"
	grantClientCredentials = "client_credentials"
	grantAuthorizationCode = "authorization_code"
)

// tokenResult is the processed outcome of a token request: a JSON success
// body or an OAuth error.
type tokenResult struct {
	body map[string]any
	err  *oauthError
}

// handleToken serves the token endpoint and applies queued faults around
// the real processing.
func (i *Issuer) handleToken(w http.ResponseWriter, r *http.Request) {
	if oerr := parsePost(w, r); oerr != nil {
		writeOAuthError(w, oerr)
		return
	}

	grantType := r.PostForm.Get("grant_type")

	i.mu.Lock()
	i.countGrant(grantType)
	fault, faulted := i.takeFault(grantTarget(grantType))
	i.mu.Unlock()

	var kind FaultKind
	if faulted {
		kind = fault.Kind
	}

	rotate := true
	if faulted && fault.Phase == BeforeProcessing {
		if !i.wait(r, fault.Delay) {
			i.recordNotProcessed(r, grantType, fault.Kind)
			return
		}

		switch {
		case fault.Kind == FaultDelay:
			faulted = false
		case fault.Kind.shapesTokenBody():
			rotate = false
		default:
			i.recordNotProcessed(r, grantType, fault.Kind)
			writeFault(w, fault, unstoredTokenBody())
			return
		}
	}

	result := i.processToken(r, grantType, rotate, kind)

	if faulted && fault.Phase == AfterProcessing {
		if !i.wait(r, fault.Delay) {
			return
		}
		if fault.Kind == FaultDelay {
			faulted = false
		}
	}

	switch {
	case !faulted || result.err != nil && fault.Kind.shapesTokenBody():
		writeTokenResult(w, result)
	case fault.Kind.shapesTokenBody():
		shapeRefreshToken(result.body, fault.Kind)
		writeTokenResult(w, result)
	default:
		writeFault(w, fault, result.encode())
	}
}

// parsePost rejects anything but a form POST and parses the form.
func parsePost(w http.ResponseWriter, r *http.Request) *oauthError {
	if r.Method != http.MethodPost {
		return invalidRequest("The endpoint accepts only POST.")
	}

	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		return invalidRequest("The request body is not a valid form.")
	}

	if len(r.PostForm) == 0 {
		return invalidRequest("The request body is empty.")
	}

	return nil
}

// grantTarget maps a grant_type to the fault target that matches it.
func grantTarget(grantType string) Target {
	switch grantType {
	case grantRefreshToken:
		return TargetRefreshToken
	case grantClientCredentials:
		return TargetClientCredentials
	case grantAuthorizationCode:
		return TargetAuthorizationCode
	}

	return TargetAnyGrant
}

// countGrant counts an arriving token request. The caller holds i.mu.
func (i *Issuer) countGrant(grantType string) {
	switch grantType {
	case grantRefreshToken:
		i.stats.RefreshRequests++
	case grantClientCredentials:
		i.stats.ClientCredentialsRequests++
	case grantAuthorizationCode:
		i.stats.AuthorizationCodeRequests++
	}
}

// recordNotProcessed logs a refresh request that a fault responded to before
// processing. Client authentication runs only to fill in the record.
func (i *Issuer) recordNotProcessed(r *http.Request, grantType string, kind FaultKind) {
	if grantType != grantRefreshToken {
		return
	}

	i.mu.Lock()
	defer i.mu.Unlock()

	c, method, _ := i.authenticateClient(r)
	rec := RefreshRecord{
		AuthMethod:  method,
		Fingerprint: Fingerprint(r.PostForm.Get("refresh_token")),
		Outcome:     OutcomeNotProcessed,
		Fault:       kind,
	}
	if c != nil {
		rec.ClientID = c.id
	}

	i.recordRefresh(rec)
}

// processToken authenticates the client and runs the grant. rotate false
// keeps a presented refresh token valid. kind is the applied fault, for the
// refresh record.
func (i *Issuer) processToken(r *http.Request, grantType string, rotate bool, kind FaultKind) tokenResult {
	i.mu.Lock()
	defer i.mu.Unlock()

	c, method, oerr := i.authenticateClient(r)

	if grantType == grantRefreshToken {
		return i.processRefresh(r, c, method, oerr, rotate, kind)
	}

	if oerr != nil {
		return tokenResult{err: oerr}
	}

	var pair tokenPair
	switch grantType {
	case grantClientCredentials:
		scopes := strings.Fields(r.PostForm.Get("scope"))
		audiences := splitParameter(r.PostForm["audience"])
		pair, oerr = i.clientCredentials(c, scopes, audiences)
	case grantAuthorizationCode:
		pair, oerr = i.exchangeCode(c, r.PostForm.Get("code"),
			r.PostForm.Get("redirect_uri"), r.PostForm.Get("code_verifier"))
	case "":
		oerr = invalidRequest("The grant_type parameter is missing.")
	default:
		// fosite v0.49.0 sends invalid_request, not unsupported_grant_type,
		// when no handler serves the grant type.
		oerr = invalidRequest("The grant_type " + quote(grantType) + " is not supported.")
	}

	if oerr != nil {
		return tokenResult{err: oerr}
	}

	return tokenResult{body: i.tokenBody(pair)}
}

// processRefresh runs the refresh_token grant and records it. The caller
// holds i.mu.
func (i *Issuer) processRefresh(r *http.Request, c *client, method string, authErr *oauthError, rotate bool, kind FaultKind) tokenResult {
	presented := r.PostForm.Get("refresh_token")
	rec := RefreshRecord{AuthMethod: method, Fingerprint: Fingerprint(presented), Fault: kind}

	if authErr != nil {
		rec.Outcome = OutcomeInvalidClient
		i.recordRefresh(rec)
		return tokenResult{err: authErr}
	}
	rec.ClientID = c.id

	if presented == "" {
		rec.Outcome = OutcomeInvalidRequest
		i.recordRefresh(rec)
		return tokenResult{err: invalidRequest("The refresh_token parameter is missing.")}
	}

	res := i.refresh(presented, c.id, rotate && i.settings.rotate)
	rec.Outcome = res.outcome
	if res.pair.refresh != nil {
		rec.NewFingerprint = Fingerprint(res.pair.refresh.value)
	}
	i.recordRefresh(rec)

	if res.errCode != "" {
		return tokenResult{err: &oauthError{status: http.StatusBadRequest, code: res.errCode, description: res.errText}}
	}

	return tokenResult{body: i.tokenBody(res.pair)}
}

// tokenBody builds the RFC 6749 section 5.1 response for pair. The caller
// holds i.mu.
func (i *Issuer) tokenBody(pair tokenPair) map[string]any {
	body := map[string]any{
		"access_token": pair.access.value,
		"token_type":   "bearer",
	}

	seconds := int64(pair.access.expiresAt.Sub(pair.access.issuedAt).Seconds())
	switch i.settings.expiresInFormat {
	case ExpiresInNumber:
		body["expires_in"] = seconds
	case ExpiresInString:
		body["expires_in"] = strconv.FormatInt(seconds, 10)
	case ExpiresInNull:
		body["expires_in"] = nil
	case ExpiresInAbsent:
	}

	if len(pair.access.scopes) > 0 {
		body["scope"] = strings.Join(pair.access.scopes, " ")
	}

	if pair.refresh != nil {
		body["refresh_token"] = pair.refresh.value
	}

	return body
}

// unstoredTokenBody returns a token response whose tokens the issuer never
// stored, for faults that respond before processing.
func unstoredTokenBody() []byte {
	body, _ := json.Marshal(map[string]any{
		"access_token":  newTokenValue(prefixAccessToken),
		"token_type":    "bearer",
		"expires_in":    3600,
		"refresh_token": newTokenValue(prefixRefreshToken),
	})

	return body
}

// shapeRefreshToken edits the refresh_token member for a fault kind that
// shapes token bodies.
func shapeRefreshToken(body map[string]any, kind FaultKind) {
	switch kind {
	case FaultMissingRefreshToken:
		delete(body, "refresh_token")
	case FaultEmptyRefreshToken:
		body["refresh_token"] = ""
	case FaultNonStringRefreshToken:
		body["refresh_token"] = 12345
	}
}

// encode returns the JSON the result would be sent as.
func (res tokenResult) encode() []byte {
	if res.err != nil {
		return res.err.encode()
	}

	body, _ := json.Marshal(res.body)

	return body
}

func writeTokenResult(w http.ResponseWriter, res tokenResult) {
	if res.err != nil {
		writeOAuthError(w, res.err)
		return
	}

	writeJSON(w, http.StatusOK, res.encode())
}

func (e *oauthError) encode() []byte {
	body, _ := json.Marshal(map[string]string{"error": e.code, "error_description": e.description})
	return body
}

func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	writeJSON(w, e.status, e.encode())
}

// writeJSON sends body with the no-store headers RFC 6749 section 5.1
// requires on token responses.
func writeJSON(w http.ResponseWriter, status int, body []byte) {
	writeBody(w, status, "application/json;charset=UTF-8", string(body))
}

func writeBody(w http.ResponseWriter, status int, contentType, body string) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}
