package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// loopbackRedirectURI is the redirect URI registered at Hydra, without a
// port. Hydra v2.3.0 (fosite v0.49.0) accepts any port on a registered
// loopback IP redirect URI, as RFC 8252 section 7.3 requires, so the command
// can listen on a free port.
const loopbackRedirectURI = "http://127.0.0.1/callback"

// newSeedStack starts Vault and Hydra, mounts the engine and writes a config
// with the client credentials but no refresh token, so only ci-tokens-seed
// can give the mount its root grant.
func newSeedStack(t *testing.T) *devstack.Stack {
	t.Helper()
	stack := devstack.UpForTest(t, devstack.Options{Until: devstack.StageMounted})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	client, err := stack.Hydra.CreateClient(ctx, devstack.ClientOptions{
		Name:         "ci-tokens engine seeded by ci-tokens-seed",
		Scopes:       devstack.EngineScopes,
		Audience:     []string{devstack.Audience},
		RedirectURIs: []string{loopbackRedirectURI},
	})
	if err != nil {
		t.Fatalf("create hydra client: %v", err)
	}
	_, err = stack.Vault.Client.Logical().WriteWithContext(ctx, devstack.MountPath+"/config", map[string]interface{}{
		"issuer":        stack.Hydra.PublicURL,
		"client_id":     client.ID,
		"client_secret": client.Secret,
	})
	if err != nil {
		t.Fatalf("write %s/config: %v", devstack.MountPath, err)
	}
	return stack
}

// hydraUserAgent plays the operator's browser against Hydra: it follows the
// authorization URL with a cookie jar and settles the login and consent
// requests through Hydra's admin API, as a login and consent app would.
type hydraUserAgent struct {
	adminURL string
	client   *http.Client
	// denyConsent rejects the consent request with access_denied.
	denyConsent bool
}

func newHydraUserAgent(t *testing.T, adminURL string) *hydraUserAgent {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("cookiejar: %v", err)
	}
	return &hydraUserAgent{
		adminURL: adminURL,
		client: &http.Client{
			Jar:     jar,
			Timeout: 10 * time.Second,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		},
	}
}

// authorize walks from the authorization URL to the redirect and then
// requests the redirect URI, which lands on the command's loopback listener.
func (ua *hydraUserAgent) authorize(ctx context.Context, authURL string) error {
	landing, err := ua.follow(ctx, authURL)
	if err != nil {
		return fmt.Errorf("open authorization URL: %w", err)
	}
	challenge := landing.Query().Get("login_challenge")
	if challenge == "" {
		return fmt.Errorf("expected the login page, got %s", landing.Redacted())
	}
	next, err := ua.settle(ctx, "login/accept?login_challenge="+url.QueryEscape(challenge), map[string]interface{}{"subject": "ci-tokens-operator"})
	if err != nil {
		return err
	}

	landing, err = ua.follow(ctx, next)
	if err != nil {
		return fmt.Errorf("return from login: %w", err)
	}
	challenge = landing.Query().Get("consent_challenge")
	if challenge == "" {
		return fmt.Errorf("expected the consent page, got %s", landing.Redacted())
	}
	if ua.denyConsent {
		next, err = ua.settle(ctx, "consent/reject?consent_challenge="+url.QueryEscape(challenge), map[string]interface{}{
			"error":             "access_denied",
			"error_description": "The operator declined.",
		})
	} else {
		next, err = ua.acceptConsent(ctx, challenge)
	}
	if err != nil {
		return err
	}

	landing, err = ua.follow(ctx, next)
	if err != nil {
		return fmt.Errorf("return from consent: %w", err)
	}
	if !strings.HasPrefix(landing.String(), "http://127.0.0.1:") {
		return fmt.Errorf("expected a redirect to the loopback listener, got %s", landing.Redacted())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, landing.String(), nil)
	if err != nil {
		return err
	}
	resp, err := ua.client.Do(req)
	if err != nil {
		return fmt.Errorf("deliver the redirect: %w", err)
	}
	resp.Body.Close()
	return nil
}

// acceptConsent grants exactly the scopes and audience that the consent
// request lists.
func (ua *hydraUserAgent) acceptConsent(ctx context.Context, challenge string) (string, error) {
	var request struct {
		RequestedScope    []string `json:"requested_scope"`
		RequestedAudience []string `json:"requested_access_token_audience"`
	}
	if err := ua.admin(ctx, http.MethodGet, "consent?consent_challenge="+url.QueryEscape(challenge), nil, &request); err != nil {
		return "", err
	}
	return ua.settle(ctx, "consent/accept?consent_challenge="+url.QueryEscape(challenge), map[string]interface{}{
		"grant_scope":                 request.RequestedScope,
		"grant_access_token_audience": request.RequestedAudience,
	})
}

// settle accepts or rejects a login or consent request and returns where
// Hydra sends the browser next.
func (ua *hydraUserAgent) settle(ctx context.Context, path string, body map[string]interface{}) (string, error) {
	var settled struct {
		RedirectTo string `json:"redirect_to"`
	}
	if err := ua.admin(ctx, http.MethodPut, path, body, &settled); err != nil {
		return "", err
	}
	return settled.RedirectTo, nil
}

func (ua *hydraUserAgent) admin(ctx context.Context, method, path string, in, out interface{}) error {
	var body io.Reader
	if in != nil {
		buf, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(buf)
	}
	req, err := http.NewRequestWithContext(ctx, method, ua.adminURL+"/admin/oauth2/auth/requests/"+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("hydra admin %s %s: %s", method, strings.SplitN(path, "?", 2)[0], resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// follow requests start and follows redirects until one leads to a login or
// consent page or away from Hydra, and returns that location unrequested.
func (ua *hydraUserAgent) follow(ctx context.Context, start string) (*url.URL, error) {
	next := start
	for range 10 {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, next, nil)
		if err != nil {
			return nil, err
		}
		resp, err := ua.client.Do(req)
		if err != nil {
			return nil, err
		}
		resp.Body.Close()
		location, err := resp.Location()
		if err != nil {
			return nil, fmt.Errorf("GET %s returned %s without a redirect", req.URL.Redacted(), resp.Status)
		}
		query := location.Query()
		if query.Has("login_challenge") || query.Has("consent_challenge") || location.Host != req.URL.Host {
			return location, nil
		}
		next = location.String()
	}
	return nil, fmt.Errorf("more than 10 redirects from %s", start)
}

// runSeedAgainstHydra runs the code flow with ua as the browser and returns
// the result and everything the command printed for the operator.
func runSeedAgainstHydra(t *testing.T, stack *devstack.Stack, ua *hydraUserAgent) (*seedResult, string, error) {
	t.Helper()
	var out bytes.Buffer
	s := newSeeder(stack.Vault.Client, devstack.MountPath, &syncWriter{w: &out})
	browserErrs := make(chan error, 1)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s.openBrowser = func(authURL string) error {
		go func() { browserErrs <- ua.authorize(ctx, authURL) }()
		return nil
	}

	result, err := s.run(ctx, &options{flow: flowCode, open: true, scopes: []string{"offline_access", "openid"}})
	if browserErr := <-browserErrs; browserErr != nil {
		t.Errorf("user agent: %v", browserErr)
	}
	return result, out.String(), err
}

func TestSeedAgainstHydra(t *testing.T) {
	stack := newSeedStack(t)
	ua := newHydraUserAgent(t, stack.Hydra.AdminURL)

	result, output, err := runSeedAgainstHydra(t, stack, ua)
	if err != nil {
		t.Fatalf("seed: %v\noutput:\n%s", err, output)
	}
	if result.state != "healthy" {
		t.Errorf("state: got %q, want healthy", result.state)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status, err := stack.Vault.Client.Logical().ReadWithContext(ctx, devstack.MountPath+"/status")
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	if got := fmt.Sprint(status.Data["generation"]); got != result.generation {
		t.Errorf("status generation: got %s, want the seed's %s", got, result.generation)
	}

	// Rotating proves the engine holds a refresh token that Hydra accepts.
	rotated, err := stack.Vault.Client.Logical().WriteWithContext(ctx, devstack.MountPath+"/rotate-root", nil)
	if err != nil {
		t.Fatalf("rotate-root after seeding: %v", err)
	}
	if got, want := fmt.Sprint(rotated.Data["generation"]), fmt.Sprint(mustAtoi(t, result.generation)+1); got != want {
		t.Errorf("generation after rotate-root: got %s, want %s", got, want)
	}
}

func TestSeedAgainstHydraDeniedConsent(t *testing.T) {
	stack := newSeedStack(t)
	ua := newHydraUserAgent(t, stack.Hydra.AdminURL)
	ua.denyConsent = true

	_, output, err := runSeedAgainstHydra(t, stack, ua)
	var consent *consentError
	if !errors.As(err, &consent) {
		t.Fatalf("seed error: got %v, want a consent error\noutput:\n%s", err, output)
	}
	if consent.code != "access_denied" {
		t.Errorf("consent error code: got %q, want access_denied", consent.code)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	status, err := stack.Vault.Client.Logical().ReadWithContext(ctx, devstack.MountPath+"/status")
	if err != nil {
		t.Fatalf("read status: %v", err)
	}
	if got := fmt.Sprint(status.Data["state"]); got == "healthy" {
		t.Errorf("status state after denied consent: got %s, want no root grant", got)
	}
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatalf("not a number: %q", s)
	}
	return n
}
