// Package e2e tests the ci-tokens engine end to end: a real Vault server
// with the plugin mounted and a real Ory Hydra, both on loopback, started by
// the devstack package. Every claim about a CI token is checked with Hydra's
// own introspection, never with what the engine reports about it.
//
// The tests skip under -short. Each Test function starts its own stack, one
// after the other, and shares it between its subtests.
package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

const (
	mount     = devstack.MountPath
	credsPath = mount + "/creds/" + devstack.RoleName

	// grantRoleName is a role of strategy refresh. Each of its tokens is the
	// access token of one rotation of the root grant, so Hydra's
	// introspection of it shows whether the root grant still works.
	grantRoleName = "root-grant"

	// seedSubject is the subject that devstack's seeding flow logs in as, so
	// every token of the root grant carries it.
	seedSubject = "ci-tokens-operator"

	// hydraTokenRequestMarker is part of every line that Hydra v2.3.0 logs
	// about a request to its token endpoint. Only the "completed handling
	// request" lines are counted, one per request.
	hydraTokenRequestMarker = "path:/oauth2/token "
)

// testStack is a devstack stack plus every secret the test saw, so that the
// end of the test can prove none of them reached Vault's log.
type testStack struct {
	*devstack.Stack

	mu sync.Mutex

	// secrets maps each secret value to a label that is safe to print.
	secrets map[string]string

	// transcript collects outputs the test received (errors, status and
	// config reads, CLI output, Agent logs), which must be free of secrets
	// too.
	transcript []string

	// auditLogPath is the file audit device's log, or "" when none is
	// enabled.
	auditLogPath string
}

// newTestStack starts a stack for t and registers, before devstack's own
// cleanup closes it, a check that Vault's log and the transcript contain no
// secret the test saw.
func newTestStack(t *testing.T, opts devstack.Options) *testStack {
	t.Helper()
	st := &testStack{Stack: devstack.UpForTest(t, opts), secrets: map[string]string{}}
	st.rememberStackSecrets()
	t.Cleanup(func() { st.assertNoSecretLeaked(t) })
	return st
}

// rememberStackSecrets records the client secret and the seeded tokens that
// the stack handed to the engine so far.
func (st *testStack) rememberStackSecrets() {
	st.remember("client secret", st.EngineClient.Secret)
	st.remember("seed refresh token", st.RootSeed.RefreshToken)
	st.remember("seed access token", st.RootSeed.AccessToken)
	for i, value := range st.Secrets() {
		st.remember(fmt.Sprintf("stack secret %d", i), value)
	}
}

// remember records a secret under a printable label. Empty values are
// ignored.
func (st *testStack) remember(label, value string) {
	if value == "" {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if _, ok := st.secrets[value]; !ok {
		st.secrets[value] = fmt.Sprintf("%s %s", label, fingerprint(value))
	}
}

// rememberToken records both credentials of a token response.
func (st *testStack) rememberToken(label string, tok devstack.Token) {
	st.remember(label+" access token", tok.AccessToken)
	st.remember(label+" refresh token", tok.RefreshToken)
	st.remember(label+" ID token", tok.IDToken)
}

// record adds text the test received to the transcript.
func (st *testStack) record(text string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.transcript = append(st.transcript, text)
}

// configure reseeds the root grant with devstack and remembers the new seed.
func (st *testStack) configure(t *testing.T, ctx context.Context) {
	t.Helper()
	if err := st.Configure(ctx); err != nil {
		t.Fatalf("reseed the root grant: %v", err)
	}
	st.rememberStackSecrets()
}

// assertNoSecretLeaked fails t for every remembered secret found in Vault's
// server log or in the transcript. It prints labels and fingerprints only.
func (st *testStack) assertNoSecretLeaked(t *testing.T) {
	t.Helper()
	vaultLog, err := st.Vault.ReadLog()
	if err != nil {
		t.Errorf("read vault log: %v", err)
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	transcript := strings.Join(st.transcript, "\n")
	var auditLog []byte
	if st.auditLogPath != "" {
		if auditLog, err = os.ReadFile(st.auditLogPath); err != nil {
			t.Errorf("read audit log: %v", err)
		}
	}
	for value, label := range st.secrets {
		if bytes.Contains(vaultLog, []byte(value)) {
			t.Errorf("vault log %s contains the %s", st.Vault.LogPath, label)
		}
		if bytes.Contains(auditLog, []byte(value)) {
			t.Errorf("audit log %s contains the %s in clear text", st.auditLogPath, label)
		}
		if strings.Contains(transcript, value) {
			t.Errorf("responses, errors or CLI output seen by the test contain the %s", label)
		}
	}
	t.Logf("secret leak check: %d secrets against %d bytes of vault log, %d bytes of audit log and %d bytes of other output",
		len(st.secrets), len(vaultLog), len(auditLog), len(transcript))
}

// enableAuditLog enables a file audit device in the stack's directory. The
// leak check then also reads its log, in which Vault must have replaced
// every secret with an HMAC.
func (st *testStack) enableAuditLog(t *testing.T, ctx context.Context) {
	t.Helper()
	path := filepath.Join(st.Dir, "audit.log")
	err := st.Vault.Client.Sys().EnableAuditWithOptionsWithContext(ctx, "file", &api.EnableAuditOptions{
		Type:    "file",
		Options: map[string]string{"file_path": path},
	})
	if err != nil {
		t.Fatalf("enable file audit device: %v", err)
	}
	st.auditLogPath = path
}

// testContext returns a context that ends after d or with the test.
func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// fingerprint returns the engine's non-secret token_id form of a value:
// "sha256:" and the first 16 hex digits of its SHA-256.
func fingerprint(value string) string {
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:8])
}

// ciToken is what one creds response returned.
type ciToken struct {
	LeaseID       string
	LeaseDuration time.Duration
	Renewable     bool
	Data          map[string]any
	AccessToken   string
	TokenID       string
	MintedAt      time.Time
}

// mint reads or writes creds/<role> with client and remembers the token.
func (st *testStack) mint(ctx context.Context, client *api.Client, role string, read bool, data map[string]any) (ciToken, error) {
	path := mount + "/creds/" + role
	mintedAt := time.Now()
	var (
		secret *api.Secret
		err    error
	)
	if read {
		secret, err = client.Logical().ReadWithContext(ctx, path)
	} else {
		secret, err = client.Logical().WriteWithContext(ctx, path, data)
	}
	if err != nil {
		st.record(err.Error())
		return ciToken{}, err
	}
	if secret == nil || secret.Data == nil {
		return ciToken{}, fmt.Errorf("%s returned no data", path)
	}
	token, _ := secret.Data["access_token"].(string)
	st.remember("CI token of role "+role, token)
	if token == "" {
		return ciToken{}, fmt.Errorf("%s returned no access_token", path)
	}
	tokenID, _ := secret.Data["token_id"].(string)
	return ciToken{
		LeaseID:       secret.LeaseID,
		LeaseDuration: time.Duration(secret.LeaseDuration) * time.Second,
		Renewable:     secret.Renewable,
		Data:          secret.Data,
		AccessToken:   token,
		TokenID:       tokenID,
		MintedAt:      mintedAt,
	}, nil
}

// mustMint mints a token of the deploy role with the root token.
func (st *testStack) mustMint(t *testing.T, ctx context.Context) ciToken {
	t.Helper()
	tok, err := st.mint(ctx, st.Vault.Client, devstack.RoleName, false, nil)
	if err != nil {
		t.Fatalf("write %s: %v", credsPath, err)
	}
	return tok
}

// introspect returns Hydra's introspection of token and fails t when the
// request fails.
func (st *testStack) introspect(t *testing.T, ctx context.Context, token string) devstack.Introspection {
	t.Helper()
	got, err := st.Hydra.Introspect(ctx, token)
	if err != nil {
		t.Fatalf("hydra introspection of %s: %v", fingerprint(token), err)
	}
	return got
}

// waitInactive polls Hydra until token is inactive or timeout passes, and
// reports whether it became inactive.
func (st *testStack) waitInactive(t *testing.T, ctx context.Context, token string, timeout time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if !st.introspect(t, ctx, token).Active {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// writeGrantRole writes the refresh role whose tokens prove the root grant
// works.
func (st *testStack) writeGrantRole(t *testing.T, ctx context.Context) {
	t.Helper()
	_, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/roles/"+grantRoleName, map[string]any{
		"strategy": "refresh",
	})
	if err != nil {
		t.Fatalf("write role %s: %v", grantRoleName, err)
	}
}

// checkRootGrant mints a token of the refresh role, which rotates the root
// grant, and returns Hydra's introspection of it. An error means the engine
// could not use the root grant.
func (st *testStack) checkRootGrant(ctx context.Context, client *api.Client) (devstack.Introspection, error) {
	tok, err := st.mint(ctx, client, grantRoleName, false, nil)
	if err != nil {
		return devstack.Introspection{}, err
	}
	return st.Hydra.Introspect(ctx, tok.AccessToken)
}

// assertRootGrantWorks fails t unless a rotation through the refresh role
// yields a token that Hydra reports active, for the engine's client and the
// seeded subject.
func (st *testStack) assertRootGrantWorks(t *testing.T, ctx context.Context) {
	t.Helper()
	got, err := st.checkRootGrant(ctx, st.Vault.Client)
	if err != nil {
		t.Fatalf("mint through the root grant: %v", err)
	}
	if !got.Active {
		t.Fatalf("hydra introspection of the root grant's access token: active = false, want true")
	}
	if got.ClientID != st.EngineClient.ID {
		t.Errorf("root grant token client_id = %q, want %q", got.ClientID, st.EngineClient.ID)
	}
	if got.Subject != seedSubject {
		t.Errorf("root grant token sub = %q, want %q", got.Subject, seedSubject)
	}
}

// rootStatus is the part of ci-tokens/status that the tests check.
type rootStatus struct {
	State               string
	Generation          int64
	ConsecutiveFailures int64
	LastError           string
	LastErrorAt         string
	Raw                 map[string]any
}

// status reads ci-tokens/status.
func (st *testStack) status(ctx context.Context, client *api.Client) (rootStatus, error) {
	secret, err := client.Logical().ReadWithContext(ctx, mount+"/status")
	if err != nil {
		st.record(err.Error())
		return rootStatus{}, err
	}
	if secret == nil {
		return rootStatus{}, errors.New("status returned nothing")
	}
	encoded, _ := json.Marshal(secret.Data)
	st.record(string(encoded))
	st.record(strings.Join(secret.Warnings, "\n"))

	s := rootStatus{Raw: secret.Data}
	s.State, _ = secret.Data["state"].(string)
	s.LastError, _ = secret.Data["last_error"].(string)
	s.LastErrorAt, _ = secret.Data["last_error_at"].(string)
	if s.Generation, err = asInt64(secret.Data["generation"]); err != nil {
		return s, fmt.Errorf("status generation: %w", err)
	}
	if s.ConsecutiveFailures, err = asInt64(secret.Data["consecutive_failures"]); err != nil {
		return s, fmt.Errorf("status consecutive_failures: %w", err)
	}
	return s, nil
}

// mustStatus reads ci-tokens/status with the root token.
func (st *testStack) mustStatus(t *testing.T, ctx context.Context) rootStatus {
	t.Helper()
	s, err := st.status(ctx, st.Vault.Client)
	if err != nil {
		t.Fatalf("read %s/status: %v", mount, err)
	}
	return s
}

// rotateRoot writes ci-tokens/rotate-root and returns its data.
func (st *testStack) rotateRoot(ctx context.Context, client *api.Client) (map[string]any, error) {
	secret, err := client.Logical().WriteWithContext(ctx, mount+"/rotate-root", nil)
	if err != nil {
		st.record(err.Error())
		return nil, err
	}
	if secret == nil {
		return nil, errors.New("rotate-root returned nothing")
	}
	encoded, _ := json.Marshal(secret.Data)
	st.record(string(encoded))
	return secret.Data, nil
}

// readConfig returns the data of a ci-tokens/config read.
func (st *testStack) readConfig(t *testing.T, ctx context.Context) map[string]any {
	t.Helper()
	secret, err := st.Vault.Client.Logical().ReadWithContext(ctx, mount+"/config")
	if err != nil {
		t.Fatalf("read %s/config: %v", mount, err)
	}
	if secret == nil {
		t.Fatalf("read %s/config: no data", mount)
	}
	encoded, _ := json.Marshal(secret.Data)
	st.record(string(encoded))
	return secret.Data
}

// lookupLease returns Vault's lease record, or an error such as "invalid
// lease" once the lease is gone.
func lookupLease(ctx context.Context, client *api.Client, leaseID string) (map[string]any, error) {
	secret, err := client.Logical().WriteWithContext(ctx, "sys/leases/lookup", map[string]any{"lease_id": leaseID})
	if err != nil {
		return nil, err
	}
	if secret == nil {
		return nil, errors.New("lease lookup returned nothing")
	}
	return secret.Data, nil
}

// leaseExpireTime returns the lease's expire_time from Vault.
func leaseExpireTime(ctx context.Context, client *api.Client, leaseID string) (time.Time, error) {
	data, err := lookupLease(ctx, client, leaseID)
	if err != nil {
		return time.Time{}, err
	}
	raw, _ := data["expire_time"].(string)
	return time.Parse(time.RFC3339Nano, raw)
}

// listLeases returns the lease ID suffixes under ci-tokens/creds/<role>/.
func listLeases(ctx context.Context, client *api.Client, role string) ([]string, error) {
	secret, err := client.Logical().ListWithContext(ctx, "sys/leases/lookup/"+mount+"/creds/"+role+"/")
	if err != nil {
		return nil, err
	}
	if secret == nil || secret.Data == nil {
		return nil, nil
	}
	raw, _ := secret.Data["keys"].([]any)
	keys := make([]string, 0, len(raw))
	for _, key := range raw {
		if s, ok := key.(string); ok {
			keys = append(keys, s)
		}
	}
	return keys, nil
}

// leaseGone reports whether Vault's lease lookup returns "invalid lease".
func leaseGone(ctx context.Context, client *api.Client, leaseID string) bool {
	_, err := lookupLease(ctx, client, leaseID)
	return err != nil && strings.Contains(err.Error(), "invalid lease")
}

// vaultCLI runs the vault CLI against the stack's server with the root
// token and returns its combined output, which goes to the transcript.
func (st *testStack) vaultCLI(ctx context.Context, args ...string) (string, error) {
	output, err := st.Vault.Command(ctx, args...).CombinedOutput()
	st.record(string(output))
	if err != nil {
		return string(output), fmt.Errorf("vault %s: %w", strings.Join(args, " "), err)
	}
	return string(output), nil
}

// hydraTokenRequests counts the requests Hydra's token endpoint has
// finished, from Hydra's log.
func (st *testStack) hydraTokenRequests(t *testing.T) int {
	t.Helper()
	data, err := os.ReadFile(st.Hydra.LogPath)
	if err != nil {
		t.Fatalf("read hydra log: %v", err)
	}
	count := 0
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, "completed handling request") && strings.Contains(line, hydraTokenRequestMarker) {
			count++
		}
	}
	return count
}

// countInVaultLog counts the occurrences of text in Vault's log.
func (st *testStack) countInVaultLog(t *testing.T, text string) int {
	t.Helper()
	data, err := st.Vault.ReadLog()
	if err != nil {
		t.Fatalf("read vault log: %v", err)
	}
	return bytes.Count(data, []byte(text))
}

// noRetryClient returns a copy of the root client that makes one attempt
// per request, for loops that run while Vault is being killed.
func noRetryClient(t *testing.T, v *devstack.Vault) *api.Client {
	t.Helper()
	client, err := v.Client.Clone()
	if err != nil {
		t.Fatalf("clone vault client: %v", err)
	}
	client.SetToken(v.Token)
	client.SetMaxRetries(0)
	return client
}

// statusCode returns the HTTP status of a Vault API error, or 0.
func statusCode(err error) int {
	var respErr *api.ResponseError
	if errors.As(err, &respErr) {
		return respErr.StatusCode
	}
	return 0
}

// asInt64 converts a number decoded by the Vault API client.
func asInt64(v any) (int64, error) {
	switch n := v.(type) {
	case json.Number:
		return n.Int64()
	case float64:
		return int64(n), nil
	case int64:
		return n, nil
	case int:
		return int64(n), nil
	default:
		return 0, fmt.Errorf("not a number: %T %v", v, v)
	}
}

// exitCode returns the exit status of a finished command, or -1.
func exitCode(err error) int {
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		return exitErr.ExitCode()
	}
	if err == nil {
		return 0
	}
	return -1
}
