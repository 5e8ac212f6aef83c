package devstack

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Grant types, response types and client authentication methods as Hydra
// and RFC 6749 spell them.
const (
	GrantAuthorizationCode = "authorization_code"
	GrantRefreshToken      = "refresh_token"
	GrantClientCredentials = "client_credentials"

	AuthClientSecretBasic = "client_secret_basic"
	AuthClientSecretPost  = "client_secret_post"

	// ScopeOfflineAccess is the scope that makes Hydra issue a refresh token.
	ScopeOfflineAccess = "offline_access"
)

// ClientOptions configures CreateClient. Empty fields get the defaults named
// on each field.
type ClientOptions struct {
	ID     string // empty: Hydra generates one
	Secret string // empty: Hydra generates one
	Name   string

	// GrantTypes defaults to authorization_code, refresh_token and
	// client_credentials.
	GrantTypes []string

	// ResponseTypes defaults to code.
	ResponseTypes []string

	// Scopes are the scopes the client may request.
	Scopes []string

	// Audience lists the audiences the client may request.
	Audience []string

	// RedirectURIs defaults to one loopback URL on Hydra's public port that
	// nothing serves; SeedRefreshToken stops at the redirect to it.
	RedirectURIs []string

	// TokenEndpointAuthMethod defaults to client_secret_basic.
	TokenEndpointAuthMethod string
}

// OAuth2Client is a client registered in Hydra, including its secret.
type OAuth2Client struct {
	ID                      string
	Secret                  string
	Scopes                  []string
	Audience                []string
	RedirectURIs            []string
	GrantTypes              []string
	TokenEndpointAuthMethod string
}

// String describes the client without its secret.
func (c OAuth2Client) String() string {
	return fmt.Sprintf("client %s (scopes %q, audience %q, auth %s)",
		c.ID, strings.Join(c.Scopes, " "), c.Audience, c.TokenEndpointAuthMethod)
}

// GoString keeps %#v from printing the secret.
func (c OAuth2Client) GoString() string { return c.String() }

// Token is a token endpoint response.
type Token struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	TokenType    string
	Scope        string
	ExpiresIn    time.Duration
}

// String describes the token with every credential redacted.
func (t Token) String() string {
	return fmt.Sprintf("token (access %s, refresh %s, scope %q, expires in %s)",
		Redact(t.AccessToken), Redact(t.RefreshToken), t.Scope, t.ExpiresIn)
}

// GoString keeps %#v from printing credentials.
func (t Token) GoString() string { return t.String() }

// Introspection is the response of Hydra's admin introspection endpoint
// (RFC 7662) for one token.
type Introspection struct {
	Active    bool
	Scope     string // space-separated
	ClientID  string
	Subject   string
	Audience  []string
	TokenUse  string // access_token or refresh_token
	ExpiresAt time.Time
	IssuedAt  time.Time
}

// Scopes returns Scope split on spaces.
func (i Introspection) Scopes() []string { return strings.Fields(i.Scope) }

// OAuthError is an error response from Hydra's token, revocation or admin
// endpoints.
type OAuthError struct {
	StatusCode  int
	Code        string // the "error" member, such as invalid_grant
	Description string // the "error_description" member
}

func (e *OAuthError) Error() string {
	if e.Description == "" {
		return fmt.Sprintf("hydra returned HTTP %d: %s", e.StatusCode, e.Code)
	}
	return fmt.Sprintf("hydra returned HTTP %d: %s: %s", e.StatusCode, e.Code, e.Description)
}

// IsOAuthError reports whether err is an OAuthError with the given code.
func IsOAuthError(err error, code string) bool {
	var oauthErr *OAuthError
	return errors.As(err, &oauthErr) && oauthErr.Code == code
}

// hydraClientJSON is Hydra's OAuth2Client object.
type hydraClientJSON struct {
	ClientID                string   `json:"client_id,omitempty"`
	ClientSecret            string   `json:"client_secret,omitempty"`
	ClientName              string   `json:"client_name,omitempty"`
	GrantTypes              []string `json:"grant_types"`
	ResponseTypes           []string `json:"response_types"`
	Scope                   string   `json:"scope"`
	Audience                []string `json:"audience"`
	RedirectURIs            []string `json:"redirect_uris"`
	TokenEndpointAuthMethod string   `json:"token_endpoint_auth_method"`
}

// CreateClient registers an OAuth 2.0 client through the admin API and
// returns it with the secret Hydra holds for it.
func (h *Hydra) CreateClient(ctx context.Context, opts ClientOptions) (OAuth2Client, error) {
	body := hydraClientJSON{
		ClientID:                opts.ID,
		ClientSecret:            opts.Secret,
		ClientName:              opts.Name,
		GrantTypes:              opts.GrantTypes,
		ResponseTypes:           opts.ResponseTypes,
		Scope:                   strings.Join(opts.Scopes, " "),
		Audience:                opts.Audience,
		RedirectURIs:            opts.RedirectURIs,
		TokenEndpointAuthMethod: opts.TokenEndpointAuthMethod,
	}
	if body.GrantTypes == nil {
		body.GrantTypes = []string{GrantAuthorizationCode, GrantRefreshToken, GrantClientCredentials}
	}
	if body.ResponseTypes == nil {
		body.ResponseTypes = []string{"code"}
	}
	if body.Audience == nil {
		body.Audience = []string{}
	}
	if body.RedirectURIs == nil {
		body.RedirectURIs = []string{h.harnessRedirectURI()}
	}
	if body.TokenEndpointAuthMethod == "" {
		body.TokenEndpointAuthMethod = AuthClientSecretBasic
	}

	var created hydraClientJSON
	if err := h.adminJSON(ctx, http.MethodPost, "/admin/clients", body, &created); err != nil {
		return OAuth2Client{}, fmt.Errorf("create hydra client: %w", err)
	}
	return OAuth2Client{
		ID:                      created.ClientID,
		Secret:                  created.ClientSecret,
		Scopes:                  strings.Fields(created.Scope),
		Audience:                created.Audience,
		RedirectURIs:            created.RedirectURIs,
		GrantTypes:              created.GrantTypes,
		TokenEndpointAuthMethod: created.TokenEndpointAuthMethod,
	}, nil
}

// harnessRedirectURI returns the loopback redirect URI on Hydra's public
// port that nothing serves; SeedRefreshToken stops at the redirect to it.
func (h *Hydra) harnessRedirectURI() string { return h.PublicURL + "/devstack/callback" }

// DeleteClient removes a client through the admin API. Tokens issued to it
// stop working.
func (h *Hydra) DeleteClient(ctx context.Context, clientID string) error {
	path := "/admin/clients/" + url.PathEscape(clientID)
	if err := h.adminJSON(ctx, http.MethodDelete, path, nil, nil); err != nil {
		return fmt.Errorf("delete hydra client %s: %w", clientID, err)
	}
	return nil
}

// SeedOptions configures SeedRefreshToken.
type SeedOptions struct {
	// Scopes are requested and granted; offline_access is added when
	// missing. Empty means every scope of the client.
	Scopes []string

	// Audience is requested and granted; empty means the client's audience.
	Audience []string

	// Subject is the user the login is accepted for; empty means
	// "ci-tokens-operator".
	Subject string
}

// SeedRefreshToken runs Hydra's authorization code flow with no human. It
// opens the authorization endpoint with a cookie jar and accepts the login
// and consent requests through the admin API. Then it follows the redirects
// to the client's redirect URI and exchanges the code for tokens. The result
// carries a refresh token for the scopes and audience granted.
func (h *Hydra) SeedRefreshToken(ctx context.Context, client OAuth2Client, opts SeedOptions) (Token, error) {
	if len(client.RedirectURIs) == 0 {
		return Token{}, errors.New("seed refresh token: the client has no redirect URI")
	}
	scopes := opts.Scopes
	if len(scopes) == 0 {
		scopes = client.Scopes
	}
	if !slices.Contains(scopes, ScopeOfflineAccess) {
		scopes = append(slices.Clone(scopes), ScopeOfflineAccess)
	}
	audience := opts.Audience
	if len(audience) == 0 {
		audience = client.Audience
	}
	subject := opts.Subject
	if subject == "" {
		subject = "ci-tokens-operator"
	}

	flow, err := newBrowser()
	if err != nil {
		return Token{}, err
	}
	redirectURI := client.RedirectURIs[0]
	state, err := randomHex(16)
	if err != nil {
		return Token{}, err
	}
	authURL := h.PublicURL + "/oauth2/auth?" + url.Values{
		"client_id":     {client.ID},
		"response_type": {"code"},
		"scope":         {strings.Join(scopes, " ")},
		"audience":      {strings.Join(audience, " ")},
		"redirect_uri":  {redirectURI},
		"state":         {state},
	}.Encode()

	// Login: the authorization endpoint redirects to the login URL with a
	// challenge, which the admin API accepts for the subject.
	landing, err := flow.follow(ctx, authURL, redirectURI)
	if err != nil {
		return Token{}, fmt.Errorf("seed refresh token: open authorization endpoint: %w", err)
	}
	loginChallenge := landing.Query().Get("login_challenge")
	if loginChallenge == "" {
		if err := redirectError(landing); err != nil {
			return Token{}, fmt.Errorf("seed refresh token: %w", err)
		}
		return Token{}, fmt.Errorf("seed refresh token: expected a login redirect, got %s", landing.Redacted())
	}
	var accepted struct {
		RedirectTo string `json:"redirect_to"`
	}
	loginBody := map[string]any{"subject": subject, "remember": false}
	path := "/admin/oauth2/auth/requests/login/accept?login_challenge=" + url.QueryEscape(loginChallenge)
	if err := h.adminJSON(ctx, http.MethodPut, path, loginBody, &accepted); err != nil {
		return Token{}, fmt.Errorf("seed refresh token: accept login: %w", err)
	}

	// Consent: the same dance, granting the scopes and audience.
	landing, err = flow.follow(ctx, accepted.RedirectTo, redirectURI)
	if err != nil {
		return Token{}, fmt.Errorf("seed refresh token: return from login: %w", err)
	}
	consentChallenge := landing.Query().Get("consent_challenge")
	if consentChallenge == "" {
		if err := redirectError(landing); err != nil {
			return Token{}, fmt.Errorf("seed refresh token: %w", err)
		}
		return Token{}, fmt.Errorf("seed refresh token: expected a consent redirect, got %s", landing.Redacted())
	}
	consentBody := map[string]any{
		"grant_scope":                 scopes,
		"grant_access_token_audience": audience,
		"remember":                    false,
	}
	path = "/admin/oauth2/auth/requests/consent/accept?consent_challenge=" + url.QueryEscape(consentChallenge)
	if err := h.adminJSON(ctx, http.MethodPut, path, consentBody, &accepted); err != nil {
		return Token{}, fmt.Errorf("seed refresh token: accept consent: %w", err)
	}

	// The last redirect carries the code to the redirect URI.
	landing, err = flow.follow(ctx, accepted.RedirectTo, redirectURI)
	if err != nil {
		return Token{}, fmt.Errorf("seed refresh token: return from consent: %w", err)
	}
	if err := redirectError(landing); err != nil {
		return Token{}, fmt.Errorf("seed refresh token: %w", err)
	}
	query := landing.Query()
	if query.Get("state") != state {
		return Token{}, errors.New("seed refresh token: the redirect carries a different state")
	}
	code := query.Get("code")
	if code == "" {
		return Token{}, errors.New("seed refresh token: the redirect carries no code")
	}

	token, err := h.tokenRequest(ctx, client, url.Values{
		"grant_type":   {GrantAuthorizationCode},
		"code":         {code},
		"redirect_uri": {redirectURI},
	})
	if err != nil {
		return Token{}, fmt.Errorf("seed refresh token: exchange code: %w", err)
	}
	if token.RefreshToken == "" {
		return Token{}, errors.New("seed refresh token: hydra returned no refresh token")
	}
	return token, nil
}

// Refresh spends a refresh token at the token endpoint, as any client
// outside Vault would. Hydra returns a new refresh token and invalidates the
// spent one.
func (h *Hydra) Refresh(ctx context.Context, client OAuth2Client, refreshToken string) (Token, error) {
	return h.tokenRequest(ctx, client, url.Values{
		"grant_type":    {GrantRefreshToken},
		"refresh_token": {refreshToken},
	})
}

// ClientCredentials requests a token with the client credentials grant.
// Empty scopes or audience leave the parameter out.
func (h *Hydra) ClientCredentials(ctx context.Context, client OAuth2Client, scopes, audience []string) (Token, error) {
	form := url.Values{"grant_type": {GrantClientCredentials}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	if len(audience) > 0 {
		form.Set("audience", strings.Join(audience, " "))
	}
	return h.tokenRequest(ctx, client, form)
}

// RevokeToken revokes an access or refresh token at the RFC 7009 endpoint.
// Revoking a refresh token revokes its whole grant.
func (h *Hydra) RevokeToken(ctx context.Context, client OAuth2Client, token string) error {
	resp, err := h.postForm(ctx, h.RevocationEndpoint(), client, url.Values{"token": {token}})
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("revoke token: %w", decodeOAuthError(resp))
	}
	return nil
}

// Introspect sends a token to Hydra's admin introspection endpoint. An
// unknown, revoked or expired token returns Active false and no error.
func (h *Hydra) Introspect(ctx context.Context, token string) (Introspection, error) {
	form := url.Values{"token": {token}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		h.AdminURL+"/admin/oauth2/introspect", strings.NewReader(form.Encode()))
	if err != nil {
		return Introspection{}, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return Introspection{}, fmt.Errorf("introspect token: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Introspection{}, fmt.Errorf("introspect token: %w", decodeOAuthError(resp))
	}

	var raw struct {
		Active   bool     `json:"active"`
		Scope    string   `json:"scope"`
		ClientID string   `json:"client_id"`
		Subject  string   `json:"sub"`
		Audience []string `json:"aud"`
		TokenUse string   `json:"token_use"`
		Exp      int64    `json:"exp"`
		Iat      int64    `json:"iat"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return Introspection{}, fmt.Errorf("introspect token: decode response: %w", err)
	}
	result := Introspection{
		Active:   raw.Active,
		Scope:    raw.Scope,
		ClientID: raw.ClientID,
		Subject:  raw.Subject,
		Audience: raw.Audience,
		TokenUse: raw.TokenUse,
	}
	if raw.Exp != 0 {
		result.ExpiresAt = time.Unix(raw.Exp, 0).UTC()
	}
	if raw.Iat != 0 {
		result.IssuedAt = time.Unix(raw.Iat, 0).UTC()
	}
	return result, nil
}

// tokenRequest posts form to the token endpoint with the client's
// authentication and decodes the response.
func (h *Hydra) tokenRequest(ctx context.Context, client OAuth2Client, form url.Values) (Token, error) {
	resp, err := h.postForm(ctx, h.TokenEndpoint(), client, form)
	if err != nil {
		return Token{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return Token{}, decodeOAuthError(resp)
	}

	var raw struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
		IDToken      string `json:"id_token"`
		TokenType    string `json:"token_type"`
		Scope        string `json:"scope"`
		ExpiresIn    int64  `json:"expires_in"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		return Token{}, fmt.Errorf("decode token response: %w", err)
	}
	return Token{
		AccessToken:  raw.AccessToken,
		RefreshToken: raw.RefreshToken,
		IDToken:      raw.IDToken,
		TokenType:    raw.TokenType,
		Scope:        raw.Scope,
		ExpiresIn:    time.Duration(raw.ExpiresIn) * time.Second,
	}, nil
}

// postForm posts form to endpoint, authenticating as client with its
// token_endpoint_auth_method.
func (h *Hydra) postForm(ctx context.Context, endpoint string, client OAuth2Client, form url.Values) (*http.Response, error) {
	form = cloneValues(form)
	method := client.TokenEndpointAuthMethod
	switch method {
	case AuthClientSecretPost:
		form.Set("client_id", client.ID)
		form.Set("client_secret", client.Secret)
	case "none":
		form.Set("client_id", client.ID)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if method == "" || method == AuthClientSecretBasic {
		// RFC 6749 section 2.3.1: both parts are form-encoded first.
		req.SetBasicAuth(url.QueryEscape(client.ID), url.QueryEscape(client.Secret))
	}
	return h.httpClient.Do(req)
}

// cloneValues returns a copy of form so that adding client credentials
// never changes the caller's values.
func cloneValues(form url.Values) url.Values {
	out := make(url.Values, len(form)+2)
	for key, values := range form {
		out[key] = slices.Clone(values)
	}
	return out
}

// adminJSON sends a JSON request to the admin API and decodes a JSON
// response into out when out is not nil.
func (h *Hydra) adminJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}

	req, err := http.NewRequestWithContext(ctx, method, h.AdminURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeOAuthError(resp)
	}

	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("decode %s %s response: %w", method, path, err)
	}
	return nil
}

// decodeOAuthError reads Hydra's JSON error body. Hydra's error bodies name
// the problem and never echo a submitted credential.
func decodeOAuthError(resp *http.Response) error {
	var raw struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := json.Unmarshal(data, &raw); err != nil || raw.Error == "" {
		raw.Error = http.StatusText(resp.StatusCode)
	}
	return &OAuthError{StatusCode: resp.StatusCode, Code: raw.Error, Description: raw.Description}
}

// browser follows Hydra's redirects one hop at a time with a cookie jar, so
// that it can stop at the login and consent pages that nothing serves.
type browser struct {
	client *http.Client
}

func newBrowser() (*browser, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	return &browser{client: &http.Client{
		Jar:     jar,
		Timeout: hydraRequestTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}}, nil
}

// follow requests start and follows redirects until one points at the login
// or consent page (a login_challenge or consent_challenge parameter), at
// redirectURI or at Hydra's error page (an error parameter), and returns
// that URL without requesting it.
func (b *browser) follow(ctx context.Context, start, redirectURI string) (*url.URL, error) {
	const maxHops = 10
	next := start
	for range maxHops {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := b.client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		if resp.StatusCode < 300 || resp.StatusCode > 399 {
			return nil, fmt.Errorf("GET %s returned %s, expected a redirect", req.URL.Redacted(), resp.Status)
		}
		location, err := resp.Location()
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", req.URL.Redacted(), err)
		}
		query := location.Query()
		if strings.HasPrefix(location.String(), redirectURI) ||
			query.Has("login_challenge") || query.Has("consent_challenge") ||
			query.Has("error") {
			return location, nil
		}
		next = location.String()
	}
	return nil, fmt.Errorf("more than %d redirects from %s", maxHops, start)
}

// redirectError returns the OAuth 2.0 error that a redirect carries in its
// error and error_description parameters, or nil.
func redirectError(location *url.URL) error {
	query := location.Query()
	if !query.Has("error") {
		return nil
	}
	return &OAuthError{
		StatusCode:  http.StatusFound,
		Code:        query.Get("error"),
		Description: query.Get("error_description"),
	}
}

func randomHex(n int) (string, error) {
	buf := make([]byte, n)
	if _, err := rand.Read(buf); err != nil {
		return "", fmt.Errorf("generate random value: %w", err)
	}
	return hex.EncodeToString(buf), nil
}
