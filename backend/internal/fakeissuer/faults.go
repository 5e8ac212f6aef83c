package fakeissuer

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"time"
)

// FaultKind is the kind of failure an injected fault produces.
type FaultKind int

// Fault kinds. Unless its comment states otherwise, a kind's response
// replaces the one the issuer would have sent.
const (
	// FaultDelay waits Fault.Delay, then responds normally.
	FaultDelay FaultKind = iota + 1
	// FaultResetConnection reads the whole request, then hijacks the
	// connection and closes it with a TCP RST and no response.
	FaultResetConnection
	// FaultStatus sends Fault.Status (default 503) with a short text/plain
	// body, or Fault.Body when set.
	FaultStatus
	// FaultHTMLBody sends a proxy-style text/html error page with
	// Fault.Status (default 502).
	FaultHTMLBody
	// FaultOAuthError sends a well-formed OAuth error with Fault.Status
	// (default 400) and Fault.ErrorCode (default invalid_grant).
	FaultOAuthError
	// FaultErrorIn200 sends HTTP 200 with an OAuth error body carrying
	// Fault.ErrorCode (default invalid_grant).
	FaultErrorIn200
	// FaultMissingRefreshToken sends the token response without
	// refresh_token.
	FaultMissingRefreshToken
	// FaultEmptyRefreshToken sends the token response with
	// "refresh_token": "".
	FaultEmptyRefreshToken
	// FaultNonStringRefreshToken sends the token response with
	// "refresh_token": 12345.
	FaultNonStringRefreshToken
	// FaultNonJSON200 sends HTTP 200 with a text/plain body that is not JSON.
	FaultNonJSON200
	// FaultTruncatedJSON sends HTTP 200 with the first half of the JSON
	// token response, labelled application/json.
	FaultTruncatedJSON
)

var faultKindNames = map[FaultKind]string{
	FaultDelay:                 "delay",
	FaultResetConnection:       "reset_connection",
	FaultStatus:                "status",
	FaultHTMLBody:              "html_body",
	FaultOAuthError:            "oauth_error",
	FaultErrorIn200:            "error_in_200",
	FaultMissingRefreshToken:   "missing_refresh_token",
	FaultEmptyRefreshToken:     "empty_refresh_token",
	FaultNonStringRefreshToken: "non_string_refresh_token",
	FaultNonJSON200:            "non_json_200",
	FaultTruncatedJSON:         "truncated_json",
}

// String returns the kind's snake_case name, or "none" for 0.
func (k FaultKind) String() string {
	if k == 0 {
		return "none"
	}

	if name, ok := faultKindNames[k]; ok {
		return name
	}

	return fmt.Sprintf("FaultKind(%d)", int(k))
}

// shapesTokenBody reports whether the kind edits the refresh_token member
// of a real token response instead of replacing the response.
func (k FaultKind) shapesTokenBody() bool {
	return k == FaultMissingRefreshToken || k == FaultEmptyRefreshToken || k == FaultNonStringRefreshToken
}

// Target selects the requests a fault applies to.
type Target int

// Fault targets.
const (
	// TargetAnyGrant matches every POST to the token endpoint.
	TargetAnyGrant Target = iota
	// TargetRefreshToken matches grant_type=refresh_token.
	TargetRefreshToken
	// TargetClientCredentials matches grant_type=client_credentials.
	TargetClientCredentials
	// TargetAuthorizationCode matches grant_type=authorization_code.
	TargetAuthorizationCode
	// TargetRevocation matches POSTs to the revocation endpoint. It accepts
	// only the kinds that do not edit a token response: FaultDelay,
	// FaultResetConnection, FaultStatus, FaultHTMLBody, FaultOAuthError,
	// FaultErrorIn200 and FaultNonJSON200.
	TargetRevocation
)

// Phase is when a fault acts relative to the issuer's own processing.
type Phase int

// Fault phases.
const (
	// BeforeProcessing acts before the request is processed, so the grant
	// is untouched: nothing rotates and nothing is revoked. The exceptions
	// are FaultDelay, which processes the request after the delay, and the
	// kinds that edit refresh_token, which process the request but do not
	// rotate a refresh token (see Fault).
	BeforeProcessing Phase = iota
	// AfterProcessing processes the request first (a refresh rotates, a
	// revocation revokes), then replaces or edits the real response. This
	// expresses "the upstream rotated, then the response was lost".
	AfterProcessing
)

// Fault describes one injected failure. The zero value of each optional
// field selects the documented default.
//
// The kinds that edit refresh_token (FaultMissingRefreshToken,
// FaultEmptyRefreshToken, FaultNonStringRefreshToken) always process the
// request. With BeforeProcessing a refresh does not rotate: the presented
// refresh token stays valid, and the response carries a new, active access
// token, as from a server that does not rotate. With AfterProcessing the
// refresh rotates and the new refresh token is stored but lost with the
// edited response, so the presented token is spent. For other grants both
// phases behave alike. An error response is never edited.
type Fault struct {
	Kind   FaultKind
	Target Target
	Phase  Phase

	// Count is how many matching requests the fault applies to; 0 means 1.
	Count int
	// Delay is waited before the fault acts, for every kind. A delay before
	// processing ends early when the client gives up, and the request is then
	// not processed.
	Delay time.Duration
	// Status is the HTTP status of FaultStatus, FaultHTMLBody and
	// FaultOAuthError.
	Status int
	// RetryAfter is sent verbatim as the Retry-After header when not empty,
	// for example "5" or an HTTP-date.
	RetryAfter string
	// ErrorCode is the error member of FaultOAuthError and FaultErrorIn200.
	ErrorCode string
	// Body replaces the text/plain body of FaultStatus. It is sent as
	// application/json when it is valid JSON.
	Body string
}

// queuedFault is a fault with the number of applications left.
type queuedFault struct {
	fault     Fault
	remaining int
}

// InjectFault queues f behind the faults already queued. Each matching
// request consumes one application of the first queued fault whose Target
// matches it. An invalid fault fails the test and is not queued.
func (i *Issuer) InjectFault(f Fault) {
	i.tb.Helper()

	if problem := validateFault(f); problem != "" {
		i.tb.Errorf("fakeissuer: InjectFault(%s): %s", f.Kind, problem)
		return
	}

	count := f.Count
	if count == 0 {
		count = 1
	}

	i.mu.Lock()
	defer i.mu.Unlock()

	i.faults = append(i.faults, &queuedFault{fault: f, remaining: count})
}

// validateFault returns what is wrong with f, or "".
func validateFault(f Fault) string {
	switch {
	case f.Kind < FaultDelay || f.Kind > FaultTruncatedJSON:
		return "unknown kind"
	case f.Target < TargetAnyGrant || f.Target > TargetRevocation:
		return fmt.Sprintf("unknown target %d", int(f.Target))
	case f.Phase != BeforeProcessing && f.Phase != AfterProcessing:
		return fmt.Sprintf("unknown phase %d", int(f.Phase))
	case f.Count < 0:
		return fmt.Sprintf("negative count %d", f.Count)
	case f.Delay < 0:
		return fmt.Sprintf("negative delay %s", f.Delay)
	case f.Status != 0 && (f.Status < 100 || f.Status > 599):
		return fmt.Sprintf("invalid status %d", f.Status)
	case f.Target == TargetRevocation && (f.Kind.shapesTokenBody() || f.Kind == FaultTruncatedJSON):
		return "the revocation endpoint sends no token response to edit"
	}

	return ""
}

// PendingFaults returns how many fault applications are still queued.
func (i *Issuer) PendingFaults() int {
	i.mu.Lock()
	defer i.mu.Unlock()

	n := 0
	for _, q := range i.faults {
		n += q.remaining
	}

	return n
}

// ClearFaults empties the fault queue.
func (i *Issuer) ClearFaults() {
	i.mu.Lock()
	defer i.mu.Unlock()

	i.faults = nil
}

// takeFault consumes one application of the first queued fault matching a
// request aimed at target. The caller holds i.mu.
func (i *Issuer) takeFault(target Target) (Fault, bool) {
	for n, q := range i.faults {
		matches := q.fault.Target == target ||
			(q.fault.Target == TargetAnyGrant && target != TargetRevocation)
		if !matches {
			continue
		}

		q.remaining--
		if q.remaining == 0 {
			i.faults = append(i.faults[:n:n], i.faults[n+1:]...)
		}
		i.stats.FaultsApplied++

		return q.fault, true
	}

	return Fault{}, false
}

// wait sleeps for d and reports whether the request should go on. It
// returns false when the client gave up or the issuer shut down first.
func (i *Issuer) wait(r *http.Request, d time.Duration) bool {
	if d <= 0 {
		return r.Context().Err() == nil
	}

	timer := time.NewTimer(d)
	defer timer.Stop()

	select {
	case <-timer.C:
		return true
	case <-r.Context().Done():
		return false
	case <-i.done:
		return false
	}
}

// writeFault sends the response of a fault that replaces the real one.
// realBody is the JSON the issuer would have sent, used by
// FaultTruncatedJSON.
func writeFault(w http.ResponseWriter, f Fault, realBody []byte) {
	if f.Kind == FaultResetConnection {
		resetConnection(w)
		return
	}

	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}

	switch f.Kind {
	case FaultStatus:
		writeStatusFault(w, f)
	case FaultHTMLBody:
		status := statusOr(f.Status, http.StatusBadGateway)
		writeBody(w, status, "text/html; charset=utf-8", proxyPage(status))
	case FaultOAuthError:
		status := statusOr(f.Status, http.StatusBadRequest)
		writeOAuthError(w, &oauthError{status: status, code: errorCodeOr(f.ErrorCode), description: "Injected error."})
	case FaultErrorIn200:
		writeOAuthError(w, &oauthError{status: http.StatusOK, code: errorCodeOr(f.ErrorCode), description: "Injected error."})
	case FaultNonJSON200:
		writeBody(w, http.StatusOK, "text/plain; charset=utf-8", "request accepted\n")
	case FaultTruncatedJSON:
		writeBody(w, http.StatusOK, "application/json;charset=UTF-8", string(realBody[:len(realBody)/2]))
	default:
		panic("fakeissuer: writeFault called for kind " + f.Kind.String())
	}
}

func writeStatusFault(w http.ResponseWriter, f Fault) {
	status := statusOr(f.Status, http.StatusServiceUnavailable)

	switch {
	case f.Body == "":
		writeBody(w, status, "text/plain; charset=utf-8", http.StatusText(status)+"\n")
	case json.Valid([]byte(f.Body)):
		writeBody(w, status, "application/json", f.Body)
	default:
		writeBody(w, status, "text/plain; charset=utf-8", f.Body)
	}
}

// resetConnection closes the client connection with a TCP RST, so the
// client sees "connection reset by peer" and no response.
func resetConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic("fakeissuer: hijack for a connection reset failed: " + err.Error())
	}

	raw := conn
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = tc.NetConn()
	}

	if tcp, ok := raw.(*net.TCPConn); ok {
		// Linger 0 makes Close send RST instead of FIN.
		_ = tcp.SetLinger(0)
	}

	_ = raw.Close()
}

// proxyPage returns an HTML error page like the ones reverse proxies send.
func proxyPage(status int) string {
	text := http.StatusText(status)

	return fmt.Sprintf("<html>\r\n<head><title>%d %s</title></head>\r\n"+
		"<body>\r\n<center><h1>%d %s</h1></center>\r\n<hr><center>proxy</center>\r\n"+
		"</body>\r\n</html>\r\n", status, text, status, text)
}

func statusOr(status, fallback int) int {
	if status == 0 {
		return fallback
	}

	return status
}

func errorCodeOr(code string) string {
	if code == "" {
		return "invalid_grant"
	}

	return code
}
