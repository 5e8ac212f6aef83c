package fakeissuer

import (
	"crypto/subtle"
	"net/http"
	"net/url"
)

// authenticateClient checks the client credentials of a token, revocation or
// introspection request and returns the client and the method it used. The
// caller holds i.mu and has parsed the form.
func (i *Issuer) authenticateClient(r *http.Request) (*client, string, *oauthError) {
	id, secret, method, oerr := clientCredentialsOf(r)
	if oerr != nil {
		return nil, method, oerr
	}

	c, ok := i.clients[id]
	if !ok || subtle.ConstantTimeCompare([]byte(c.secret), []byte(secret)) != 1 {
		return nil, method, invalidClient("Client authentication failed: unknown client or wrong secret.")
	}

	if c.authMethod != "" && c.authMethod != method {
		return nil, method, invalidClient("The client must authenticate with " + c.authMethod + ".")
	}

	return c, method, nil
}

// clientCredentialsOf extracts the client id and secret from the
// Authorization header (client_secret_basic) or the form
// (client_secret_post). RFC 6749 section 2.3 forbids using both.
func clientCredentialsOf(r *http.Request) (id, secret, method string, oerr *oauthError) {
	formID := r.PostForm.Get("client_id")
	formSecret := r.PostForm.Get("client_secret")

	basicID, basicSecret, hasBasic := r.BasicAuth()
	if !hasBasic {
		if formID == "" || formSecret == "" {
			return "", "", "", invalidClient("Client authentication is required.")
		}
		return formID, formSecret, AuthMethodPost, nil
	}

	if formSecret != "" {
		return "", "", AuthMethodBasic, invalidRequest("The client used more than one authentication method.")
	}

	// RFC 6749 section 2.3.1 form-encodes the id and secret before Base64.
	id, errID := url.QueryUnescape(basicID)
	secret, errSecret := url.QueryUnescape(basicSecret)
	if errID != nil || errSecret != nil {
		return "", "", AuthMethodBasic, invalidClient("The Authorization header is not form-encoded.")
	}

	if formID != "" && formID != id {
		return "", "", AuthMethodBasic, invalidRequest("The client_id parameter does not match the Authorization header.")
	}

	return id, secret, AuthMethodBasic, nil
}

// invalidClient returns a 401 invalid_client error. Like Hydra v2.3.0 it
// sends no WWW-Authenticate header, although RFC 6749 section 5.2 requires
// one after client_secret_basic.
func invalidClient(description string) *oauthError {
	return &oauthError{status: http.StatusUnauthorized, code: "invalid_client", description: description}
}
