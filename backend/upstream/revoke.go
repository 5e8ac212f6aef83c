package upstream

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// newRevocationRequest builds an RFC 7009 revocation request, authenticating
// the client the same way as at the token endpoint.
func newRevocationRequest(ctx context.Context, revocationURL string, creds Credentials, token, hint string) (*http.Request, error) {
	form := url.Values{"token": {token}}
	if hint != "" {
		form.Set("token_type_hint", hint)
	}
	if creds.AuthMethod == AuthClientSecretPost {
		form.Set("client_id", creds.ClientID)
		form.Set("client_secret", creds.ClientSecret)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, revocationURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if creds.AuthMethod != AuthClientSecretPost {
		// RFC 6749 section 2.3.1: both parts are form-encoded before they
		// are joined for Basic authentication.
		req.SetBasicAuth(url.QueryEscape(creds.ClientID), url.QueryEscape(creds.ClientSecret))
	}
	return req, nil
}

// revocationError classifies a non-200 response from a revocation endpoint.
func revocationError(resp *http.Response, secrets ...string) *Error {
	e := &Error{
		Endpoint:   "revocation endpoint",
		Status:     resp.StatusCode,
		RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
	}
	var body struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if data, err := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody)); err == nil {
		_ = json.Unmarshal(data, &body)
	}
	e.Code = sanitize(body.Error, 64, secrets)
	e.Description = sanitize(body.ErrorDescription, maxDescriptionLength, secrets)

	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		e.Class = Transient
	case e.Code != "":
		e.Class = Terminal
	default:
		e.Class = Transient
		e.reason = "response is not an OAuth 2.0 error"
	}
	return e
}

// drainAndClose reads what is left of a body so the connection can be
// reused, and closes it.
func drainAndClose(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	_ = resp.Body.Close()
}
