package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"
)

// vaultReply is one canned response of fakeVault to a seed write.
type vaultReply struct {
	status int
	// errors become Vault's {"errors": [...]} body when status is not 200.
	errors []string
	data   map[string]interface{}
}

// fakeVault serves <mount>/config and <mount>/seed like Vault's HTTP API.
// It records every seed write and responds with the next scripted reply.
type fakeVault struct {
	t      *testing.T
	mount  string
	config map[string]interface{}

	mu      sync.Mutex
	replies []vaultReply
	seeds   []map[string]interface{}
}

func newFakeVault(t *testing.T, config map[string]interface{}, replies ...vaultReply) (*fakeVault, *api.Client) {
	t.Helper()
	fv := &fakeVault{t: t, mount: "ci-tokens", config: config, replies: replies}
	server := httptest.NewServer(fv)
	t.Cleanup(server.Close)

	client, err := api.NewClient(&api.Config{Address: server.URL})
	if err != nil {
		t.Fatalf("api.NewClient: %v", err)
	}
	client.SetToken("test-vault-token")
	client.SetMaxRetries(0)
	return fv, client
}

func (fv *fakeVault) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Vault-Token") != "test-vault-token" {
		writeVaultJSON(w, http.StatusForbidden, map[string]interface{}{"errors": []string{"permission denied"}})
		return
	}
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/v1/"+fv.mount+"/config":
		if fv.config == nil {
			writeVaultJSON(w, http.StatusNotFound, map[string]interface{}{"errors": []string{}})
			return
		}
		writeVaultJSON(w, http.StatusOK, map[string]interface{}{"data": fv.config})
	case (r.Method == http.MethodPut || r.Method == http.MethodPost) && r.URL.Path == "/v1/"+fv.mount+"/seed":
		fv.serveSeed(w, r)
	default:
		writeVaultJSON(w, http.StatusNotFound, map[string]interface{}{"errors": []string{"unexpected request " + r.Method + " " + r.URL.Path}})
	}
}

func (fv *fakeVault) serveSeed(w http.ResponseWriter, r *http.Request) {
	var body map[string]interface{}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		writeVaultJSON(w, http.StatusBadRequest, map[string]interface{}{"errors": []string{"invalid JSON body"}})
		return
	}

	fv.mu.Lock()
	fv.seeds = append(fv.seeds, body)
	if len(fv.replies) == 0 {
		fv.mu.Unlock()
		writeVaultJSON(w, http.StatusInternalServerError, map[string]interface{}{"errors": []string{"fake Vault has no reply left"}})
		return
	}
	reply := fv.replies[0]
	fv.replies = fv.replies[1:]
	fv.mu.Unlock()

	if reply.status != http.StatusOK {
		writeVaultJSON(w, reply.status, map[string]interface{}{"errors": reply.errors})
		return
	}
	writeVaultJSON(w, http.StatusOK, map[string]interface{}{"data": reply.data})
}

// seedWrites returns the bodies of the seed writes received so far.
func (fv *fakeVault) seedWrites() []map[string]interface{} {
	fv.mu.Lock()
	defer fv.mu.Unlock()
	return append([]map[string]interface{}(nil), fv.seeds...)
}

func writeVaultJSON(w http.ResponseWriter, status int, body interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// seededReply is the engine's response to a seed that took custody.
var seededReply = vaultReply{status: http.StatusOK, data: map[string]interface{}{"generation": 1, "state": "healthy"}}

// newTestSeeder returns a seeder whose output is captured and whose sleeps
// return at once.
func newTestSeeder(client *api.Client) (*seeder, *bytes.Buffer) {
	var out bytes.Buffer
	s := newSeeder(client, "ci-tokens", &syncWriter{w: &out})
	s.sleep = func(ctx context.Context, d time.Duration) error { return ctx.Err() }
	s.openBrowser = func(string) error { return nil }
	return s, &out
}

// syncWriter serialises writes from the flow and test goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}
