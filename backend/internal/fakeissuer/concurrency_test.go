package fakeissuer

import (
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
)

const concurrentCallers = 200

func TestConcurrentRefreshOfOneToken(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)

	var wg sync.WaitGroup
	statuses := make([]int, concurrentCallers)
	for n := range concurrentCallers {
		wg.Go(func() {
			resp, err := post(t, iss, pathToken, refreshForm(seed), basicAuth)
			if err != nil {
				t.Errorf("caller %d: %v", n, err)
				return
			}
			statuses[n] = resp.status
		})
	}
	wg.Wait()

	ok := 0
	for _, s := range statuses {
		if s == http.StatusOK {
			ok++
		}
	}
	if ok != 1 {
		t.Errorf("successful refreshes = %d, want 1", ok)
	}

	stats := iss.Stats()
	if stats.RefreshRequests != concurrentCallers || stats.Rotations != 1 || stats.ReuseDetections != 1 {
		t.Errorf("RefreshRequests, Rotations, ReuseDetections = %d, %d, %d, want %d, 1, 1",
			stats.RefreshRequests, stats.Rotations, stats.ReuseDetections, concurrentCallers)
	}

	latest, _ := iss.LatestRefreshToken(seed)
	if iss.Active(latest) {
		t.Errorf("family still active after concurrent reuse, want revoked")
	}
}

func TestConcurrentMixedTraffic(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	const chains = 20
	const rotationsPerChain = 5

	seeds := make([]string, chains)
	for n := range seeds {
		seeds[n] = iss.SeedGrant(testClientID, testScopes)
	}
	iss.InjectFault(Fault{Kind: FaultStatus, Target: TargetClientCredentials, Count: 50})

	var wg sync.WaitGroup

	// Each chain rotates its own family in order, so every rotation succeeds.
	for _, seed := range seeds {
		wg.Go(func() {
			current := seed
			for range rotationsPerChain {
				resp, err := post(t, iss, pathToken, refreshForm(current), basicAuth)
				if err != nil || resp.status != http.StatusOK {
					t.Errorf("chain refresh failed: err %v", err)
					return
				}
				current = resp.text("refresh_token")
			}
		})
	}

	// Client credentials callers, the first 50 of which hit the 503 fault.
	ccStatuses := make([]int, concurrentCallers-chains)
	for n := range ccStatuses {
		wg.Go(func() {
			resp, err := post(t, iss, pathToken, url.Values{"grant_type": {"client_credentials"}}, postAuth)
			if err != nil {
				t.Errorf("client credentials: %v", err)
				return
			}
			ccStatuses[n] = resp.status
			_ = iss.Stats()
			_ = iss.RefreshLog()
			_ = iss.Active(resp.text("access_token"))
		})
	}
	wg.Wait()

	unavailable := 0
	for _, s := range ccStatuses {
		if s == http.StatusServiceUnavailable {
			unavailable++
		}
	}
	if unavailable != 50 {
		t.Errorf("503 responses = %d, want 50", unavailable)
	}

	stats := iss.Stats()
	if stats.Rotations != chains*rotationsPerChain || stats.RefreshRequests != chains*rotationsPerChain {
		t.Errorf("Rotations, RefreshRequests = %d, %d, want %d each", stats.Rotations, stats.RefreshRequests, chains*rotationsPerChain)
	}
	if stats.ReuseDetections != 0 {
		t.Errorf("ReuseDetections = %d, want 0", stats.ReuseDetections)
	}

	presented := map[string]int{}
	for _, rec := range iss.RefreshLog() {
		presented[rec.Fingerprint]++
	}
	for fp, n := range presented {
		if n != 1 {
			t.Errorf("refresh token %s presented %d times, want 1", fp, n)
		}
	}
}

func TestRecordsContainNoSecrets(t *testing.T) {
	t.Parallel()

	iss := newTestIssuer(t)
	seed := iss.SeedGrant(testClientID, testScopes)
	_, refresh := refreshOK(t, iss, seed)
	reuse := mustPost(t, iss, pathToken, refreshForm(seed), basicAuth)
	badAuth := mustPost(t, iss, pathToken, refreshForm(refresh), credentials{testClientID, "not-the-secret-5150", AuthMethodPost})

	secrets := []string{seed, refresh, testClientSecret, "not-the-secret-5150"}
	for _, body := range [][]byte{reuse.body, badAuth.body} {
		for _, secret := range secrets {
			if strings.Contains(string(body), secret) {
				t.Errorf("error response %s contains a secret", body)
			}
		}
	}
	for _, rec := range iss.RefreshLog() {
		text := strings.Join([]string{rec.ClientID, rec.AuthMethod, rec.Fingerprint, string(rec.Outcome), rec.NewFingerprint}, " ")
		for _, secret := range secrets {
			if strings.Contains(text, secret) {
				t.Errorf("refresh record %+v contains a secret", rec.Outcome)
			}
		}
	}
}
