package backend

import (
	"testing"

	"github.com/hashicorp/vault/sdk/logical"
)

func TestEngineMintRotateRevoke(t *testing.T) {
	env := getTestBackend(t)
	seed := env.configure()

	if got := env.status()["state"]; got != stateHealthy {
		t.Fatalf("state after seeding = %v, want %s", got, stateHealthy)
	}
	if got := env.root().Generation; got != 1 {
		t.Fatalf("generation after seeding = %d, want 1", got)
	}
	if env.issuer.Active(seed) {
		t.Errorf("seed still active after the engine took custody")
	}

	env.mustRequest(logical.UpdateOperation, "roles/deploy", map[string]interface{}{
		"scopes": "deploy:read", "audience": testAudience, "ttl": "10m", "max_ttl": "1h",
	})
	resp := env.mustRequest(logical.UpdateOperation, "creds/deploy", nil)
	token := resp.Data["access_token"].(string)
	env.addSecret(token)
	info := env.issuer.Introspect(token)
	if !info.Active || info.Scope != "deploy:read" {
		t.Fatalf("introspection = %+v, want active with scope deploy:read", info)
	}
	if resp.Secret.TTL.Minutes() != 10 {
		t.Errorf("lease TTL = %v, want 10m", resp.Secret.TTL)
	}

	rotated := env.mustRequest(logical.UpdateOperation, "rotate-root", nil)
	if got := rotated.Data["generation"]; got != int64(2) {
		t.Errorf("generation after rotate-root = %v, want 2", got)
	}

	revokeReq := &logical.Request{Operation: logical.RevokeOperation, Secret: resp.Secret, Data: resp.Data, Storage: env.storage}
	revokeReq.Secret.InternalData["secret_type"] = secretTypeCIToken
	if _, err := env.b.HandleRequest(t.Context(), revokeReq); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if env.issuer.Active(token) {
		t.Errorf("token still active after lease revocation")
	}
}
