package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// kvMountPath is the kv-v2 mount that scenario B writes to.
const kvMountPath = "bench-kv"

// requestTimeout bounds one benchmark request.
const requestTimeout = 30 * time.Second

// newTransport returns a transport that keeps an idle connection for every
// worker of the largest level, so that no level pays for new connections.
// The default transport keeps 2 per host, which at 64 workers would open
// and close connections all the time and measure the load generator.
func newTransport(maxConcurrency int) *http.Transport {
	return &http.Transport{
		Proxy: nil,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: maxConcurrency,
		IdleConnTimeout:     5 * time.Minute,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
}

// targets sends the requests of the scenarios to the stack. Every URL is a
// loopback address that devstack chose.
type targets struct {
	http *http.Client

	vaultAddr  string
	vaultToken string

	tokenEndpoint string
	clientID      string
	clientSecret  string

	// tokenForm is the client credentials request body that the engine
	// sends for the deploy role.
	tokenForm string

	// kvBody is the kv-v2 write body, as large as a mint response's data.
	kvBody []byte
}

// newTransportClient returns an HTTP client on a newTransport.
func newTransportClient(maxConcurrency int) *http.Client {
	return &http.Client{Transport: newTransport(maxConcurrency), Timeout: requestTimeout}
}

// clientCredentialsForm returns the body of the deploy role's client
// credentials request.
func clientCredentialsForm() string {
	form := url.Values{
		"grant_type": {"client_credentials"},
		"scope":      {devstack.RoleScope},
		"audience":   {devstack.Audience},
	}
	return form.Encode()
}

// newTargets returns the request senders for stack, sharing one transport.
func newTargets(stack *devstack.Stack, maxConcurrency int) *targets {
	return &targets{
		http:          newTransportClient(maxConcurrency),
		vaultAddr:     stack.Vault.Addr,
		vaultToken:    stack.Vault.Token,
		tokenEndpoint: stack.Hydra.TokenEndpoint(),
		clientID:      stack.EngineClient.ID,
		clientSecret:  stack.EngineClient.Secret,
		tokenForm:     clientCredentialsForm(),
	}
}

// mintResponse is the part of a creds/<role> response that the benchmark
// checks. The access token is read only to test that it is there.
type mintResponse struct {
	LeaseID string `json:"lease_id"`
	Data    struct {
		AccessToken string `json:"access_token"`
	} `json:"data"`
}

// mint is scenario A: `vault write ci-tokens/creds/deploy` over the HTTP API.
func (t *targets) mint(ctx context.Context, _, _ int) error {
	var resp mintResponse
	if err := t.vault(ctx, http.MethodPut, devstack.MountPath+"/creds/"+devstack.RoleName, nil, &resp); err != nil {
		return err
	}
	if resp.LeaseID == "" || resp.Data.AccessToken == "" {
		return errors.New("mint response has no lease_id or access_token")
	}
	return nil
}

// kvWrite is scenario B: a kv-v2 write of kvBody to a new key, so that each
// request stores a new entry as each mint stores a new lease.
func (t *targets) kvWrite(ctx context.Context, worker, seq int) error {
	path := kvMountPath + "/data/load/" + strconv.Itoa(worker) + "-" + strconv.Itoa(seq) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	var resp struct {
		Data struct {
			Version int `json:"version"`
		} `json:"data"`
	}
	if err := t.vault(ctx, http.MethodPut, path, t.kvBody, &resp); err != nil {
		return err
	}
	if resp.Data.Version < 1 {
		return errors.New("kv-v2 write response has no version")
	}
	return nil
}

// tokenRequest is scenario C: the client credentials request of the deploy
// role, sent straight to Hydra's token endpoint with client_secret_basic,
// as the engine sends it.
func (t *targets) tokenRequest(ctx context.Context, _, _ int) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.tokenEndpoint, strings.NewReader(t.tokenForm))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	// RFC 6749 section 2.3.1: both parts are form-encoded first.
	req.SetBasicAuth(url.QueryEscape(t.clientID), url.QueryEscape(t.clientSecret))
	resp, err := t.http.Do(req)
	if err != nil {
		return fmt.Errorf("hydra token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("hydra token request: read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		// Hydra's error bodies hold an error code and a description, never
		// the client secret.
		return fmt.Errorf("hydra token request: %s: %s", resp.Status, bytes.TrimSpace(body))
	}
	var token struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &token); err != nil || token.AccessToken == "" {
		return errors.New("hydra token response has no access_token")
	}
	return nil
}

// rootStatus is the part of ci-tokens/status and ci-tokens/rotate-root
// responses that the benchmark reads.
type rootStatus struct {
	Data struct {
		State      string `json:"state"`
		Generation int64  `json:"generation"`
	} `json:"data"`
}

// rotateRoot calls ci-tokens/rotate-root once.
func (t *targets) rotateRoot(ctx context.Context) error {
	var resp rootStatus
	if err := t.vault(ctx, http.MethodPut, devstack.MountPath+"/rotate-root", nil, &resp); err != nil {
		return err
	}
	if resp.Data.Generation < 1 {
		return errors.New("rotate-root response has no generation")
	}
	return nil
}

// status reads ci-tokens/status.
func (t *targets) status(ctx context.Context) (rootStatus, error) {
	var resp rootStatus
	err := t.vault(ctx, http.MethodGet, devstack.MountPath+"/status", nil, &resp)
	return resp, err
}

// countLeases returns how many leases of the deploy role Vault holds, by
// listing them.
func (t *targets) countLeases(ctx context.Context) (int, error) {
	var resp struct {
		Data struct {
			Keys []string `json:"keys"`
		} `json:"data"`
	}
	prefix := "sys/leases/lookup/" + devstack.MountPath + "/creds/" + devstack.RoleName + "/"
	if err := t.vault(ctx, "LIST", prefix, nil, &resp); err != nil {
		return 0, err
	}
	return len(resp.Data.Keys), nil
}

// vault sends one request to Vault's HTTP API and decodes a 200 response
// into out. Any other status is an error with Vault's messages.
func (t *targets) vault(ctx context.Context, method, path string, body []byte, out any) error {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.vaultAddr+"/v1/"+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("X-Vault-Token", t.vaultToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}

	resp, err := t.http.Do(req)
	if err != nil {
		return fmt.Errorf("vault %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("vault %s %s: read response: %w", method, path, err)
	}

	if resp.StatusCode != http.StatusOK {
		var failure struct {
			Errors []string `json:"errors"`
		}
		_ = json.Unmarshal(data, &failure)
		return fmt.Errorf("vault %s %s: %s: %s", method, path, resp.Status, strings.Join(failure.Errors, "; "))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("vault %s %s: decode response: %w", method, path, err)
	}
	return nil
}
