package upstream

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/oauth2"
)

// Class describes what a failed upstream request means for the credential that
// was sent with it.
type Class int

const (
	// Transient failures (connection refused before the request was sent,
	// 5xx, 429, a proxy's HTML page) leave the credential untouched: back off
	// and try again with the same one.
	Transient Class = iota + 1

	// Terminal failures are well-formed OAuth 2.0 errors such as
	// invalid_grant or invalid_client: the credential will never work again.
	Terminal

	// Ambiguous failures happened after the request was sent and before a
	// usable response arrived, so the upstream may have spent the credential.
	Ambiguous
)

// String returns the lowercase name of the class.
func (c Class) String() string {
	switch c {
	case Transient:
		return "transient"
	case Terminal:
		return "terminal"
	case Ambiguous:
		return "ambiguous"
	default:
		return "unknown"
	}
}

// Error is a failed upstream request, classified. Its message is safe to log
// and return to Vault clients: it never contains a token, a client secret or
// a response body.
type Error struct {
	// Class is whether the request may be retried, and how.
	Class Class

	// Endpoint names the endpoint that failed, such as "token endpoint".
	Endpoint string

	// Code is the OAuth 2.0 error code (RFC 6749 section 5.2), if the upstream
	// sent one.
	Code string

	// Description is the upstream's error_description, trimmed to printable
	// characters and scrubbed of the secrets that were sent.
	Description string

	// Status is the HTTP status code, or 0 when no response arrived.
	Status int

	// RetryAfter is the delay the upstream asked for with Retry-After.
	RetryAfter time.Duration

	// cause is the underlying transport error, kept for errors.Is. Its text
	// is never part of Error's message, because x/oauth2 puts response
	// bodies into its errors.
	cause error

	// reason describes a failure that has no OAuth error code.
	reason string
}

// Error returns a one-line description without secrets.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Endpoint)
	switch {
	case e.Code != "":
		fmt.Fprintf(&b, " returned %s", e.Code)
	case e.reason != "":
		b.WriteString(": ")
		b.WriteString(e.reason)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.Status)
	}
	if e.Description != "" {
		fmt.Fprintf(&b, ": %s", e.Description)
	}
	return b.String()
}

// Unwrap returns the transport error, if any, for errors.Is checks such as
// context.DeadlineExceeded.
func (e *Error) Unwrap() error { return e.cause }

// ClassOf returns the class of err, or Transient for errors that did not come
// from this package.
func ClassOf(err error) Class {
	var upstreamErr *Error
	if errors.As(err, &upstreamErr) {
		return upstreamErr.Class
	}
	return Transient
}

// terminalCodes are the OAuth 2.0 error codes after which the same request can
// never succeed.
var terminalCodes = map[string]bool{
	"invalid_grant":          true,
	"invalid_client":         true,
	"unauthorized_client":    true,
	"unsupported_grant_type": true,
	"invalid_scope":          true,
	"invalid_request":        true,
	"invalid_target":         true,
	"access_denied":          true,
	"expired_token":          true,
}

// transientCodes are the OAuth 2.0 error codes that report a passing
// condition of the server rather than a verdict on the request. RFC 6749
// defines server_error and temporarily_unavailable for the authorization
// endpoint, and some servers send them from the token endpoint too.
var transientCodes = map[string]bool{
	"server_error":            true,
	"temporarily_unavailable": true,
	"slow_down":               true,
	"authorization_pending":   true,
}

// maxDescriptionLength bounds how much of an upstream error_description is
// kept, so a hostile or chatty server cannot flood logs.
const maxDescriptionLength = 200

// classify turns an error from x/oauth2 or net/http into an *Error.
// requestSent reports whether the request was fully written to the
// connection; secrets are scrubbed from anything the upstream echoed.
func classify(endpoint string, err error, requestSent bool, secrets ...string) *Error {
	var retrieveErr *oauth2.RetrieveError
	if errors.As(err, &retrieveErr) {
		return classifyResponse(endpoint, retrieveErr, secrets)
	}

	if !requestSent {
		return &Error{Class: Transient, Endpoint: endpoint, cause: err, reason: transportReason(err)}
	}
	// The request reached the upstream but no usable response came back: the
	// connection broke, the deadline passed, or the body did not parse.
	return &Error{Class: Ambiguous, Endpoint: endpoint, cause: err, reason: "no usable response after the request was sent: " + transportReason(err)}
}

// classifyResponse classifies an HTTP response that x/oauth2 rejected.
func classifyResponse(endpoint string, re *oauth2.RetrieveError, secrets []string) *Error {
	e := &Error{
		Endpoint:    endpoint,
		Code:        sanitize(re.ErrorCode, 64, secrets),
		Description: sanitize(re.ErrorDescription, maxDescriptionLength, secrets),
	}
	if re.Response != nil {
		e.Status = re.Response.StatusCode
		e.RetryAfter = parseRetryAfter(re.Response.Header.Get("Retry-After"), time.Now())
	}

	switch {
	case e.Status == http.StatusTooManyRequests || e.Status >= 500:
		e.Class = Transient
	case transientCodes[e.Code]:
		e.Class = Transient
	case e.Code != "" && (terminalCodes[e.Code] || (e.Status >= 400 && e.Status < 500)):
		e.Class = Terminal
	case e.Code != "":
		// An unknown error code with a 2xx status: the request was processed
		// and refused, which no retry will change.
		e.Class = Terminal
	default:
		// A 4xx without a parseable OAuth error is most often a proxy or a
		// load balancer in the way, not the authorization server's verdict.
		e.Class = Transient
		e.reason = "response is not an OAuth 2.0 error"
	}
	return e
}

// transportReason describes a transport error without quoting anything the
// upstream sent.
func transportReason(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, errMissingAccessToken):
		return "response has no access_token"
	case errors.Is(err, errEmptyRefreshToken):
		return "response has an empty refresh_token"
	case strings.Contains(msg, "missing access_token"):
		// x/oauth2's own check, reached by a 200 whose body is not JSON.
		return "response has no access_token"
	case strings.Contains(msg, "cannot parse"):
		// x/oauth2 reports truncated JSON and members of the wrong type,
		// such as a numeric refresh_token, alike.
		return "response is not a valid token response"
	case strings.Contains(msg, "deadline exceeded") || strings.Contains(msg, "Client.Timeout"):
		return "request timed out"
	case strings.Contains(msg, "connection refused"):
		return "connection refused"
	case strings.Contains(msg, "connection reset"), strings.Contains(msg, "EOF"):
		return "connection closed by the upstream"
	case strings.Contains(msg, "no such host"):
		return "host not found"
	case strings.Contains(msg, "certificate"), strings.Contains(msg, "tls:"):
		return "TLS handshake failed"
	case strings.Contains(msg, "context canceled"):
		return "request canceled"
	default:
		return "request failed"
	}
}

// maxRetryAfter caps the delay a Retry-After header can ask for, so that
// an upstream cannot postpone rotation of the root grant for longer than a
// day, and a huge number of seconds cannot overflow time.Duration.
const maxRetryAfter = 24 * time.Hour

// parseRetryAfter reads a Retry-After header value (RFC 9110 section
// 10.2.3): a number of seconds or an HTTP date. It returns 0 when absent or
// malformed, and at most maxRetryAfter.
func parseRetryAfter(value string, now time.Time) time.Duration {
	value = strings.TrimSpace(value)
	if value == "" {
		return 0
	}
	if seconds, err := strconv.ParseInt(value, 10, 64); err == nil {
		if seconds <= 0 {
			return 0
		}
		if seconds >= int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		return time.Duration(seconds) * time.Second
	}
	if at, err := http.ParseTime(value); err == nil && at.After(now) {
		return min(at.Sub(now), maxRetryAfter)
	}
	return 0
}

// sanitize keeps at most limit bytes of printable characters of s and
// replaces every secret in it, also in its form-encoded spelling, so upstream
// text can be shown to operators.
func sanitize(s string, limit int, secrets []string) string {
	for _, secret := range secrets {
		if secret == "" {
			continue
		}
		s = strings.ReplaceAll(s, secret, "[redacted]")
		if encoded := url.QueryEscape(secret); encoded != secret {
			s = strings.ReplaceAll(s, encoded, "[redacted]")
		}
	}
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return ' '
	}, s)
	if len(s) > limit {
		// Cut at a rune boundary, so the message stays valid UTF-8.
		cut := limit
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "..."
	}
	return strings.TrimSpace(s)
}
