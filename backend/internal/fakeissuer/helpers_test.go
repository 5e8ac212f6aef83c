package fakeissuer

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// Test clients. The secret contains characters that client_secret_basic
// must form-encode.
const (
	testClientID     = "ci-engine"
	testClientSecret = "s3cr:et+/=%"
	otherClientID    = "other-app"
	otherSecret      = "other-secret"
)

var (
	testScopes    = []string{"offline_access", "read", "write"}
	testAudiences = []string{"https://api.example.test", "https://deploy.example.test"}
)

// newTestIssuer starts an issuer with the two test clients.
func newTestIssuer(tb testing.TB, opts ...Option) *Issuer {
	tb.Helper()

	iss := New(tb, opts...)
	iss.AddClient(testClientID, testClientSecret, testScopes, testAudiences)
	iss.AddClient(otherClientID, otherSecret, testScopes, nil)

	return iss
}

// credentials selects how a test request authenticates.
type credentials struct {
	id, secret, method string
}

var (
	basicAuth = credentials{testClientID, testClientSecret, AuthMethodBasic}
	postAuth  = credentials{testClientID, testClientSecret, AuthMethodPost}
	otherAuth = credentials{otherClientID, otherSecret, AuthMethodBasic}
	noAuth    = credentials{}
)

// response is a received HTTP response with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// member decodes the body as a JSON object and returns one member, or nil.
func (r response) member(name string) any {
	var obj map[string]any
	if err := json.Unmarshal(r.body, &obj); err != nil {
		return nil
	}

	return obj[name]
}

// text returns a string member, or "".
func (r response) text(name string) string {
	s, _ := r.member(name).(string)
	return s
}

// post sends a form to path with the given client authentication. Basic
// credentials are form-encoded as RFC 6749 section 2.3.1 requires.
func post(tb testing.TB, iss *Issuer, path string, form url.Values, creds credentials) (response, error) {
	tb.Helper()

	form = cloneValues(form)
	if creds.method == AuthMethodPost {
		form.Set("client_id", creds.id)
		form.Set("client_secret", creds.secret)
	}

	req, err := http.NewRequest(http.MethodPost, iss.URL()+path, strings.NewReader(form.Encode()))
	if err != nil {
		tb.Fatalf("building request: %v", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")

	if creds.method == AuthMethodBasic {
		pair := url.QueryEscape(creds.id) + ":" + url.QueryEscape(creds.secret)
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(pair)))
	}

	client := iss.Client()
	client.Timeout = 10 * time.Second

	resp, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}

	return response{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// mustPost is post for requests that must get an HTTP response.
func mustPost(tb testing.TB, iss *Issuer, path string, form url.Values, creds credentials) response {
	tb.Helper()

	resp, err := post(tb, iss, path, form, creds)
	if err != nil {
		tb.Fatalf("POST %s: %v", path, err)
	}

	return resp
}

func cloneValues(v url.Values) url.Values {
	out := url.Values{}
	for k, vs := range v {
		out[k] = append([]string(nil), vs...)
	}

	return out
}

func refreshForm(refreshToken string) url.Values {
	return url.Values{"grant_type": {"refresh_token"}, "refresh_token": {refreshToken}}
}

// refreshOK refreshes and fails the test unless a new pair comes back.
func refreshOK(tb testing.TB, iss *Issuer, refreshToken string) (access, refresh string) {
	tb.Helper()

	resp := mustPost(tb, iss, pathToken, refreshForm(refreshToken), basicAuth)
	if resp.status != http.StatusOK {
		tb.Fatalf("refresh status = %d, want 200 (error %q)", resp.status, resp.text("error"))
	}

	return resp.text("access_token"), resp.text("refresh_token")
}

// fakeClock is a settable clock for WithClock.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()

	c.now = c.now.Add(d)
}

// errorRecorder is a testing.TB that records Errorf calls instead of
// failing, to test misuse reports.
type errorRecorder struct {
	*testing.T
	mu     sync.Mutex
	errors []string
}

func (r *errorRecorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()

	r.errors = append(r.errors, format)
}

func (r *errorRecorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()

	return len(r.errors)
}
