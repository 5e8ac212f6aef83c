package fakeissuer

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestRefreshFaults(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name             string
		fault            Fault
		wantReset        bool
		wantStatus       int
		wantContentType  string
		wantRetryAfter   string
		wantJSON         bool
		wantError        string
		wantRefreshToken any // expected refresh_token member; "new" means a fresh, active token
		wantAccessActive bool
		wantSeedActive   bool
		wantRotations    int
		wantOutcome      Outcome
	}{
		{
			name:       "delay before",
			fault:      Fault{Kind: FaultDelay, Delay: 50 * time.Millisecond},
			wantStatus: 200, wantJSON: true, wantRefreshToken: "new", wantAccessActive: true,
			wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "delay after",
			fault:      Fault{Kind: FaultDelay, Phase: AfterProcessing, Delay: 50 * time.Millisecond},
			wantStatus: 200, wantJSON: true, wantRefreshToken: "new", wantAccessActive: true,
			wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:      "reset before",
			fault:     Fault{Kind: FaultResetConnection},
			wantReset: true, wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:      "reset after",
			fault:     Fault{Kind: FaultResetConnection, Phase: AfterProcessing},
			wantReset: true, wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "503 before",
			fault:      Fault{Kind: FaultStatus},
			wantStatus: 503, wantContentType: "text/plain", wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "500 after",
			fault:      Fault{Kind: FaultStatus, Status: 500, Phase: AfterProcessing},
			wantStatus: 500, wantContentType: "text/plain", wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "429 retry after",
			fault:      Fault{Kind: FaultStatus, Status: 429, RetryAfter: "7"},
			wantStatus: 429, wantContentType: "text/plain", wantRetryAfter: "7", wantSeedActive: true,
			wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "status json body",
			fault:      Fault{Kind: FaultStatus, Status: 502, Body: `{"message":"bad gateway"}`},
			wantStatus: 502, wantContentType: "application/json", wantJSON: true, wantSeedActive: true,
			wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "html page",
			fault:      Fault{Kind: FaultHTMLBody},
			wantStatus: 502, wantContentType: "text/html", wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "html 504 after",
			fault:      Fault{Kind: FaultHTMLBody, Status: 504, Phase: AfterProcessing},
			wantStatus: 504, wantContentType: "text/html", wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "oauth error",
			fault:      Fault{Kind: FaultOAuthError, Status: 401, ErrorCode: "invalid_client"},
			wantStatus: 401, wantContentType: "application/json", wantJSON: true, wantError: "invalid_client",
			wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "error in 200",
			fault:      Fault{Kind: FaultErrorIn200},
			wantStatus: 200, wantContentType: "application/json", wantJSON: true, wantError: "invalid_grant",
			wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "missing refresh token before",
			fault:      Fault{Kind: FaultMissingRefreshToken},
			wantStatus: 200, wantJSON: true, wantRefreshToken: nil, wantAccessActive: true,
			wantSeedActive: true, wantOutcome: OutcomeNotRotated,
		},
		{
			name:       "missing refresh token after",
			fault:      Fault{Kind: FaultMissingRefreshToken, Phase: AfterProcessing},
			wantStatus: 200, wantJSON: true, wantRefreshToken: nil, wantAccessActive: true,
			wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "empty refresh token",
			fault:      Fault{Kind: FaultEmptyRefreshToken},
			wantStatus: 200, wantJSON: true, wantRefreshToken: "", wantAccessActive: true,
			wantSeedActive: true, wantOutcome: OutcomeNotRotated,
		},
		{
			name:       "non-string refresh token after",
			fault:      Fault{Kind: FaultNonStringRefreshToken, Phase: AfterProcessing},
			wantStatus: 200, wantJSON: true, wantRefreshToken: float64(12345), wantAccessActive: true,
			wantRotations: 1, wantOutcome: OutcomeRotated,
		},
		{
			name:       "non-json 200",
			fault:      Fault{Kind: FaultNonJSON200},
			wantStatus: 200, wantContentType: "text/plain", wantSeedActive: true, wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "truncated json before",
			fault:      Fault{Kind: FaultTruncatedJSON},
			wantStatus: 200, wantContentType: "application/json", wantSeedActive: true,
			wantOutcome: OutcomeNotProcessed,
		},
		{
			name:       "truncated json after",
			fault:      Fault{Kind: FaultTruncatedJSON, Phase: AfterProcessing},
			wantStatus: 200, wantContentType: "application/json", wantRotations: 1, wantOutcome: OutcomeRotated,
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			seed := iss.SeedGrant(testClientID, testScopes)
			tt.fault.Target = TargetRefreshToken
			iss.InjectFault(tt.fault)

			resp, err := post(t, iss, pathToken, refreshForm(seed), basicAuth)
			if tt.wantReset {
				if err == nil {
					t.Fatalf("got HTTP %d, want a transport error", resp.status)
				}
				if !errors.Is(err, syscall.ECONNRESET) {
					t.Errorf("error = %v, want connection reset", err)
				}
			} else {
				if err != nil {
					t.Fatalf("POST: %v", err)
				}
				checkFaultResponse(t, iss, resp, tt.wantStatus, tt.wantContentType, tt.wantRetryAfter,
					tt.wantJSON, tt.wantError, tt.wantRefreshToken, tt.wantAccessActive)
			}

			if got := iss.Active(seed); got != tt.wantSeedActive {
				t.Errorf("seed active = %v, want %v", got, tt.wantSeedActive)
			}

			stats := iss.Stats()
			if stats.Rotations != tt.wantRotations {
				t.Errorf("Rotations = %d, want %d", stats.Rotations, tt.wantRotations)
			}
			if stats.FaultsApplied != 1 || iss.PendingFaults() != 0 {
				t.Errorf("FaultsApplied, PendingFaults = %d, %d, want 1, 0", stats.FaultsApplied, iss.PendingFaults())
			}

			log := iss.RefreshLog()
			if len(log) != 1 {
				t.Fatalf("len(RefreshLog) = %d, want 1", len(log))
			}
			if log[0].Outcome != tt.wantOutcome || log[0].Fault != tt.fault.Kind {
				t.Errorf("record outcome, fault = %s, %s, want %s, %s",
					log[0].Outcome, log[0].Fault, tt.wantOutcome, tt.fault.Kind)
			}
			if log[0].ClientID != testClientID {
				t.Errorf("record ClientID = %q, want %q", log[0].ClientID, testClientID)
			}

			// After a rotation the stored new refresh token is the live one,
			// even when the response lost it.
			if tt.wantRotations == 1 {
				latest, _ := iss.LatestRefreshToken(seed)
				if !iss.Active(latest) || Fingerprint(latest) != log[0].NewFingerprint {
					t.Errorf("latest refresh token not active or not the recorded one")
				}
			}
		})
	}
}

// checkFaultResponse checks an HTTP response shaped by a fault.
func checkFaultResponse(t *testing.T, iss *Issuer, resp response, status int, contentType, retryAfter string,
	wantJSON bool, wantError string, wantRefresh any, wantAccessActive bool,
) {
	t.Helper()

	if resp.status != status {
		t.Errorf("status = %d, want %d", resp.status, status)
	}
	if contentType != "" && !strings.HasPrefix(resp.header.Get("Content-Type"), contentType) {
		t.Errorf("Content-Type = %q, want %s", resp.header.Get("Content-Type"), contentType)
	}
	if got := resp.header.Get("Retry-After"); got != retryAfter {
		t.Errorf("Retry-After = %q, want %q", got, retryAfter)
	}
	if got := json.Valid(resp.body); got != wantJSON {
		t.Errorf("body is valid JSON = %v, want %v", got, wantJSON)
	}
	if got := resp.text("error"); got != wantError {
		t.Errorf("error = %q, want %q", got, wantError)
	}
	if !wantJSON || wantError != "" {
		return
	}

	var obj map[string]any
	_ = json.Unmarshal(resp.body, &obj)
	got, present := obj["refresh_token"]
	switch {
	case wantRefresh == "new":
		if s, _ := got.(string); !iss.Active(s) {
			t.Errorf("refresh_token is not a new active token")
		}
	case wantRefresh == nil:
		if present {
			t.Errorf("refresh_token present = %v, want absent", got)
		}
	case got != wantRefresh:
		t.Errorf("refresh_token = %#v, want %#v", got, wantRefresh)
	}

	if got := iss.Active(resp.text("access_token")); got != wantAccessActive {
		t.Errorf("access token active = %v, want %v", got, wantAccessActive)
	}
}

func TestTruncatedJSONIsHalfAToken(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)
	iss.InjectFault(Fault{Kind: FaultTruncatedJSON, Phase: AfterProcessing})

	resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
	if !strings.HasPrefix(string(resp.body), "{") {
		t.Errorf("truncated body does not start like a JSON object")
	}

	var obj map[string]any
	err := json.Unmarshal(resp.body, &obj)
	if err == nil || !strings.Contains(err.Error(), "unexpected end of JSON input") {
		t.Errorf("json.Unmarshal error = %v, want unexpected end of JSON input", err)
	}
}

func TestFaultTargetsAndOrder(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)
	iss.InjectFault(Fault{Kind: FaultStatus, Status: 500, Target: TargetClientCredentials})
	iss.InjectFault(Fault{Kind: FaultStatus, Status: 502, Target: TargetRefreshToken, Count: 2})
	iss.InjectFault(Fault{Kind: FaultStatus, Status: 503})

	if got := iss.PendingFaults(); got != 4 {
		t.Fatalf("PendingFaults = %d, want 4", got)
	}

	ccForm := url.Values{"grant_type": {"client_credentials"}}
	steps := []struct {
		name       string
		form       url.Values
		wantStatus int
	}{
		{name: "refresh takes first refresh fault", form: refreshForm(seed), wantStatus: 502},
		{name: "refresh takes its second count", form: refreshForm(seed), wantStatus: 502},
		{name: "client credentials skips to its own", form: ccForm, wantStatus: 500},
		{name: "any-grant fault", form: ccForm, wantStatus: 503},
		{name: "queue empty", form: refreshForm(seed), wantStatus: 200},
	}

	for _, step := range steps {
		resp := mustPost(t, iss, pathToken, step.form, basicAuth)
		if resp.status != step.wantStatus {
			t.Errorf("%s: status = %d, want %d", step.name, resp.status, step.wantStatus)
		}
	}

	if got := iss.Stats().FaultsApplied; got != 4 {
		t.Errorf("FaultsApplied = %d, want 4", got)
	}
}

func TestClearFaults(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	iss.InjectFault(Fault{Kind: FaultStatus, Count: 3})
	iss.ClearFaults()

	resp := mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)
	if resp.status != http.StatusOK {
		t.Errorf("status = %d, want 200 after ClearFaults", resp.status)
	}
}

func TestClientCredentialsFaultAfter(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	iss.InjectFault(Fault{Kind: FaultResetConnection, Target: TargetClientCredentials, Phase: AfterProcessing})

	_, err := post(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)
	if err == nil {
		t.Fatalf("got a response, want a reset")
	}

	active := 0
	iss.mu.Lock()
	for _, tok := range iss.tokens {
		if tok.kind == kindAccess && iss.isActive(tok, iss.now()) {
			active++
		}
	}
	iss.mu.Unlock()

	if active != 1 {
		t.Errorf("active access tokens = %d, want 1 (issued, then the response was lost)", active)
	}
}

func TestDelayClientGivesUp(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name           string
		phase          Phase
		wantSeedActive bool
		wantOutcome    Outcome
	}{
		{name: "before processing", phase: BeforeProcessing, wantSeedActive: true, wantOutcome: OutcomeNotProcessed},
		{name: "after processing", phase: AfterProcessing, wantSeedActive: false, wantOutcome: OutcomeRotated},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			seed := iss.SeedGrant(testClientID, testScopes)
			iss.InjectFault(Fault{Kind: FaultDelay, Phase: tt.phase, Delay: 5 * time.Second, Target: TargetRefreshToken})

			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, iss.TokenURL(),
				strings.NewReader(refreshForm(seed).Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.SetBasicAuth(url.QueryEscape(testClientID), url.QueryEscape(testClientSecret))

			start := time.Now()
			resp, err := iss.Client().Do(req)
			if err == nil {
				resp.Body.Close()
				t.Fatalf("got HTTP %d, want a timeout", resp.StatusCode)
			}

			// The handler detects the cancellation shortly after the client
			// closes the connection.
			deadline := time.Now().Add(3 * time.Second)
			for len(iss.RefreshLog()) == 0 && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			if elapsed := time.Since(start); elapsed > 4*time.Second {
				t.Errorf("handler took %s, want the delay cut short", elapsed)
			}

			if got := iss.Active(seed); got != tt.wantSeedActive {
				t.Errorf("seed active = %v, want %v", got, tt.wantSeedActive)
			}
			log := iss.RefreshLog()
			if len(log) != 1 || log[0].Outcome != tt.wantOutcome {
				t.Errorf("RefreshLog = %+v, want one record with outcome %s", log, tt.wantOutcome)
			}
		})
	}
}

func TestLostResponseRetry(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		grace       time.Duration
		wantOutcome Outcome
		wantStatus  int
	}{
		{name: "strict", wantOutcome: OutcomeReused, wantStatus: 400},
		{name: "grace window", grace: time.Minute, wantOutcome: OutcomeGraceRotated, wantStatus: 200},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t, WithGraceWindow(tt.grace))
			seed := iss.SeedGrant(testClientID, testScopes)
			iss.InjectFault(Fault{Kind: FaultResetConnection, Target: TargetRefreshToken, Phase: AfterProcessing})

			if _, err := post(t, iss, pathToken, refreshForm(seed), basicAuth); err == nil {
				t.Fatalf("first refresh got a response, want a reset")
			}

			resp := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
			if resp.status != tt.wantStatus {
				t.Errorf("retry status = %d, want %d", resp.status, tt.wantStatus)
			}

			log := iss.RefreshLog()
			if len(log) != 2 || log[1].Outcome != tt.wantOutcome {
				t.Errorf("RefreshLog = %+v, want the retry recorded as %s", log, tt.wantOutcome)
			}
			if got := iss.TimesPresented(seed); got != 2 {
				t.Errorf("TimesPresented(seed) = %d, want 2", got)
			}
		})
	}
}

func TestRevocationFaults(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		fault       Fault
		wantReset   bool
		wantStatus  int
		wantRevoked bool
	}{
		{name: "503 before", fault: Fault{Kind: FaultStatus}, wantStatus: 503},
		{name: "503 after", fault: Fault{Kind: FaultStatus, Phase: AfterProcessing}, wantStatus: 503, wantRevoked: true},
		{name: "reset before", fault: Fault{Kind: FaultResetConnection}, wantReset: true},
		{name: "reset after", fault: Fault{Kind: FaultResetConnection, Phase: AfterProcessing}, wantReset: true, wantRevoked: true},
		{name: "html before", fault: Fault{Kind: FaultHTMLBody}, wantStatus: 502},
		{name: "delay", fault: Fault{Kind: FaultDelay, Delay: 20 * time.Millisecond}, wantStatus: 200, wantRevoked: true},
		{name: "error in 200", fault: Fault{Kind: FaultErrorIn200, ErrorCode: "server_error"}, wantStatus: 200},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			iss := newTestIssuer(t)
			access := mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth).text("access_token")
			tt.fault.Target = TargetRevocation
			iss.InjectFault(tt.fault)

			// A token request must not consume a revocation fault.
			mustPost(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, basicAuth)
			if got := iss.PendingFaults(); got != 1 {
				t.Fatalf("PendingFaults after a token request = %d, want 1", got)
			}

			resp, err := post(t, iss, pathRevoke, url.Values{"token": {access}}, basicAuth)
			if tt.wantReset {
				if err == nil {
					t.Errorf("got HTTP %d, want a reset", resp.status)
				}
			} else if err != nil {
				t.Fatalf("POST revoke: %v", err)
			} else if resp.status != tt.wantStatus {
				t.Errorf("status = %d, want %d", resp.status, tt.wantStatus)
			}

			if got := !iss.Active(access); got != tt.wantRevoked {
				t.Errorf("revoked = %v, want %v", got, tt.wantRevoked)
			}
			if got := iss.Stats().RevocationRequests; got != 1 {
				t.Errorf("RevocationRequests = %d, want 1", got)
			}
		})
	}
}
