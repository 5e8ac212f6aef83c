package backend

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	hclog "github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/internal/fakeissuer"
)

// Test client of the fake issuer.
const (
	testClientID     = "ci-tokens-engine"
	testClientSecret = "client-secret-for-tests-only"
	testAudience     = "https://deploy.example.test"
)

// syncBuffer is a log sink that tests read while the backend writes to it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

// testEnv is a backend on in-memory storage, wired to a fake issuer.
type testEnv struct {
	t       testing.TB
	b       *backend
	storage logical.Storage
	issuer  *fakeissuer.Issuer
	logs    *syncBuffer

	// secrets collects every secret the test handled, for the leak check.
	secretsMu sync.Mutex
	secrets   []string
}

// getTestBackend returns a backend on in-memory storage with its log
// captured; the cleanup fails the test if any secret it saw was logged.
func getTestBackend(tb testing.TB, opts ...fakeissuer.Option) *testEnv {
	tb.Helper()
	logs := &syncBuffer{}
	config := logical.TestBackendConfig()
	config.StorageView = &logical.InmemStorage{}
	config.Logger = hclog.New(&hclog.LoggerOptions{Output: logs, Level: hclog.Trace})
	config.System = &logical.StaticSystemView{
		DefaultLeaseTTLVal: time.Hour,
		MaxLeaseTTLVal:     24 * time.Hour,
	}

	b := newBackend()
	if err := b.Setup(context.Background(), config); err != nil {
		tb.Fatalf("setting up backend: %v", err)
	}
	issuer := fakeissuer.New(tb, opts...)
	issuer.AddClient(testClientID, testClientSecret,
		[]string{"offline_access", "openid", "deploy:read", "deploy:write"},
		[]string{testAudience})

	env := &testEnv{t: tb, b: b, storage: config.StorageView, issuer: issuer, logs: logs}
	env.addSecret(testClientSecret)
	tb.Cleanup(env.checkNoSecretLogged)
	// Cleanups run last first: the WAL deletes that outlive their mints
	// finish, and log any failure, before the log is checked.
	tb.Cleanup(b.background.wait)
	return env
}

// addSecret records a value that must never appear in logs.
func (e *testEnv) addSecret(values ...string) {
	e.secretsMu.Lock()
	defer e.secretsMu.Unlock()
	e.secrets = append(e.secrets, values...)
}

func (e *testEnv) checkNoSecretLogged() {
	logs := e.logs.String()
	e.secretsMu.Lock()
	defer e.secretsMu.Unlock()
	for _, secret := range e.secrets {
		if secret != "" && strings.Contains(logs, secret) {
			e.t.Errorf("a secret starting %q appears in the backend's log", secret[:min(len(secret), 8)])
		}
	}
}

// request sends one request to the backend.
func (e *testEnv) request(op logical.Operation, path string, data map[string]interface{}) (*logical.Response, error) {
	e.t.Helper()
	req := &logical.Request{
		Operation:  op,
		Path:       path,
		Data:       data,
		Storage:    e.storage,
		MountPoint: "ci-tokens/",
	}
	return e.b.HandleRequest(context.Background(), req)
}

// mustRequest sends a request and fails the test on any error.
func (e *testEnv) mustRequest(op logical.Operation, path string, data map[string]interface{}) *logical.Response {
	e.t.Helper()
	resp, err := e.request(op, path, data)
	if err != nil || (resp != nil && resp.IsError()) {
		e.t.Fatalf("%s %s: err=%v resp=%v", op, path, err, respError(resp))
	}
	return resp
}

// respError returns the error of a response, or nil.
func respError(resp *logical.Response) error {
	if resp == nil {
		return nil
	}
	return resp.Error()
}

// baseConfig is a valid config for the fake issuer without a seed.
func (e *testEnv) baseConfig() map[string]interface{} {
	return map[string]interface{}{
		"issuer":        e.issuer.URL(),
		"client_id":     testClientID,
		"client_secret": testClientSecret,
	}
}

// configure writes a valid config seeded with a fresh grant and returns the
// seed.
func (e *testEnv) configure() string {
	e.t.Helper()
	seed := e.issuer.SeedGrant(testClientID, []string{"offline_access", "openid"})
	e.addSecret(seed)
	data := e.baseConfig()
	data["refresh_token"] = seed
	e.mustRequest(logical.UpdateOperation, "config", data)
	return seed
}

// status reads the status path.
func (e *testEnv) status() map[string]interface{} {
	e.t.Helper()
	return e.mustRequest(logical.ReadOperation, "status", nil).Data
}

// root reads the stored root grant.
func (e *testEnv) root() *rootGrant {
	e.t.Helper()
	root, err := e.b.getRoot(context.Background(), e.storage)
	if err != nil || root == nil {
		e.t.Fatalf("reading root grant: root=%v err=%v", root, err)
	}
	e.addSecret(root.RefreshToken)
	return root
}
