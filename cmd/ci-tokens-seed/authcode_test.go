package main

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestAuthorizationURL(t *testing.T) {
	settings := &upstreamSettings{clientID: "ci-tokens-engine", authorizationEndpoint: "https://auth.example.test/oauth2/auth"}
	opts := &options{scopes: []string{"openid", "offline_access"}, params: map[string]string{"audience": "https://api.example.test"}}
	verifier := "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"

	got, err := url.Parse(authorizationURL(settings, opts, "http://127.0.0.1:5555/callback", "state-value", verifier))
	if err != nil {
		t.Fatalf("authorization URL does not parse: %v", err)
	}
	if got.Scheme+"://"+got.Host+got.Path != settings.authorizationEndpoint {
		t.Errorf("endpoint: got %s://%s%s, want %s", got.Scheme, got.Host, got.Path, settings.authorizationEndpoint)
	}

	// The RFC 7636 appendix B example verifier has this S256 challenge.
	wantChallenge := "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
	want := map[string]string{
		"response_type":         "code",
		"client_id":             "ci-tokens-engine",
		"redirect_uri":          "http://127.0.0.1:5555/callback",
		"scope":                 "openid offline_access",
		"state":                 "state-value",
		"code_challenge":        wantChallenge,
		"code_challenge_method": "S256",
		"audience":              "https://api.example.test",
	}
	query := got.Query()
	for name, value := range want {
		if query.Get(name) != value {
			t.Errorf("parameter %s: got %q, want %q", name, query.Get(name), value)
		}
	}
	if query.Has("code_verifier") {
		t.Errorf("authorization URL carries the code verifier; only the challenge may leave the command")
	}
}

func TestRandomStateIsUnpredictable(t *testing.T) {
	first, err := randomState()
	if err != nil {
		t.Fatalf("randomState: %v", err)
	}
	second, err := randomState()
	if err != nil {
		t.Fatalf("randomState: %v", err)
	}
	if len(first) != 43 {
		t.Errorf("state length: got %d, want 43 (256 bits base64url)", len(first))
	}
	if first == second {
		t.Errorf("two states are equal: %q", first)
	}
}

func TestCallbackReceiver(t *testing.T) {
	const state = "expected-state"
	tests := []struct {
		name       string
		method     string
		target     string
		issuer     string
		wantStatus int
		// wantDone is true when the request ends the flow.
		wantDone bool
		wantCode string
		wantErr  string
	}{
		{name: "code with matching state", target: "/callback?code=abc&state=" + state, wantStatus: http.StatusOK, wantDone: true, wantCode: "abc"},
		{name: "wrong state ignored", target: "/callback?code=abc&state=other", wantStatus: http.StatusBadRequest},
		{name: "missing state ignored", target: "/callback?code=abc", wantStatus: http.StatusBadRequest},
		{name: "denied consent", target: "/callback?error=access_denied&error_description=The+resource+owner+denied+the+request&state=" + state, wantStatus: http.StatusBadRequest, wantDone: true, wantErr: "access_denied: The resource owner denied the request"},
		{name: "neither code nor error", target: "/callback?state=" + state, wantStatus: http.StatusBadRequest, wantDone: true, wantErr: "neither a code nor an error"},
		{name: "other path", target: "/favicon.ico", wantStatus: http.StatusNotFound},
		{name: "post rejected", method: http.MethodPost, target: "/callback?code=abc&state=" + state, wantStatus: http.StatusMethodNotAllowed},
		{name: "matching issuer", issuer: "https://auth.example.test", target: "/callback?code=abc&iss=https%3A%2F%2Fauth.example.test&state=" + state, wantStatus: http.StatusOK, wantDone: true, wantCode: "abc"},
		{name: "other issuer", issuer: "https://auth.example.test", target: "/callback?code=abc&iss=https%3A%2F%2Fevil.example.test&state=" + state, wantStatus: http.StatusBadRequest, wantDone: true, wantErr: "evil.example.test"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			receiver := newCallbackReceiver(state, tt.issuer)
			method := tt.method
			if method == "" {
				method = http.MethodGet
			}
			rec := httptest.NewRecorder()
			receiver.ServeHTTP(rec, httptest.NewRequest(method, tt.target, nil))

			if rec.Code != tt.wantStatus {
				t.Errorf("status: got %d, want %d", rec.Code, tt.wantStatus)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			code, err := receiver.wait(ctx)
			if !tt.wantDone {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("wait: got code %q, error %v; want the flow still waiting", code, err)
				}
				return
			}
			if code != tt.wantCode {
				t.Errorf("code: got %q, want %q", code, tt.wantCode)
			}
			if tt.wantErr == "" && err != nil {
				t.Errorf("wait: unexpected error %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("wait error: got %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestCallbackReceiverAcceptsOneRedirect(t *testing.T) {
	receiver := newCallbackReceiver("s", "")
	first := httptest.NewRecorder()
	receiver.ServeHTTP(first, httptest.NewRequest(http.MethodGet, "/callback?code=one&state=s", nil))
	second := httptest.NewRecorder()
	receiver.ServeHTTP(second, httptest.NewRequest(http.MethodGet, "/callback?code=two&state=s", nil))

	if first.Code != http.StatusOK {
		t.Errorf("first status: got %d, want %d", first.Code, http.StatusOK)
	}
	if second.Code != http.StatusGone {
		t.Errorf("second status: got %d, want %d", second.Code, http.StatusGone)
	}
	code, err := receiver.wait(context.Background())
	if err != nil || code != "one" {
		t.Errorf("wait: got %q, %v; want the first code", code, err)
	}
}

// fakeAuthorizeEndpoint replaces the upstream's authorization endpoint.
// It records each request and redirects the browser to the query that
// redirect returns.
type fakeAuthorizeEndpoint struct {
	mu       sync.Mutex
	requests []url.Values
	redirect func(query url.Values) url.Values
}

func (f *fakeAuthorizeEndpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	query := r.URL.Query()
	f.mu.Lock()
	f.requests = append(f.requests, query)
	f.mu.Unlock()

	target, err := url.Parse(query.Get("redirect_uri"))
	if err != nil {
		http.Error(w, "bad redirect_uri", http.StatusBadRequest)
		return
	}
	target.RawQuery = f.redirect(query).Encode()
	http.Redirect(w, r, target.String(), http.StatusFound)
}

// browse plays the operator's browser: it follows the authorization URL and
// its redirect to the loopback listener.
func browse(errs chan<- error) func(string) error {
	return func(authURL string) error {
		go func() {
			resp, err := http.Get(authURL)
			if err == nil {
				resp.Body.Close()
			}
			errs <- err
		}()
		return nil
	}
}

func TestSeedWithAuthorizationCode(t *testing.T) {
	authorize := &fakeAuthorizeEndpoint{redirect: func(q url.Values) url.Values {
		return url.Values{"code": {"one-time-code"}, "state": {q.Get("state")}}
	}}
	upstream := httptest.NewServer(authorize)
	defer upstream.Close()

	fv, client := newFakeVault(t, map[string]interface{}{
		"client_id": "ci-tokens-engine",
		"endpoints": map[string]interface{}{"authorization_endpoint": upstream.URL + "/oauth2/auth"},
	}, seededReply)
	s, out := newTestSeeder(client)
	browserErrs := make(chan error, 1)
	s.openBrowser = browse(browserErrs)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	result, err := s.run(ctx, &options{flow: flowCode, open: true, scopes: []string{"offline_access"}})
	if err != nil {
		t.Fatalf("run: %v\noutput:\n%s", err, out)
	}
	if err := <-browserErrs; err != nil {
		t.Errorf("browser: %v", err)
	}

	if result.generation != "1" || result.state != "healthy" {
		t.Errorf("result: got generation %s state %s, want 1 healthy", result.generation, result.state)
	}
	seeds := fv.seedWrites()
	if len(seeds) != 1 {
		t.Fatalf("seed writes: got %d, want 1", len(seeds))
	}
	seed := seeds[0]
	if seed["code"] != "one-time-code" {
		t.Errorf("seed code: got %v, want one-time-code", seed["code"])
	}
	authRequest := authorize.requests[0]
	if seed["redirect_uri"] != authRequest.Get("redirect_uri") {
		t.Errorf("seed redirect_uri: got %v, want the authorization request's %q", seed["redirect_uri"], authRequest.Get("redirect_uri"))
	}
	if !strings.HasPrefix(authRequest.Get("redirect_uri"), "http://127.0.0.1:") || !strings.HasSuffix(authRequest.Get("redirect_uri"), "/callback") {
		t.Errorf("redirect_uri: got %q, want http://127.0.0.1:<port>/callback", authRequest.Get("redirect_uri"))
	}
	verifier, _ := seed["code_verifier"].(string)
	sum := sha256.Sum256([]byte(verifier))
	if challenge := base64.RawURLEncoding.EncodeToString(sum[:]); challenge != authRequest.Get("code_challenge") {
		t.Errorf("code_verifier does not match the challenge: S256(verifier) = %q, challenge %q", challenge, authRequest.Get("code_challenge"))
	}
	if len(seed) != 3 {
		t.Errorf("seed fields: got %v, want exactly code, code_verifier, redirect_uri", keysOf(seed))
	}
	for _, secret := range []string{"one-time-code", verifier} {
		if strings.Contains(out.String(), secret) {
			t.Errorf("output contains a one-time secret %q:\n%s", secret, out)
		}
	}
}

func TestSeedWithAuthorizationCodeDenied(t *testing.T) {
	authorize := &fakeAuthorizeEndpoint{redirect: func(q url.Values) url.Values {
		return url.Values{"error": {"access_denied"}, "error_description": {"The resource owner denied the request."}, "state": {q.Get("state")}}
	}}
	upstream := httptest.NewServer(authorize)
	defer upstream.Close()

	fv, client := newFakeVault(t, map[string]interface{}{
		"client_id":              "ci-tokens-engine",
		"authorization_endpoint": upstream.URL + "/oauth2/auth",
	}, seededReply)
	s, _ := newTestSeeder(client)
	browserErrs := make(chan error, 1)
	s.openBrowser = browse(browserErrs)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.run(ctx, &options{flow: flowCode, open: true, scopes: []string{"offline_access"}})
	<-browserErrs

	var consent *consentError
	if !errors.As(err, &consent) || consent.code != "access_denied" {
		t.Fatalf("run error: got %v, want a consent error with access_denied", err)
	}
	if n := len(fv.seedWrites()); n != 0 {
		t.Errorf("seed writes after denied consent: got %d, want 0", n)
	}
}

func TestSeedWithAuthorizationCodeTimesOut(t *testing.T) {
	_, client := newFakeVault(t, map[string]interface{}{
		"client_id":              "ci-tokens-engine",
		"authorization_endpoint": "https://auth.example.test/oauth2/auth",
	})
	s, _ := newTestSeeder(client)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := s.run(ctx, &options{flow: flowCode, scopes: []string{"offline_access"}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("run error: got %v, want a deadline error", err)
	}
}

func keysOf(m map[string]interface{}) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	return keys
}
