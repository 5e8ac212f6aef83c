package main

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"

	citokens "github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend"
	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// The benchmarks in this file run the engine in the benchmark's own process,
// with in-memory storage and a real Hydra, to split scenario A's cost:
//
//	go test -run '^$' -bench . -cpuprofile cpu.out ./scripts/bench
//
// Every storage and system view call they count is one gRPC round trip to
// Vault when the engine runs as an external plugin.

// countingStorage counts the storage calls of the engine.
type countingStorage struct {
	logical.InmemStorage
	gets, puts, deletes, lists atomic.Int64
}

func (s *countingStorage) Get(ctx context.Context, key string) (*logical.StorageEntry, error) {
	s.gets.Add(1)
	return s.InmemStorage.Get(ctx, key)
}

func (s *countingStorage) Put(ctx context.Context, entry *logical.StorageEntry) error {
	s.puts.Add(1)
	return s.InmemStorage.Put(ctx, entry)
}

func (s *countingStorage) Delete(ctx context.Context, key string) error {
	s.deletes.Add(1)
	return s.InmemStorage.Delete(ctx, key)
}

func (s *countingStorage) List(ctx context.Context, prefix string) ([]string, error) {
	s.lists.Add(1)
	return s.InmemStorage.List(ctx, prefix)
}

// calls returns the storage calls so far.
func (s *countingStorage) calls() int64 {
	return s.gets.Load() + s.puts.Load() + s.deletes.Load() + s.lists.Load()
}

// countingSystemView counts the system view calls that the engine makes on
// the mint path. Methods it does not override are not counted.
type countingSystemView struct {
	logical.StaticSystemView
	calls atomic.Int64
}

func (v *countingSystemView) DefaultLeaseTTL() time.Duration {
	v.calls.Add(1)
	return v.StaticSystemView.DefaultLeaseTTL()
}

func (v *countingSystemView) MaxLeaseTTL() time.Duration {
	v.calls.Add(1)
	return v.StaticSystemView.MaxLeaseTTL()
}

func (v *countingSystemView) ReplicationState() consts.ReplicationState {
	v.calls.Add(1)
	return v.StaticSystemView.ReplicationState()
}

func (v *countingSystemView) LocalMount() bool {
	v.calls.Add(1)
	return v.StaticSystemView.LocalMount()
}

// inProcessEngine is the engine with counting storage and system view,
// configured against a Hydra client.
type inProcessEngine struct {
	backend logical.Backend
	storage *countingStorage
	system  *countingSystemView
}

// startHydraClient starts Hydra with in-memory storage and creates a
// client like the engine's, closing Hydra when tb ends.
func startHydraClient(tb testing.TB) (*devstack.Hydra, devstack.OAuth2Client) {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts a real Hydra server")
	}
	ctx := context.Background()
	hydra, err := devstack.StartHydra(ctx, devstack.HydraOptions{Dir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("start hydra: %v", err)
	}
	tb.Cleanup(func() { hydra.Close() })
	client, err := hydra.CreateClient(ctx, devstack.ClientOptions{
		Name:     "ci-tokens engine",
		Scopes:   devstack.EngineScopes,
		Audience: []string{devstack.Audience},
	})
	if err != nil {
		tb.Fatalf("create hydra client: %v", err)
	}
	return hydra, client
}

// newInProcessEngine builds the engine and writes its config and the
// deploy role. Its logger writes JSON at trace level, as the plugin's
// logger does, but to io.Discard.
func newInProcessEngine(tb testing.TB, hydra *devstack.Hydra, client devstack.OAuth2Client) *inProcessEngine {
	tb.Helper()
	ctx := context.Background()
	e := &inProcessEngine{
		storage: &countingStorage{},
		system: &countingSystemView{StaticSystemView: logical.StaticSystemView{
			DefaultLeaseTTLVal: 768 * time.Hour,
			MaxLeaseTTLVal:     768 * time.Hour,
		}},
	}
	conf := &logical.BackendConfig{
		Logger:      hclog.New(&hclog.LoggerOptions{Level: hclog.Trace, Output: io.Discard, JSONFormat: true}),
		System:      e.system,
		StorageView: e.storage,
		Config:      map[string]string{},
	}
	var err error
	e.backend, err = citokens.Factory(ctx, conf)
	if err != nil {
		tb.Fatalf("build backend: %v", err)
	}
	if err := e.backend.Initialize(ctx, &logical.InitializationRequest{Storage: e.storage}); err != nil {
		tb.Fatalf("initialize backend: %v", err)
	}
	e.write(tb, "config", map[string]any{
		"token_endpoint":      hydra.TokenEndpoint(),
		"revocation_endpoint": hydra.RevocationEndpoint(),
		"client_id":           client.ID,
		"client_secret":       client.Secret,
	})
	e.write(tb, "roles/"+devstack.RoleName, map[string]any{
		"strategy": devstack.RoleStrategy,
		"scopes":   devstack.RoleScope,
		"audience": devstack.Audience,
		"ttl":      roleTTL,
		"max_ttl":  devstack.RoleMaxTTL,
	})
	return e
}

// write sends an update request and fails tb on an error.
func (e *inProcessEngine) write(tb testing.TB, path string, data map[string]any) *logical.Response {
	tb.Helper()
	resp, err := e.backend.HandleRequest(context.Background(), &logical.Request{
		Operation: logical.UpdateOperation,
		Path:      path,
		Data:      data,
		Storage:   e.storage,
	})
	if err != nil || resp.IsError() {
		tb.Fatalf("write %s: err %v, response %v", path, err, resp)
	}
	return resp
}

// BenchmarkMintInProcess measures creds/deploy in process and reports the
// storage and system view calls per mint, each a gRPC round trip in a real
// Vault.
func BenchmarkMintInProcess(b *testing.B) {
	hydra, client := startHydraClient(b)
	engine := newInProcessEngine(b, hydra, client)
	storageBefore, systemBefore := engine.storage.calls(), engine.system.calls.Load()
	mints := 0
	for b.Loop() {
		resp := engine.write(b, "creds/"+devstack.RoleName, nil)
		if resp.Secret == nil || resp.Data["access_token"] == "" {
			b.Fatalf("mint response has no lease or access_token: %v", resp)
		}
		mints++
	}
	b.ReportMetric(float64(engine.storage.calls()-storageBefore)/float64(mints), "storage-calls/op")
	b.ReportMetric(float64(engine.system.calls.Load()-systemBefore)/float64(mints), "system-calls/op")
}

// BenchmarkHydraDirect measures the same client credentials request sent
// straight to Hydra, with the benchmark's transport.
func BenchmarkHydraDirect(b *testing.B) {
	hydra, client := startHydraClient(b)
	t := &targets{
		http:          newTransportClient(1),
		tokenEndpoint: hydra.TokenEndpoint(),
		clientID:      client.ID,
		clientSecret:  client.Secret,
	}
	t.tokenForm = clientCredentialsForm()
	for b.Loop() {
		if err := t.tokenRequest(context.Background(), 0, 0); err != nil {
			b.Fatal(err)
		}
	}
}
