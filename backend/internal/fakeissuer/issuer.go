// Package fakeissuer runs an in-process OAuth 2.0 authorization server for
// unit tests. It models the token behaviour of Ory Hydra v2.3.0: refresh
// tokens rotate on every use, a spent refresh token revokes its whole family,
// and revocation works on request families. Tests queue faults (delays,
// resets, error pages, malformed bodies) to prove how a client survives them.
//
// The server listens on 127.0.0.1 only. It never logs, so no token or client
// secret can leave it except in HTTP responses.
package fakeissuer

import (
	"crypto/tls"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Endpoint paths served by the issuer.
const (
	pathToken         = "/token"
	pathRevoke        = "/revoke"
	pathIntrospect    = "/introspect"
	pathAuthorize     = "/authorize"
	pathJWKS          = "/.well-known/jwks.json"
	pathOpenIDConfig  = "/.well-known/openid-configuration"
	pathOAuthMetadata = "/.well-known/oauth-authorization-server"
)

// Defaults of Hydra v2.3.0 (ttl.access_token, ttl.refresh_token and
// ttl.auth_code).
const (
	defaultAccessTokenLifetime  = time.Hour
	defaultRefreshTokenLifetime = 720 * time.Hour
	authorizationCodeLifetime   = 10 * time.Minute
)

// Issuer is a fake authorization server started by New. All methods are safe
// for concurrent use.
type Issuer struct {
	tb     testing.TB
	server *httptest.Server
	done   chan struct{}

	// mu guards everything below, including the settings that have setters.
	mu       sync.Mutex
	settings settings
	clients  map[string]*client
	tokens   map[string]*token
	codes    map[string]*authorizationCode
	faults   []*queuedFault
	stats    Stats
	log      []RefreshRecord
}

// settings is the configuration that options and setters change.
type settings struct {
	omitRevocation       bool
	graceWindow          time.Duration
	graceReuses          int
	accessTokenLifetime  time.Duration
	refreshTokenLifetime time.Duration
	expiresInFormat      ExpiresInFormat
	now                  func() time.Time
	useTLS               bool
	rotate               bool
}

// Option configures an Issuer in New.
type Option func(*settings)

// WithoutRevocationEndpoint omits revocation_endpoint from the discovery
// documents and stops serving /revoke, like an upstream without RFC 7009.
func WithoutRevocationEndpoint() Option {
	return func(s *settings) { s.omitRevocation = true }
}

// WithGraceWindow lets a spent refresh token be used again for d after its
// first use, like oauth2.grant.refresh_token.rotation_grace_period of Hydra
// v2.3.0, which caps it at 5 minutes. Each reuse inside the window returns a
// new pair and keeps the family. A window above 0 also selects Hydra's
// graceful rotation, which revokes only the access token issued with the
// presented refresh token. One reuse is allowed unless WithGraceReuses
// changes it. The default window is 0, which means strict reuse detection.
func WithGraceWindow(d time.Duration) Option {
	return func(s *settings) { s.graceWindow = d }
}

// UnlimitedGraceReuses, passed to WithGraceReuses, allows any number of reuses
// inside the grace window, as Hydra v2.3.0 does.
const UnlimitedGraceReuses = -1

// WithGraceReuses sets how many times a spent refresh token may be reused
// inside the grace window (default 1).
func WithGraceReuses(n int) Option {
	return func(s *settings) { s.graceReuses = n }
}

// WithAccessTokenLifetime sets the lifetime of new access tokens (default 1h).
func WithAccessTokenLifetime(d time.Duration) Option {
	return func(s *settings) { s.accessTokenLifetime = d }
}

// WithRefreshTokenLifetime sets the lifetime of new refresh tokens (default
// 720h). A rotation issues a token with a new lifetime. Zero or less means
// refresh tokens never expire.
func WithRefreshTokenLifetime(d time.Duration) Option {
	return func(s *settings) { s.refreshTokenLifetime = d }
}

// WithExpiresInFormat sets how token responses send expires_in (default
// ExpiresInNumber).
func WithExpiresInFormat(f ExpiresInFormat) Option {
	return func(s *settings) { s.expiresInFormat = f }
}

// WithClock replaces time.Now for token expiry, code expiry and the grace
// window. now must be safe for concurrent use.
func WithClock(now func() time.Time) Option {
	return func(s *settings) { s.now = now }
}

// WithTLS serves HTTPS with the httptest certificate for 127.0.0.1. Use
// Client or CertificatePEM to trust it.
func WithTLS() Option {
	return func(s *settings) { s.useTLS = true }
}

// WithoutRotation models an upstream that does not rotate refresh tokens: a
// refresh returns a new access token and no refresh_token, which RFC 6749
// section 6 allows, and the presented refresh token stays valid.
func WithoutRotation() Option {
	return func(s *settings) { s.rotate = false }
}

// ExpiresInFormat is the JSON encoding of expires_in in token responses.
type ExpiresInFormat int

// Encodings of expires_in seen from real servers.
const (
	// ExpiresInNumber sends a JSON number, as RFC 6749 requires.
	ExpiresInNumber ExpiresInFormat = iota
	// ExpiresInString sends the seconds as a JSON string, for example "3600".
	ExpiresInString
	// ExpiresInNull sends JSON null.
	ExpiresInNull
	// ExpiresInAbsent leaves expires_in out of the response.
	ExpiresInAbsent
)

// New starts an issuer on 127.0.0.1 and registers its shutdown with
// tb.Cleanup. Shutdown cuts short any fault delay still running.
func New(tb testing.TB, opts ...Option) *Issuer {
	tb.Helper()

	s := settings{
		graceReuses:          1,
		accessTokenLifetime:  defaultAccessTokenLifetime,
		refreshTokenLifetime: defaultRefreshTokenLifetime,
		now:                  time.Now,
		rotate:               true,
	}
	for _, opt := range opts {
		opt(&s)
	}

	i := &Issuer{
		tb:       tb,
		done:     make(chan struct{}),
		settings: s,
		clients:  make(map[string]*client),
		tokens:   make(map[string]*token),
		codes:    make(map[string]*authorizationCode),
	}

	i.server = httptest.NewUnstartedServer(i.routes())
	if s.useTLS {
		i.server.StartTLS()
	} else {
		i.server.Start()
	}

	tb.Cleanup(func() {
		close(i.done)
		i.server.Close()
	})

	return i
}

// routes builds the HTTP handler. /revoke is left out when the upstream
// is configured without a revocation endpoint, so it returns 404.
func (i *Issuer) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc(pathOpenIDConfig, i.handleDiscovery)
	mux.HandleFunc(pathOAuthMetadata, i.handleDiscovery)
	mux.HandleFunc(pathJWKS, handleJWKS)
	mux.HandleFunc(pathToken, i.handleToken)
	mux.HandleFunc(pathIntrospect, i.handleIntrospect)
	mux.HandleFunc(pathAuthorize, i.handleAuthorize)

	if !i.settings.omitRevocation {
		mux.HandleFunc(pathRevoke, i.handleRevoke)
	}

	return mux
}

// URL returns the issuer identifier, for example http://127.0.0.1:40123.
// The discovery documents live under it.
func (i *Issuer) URL() string { return i.server.URL }

// TokenURL returns the token endpoint.
func (i *Issuer) TokenURL() string { return i.server.URL + pathToken }

// RevocationURL returns the RFC 7009 revocation endpoint, even when
// discovery omits it.
func (i *Issuer) RevocationURL() string { return i.server.URL + pathRevoke }

// IntrospectionURL returns the RFC 7662 introspection endpoint.
func (i *Issuer) IntrospectionURL() string { return i.server.URL + pathIntrospect }

// AuthorizationURL returns the authorization endpoint.
func (i *Issuer) AuthorizationURL() string { return i.server.URL + pathAuthorize }

// Client returns a new HTTP client that trusts the issuer's TLS
// certificate. Clients share one transport, so changing a client's Timeout
// or CheckRedirect affects no other caller.
func (i *Issuer) Client() *http.Client {
	c := *i.server.Client()
	return &c
}

// CertificatePEM returns the issuer's TLS certificate in PEM form, or "" when
// the issuer serves plain HTTP.
func (i *Issuer) CertificatePEM() string {
	if i.server.TLS == nil || i.server.Certificate() == nil {
		return ""
	}

	block := &pem.Block{Type: "CERTIFICATE", Bytes: i.server.Certificate().Raw}

	return string(pem.EncodeToMemory(block))
}

// TLSConfig returns a TLS configuration that trusts the issuer, or nil when
// the issuer serves plain HTTP.
func (i *Issuer) TLSConfig() *tls.Config {
	transport, ok := i.server.Client().Transport.(*http.Transport)
	if !ok || i.server.TLS == nil {
		return nil
	}

	return transport.TLSClientConfig.Clone()
}

// SetAccessTokenLifetime changes the lifetime of access tokens issued from now on.
func (i *Issuer) SetAccessTokenLifetime(d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()

	i.settings.accessTokenLifetime = d
}

// SetExpiresInFormat changes how later token responses send expires_in.
func (i *Issuer) SetExpiresInFormat(f ExpiresInFormat) {
	i.mu.Lock()
	defer i.mu.Unlock()

	i.settings.expiresInFormat = f
}

// SetGraceWindow changes the grace window for every refresh token, including
// those already spent, because the window is measured from each token's
// first use.
func (i *Issuer) SetGraceWindow(d time.Duration) {
	i.mu.Lock()
	defer i.mu.Unlock()

	i.settings.graceWindow = d
}

// now returns the issuer's clock reading. The caller holds i.mu.
func (i *Issuer) now() time.Time { return i.settings.now() }
