// Package upstream is the engine's OAuth 2.0 client for the upstream
// authorization server: token requests (refresh, client credentials,
// authorization code), RFC 7009 revocation and RFC 8414 discovery. Every error
// it returns is an *Error that is classified and carries no secret.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-cleanhttp"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Client authentication methods at the token endpoint (RFC 6749 section
// 2.3.1, names from the OAuth 2.0 Dynamic Client Registration registry).
const (
	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"
)

var (
	errMissingAccessToken = errors.New("missing access_token")
	errEmptyRefreshToken  = errors.New("empty refresh_token")
)

// Credentials identify the engine's OAuth 2.0 client at the upstream.
type Credentials struct {
	ClientID     string
	ClientSecret string
	AuthMethod   string
}

// authStyle maps the configured method to x/oauth2's setting.
func (c Credentials) authStyle() oauth2.AuthStyle {
	if c.AuthMethod == AuthClientSecretPost {
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

// Token is a successful token response.
type Token struct {
	AccessToken string
	TokenType   string

	// RefreshToken is the new refresh token, or "" when the upstream did not
	// rotate it and the one sent stays valid.
	RefreshToken string

	// Scope is the scope the upstream granted, or "" when the response has no scope.
	Scope string

	// ExpiresAt is when the access token expires, from expires_in or from the
	// exp claim of a JWT access token; zero when the response has neither.
	ExpiresAt time.Time
}

// Client sends requests to one upstream's token and revocation endpoints.
// It is safe for concurrent use.
type Client struct {
	http     *http.Client
	tokenURL string
	creds    Credentials
}

// TLSOptions configure how the client verifies the upstream.
type TLSOptions struct {
	// CAPEM, when set, replaces the system roots.
	CAPEM string

	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13.
	MinVersion uint16
}

// NewHTTPClient returns a pooled HTTP client with the given TLS settings and
// a per-request timeout.
func NewHTTPClient(opts TLSOptions, timeout time.Duration) (*http.Client, error) {
	transport := cleanhttp.DefaultPooledTransport()
	transport.MaxIdleConnsPerHost = 64
	tlsConfig := &tls.Config{MinVersion: opts.MinVersion}
	if tlsConfig.MinVersion == 0 {
		tlsConfig.MinVersion = tls.VersionTLS12
	}
	if opts.CAPEM != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(opts.CAPEM)) {
			return nil, errors.New("ca_pem contains no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	transport.TLSClientConfig = tlsConfig
	return &http.Client{
		Transport: transport,
		Timeout:   timeout,
		// Token and revocation endpoints must respond directly: following a
		// redirect would resend credentials to another URL.
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}, nil
}

// NewClient returns a client for the token endpoint at tokenURL.
func NewClient(httpClient *http.Client, tokenURL string, creds Credentials) *Client {
	return &Client{http: httpClient, tokenURL: tokenURL, creds: creds}
}

// HTTPClient returns the HTTP client the Client sends with.
func (c *Client) HTTPClient() *http.Client { return c.http }

// Refresh redeems refreshToken (RFC 6749 section 6). On success the returned
// Token's RefreshToken is the replacement, or "" if the upstream kept the old
// one. An error is an *Error; an Ambiguous one means refreshToken may have
// been spent.
func (c *Client) Refresh(ctx context.Context, refreshToken string) (*Token, error) {
	conf := c.oauthConfig()
	ctx, sent := c.traced(ctx)
	raw, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify("token endpoint", err, sent.Load(), refreshToken, c.creds.ClientSecret)
	}

	tok, err := fromOAuth2(raw)
	if err != nil {
		return nil, classify("token endpoint", err, true, refreshToken, c.creds.ClientSecret)
	}
	if tok.RefreshToken == refreshToken {
		// x/oauth2 copies the old refresh token into a response that had
		// none: that means the upstream does not rotate.
		tok.RefreshToken = ""
	}
	return tok, nil
}

// ClientCredentials requests a token for the client itself (RFC 6749
// section 4.4), narrowed to scopes and, when set, to audience (the
// "audience" parameter that Hydra, Auth0 and others accept).
func (c *Client) ClientCredentials(ctx context.Context, scopes, audience []string) (*Token, error) {
	conf := &clientcredentials.Config{
		ClientID:     c.creds.ClientID,
		ClientSecret: c.creds.ClientSecret,
		TokenURL:     c.tokenURL,
		Scopes:       scopes,
		AuthStyle:    c.creds.authStyle(),
	}
	if len(audience) > 0 {
		conf.EndpointParams = map[string][]string{"audience": {strings.Join(audience, " ")}}
	}

	ctx, sent := c.traced(ctx)
	raw, err := conf.Token(ctx)
	if err != nil {
		return nil, classify("token endpoint", err, sent.Load(), c.creds.ClientSecret)
	}
	tok, err := fromOAuth2(raw)
	if err != nil {
		return nil, classify("token endpoint", err, true, c.creds.ClientSecret)
	}
	return tok, nil
}

// ExchangeCode redeems an authorization code with its PKCE verifier
// (RFC 6749 section 4.1.3, RFC 7636).
func (c *Client) ExchangeCode(ctx context.Context, code, verifier, redirectURI string) (*Token, error) {
	conf := c.oauthConfig()
	conf.RedirectURL = redirectURI
	var opts []oauth2.AuthCodeOption
	if verifier != "" {
		opts = append(opts, oauth2.VerifierOption(verifier))
	}

	ctx, sent := c.traced(ctx)
	raw, err := conf.Exchange(ctx, code, opts...)
	if err != nil {
		return nil, classify("token endpoint", err, sent.Load(), code, verifier, c.creds.ClientSecret)
	}
	return fromOAuth2(raw)
}

// oauthConfig returns the x/oauth2 configuration for grants that the
// client redeems.
func (c *Client) oauthConfig() *oauth2.Config {
	return &oauth2.Config{
		ClientID:     c.creds.ClientID,
		ClientSecret: c.creds.ClientSecret,
		Endpoint: oauth2.Endpoint{
			TokenURL:  c.tokenURL,
			AuthStyle: c.creds.authStyle(),
		},
	}
}

// traced returns a context that makes x/oauth2 send with c's HTTP client and
// a flag that turns true once a request has been written in full, which is
// what separates a transient failure from an ambiguous one.
func (c *Client) traced(ctx context.Context) (context.Context, *atomic.Bool) {
	sent := &atomic.Bool{}
	trace := &httptrace.ClientTrace{
		WroteRequest: func(info httptrace.WroteRequestInfo) {
			if info.Err == nil {
				sent.Store(true)
			}
		},
	}
	ctx = httptrace.WithClientTrace(ctx, trace)
	return context.WithValue(ctx, oauth2.HTTPClient, c.http), sent
}

// fromOAuth2 converts and checks an x/oauth2 token.
func fromOAuth2(raw *oauth2.Token) (*Token, error) {
	if raw.AccessToken == "" {
		return nil, errMissingAccessToken
	}
	tok := &Token{
		AccessToken:  raw.AccessToken,
		TokenType:    raw.TokenType,
		RefreshToken: raw.RefreshToken,
		ExpiresAt:    raw.Expiry,
	}
	// x/oauth2 treats an empty refresh_token like an absent one; a server
	// that sends "" has spent the old token without a replacement.
	if value, present := raw.Extra("refresh_token").(string); present && value == "" {
		return nil, errEmptyRefreshToken
	}
	if scope, ok := raw.Extra("scope").(string); ok {
		tok.Scope = scope
	}
	if tok.ExpiresAt.IsZero() {
		tok.ExpiresAt = jwtExpiry(raw.AccessToken)
	}
	return tok, nil
}

// maxNumericDate is 9999-12-31T23:59:59Z in Unix seconds. A larger exp
// claim is treated as absent, which also keeps the conversion to int64 safe.
const maxNumericDate = 253402300799

// jwtExpiry returns the exp claim of a JWT access token (RFC 9068), or zero
// for an opaque token. The signature is not checked: the value only bounds
// how long a lease may last, and the upstream is the party that signed it.
func jwtExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	// RFC 7515 forbids padding, but some issuers send it.
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &claims) != nil {
		return time.Time{}
	}
	// exp is a NumericDate (RFC 7519 section 2), which may have a fraction
	// or an exponent; the fraction is dropped, so the lease ends no later.
	exp, err := claims.Exp.Float64()
	if err != nil || exp < 1 || exp > maxNumericDate {
		return time.Time{}
	}
	return time.Unix(int64(exp), 0)
}

// Revoke revokes token at the RFC 7009 endpoint revocationURL. The upstream
// returns 200 for tokens it does not know, so Revoke returns nil for those
// too. An error is an *Error.
func Revoke(ctx context.Context, httpClient *http.Client, revocationURL string, creds Credentials, token, hint string) error {
	req, err := newRevocationRequest(ctx, revocationURL, creds, token, hint)
	if err != nil {
		return &Error{Class: Terminal, Endpoint: "revocation endpoint", reason: "invalid revocation endpoint URL"}
	}

	resp, err := httpClient.Do(req)
	if err != nil {
		return classify("revocation endpoint", err, false)
	}
	defer drainAndClose(resp)

	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return revocationError(resp, token, creds.ClientSecret)
}

// String returns a form that names the method without the secret.
func (c Credentials) String() string {
	return fmt.Sprintf("client %q (%s)", c.ClientID, c.AuthMethod)
}

// Exchange redeems a grant of another type with extra parameters, such as
// the RFC 8628 device code grant.
func (c *Client) Exchange(ctx context.Context, grantType string, params map[string]string) (*Token, error) {
	conf := c.oauthConfig()
	opts := []oauth2.AuthCodeOption{oauth2.SetAuthURLParam("grant_type", grantType)}
	secrets := []string{c.creds.ClientSecret}
	for key, value := range params {
		opts = append(opts, oauth2.SetAuthURLParam(key, value))
		secrets = append(secrets, value)
	}

	// x/oauth2 always sends a code parameter; an empty one counts as absent
	// (RFC 6749 section 3.1).
	ctx, sent := c.traced(ctx)
	raw, err := conf.Exchange(ctx, "", opts...)
	if err != nil {
		return nil, classify("token endpoint", err, sent.Load(), secrets...)
	}
	return fromOAuth2(raw)
}
