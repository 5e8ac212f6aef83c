package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
)

const (
	testRefreshToken = "ory_rt_secret-refresh-token-value"
	testClientSecret = "client-secret-for-tests-only"
)

// retrieveError builds the error x/oauth2 returns for an HTTP response.
func retrieveError(status int, retryAfter, code, description, body string) *oauth2.RetrieveError {
	header := http.Header{}
	if retryAfter != "" {
		header.Set("Retry-After", retryAfter)
	}
	return &oauth2.RetrieveError{
		Response:         &http.Response{StatusCode: status, Status: http.StatusText(status), Header: header},
		Body:             []byte(body),
		ErrorCode:        code,
		ErrorDescription: description,
	}
}

func TestClassifyResponse(t *testing.T) {
	tests := []struct {
		name           string
		err            *oauth2.RetrieveError
		wantClass      Class
		wantCode       string
		wantStatus     int
		wantRetryAfter time.Duration
	}{
		{"invalid_grant 400", retrieveError(400, "", "invalid_grant", "spent", ""), Terminal, "invalid_grant", 400, 0},
		{"invalid_client 401", retrieveError(401, "", "invalid_client", "", ""), Terminal, "invalid_client", 401, 0},
		{"unauthorized_client 400", retrieveError(400, "", "unauthorized_client", "", ""), Terminal, "unauthorized_client", 400, 0},
		{"unknown code 400", retrieveError(400, "", "something_new", "", ""), Terminal, "something_new", 400, 0},
		{"invalid_grant in 200", retrieveError(200, "", "invalid_grant", "", ""), Terminal, "invalid_grant", 200, 0},
		{"unknown code in 200", retrieveError(200, "", "something_new", "", ""), Terminal, "something_new", 200, 0},
		{"temporarily_unavailable in 200", retrieveError(200, "", "temporarily_unavailable", "", ""), Transient, "temporarily_unavailable", 200, 0},
		{"server_error in 200", retrieveError(200, "", "server_error", "", ""), Transient, "server_error", 200, 0},
		{"server_error 400", retrieveError(400, "", "server_error", "", ""), Transient, "server_error", 400, 0},
		{"slow_down 400", retrieveError(400, "", "slow_down", "", ""), Transient, "slow_down", 400, 0},
		{"authorization_pending 400", retrieveError(400, "", "authorization_pending", "", ""), Transient, "authorization_pending", 400, 0},
		{"503 without body", retrieveError(503, "", "", "", ""), Transient, "", 503, 0},
		{"500 with invalid_grant", retrieveError(500, "", "invalid_grant", "", ""), Transient, "invalid_grant", 500, 0},
		{"502 HTML page", retrieveError(502, "", "", "", "<html><body>Bad Gateway</body></html>"), Transient, "", 502, 0},
		{"400 HTML page", retrieveError(400, "", "", "", "<html><body>Bad Request</body></html>"), Transient, "", 400, 0},
		{"429 without Retry-After", retrieveError(429, "", "", "", ""), Transient, "", 429, 0},
		{"429 with Retry-After seconds", retrieveError(429, "7", "", "", ""), Transient, "", 429, 7 * time.Second},
		{"503 with Retry-After", retrieveError(503, "120", "", "", ""), Transient, "", 503, 2 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify("token endpoint", tt.err, true, testRefreshToken, testClientSecret)
			if got.Class != tt.wantClass {
				t.Errorf("class = %s, want %s", got.Class, tt.wantClass)
			}
			if got.Code != tt.wantCode {
				t.Errorf("code = %q, want %q", got.Code, tt.wantCode)
			}
			if got.Status != tt.wantStatus {
				t.Errorf("status = %d, want %d", got.Status, tt.wantStatus)
			}
			if got.RetryAfter != tt.wantRetryAfter {
				t.Errorf("retry after = %s, want %s", got.RetryAfter, tt.wantRetryAfter)
			}
			if msg := got.Error(); strings.Contains(msg, "<html>") || strings.Contains(msg, "Response:") {
				t.Errorf("message %q contains the response body", msg)
			}
		})
	}
}

func TestClassifyTransport(t *testing.T) {
	timeout := fmt.Errorf("Post \"http://127.0.0.1:1/token\": %w", context.DeadlineExceeded)
	tests := []struct {
		name       string
		err        error
		sent       bool
		wantClass  Class
		wantReason string
	}{
		{"refused before sending", errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), false, Transient, "connection refused"},
		{"host not found", errors.New("dial tcp: lookup upstream.invalid: no such host"), false, Transient, "host not found"},
		{"TLS failure before sending", errors.New("tls: failed to verify certificate: x509: unknown authority"), false, Transient, "TLS handshake failed"},
		{"timeout before sending", timeout, false, Transient, "request timed out"},
		{"reset after sending", errors.New("read tcp 127.0.0.1:5->127.0.0.1:6: read: connection reset by peer"), true, Ambiguous, "connection closed by the upstream"},
		{"EOF after sending", fmt.Errorf("Post \"x\": %w", io.EOF), true, Ambiguous, "connection closed by the upstream"},
		{"timeout after sending", timeout, true, Ambiguous, "request timed out"},
		{"client timeout after sending", errors.New("net/http: request canceled (Client.Timeout exceeded while awaiting headers)"), true, Ambiguous, "request timed out"},
		{"truncated JSON", errors.New("oauth2: cannot parse json: unexpected end of JSON input"), true, Ambiguous, "response is not a valid token response"},
		{"non-string refresh_token", errors.New("oauth2: cannot parse json: json: cannot unmarshal number into Go struct field tokenJSON.refresh_token of type string"), true, Ambiguous, "response is not a valid token response"},
		{"non-JSON 200", errors.New("oauth2: server response missing access_token"), true, Ambiguous, "response has no access_token"},
		{"empty refresh_token", errEmptyRefreshToken, true, Ambiguous, "response has an empty refresh_token"},
		{"canceled after sending", fmt.Errorf("Post \"x\": %w", context.Canceled), true, Ambiguous, "request canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := classify("token endpoint", tt.err, tt.sent, testRefreshToken)
			if got.Class != tt.wantClass {
				t.Errorf("class = %s, want %s", got.Class, tt.wantClass)
			}
			if msg := got.Error(); !strings.Contains(msg, tt.wantReason) {
				t.Errorf("message = %q, want it to contain %q", msg, tt.wantReason)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("errors.Is(classified, cause) = false, want true")
			}
			if got.Status != 0 {
				t.Errorf("status = %d, want 0 without a response", got.Status)
			}
		})
	}
}

func TestClassifyNeverQuotesSecrets(t *testing.T) {
	description := "refresh token " + testRefreshToken + " is not valid for client secret " + testClientSecret
	tests := []struct {
		name string
		err  error
	}{
		{"echo in error_description", retrieveError(400, "", "invalid_grant", description, "")},
		{"echo in body", retrieveError(502, "", "", "", "<p>"+testRefreshToken+"</p>")},
		{"echo in transport error", errors.New("read " + testRefreshToken + ": connection reset by peer")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg := classify("token endpoint", tt.err, true, testRefreshToken, testClientSecret).Error()
			for _, secret := range []string{testRefreshToken, testClientSecret} {
				if strings.Contains(msg, secret) {
					t.Errorf("message %q contains a secret", msg)
				}
			}
		})
	}
}

func TestClassOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"terminal", &Error{Class: Terminal}, Terminal},
		{"wrapped ambiguous", fmt.Errorf("rotating: %w", &Error{Class: Ambiguous}), Ambiguous},
		{"foreign error", errors.New("storage failed"), Transient},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ClassOf(tt.err); got != tt.want {
				t.Errorf("ClassOf = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name  string
		value string
		want  time.Duration
	}{
		{"absent", "", 0},
		{"seconds", "5", 5 * time.Second},
		{"seconds with spaces", " 30 ", 30 * time.Second},
		{"zero", "0", 0},
		{"negative", "-3", 0},
		{"garbage", "soon", 0},
		{"fraction", "1.5", 0},
		{"HTTP date ahead", now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"HTTP date passed", now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{"seconds beyond the cap", "999999999999", maxRetryAfter},
		{"HTTP date beyond the cap", now.Add(30 * 24 * time.Hour).Format(http.TimeFormat), maxRetryAfter},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseRetryAfter(tt.value, now); got != tt.want {
				t.Errorf("parseRetryAfter(%q) = %s, want %s", tt.value, got, tt.want)
			}
		})
	}
}

func TestSanitize(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		limit   int
		secrets []string
		want    string
	}{
		{"plain text", "The refresh token expired.", 200, nil, "The refresh token expired."},
		{"secret echoed", "token " + testRefreshToken + " was used twice", 200, []string{testRefreshToken}, "token [redacted] was used twice"},
		{"secret echoed twice", testClientSecret + "/" + testClientSecret, 200, []string{testClientSecret}, "[redacted]/[redacted]"},
		{"form-encoded secret echoed", "secret=a%2Bb%2Fc%3D rejected", 200, []string{"a+b/c="}, "secret=[redacted] rejected"},
		{"empty secret ignored", "nothing to hide", 200, []string{""}, "nothing to hide"},
		{"control characters", "line one\nline two\x1b[31m", 200, nil, "line one line two [31m"},
		{"truncated", strings.Repeat("a", 10), 4, nil, "aaaa..."},
		{"truncated at a rune boundary", "ééé", 3, nil, "é..."},
		{"secret redacted before truncation", testRefreshToken + " tail", 12, []string{testRefreshToken}, "[redacted] t..."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := sanitize(tt.in, tt.limit, tt.secrets)
			if got != tt.want {
				t.Errorf("sanitize = %q, want %q", got, tt.want)
			}
			for _, secret := range tt.secrets {
				if secret != "" && strings.Contains(got, secret) {
					t.Errorf("sanitize = %q, still contains a secret", got)
				}
			}
		})
	}
}

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		name string
		err  *Error
		want string
	}{
		{"code, status and description", &Error{Endpoint: "token endpoint", Code: "invalid_grant", Status: 400, Description: "spent"}, "token endpoint returned invalid_grant (HTTP 400): spent"},
		{"reason without response", &Error{Endpoint: "token endpoint", reason: "request timed out"}, "token endpoint: request timed out"},
		{"reason with status", &Error{Endpoint: "revocation endpoint", Status: 502, reason: "response is not an OAuth 2.0 error"}, "revocation endpoint: response is not an OAuth 2.0 error (HTTP 502)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}
