package fakeissuer

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestDiscovery(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name           string
		opts           []Option
		path           string
		wantRevocation bool
	}{
		{name: "openid configuration", path: pathOpenIDConfig, wantRevocation: true},
		{name: "oauth metadata", path: pathOAuthMetadata, wantRevocation: true},
		{name: "without revocation", opts: []Option{WithoutRevocationEndpoint()}, path: pathOpenIDConfig},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := New(t, tt.opts...)
			resp, err := iss.Client().Get(iss.URL() + tt.path)
			if err != nil {
				t.Fatalf("GET %s: %v", tt.path, err)
			}
			defer resp.Body.Close()

			var doc map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
				t.Fatalf("decoding discovery: %v", err)
			}

			wantStrings := map[string]string{
				"issuer":                 iss.URL(),
				"token_endpoint":         iss.TokenURL(),
				"introspection_endpoint": iss.IntrospectionURL(),
				"authorization_endpoint": iss.AuthorizationURL(),
			}
			for key, want := range wantStrings {
				if got := doc[key]; got != want {
					t.Errorf("%s = %v, want %q", key, got, want)
				}
			}

			got, hasRevocation := doc["revocation_endpoint"]
			if hasRevocation != tt.wantRevocation {
				t.Errorf("revocation_endpoint present = %v, want %v", hasRevocation, tt.wantRevocation)
			}
			if tt.wantRevocation && got != iss.RevocationURL() {
				t.Errorf("revocation_endpoint = %v, want %q", got, iss.RevocationURL())
			}

			grants, _ := doc["grant_types_supported"].([]any)
			for _, want := range []string{"authorization_code", "client_credentials", "refresh_token"} {
				if !slices.Contains(grants, any(want)) {
					t.Errorf("grant_types_supported = %v, missing %q", grants, want)
				}
			}
		})
	}
}

func TestRevocationEndpointOmitted(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t, WithoutRevocationEndpoint())
	resp := mustPost(t, iss, pathRevoke, url.Values{"token": {"x"}}, basicAuth)

	if resp.status != http.StatusNotFound {
		t.Errorf("status = %d, want 404", resp.status)
	}
}

func TestClientAuthentication(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		creds      credentials
		restrictTo string
		extraForm  url.Values
		wantStatus int
		wantError  string
	}{
		{name: "basic", creds: basicAuth, wantStatus: 200},
		{name: "post", creds: postAuth, wantStatus: 200},
		{
			name: "basic wrong secret", creds: credentials{testClientID, "wrong", AuthMethodBasic},
			wantStatus: 401, wantError: "invalid_client",
		},
		{
			name: "post wrong secret", creds: credentials{testClientID, "wrong", AuthMethodPost},
			wantStatus: 401, wantError: "invalid_client",
		},
		{
			name: "unknown client", creds: credentials{"nobody", "x", AuthMethodPost},
			wantStatus: 401, wantError: "invalid_client",
		},
		{name: "no credentials", creds: noAuth, wantStatus: 401, wantError: "invalid_client"},
		{
			name: "both methods", creds: basicAuth, extraForm: url.Values{"client_secret": {testClientSecret}},
			wantStatus: 400, wantError: "invalid_request",
		},
		{name: "restricted to post", creds: basicAuth, restrictTo: AuthMethodPost, wantStatus: 401, wantError: "invalid_client"},
		{name: "restricted to basic", creds: postAuth, restrictTo: AuthMethodBasic, wantStatus: 401, wantError: "invalid_client"},
		{name: "restricted and matching", creds: postAuth, restrictTo: AuthMethodPost, wantStatus: 200},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			if tt.restrictTo != "" {
				iss.SetClientAuthMethod(testClientID, tt.restrictTo)
			}

			form := url.Values{"grant_type": {"client_credentials"}}
			for k, v := range tt.extraForm {
				form[k] = v
			}
			resp := mustPost(t, iss, pathToken, form, tt.creds)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if strings.Contains(string(resp.body), testClientSecret) {
				t.Errorf("response body contains the client secret")
			}
		})
	}
}

func TestRefreshRotation(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, []string{"offline_access", "read"})

	access1, refresh1 := refreshOK(t, iss, seed)
	access2, refresh2 := refreshOK(t, iss, refresh1)

	if refresh1 == seed || refresh2 == refresh1 || refresh2 == "" {
		t.Fatalf("refresh tokens did not rotate")
	}

	checks := []struct {
		name  string
		token string
		want  bool
	}{
		{name: "seed spent", token: seed, want: false},
		{name: "first refresh token spent", token: refresh1, want: false},
		{name: "newest refresh token", token: refresh2, want: true},
		{name: "previous access token revoked", token: access1, want: false},
		{name: "newest access token", token: access2, want: true},
	}
	for _, c := range checks {
		if got := iss.Active(c.token); got != c.want {
			t.Errorf("%s: Active = %v, want %v", c.name, got, c.want)
		}
	}

	stats := iss.Stats()
	if stats.RefreshRequests != 2 || stats.Rotations != 2 {
		t.Errorf("RefreshRequests, Rotations = %d, %d, want 2, 2", stats.RefreshRequests, stats.Rotations)
	}

	log := iss.RefreshLog()
	if len(log) != 2 {
		t.Fatalf("len(RefreshLog) = %d, want 2", len(log))
	}
	if log[1].Fingerprint != log[0].NewFingerprint {
		t.Errorf("second request presented %s, want the token issued by the first (%s)",
			log[1].Fingerprint, log[0].NewFingerprint)
	}
	if log[0].Fingerprint != Fingerprint(seed) || log[0].Outcome != OutcomeRotated {
		t.Errorf("first record = %+v, want seed fingerprint and outcome rotated", log[0])
	}
	if got := iss.TimesPresented(seed); got != 1 {
		t.Errorf("TimesPresented(seed) = %d, want 1", got)
	}
}

func TestRefreshScopeAndClient(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name         string
		scope        string
		creds        credentials
		clientScopes []string // replaces the client's allowed scopes after seeding
		wantStatus   int
		wantError    string
		wantScope    string
		wantSpent    bool
	}{
		{name: "narrower scope ignored", scope: "read", creds: basicAuth, wantStatus: 200, wantScope: "offline_access read", wantSpent: true},
		{name: "wider scope ignored", scope: "read write", creds: basicAuth, wantStatus: 200, wantScope: "offline_access read", wantSpent: true},
		{name: "same scope", scope: "offline_access read", creds: basicAuth, wantStatus: 200, wantScope: "offline_access read", wantSpent: true},
		{
			name: "client lost granted scope", creds: basicAuth, clientScopes: []string{"offline_access"},
			wantStatus: 400, wantError: "invalid_scope",
		},
		{name: "other client", creds: otherAuth, wantStatus: 400, wantError: "invalid_grant"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			seed := iss.SeedGrant(testClientID, []string{"offline_access", "read"})
			if tt.clientScopes != nil {
				iss.AddClient(testClientID, testClientSecret, tt.clientScopes, testAudiences)
			}

			form := refreshForm(seed)
			if tt.scope != "" {
				form.Set("scope", tt.scope)
			}
			resp := mustPost(t, iss, pathToken, form, tt.creds)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if got := resp.text("scope"); got != tt.wantScope {
				t.Errorf("scope = %q, want %q", got, tt.wantScope)
			}
			if got := !iss.Active(seed); got != tt.wantSpent {
				t.Errorf("seed spent = %v, want %v", got, tt.wantSpent)
			}
		})
	}
}

func TestRefreshReuseRevokesFamily(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)
	access1, refresh1 := refreshOK(t, iss, seed)
	access2, refresh2 := refreshOK(t, iss, refresh1)

	resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
	if resp.status != http.StatusBadRequest || resp.text("error") != "invalid_grant" {
		t.Fatalf("reuse: status %d error %q, want 400 invalid_grant", resp.status, resp.text("error"))
	}

	for _, tok := range []string{access1, refresh1, access2, refresh2} {
		if iss.Active(tok) {
			t.Errorf("token %s still active after reuse, want the family revoked", Fingerprint(tok))
		}
	}

	resp = mustPost(t, iss, pathToken, refreshForm(refresh2), basicAuth)
	if resp.text("error") != "invalid_grant" {
		t.Errorf("newest token after reuse: error %q, want invalid_grant", resp.text("error"))
	}

	stats := iss.Stats()
	if stats.ReuseDetections != 1 {
		t.Errorf("ReuseDetections = %d, want 1", stats.ReuseDetections)
	}

	log := iss.RefreshLog()
	wantOutcomes := []Outcome{OutcomeRotated, OutcomeRotated, OutcomeReused, OutcomeInvalidGrant}
	if len(log) != len(wantOutcomes) {
		t.Fatalf("len(RefreshLog) = %d, want %d", len(log), len(wantOutcomes))
	}
	for n, want := range wantOutcomes {
		if log[n].Outcome != want {
			t.Errorf("record %d outcome = %s, want %s", n, log[n].Outcome, want)
		}
	}
}

func TestGraceWindow(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		reuses      int
		advance     time.Duration
		attempts    int
		wantOutcome []Outcome
	}{
		{
			name: "one reuse inside window", reuses: 1, advance: 10 * time.Second, attempts: 1,
			wantOutcome: []Outcome{OutcomeGraceRotated},
		},
		{
			name: "second reuse detected", reuses: 1, advance: 10 * time.Second, attempts: 2,
			wantOutcome: []Outcome{OutcomeGraceRotated, OutcomeReused},
		},
		{
			name: "reuse after window", reuses: 1, advance: 61 * time.Second, attempts: 1,
			wantOutcome: []Outcome{OutcomeReused},
		},
		{
			name: "unlimited reuses", reuses: UnlimitedGraceReuses, advance: time.Second, attempts: 3,
			wantOutcome: []Outcome{OutcomeGraceRotated, OutcomeGraceRotated, OutcomeGraceRotated},
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			clock := newFakeClock()
			iss := newTestIssuer(t, WithClock(clock.Now), WithGraceWindow(time.Minute), WithGraceReuses(tt.reuses))
			seed := iss.SeedGrant(testClientID, testScopes)
			_, first := refreshOK(t, iss, seed)
			clock.Advance(tt.advance)

			var issued []string
			for n := 0; n < tt.attempts; n++ {
				resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
				if rt := resp.text("refresh_token"); rt != "" {
					issued = append(issued, rt)
				}
			}

			log := iss.RefreshLog()[1:]
			for n, want := range tt.wantOutcome {
				if log[n].Outcome != want {
					t.Errorf("attempt %d outcome = %q, want %q", n, log[n].Outcome, want)
				}
			}

			familyAlive := tt.wantOutcome[len(tt.wantOutcome)-1] == OutcomeGraceRotated
			if got := iss.Active(first); got != familyAlive {
				t.Errorf("first rotation's refresh token active = %v, want %v", got, familyAlive)
			}
			for _, rt := range issued {
				if got := iss.Active(rt); got != familyAlive {
					t.Errorf("grace-issued refresh token active = %v, want %v", got, familyAlive)
				}
			}
		})
	}
}

func TestRotationRevokesAccessTokens(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name             string
		grace            time.Duration
		wantExtraRevoked bool
	}{
		{name: "strict revokes all", wantExtraRevoked: true},
		{name: "grace revokes pair only", grace: time.Minute, wantExtraRevoked: false},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t, WithGraceWindow(tt.grace))
			seed := iss.SeedGrant(testClientID, testScopes)

			// A response that does not rotate adds an access token to the
			// family without a refresh token of its own.
			iss.InjectFault(Fault{Kind: FaultMissingRefreshToken, Target: TargetRefreshToken})
			extra := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth).text("access_token")
			if !iss.Active(extra) {
				t.Fatalf("access token of the non-rotating response is inactive")
			}

			newAccess, _ := refreshOK(t, iss, seed)

			if got := !iss.Active(extra); got != tt.wantExtraRevoked {
				t.Errorf("extra access token revoked = %v, want %v", got, tt.wantExtraRevoked)
			}
			if !iss.Active(newAccess) {
				t.Errorf("new access token inactive")
			}
		})
	}
}

func TestRefreshTokenExpiry(t *testing.T) {
	t.Parallel()

	clock := newFakeClock()
	iss := newTestIssuer(t, WithClock(clock.Now), WithRefreshTokenLifetime(time.Hour))
	seed := iss.SeedGrant(testClientID, testScopes)

	clock.Advance(59 * time.Minute)
	_, refresh := refreshOK(t, iss, seed)

	// The rotated token has a lifetime of its own.
	clock.Advance(59 * time.Minute)
	if !iss.Active(refresh) {
		t.Fatalf("rotated refresh token expired early")
	}

	clock.Advance(time.Minute)
	if iss.Active(refresh) {
		t.Errorf("refresh token active at its expiry, want inactive")
	}

	resp := mustPost(t, iss, pathToken, refreshForm(refresh), basicAuth)
	if resp.text("error") != "invalid_grant" {
		t.Errorf("expired refresh: error %q, want invalid_grant", resp.text("error"))
	}
	if got := iss.Stats().ReuseDetections; got != 0 {
		t.Errorf("ReuseDetections = %d, want 0", got)
	}
}

func TestTokenRequestErrors(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		form       url.Values
		wantStatus int
		wantError  string
	}{
		{name: "empty body", form: url.Values{}, wantStatus: 400, wantError: "invalid_request"},
		{name: "missing grant type", form: url.Values{"scope": {"read"}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "unsupported grant type", form: url.Values{"grant_type": {"password"}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "missing refresh token", form: url.Values{"grant_type": {"refresh_token"}}, wantStatus: 400, wantError: "invalid_request"},
		{name: "unknown refresh token", form: refreshForm("ory_rt_unknown"), wantStatus: 400, wantError: "invalid_grant"},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			resp := mustPost(t, iss, pathToken, tt.form, basicAuth)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if got := resp.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
		})
	}
}

func TestWithoutRotation(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t, WithoutRotation())
	seed := iss.SeedGrant(testClientID, testScopes)

	for n := 0; n < 3; n++ {
		resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
		if resp.status != http.StatusOK {
			t.Fatalf("refresh %d status = %d, want 200", n, resp.status)
		}
		if resp.member("refresh_token") != nil {
			t.Errorf("refresh %d sent refresh_token, want none", n)
		}
		if !iss.Active(resp.text("access_token")) {
			t.Errorf("refresh %d access token inactive", n)
		}
	}

	if !iss.Active(seed) {
		t.Errorf("seed inactive, want it still valid")
	}
	if got := iss.Stats().Rotations; got != 0 {
		t.Errorf("Rotations = %d, want 0", got)
	}
}

func TestClientCredentials(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name         string
		form         url.Values
		wantStatus   int
		wantError    string
		wantScope    string
		wantAudience []string
	}{
		{name: "no scope", form: url.Values{}, wantStatus: 200},
		{name: "allowed scopes", form: url.Values{"scope": {"read write"}}, wantStatus: 200, wantScope: "read write"},
		{name: "scope not allowed", form: url.Values{"scope": {"read admin"}}, wantStatus: 400, wantError: "invalid_scope"},
		{
			name: "audience space separated", form: url.Values{"audience": {"https://api.example.test https://deploy.example.test"}},
			wantStatus: 200, wantAudience: testAudiences,
		},
		{
			name: "audience repeated", form: url.Values{"audience": testAudiences},
			wantStatus: 200, wantAudience: testAudiences,
		},
		{
			name: "audience not allowed", form: url.Values{"audience": {"https://evil.example.test"}},
			wantStatus: 400, wantError: "invalid_request",
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			form := cloneValues(tt.form)
			form.Set("grant_type", "client_credentials")
			resp := mustPost(t, iss, pathToken, form, basicAuth)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if got := resp.text("scope"); got != tt.wantScope {
				t.Errorf("scope = %q, want %q", got, tt.wantScope)
			}
			if resp.member("refresh_token") != nil {
				t.Errorf("client_credentials response has a refresh_token")
			}
			if tt.wantStatus != 200 {
				return
			}

			info := iss.Introspect(resp.text("access_token"))
			if !info.Active || info.ClientID != testClientID || info.TokenType != "Bearer" {
				t.Errorf("Introspect = %+v, want active Bearer token of %s", info, testClientID)
			}
			if !slices.Equal(info.Audience, tt.wantAudience) {
				t.Errorf("aud = %v, want %v", info.Audience, tt.wantAudience)
			}
			if got := iss.Stats().ClientCredentialsRequests; got != 1 {
				t.Errorf("ClientCredentialsRequests = %d, want 1", got)
			}
		})
	}
}

func TestAuthorizationCode(t *testing.T) {
	t.Parallel()

	const redirect = "http://127.0.0.1:9999/callback"
	verifier := strings.Repeat("v", 43)

	tests := []struct {
		name       string
		challenge  string
		verifier   string
		redirect   string
		replay     bool
		scopes     []string // default offline_access and read
		wantStatus int
		wantError  string

		wantNoRefresh bool
	}{
		{name: "pkce ok", challenge: S256Challenge(verifier), verifier: verifier, redirect: redirect, wantStatus: 200},
		{name: "no pkce", redirect: redirect, wantStatus: 200},
		{name: "wrong verifier", challenge: S256Challenge(verifier), verifier: strings.Repeat("w", 43), redirect: redirect, wantStatus: 400, wantError: "invalid_grant"},
		{name: "missing verifier", challenge: S256Challenge(verifier), redirect: redirect, wantStatus: 400, wantError: "invalid_grant"},
		{name: "verifier without challenge", verifier: verifier, redirect: redirect, wantStatus: 400, wantError: "invalid_grant"},
		{name: "redirect mismatch", redirect: "http://127.0.0.1:9999/other", wantStatus: 400, wantError: "invalid_grant"},
		{name: "replay", redirect: redirect, replay: true, wantStatus: 400, wantError: "invalid_grant"},
		{name: "no offline access", scopes: []string{"read"}, redirect: redirect, wantStatus: 200, wantNoRefresh: true},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			scopes := tt.scopes
			if scopes == nil {
				scopes = []string{"offline_access", "read"}
			}
			code := iss.IssueCode(testClientID, redirect, scopes, tt.challenge)
			form := url.Values{
				"grant_type":   {"authorization_code"},
				"code":         {code},
				"redirect_uri": {tt.redirect},
			}
			if tt.verifier != "" {
				form.Set("code_verifier", tt.verifier)
			}

			var first response
			if tt.replay {
				first = mustPost(t, iss, pathToken, form, basicAuth)
			}
			resp := mustPost(t, iss, pathToken, form, basicAuth)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			if tt.wantStatus == 200 && tt.wantNoRefresh {
				if resp.member("refresh_token") != nil {
					t.Errorf("refresh_token sent without offline_access, want none")
				}
			} else if tt.wantStatus == 200 {
				if rt := resp.text("refresh_token"); !iss.Active(rt) {
					t.Errorf("issued refresh token is not active")
				}
				if got := resp.text("scope"); got != "offline_access read" {
					t.Errorf("scope = %q, want %q", got, "offline_access read")
				}
			}
			if tt.replay && iss.Active(first.text("refresh_token")) {
				t.Errorf("refresh token of a replayed code still active, want revoked")
			}
		})
	}
}

func TestAuthorizeRedirect(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	verifier := strings.Repeat("x", 64)
	query := url.Values{
		"response_type":         {"code"},
		"client_id":             {testClientID},
		"redirect_uri":          {"http://127.0.0.1:9999/cb"},
		"scope":                 {"offline_access read"},
		"state":                 {"abc"},
		"code_challenge":        {S256Challenge(verifier)},
		"code_challenge_method": {"S256"},
	}

	client := iss.Client()
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Get(iss.AuthorizationURL() + "?" + query.Encode())
	if err != nil {
		t.Fatalf("GET authorize: %v", err)
	}
	resp.Body.Close()

	if resp.StatusCode != http.StatusFound {
		t.Fatalf("status = %d, want 302", resp.StatusCode)
	}

	location, err := url.Parse(resp.Header.Get("Location"))
	if err != nil {
		t.Fatalf("parsing Location: %v", err)
	}
	if got := location.Query().Get("state"); got != "abc" {
		t.Errorf("state = %q, want %q", got, "abc")
	}

	form := url.Values{
		"grant_type":    {"authorization_code"},
		"code":          {location.Query().Get("code")},
		"redirect_uri":  {"http://127.0.0.1:9999/cb"},
		"code_verifier": {verifier},
	}
	token := mustPost(t, iss, pathToken, form, postAuth)
	if token.status != http.StatusOK || token.text("refresh_token") == "" {
		t.Errorf("code exchange: status %d, refresh token present %v, want 200 with a refresh token",
			token.status, token.text("refresh_token") != "")
	}
}

func TestExpiresInFormat(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		format  ExpiresInFormat
		want    any
		present bool
	}{
		{name: "number", format: ExpiresInNumber, want: float64(900), present: true},
		{name: "string", format: ExpiresInString, want: "900", present: true},
		{name: "null", format: ExpiresInNull, want: nil, present: true},
		{name: "absent", format: ExpiresInAbsent, want: nil, present: false},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t, WithExpiresInFormat(tt.format))
			iss.SetAccessTokenLifetime(15 * time.Minute)
			resp := mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)

			var obj map[string]any
			if err := json.Unmarshal(resp.body, &obj); err != nil {
				t.Fatalf("decoding response: %v", err)
			}
			got, present := obj["expires_in"]
			if present != tt.present {
				t.Errorf("expires_in present = %v, want %v", present, tt.present)
			}
			if got != tt.want {
				t.Errorf("expires_in = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestAccessTokenExpiry(t *testing.T) {
	t.Parallel()

	clock := newFakeClock()
	iss := newTestIssuer(t, WithClock(clock.Now), WithAccessTokenLifetime(time.Minute))
	resp := mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)
	access := resp.text("access_token")

	if !iss.Active(access) {
		t.Fatalf("new access token inactive")
	}

	wantExp := clock.Now().Add(time.Minute).Unix()
	if got := iss.Introspect(access).ExpiresAt; got != wantExp {
		t.Errorf("exp = %d, want %d", got, wantExp)
	}

	clock.Advance(time.Minute)
	if iss.Active(access) {
		t.Errorf("access token active at its expiry, want inactive")
	}
}

func TestRevocation(t *testing.T) {
	t.Parallel()

	// spentMarker is a placeholder for the seed, which the setup refresh spent.
	const spentMarker = "spent"

	tests := []struct {
		name           string
		revoke         func(seedAccess, seedRefresh string) string // token to send
		creds          credentials
		hint           string
		wantStatus     int
		wantError      string
		wantRevoked    bool
		wantRevocation int
	}{
		{name: "unknown token", revoke: func(string, string) string { return "ory_at_unknown" }, creds: basicAuth, wantStatus: 200},
		{name: "access token", revoke: func(a, _ string) string { return a }, creds: basicAuth, wantStatus: 200, wantRevoked: true, wantRevocation: 1},
		{name: "refresh token", revoke: func(_, r string) string { return r }, creds: postAuth, wantStatus: 200, wantRevoked: true, wantRevocation: 1},
		{name: "wrong hint", revoke: func(_, r string) string { return r }, creds: basicAuth, hint: "access_token", wantStatus: 200, wantRevoked: true, wantRevocation: 1},
		{name: "other client", revoke: func(a, _ string) string { return a }, creds: otherAuth, wantStatus: 200},
		{name: "no client auth", revoke: func(a, _ string) string { return a }, creds: noAuth, wantStatus: 401, wantError: "invalid_client"},
		{name: "empty body", revoke: func(string, string) string { return "" }, creds: basicAuth, wantStatus: 400, wantError: "invalid_request"},
		{name: "missing token", revoke: func(string, string) string { return "" }, creds: basicAuth, hint: "access_token", wantStatus: 200},
		{name: "spent refresh token", revoke: func(_, _ string) string { return spentMarker }, creds: basicAuth, wantStatus: 200},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			seed := iss.SeedGrant(testClientID, testScopes)
			access, refresh := refreshOK(t, iss, seed)

			form := url.Values{}
			tok := tt.revoke(access, refresh)
			if tok == spentMarker {
				tok = seed
			}
			if tok != "" {
				form.Set("token", tok)
			}
			if tt.hint != "" {
				form.Set("token_type_hint", tt.hint)
			}
			resp := mustPost(t, iss, pathRevoke, form, tt.creds)

			if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if got := resp.text("error"); got != tt.wantError {
				t.Errorf("error = %q, want %q", got, tt.wantError)
			}
			for _, tok := range []string{access, refresh} {
				if got := !iss.Active(tok); got != tt.wantRevoked {
					t.Errorf("token %s revoked = %v, want %v", Fingerprint(tok), got, tt.wantRevoked)
				}
			}
			if got := iss.Stats().Revocations; got != tt.wantRevocation {
				t.Errorf("Revocations = %d, want %d", got, tt.wantRevocation)
			}
		})
	}
}

func TestIntrospectionEndpoint(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	form := url.Values{"grant_type": {"client_credentials"}, "scope": {"read"}, "audience": {testAudiences[0]}}
	access := mustPost(t, iss, pathToken, form, basicAuth).text("access_token")
	refresh := iss.SeedGrant(testClientID, testScopes)

	tests := []struct {
		name       string
		token      string
		creds      credentials
		wantStatus int
		want       Introspection
	}{
		{
			name: "access token", token: access, creds: basicAuth, wantStatus: 200,
			want: Introspection{
				Active: true, Scope: "read", ClientID: testClientID, Audience: testAudiences[:1],
				TokenType: "Bearer", TokenUse: "access_token",
			},
		},
		{
			name: "refresh token", token: refresh, creds: otherAuth, wantStatus: 200,
			want: Introspection{Active: true, Scope: strings.Join(testScopes, " "), ClientID: testClientID, TokenUse: "refresh_token"},
		},
		{name: "unknown token", token: "nope", creds: basicAuth, wantStatus: 200, want: Introspection{}},
		{name: "no client auth", token: access, creds: noAuth, wantStatus: 401},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := mustPost(t, iss, pathIntrospect, url.Values{"token": {tt.token}}, tt.creds)
			if resp.status != tt.wantStatus {
				t.Fatalf("status = %d, want %d", resp.status, tt.wantStatus)
			}
			if tt.wantStatus != 200 {
				return
			}

			var got Introspection
			if err := json.Unmarshal(resp.body, &got); err != nil {
				t.Fatalf("decoding introspection: %v", err)
			}
			got.ExpiresAt, got.IssuedAt = 0, 0
			if got.Active != tt.want.Active || got.Scope != tt.want.Scope || got.ClientID != tt.want.ClientID ||
				got.TokenType != tt.want.TokenType || got.TokenUse != tt.want.TokenUse ||
				!slices.Equal(got.Audience, tt.want.Audience) {
				t.Errorf("introspection = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestOutsideParty(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)
	access, engineHeld := refreshOK(t, iss, seed)

	latest, ok := iss.LatestRefreshToken(seed)
	if !ok || latest != engineHeld {
		t.Fatalf("LatestRefreshToken(seed) = %s, %v, want the newest token", Fingerprint(latest), ok)
	}
	if latest2, _ := iss.LatestRefreshToken(access); latest2 != engineHeld {
		t.Errorf("LatestRefreshToken(access token) differs from LatestRefreshToken(seed)")
	}

	stolen, err := iss.Spend(latest)
	if err != nil {
		t.Fatalf("Spend(latest) error = %v, want nil", err)
	}
	if !iss.Active(stolen) {
		t.Errorf("token from Spend inactive")
	}

	resp := mustPost(t, iss, pathToken, refreshForm(engineHeld), basicAuth)
	if resp.text("error") != "invalid_grant" {
		t.Errorf("engine refresh after outside spend: error %q, want invalid_grant", resp.text("error"))
	}
	if iss.Active(stolen) {
		t.Errorf("outside party's token still active after reuse detection")
	}

	if _, err := iss.Spend(stolen); !errors.Is(err, ErrInvalidGrant) {
		t.Errorf("Spend on revoked family error = %v, want ErrInvalidGrant", err)
	}
	if got := iss.Stats().RefreshRequests; got != 2 {
		t.Errorf("RefreshRequests = %d, want 2 (Spend is not counted)", got)
	}
}

func TestRevokeHelper(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)

	if !iss.Revoke(seed) {
		t.Fatalf("Revoke(seed) = false, want true")
	}
	if iss.Revoke("unknown") {
		t.Errorf("Revoke(unknown) = true, want false")
	}

	resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
	if resp.text("error") != "invalid_grant" {
		t.Errorf("refresh after Revoke: error %q, want invalid_grant", resp.text("error"))
	}
	if got := iss.Stats().ReuseDetections; got != 0 {
		t.Errorf("ReuseDetections = %d, want 0", got)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t, WithTLS())
	if !strings.HasPrefix(iss.URL(), "https://127.0.0.1:") {
		t.Errorf("URL = %q, want https on 127.0.0.1", iss.URL())
	}

	block, _ := pem.Decode([]byte(iss.CertificatePEM()))
	if block == nil {
		t.Fatalf("CertificatePEM is not PEM")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		t.Errorf("parsing certificate: %v", err)
	}

	resp := mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)
	if resp.status != http.StatusOK {
		t.Errorf("status over TLS = %d, want 200", resp.status)
	}

	iss.InjectFault(Fault{Kind: FaultResetConnection})
	if _, err := post(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth); !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("reset over TLS: error = %v, want connection reset", err)
	}
}

func TestMisuseFailsTest(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name string
		call func(*Issuer)
	}{
		{name: "seed unknown client", call: func(i *Issuer) { i.SeedGrant("nobody", nil) }},
		{name: "seed scope not allowed", call: func(i *Issuer) { i.SeedGrant(testClientID, []string{"offline_access", "admin"}) }},
		{name: "seed without offline access", call: func(i *Issuer) { i.SeedGrant(testClientID, []string{"read"}) }},
		{name: "code unknown client", call: func(i *Issuer) { i.IssueCode("nobody", "http://x", nil, "") }},
		{name: "auth method unknown", call: func(i *Issuer) { i.SetClientAuthMethod(testClientID, "private_key_jwt") }},
		{name: "fault unknown kind", call: func(i *Issuer) { i.InjectFault(Fault{}) }},
		{name: "fault negative count", call: func(i *Issuer) { i.InjectFault(Fault{Kind: FaultStatus, Count: -1}) }},
		{name: "fault bad status", call: func(i *Issuer) { i.InjectFault(Fault{Kind: FaultStatus, Status: 700}) }},
		{
			name: "fault edits revocation",
			call: func(i *Issuer) { i.InjectFault(Fault{Kind: FaultMissingRefreshToken, Target: TargetRevocation}) },
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &errorRecorder{T: t}
			iss := newTestIssuer(rec)
			tt.call(iss)

			if got := rec.count(); got != 1 {
				t.Errorf("Errorf calls = %d, want 1", got)
			}
			if got := iss.PendingFaults(); got != 0 {
				t.Errorf("PendingFaults = %d, want 0", got)
			}
		})
	}
}
