package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/internal/fakeissuer"
)

const testClientID = "ci-tokens-engine"

// newTestClient returns a client of a fresh fake issuer and a seeded
// refresh token.
func newTestClient(t *testing.T, timeout time.Duration, opts ...fakeissuer.Option) (*Client, *fakeissuer.Issuer, string) {
	t.Helper()
	issuer := fakeissuer.New(t, opts...)
	issuer.AddClient(testClientID, testClientSecret, []string{"offline_access", "openid"}, nil)
	seed := issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})

	httpClient, err := NewHTTPClient(TLSOptions{}, timeout)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	t.Cleanup(httpClient.CloseIdleConnections)
	creds := Credentials{ClientID: testClientID, ClientSecret: testClientSecret, AuthMethod: AuthClientSecretBasic}
	return NewClient(httpClient, issuer.TokenURL(), creds), issuer, seed
}

func TestRefreshFaults(t *testing.T) {
	const timeout = 300 * time.Millisecond
	tests := []struct {
		name  string
		fault fakeissuer.Fault
		// wantClass is 0 when the refresh must succeed.
		wantClass  Class
		wantReason string
		// wantSeedActive is whether the seed must still be usable. It is
		// false when the upstream rotated it, whatever the client saw.
		wantSeedActive bool
	}{
		{"503", fakeissuer.Fault{Kind: fakeissuer.FaultStatus}, Transient, "HTTP 503", true},
		{"429 with Retry-After", fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Status: 429, RetryAfter: "5"}, Transient, "HTTP 429", true},
		{"HTML proxy page", fakeissuer.Fault{Kind: fakeissuer.FaultHTMLBody}, Transient, "HTTP 502", true},
		{"invalid_client", fakeissuer.Fault{Kind: fakeissuer.FaultOAuthError, Status: 401, ErrorCode: "invalid_client"}, Terminal, "invalid_client", true},
		{"error in 200", fakeissuer.Fault{Kind: fakeissuer.FaultErrorIn200}, Terminal, "invalid_grant (HTTP 200)", true},
		{"reset before processing", fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection}, Ambiguous, "no usable response", true},
		{"reset after processing", fakeissuer.Fault{Kind: fakeissuer.FaultResetConnection, Phase: fakeissuer.AfterProcessing}, Ambiguous, "no usable response", false},
		{"delay before processing", fakeissuer.Fault{Kind: fakeissuer.FaultDelay, Delay: 5 * timeout}, Ambiguous, "request timed out", true},
		{"delay after processing", fakeissuer.Fault{Kind: fakeissuer.FaultDelay, Phase: fakeissuer.AfterProcessing, Delay: 5 * timeout}, Ambiguous, "request timed out", false},
		{"truncated JSON", fakeissuer.Fault{Kind: fakeissuer.FaultTruncatedJSON, Phase: fakeissuer.AfterProcessing}, Ambiguous, "not a valid token response", false},
		{"non-JSON 200", fakeissuer.Fault{Kind: fakeissuer.FaultNonJSON200, Phase: fakeissuer.AfterProcessing}, Ambiguous, "no access_token", false},
		{"empty refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultEmptyRefreshToken, Phase: fakeissuer.AfterProcessing}, Ambiguous, "empty refresh_token", false},
		{"non-string refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultNonStringRefreshToken, Phase: fakeissuer.AfterProcessing}, Ambiguous, "not a valid token response", false},
		{"missing refresh_token", fakeissuer.Fault{Kind: fakeissuer.FaultMissingRefreshToken}, 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, issuer, seed := newTestClient(t, timeout)
			tt.fault.Target = fakeissuer.TargetRefreshToken
			issuer.InjectFault(tt.fault)

			tok, err := client.Refresh(context.Background(), seed)
			if tt.wantClass == 0 {
				if err != nil {
					t.Fatalf("Refresh: %v, want success", err)
				}
				if tok.RefreshToken != "" {
					t.Errorf("refresh token present, want \"\" for an upstream that did not rotate")
				}
				if tok.AccessToken == "" {
					t.Errorf("access token empty, want one")
				}
			} else {
				var upstreamErr *Error
				if !errors.As(err, &upstreamErr) {
					t.Fatalf("error = %v (%T), want *Error", err, err)
				}
				if upstreamErr.Class != tt.wantClass {
					t.Errorf("class = %s, want %s (error %q)", upstreamErr.Class, tt.wantClass, err)
				}
				if !strings.Contains(err.Error(), tt.wantReason) {
					t.Errorf("error = %q, want it to contain %q", err, tt.wantReason)
				}
				for _, secret := range []string{seed, testClientSecret, "ory_rt_", "ory_at_"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("error %q contains a secret", err)
					}
				}
			}
			if got := issuer.Active(seed); got != tt.wantSeedActive {
				t.Errorf("seed active = %v, want %v", got, tt.wantSeedActive)
			}
			if got := issuer.Stats().RefreshRequests; got != 1 {
				t.Errorf("refresh requests = %d, want 1: the client must never retry by itself", got)
			}
		})
	}
}

func TestRefreshRetryAfter(t *testing.T) {
	client, issuer, seed := newTestClient(t, time.Second)
	issuer.InjectFault(fakeissuer.Fault{Kind: fakeissuer.FaultStatus, Target: fakeissuer.TargetRefreshToken, Status: 429, RetryAfter: "42"})

	_, err := client.Refresh(context.Background(), seed)
	var upstreamErr *Error
	if !errors.As(err, &upstreamErr) {
		t.Fatalf("error = %v, want *Error", err)
	}
	if upstreamErr.RetryAfter != 42*time.Second {
		t.Errorf("retry after = %s, want 42s", upstreamErr.RetryAfter)
	}
}

func TestRefreshConnectionRefused(t *testing.T) {
	closed := httptest.NewServer(nil)
	url := closed.URL + "/token"
	closed.Close()

	httpClient, err := NewHTTPClient(TLSOptions{}, time.Second)
	if err != nil {
		t.Fatalf("NewHTTPClient: %v", err)
	}
	client := NewClient(httpClient, url, Credentials{ClientID: testClientID, ClientSecret: testClientSecret})
	_, err = client.Refresh(context.Background(), testRefreshToken)
	if got := ClassOf(err); got != Transient {
		t.Errorf("class = %s, want %s (error %v)", got, Transient, err)
	}
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("error = %v, want it to say connection refused", err)
	}
}

func TestRefreshExpiresIn(t *testing.T) {
	const lifetime = 40 * time.Minute
	tests := []struct {
		name   string
		format fakeissuer.ExpiresInFormat
		// wantKnown is whether ExpiresAt must be set.
		wantKnown bool
	}{
		{"number", fakeissuer.ExpiresInNumber, true},
		{"numeric string", fakeissuer.ExpiresInString, true},
		{"null", fakeissuer.ExpiresInNull, false},
		{"absent", fakeissuer.ExpiresInAbsent, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client, _, seed := newTestClient(t, time.Second,
				fakeissuer.WithExpiresInFormat(tt.format), fakeissuer.WithAccessTokenLifetime(lifetime))
			before := time.Now()
			tok, err := client.Refresh(context.Background(), seed)
			if err != nil {
				t.Fatalf("Refresh: %v", err)
			}
			if !tt.wantKnown {
				if !tok.ExpiresAt.IsZero() {
					t.Errorf("expires at = %s, want zero (unknown)", tok.ExpiresAt)
				}
				return
			}
			got := tok.ExpiresAt.Sub(before)
			if got < lifetime-2*time.Second || got > lifetime+2*time.Second {
				t.Errorf("expires in = %s, want about %s", got, lifetime)
			}
		})
	}
}

// jwt builds an unsigned token whose payload is the given JSON.
func jwt(payload string) string {
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + enc.EncodeToString([]byte(payload)) + ".sig"
}

func TestJWTExpiry(t *testing.T) {
	exp := time.Unix(1767225600, 0)
	padded := base64.URLEncoding.EncodeToString([]byte(`{"exp":1767225600,"x":1}`))
	tests := []struct {
		name  string
		token string
		want  time.Time
	}{
		{"integer exp", jwt(`{"exp":1767225600}`), exp},
		{"fractional exp", jwt(`{"exp":1767225600.75}`), exp},
		{"exponent notation", jwt(`{"exp":1.7672256e9}`), exp},
		{"padded payload", "e30." + padded + ".sig", exp},
		{"opaque token", "ory_at_abcdef", time.Time{}},
		{"two segments", "a.b", time.Time{}},
		{"bad base64", "a.!!!.c", time.Time{}},
		{"payload not JSON", "a." + base64.RawURLEncoding.EncodeToString([]byte("nope")) + ".c", time.Time{}},
		{"no exp", jwt(`{"sub":"ci"}`), time.Time{}},
		{"exp zero", jwt(`{"exp":0}`), time.Time{}},
		{"exp negative", jwt(`{"exp":-5}`), time.Time{}},
		{"exp not a number", jwt(`{"exp":"tomorrow"}`), time.Time{}},
		{"exp beyond year 9999", jwt(`{"exp":1e300}`), time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := jwtExpiry(tt.token); !got.Equal(tt.want) {
				t.Errorf("jwtExpiry = %s, want %s", got, tt.want)
			}
		})
	}
}
