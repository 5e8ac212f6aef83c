package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/logical"
)

func TestBadInputNamesFieldAndStoresNothing(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		data      map[string]interface{}
		wantField string
	}{
		{name: "unknown auth method", path: "config", data: map[string]interface{}{"client_auth_method": "private_key_jwt"}, wantField: "client_auth_method"},
		{name: "unknown TLS version", path: "config", data: map[string]interface{}{"tls_min_version": "tls10"}, wantField: "tls_min_version"},
		{name: "malformed PEM", path: "config", data: map[string]interface{}{"ca_pem": "not a certificate"}, wantField: "ca_pem"},
		{name: "plain http to a remote host", path: "config", data: map[string]interface{}{"token_endpoint": "http://auth.example.com/token"}, wantField: "token_endpoint"},
		{name: "request timeout too long", path: "config", data: map[string]interface{}{"request_timeout": 3600}, wantField: "request_timeout"},
		{name: "bad cron", path: "config", data: map[string]interface{}{"rotation_schedule": "every day"}, wantField: "rotation_schedule"},
		{name: "period and schedule", path: "config", data: map[string]interface{}{"rotation_schedule": "0 3 * * *", "rotation_period": 3600}, wantField: "rotation_schedule"},
		{name: "window without schedule", path: "config", data: map[string]interface{}{"rotation_window": 7200}, wantField: "rotation_window"},
		{name: "window too short", path: "config", data: map[string]interface{}{"rotation_schedule": "0 3 * * *", "rotation_window": 60}, wantField: "rotation_window"},
		{name: "period too short", path: "config", data: map[string]interface{}{"rotation_period": 5}, wantField: "rotation_period"},
		{name: "unknown strategy", path: "roles/deploy", data: map[string]interface{}{"strategy": "implicit"}, wantField: "strategy"},
		{name: "negative ttl", path: "roles/deploy", data: map[string]interface{}{"ttl": -5}, wantField: "ttl"},
		{name: "ttl over max_ttl", path: "roles/deploy", data: map[string]interface{}{"ttl": 7200, "max_ttl": 3600}, wantField: "ttl"},
		{name: "scope with a space", path: "roles/deploy", data: map[string]interface{}{"scopes": []string{"deploy read"}}, wantField: "scopes"},
		{name: "unknown config field", path: "config", data: map[string]interface{}{"rotation_periods": 3600}, wantField: "rotation_periods"},
		{name: "empty client secret", path: "config", data: map[string]interface{}{"client_secret": ""}, wantField: "client_secret"},
		{name: "schedule that never fires", path: "config", data: map[string]interface{}{"rotation_schedule": "0 0 30 2 *"}, wantField: "rotation_schedule"},
		{name: "schedule with a time zone", path: "config", data: map[string]interface{}{"rotation_schedule": "TZ=Asia/Tokyo 0 0 * * *"}, wantField: "rotation_schedule"},
		{name: "client id with a newline", path: "config", data: map[string]interface{}{"client_id": "engine\nadmin"}, wantField: "client_id"},
		{name: "client id too long", path: "config", data: map[string]interface{}{"client_id": strings.Repeat("a", 2000)}, wantField: "client_id"},
		{name: "URL too long", path: "config", data: map[string]interface{}{"issuer": "https://" + strings.Repeat("a", 3000)}, wantField: "issuer"},
		{name: "unknown role field", path: "roles/deploy", data: map[string]interface{}{"scope": "deploy:read"}, wantField: "scope"},
		{name: "scope with a control character", path: "roles/deploy", data: map[string]interface{}{"scopes": []string{"\u0000"}}, wantField: "scopes"},
		{name: "too many scopes", path: "roles/deploy", data: map[string]interface{}{"scopes": manyScopes(100)}, wantField: "scopes"},
		{name: "audience with a control character", path: "roles/deploy", data: map[string]interface{}{"audience": []string{"https://a\u202e.test"}}, wantField: "audience"},
		{name: "unknown role", path: "creds/nope", wantField: "role"},
		{name: "role name in another case", path: "creds/DEPLOY", wantField: "role"},
		{name: "negative requested ttl", path: "creds/deploy", data: map[string]interface{}{"ttl": -1}, wantField: "ttl"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := getTestBackend(t)
			env.configure()
			env.mustRequest(logical.UpdateOperation, "roles/deploy", map[string]interface{}{"scopes": "deploy:read", "ttl": 600})
			configBefore := env.mustRequest(logical.ReadOperation, "config", nil).Data
			roleBefore := env.mustRequest(logical.ReadOperation, "roles/deploy", nil).Data

			data := tt.data
			if tt.path == "config" {
				data = env.baseConfig()
				for k, v := range tt.data {
					data[k] = v
				}
			}
			resp, err := env.request(logical.UpdateOperation, tt.path, data)
			// Vault returns 400 both for ErrInvalidRequest and for an error
			// response from the framework's own field parsing.
			if !errors.Is(err, logical.ErrInvalidRequest) && (err != nil || !resp.IsError()) {
				t.Fatalf("err = %v, resp = %v, want a 400", err, resp)
			}
			msg := respError(resp).Error()
			if !strings.HasPrefix(msg, tt.wantField+":") && !strings.Contains(msg, fmt.Sprintf("field %q", tt.wantField)) {
				t.Errorf("message = %q, want it to name %q", msg, tt.wantField)
			}

			if got := env.mustRequest(logical.ReadOperation, "config", nil).Data; !equalData(got, configBefore) {
				t.Errorf("config changed by a rejected request:\n got %v\nwant %v", got, configBefore)
			}
			if got := env.mustRequest(logical.ReadOperation, "roles/deploy", nil).Data; !equalData(got, roleBefore) {
				t.Errorf("role changed by a rejected request:\n got %v\nwant %v", got, roleBefore)
			}
		})
	}
}

func TestUnconfiguredMountAnswers400(t *testing.T) {
	env := getTestBackend(t)
	env.mustRequest(logical.UpdateOperation, "roles/deploy", map[string]interface{}{"scopes": "deploy:read"})
	for _, path := range []string{"creds/deploy", "rotate-root"} {
		_, err := env.request(logical.UpdateOperation, path, nil)
		if !errors.Is(err, logical.ErrInvalidRequest) {
			t.Errorf("%s on an unconfigured mount: err = %v, want logical.ErrInvalidRequest", path, err)
		}
	}
	if got := env.status()["state"]; got != stateUnconfigured {
		t.Errorf("state = %v, want %s", got, stateUnconfigured)
	}
}

func TestConfigReadShapeMatchesWrite(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	env.mustRequest(logical.UpdateOperation, "config", map[string]interface{}{"request_timeout": "45s", "rotation_schedule": "0 3 * * *", "rotation_window": "2h"})

	got := env.mustRequest(logical.ReadOperation, "config", nil).Data
	want := map[string]interface{}{
		"request_timeout":   int64(45),
		"rotation_schedule": "0 3 * * *",
		"rotation_window":   int64(7200),
		"rotation_period":   int64(0),
		"client_id":         testClientID,
	}
	for field, value := range want {
		if got[field] != value {
			t.Errorf("%s = %v (%T), want %v (%T)", field, got[field], got[field], value, value)
		}
	}
	for _, secretField := range []string{"client_secret", "refresh_token", "standby_refresh_token"} {
		if _, present := got[secretField]; present {
			t.Errorf("config read returns %s", secretField)
		}
	}

	// Writing the read back changes nothing.
	writeBack := map[string]interface{}{}
	for k, v := range got {
		if k != "endpoints" {
			writeBack[k] = v
		}
	}
	env.mustRequest(logical.UpdateOperation, "config", writeBack)
	if again := env.mustRequest(logical.ReadOperation, "config", nil).Data; !equalData(again, got) {
		t.Errorf("config read after writing it back:\n got %v\nwant %v", again, got)
	}
}

// equalData compares two response maps by their printed form.
func equalData(a, b map[string]interface{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !strings.EqualFold(sprint(v), sprint(b[k])) {
			return false
		}
	}
	return true
}

// sprint renders a response value for comparison.
func sprint(v interface{}) string {
	return fmt.Sprintf("%v", v)
}

// manyScopes returns n distinct scope tokens.
func manyScopes(n int) []string {
	scopes := make([]string, n)
	for i := range scopes {
		scopes[i] = fmt.Sprintf("scope%d", i)
	}
	return scopes
}

func TestMintRejectedByUpstreamAnswers400(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	env.mustRequest(logical.UpdateOperation, "roles/wide", map[string]interface{}{"scopes": "admin:everything"})

	resp, err := env.request(logical.UpdateOperation, "creds/wide", nil)
	if !errors.Is(err, logical.ErrInvalidRequest) {
		t.Fatalf("mint with a scope the client may not request: err = %v, want a 400", err)
	}
	if msg := respError(resp).Error(); !strings.Contains(msg, "invalid_scope") {
		t.Errorf("message = %q, want the upstream's invalid_scope named", msg)
	}
	status := env.status()
	if got := status["mint_failures"]; got != int64(1) {
		t.Errorf("mint_failures = %v, want 1", got)
	}
	if got, _ := status["last_mint_error"].(string); !strings.Contains(got, "invalid_scope") {
		t.Errorf("last_mint_error = %q, want the upstream's invalid_scope named", got)
	}
}

func TestRoleNamesAreCaseSensitive(t *testing.T) {
	env := getTestBackend(t)
	env.configure()
	env.mustRequest(logical.UpdateOperation, "roles/Deploy", map[string]interface{}{"scopes": "deploy:write"})
	env.mustRequest(logical.UpdateOperation, "roles/deploy", map[string]interface{}{"scopes": "deploy:read"})

	list := env.mustRequest(logical.ListOperation, "roles/", nil).Data["keys"].([]string)
	if len(list) != 2 {
		t.Fatalf("roles = %v, want Deploy and deploy", list)
	}
	resp := env.mustRequest(logical.UpdateOperation, "creds/Deploy", nil)
	env.addSecret(resp.Data["access_token"].(string))
	if got := resp.Data["scope"]; got != "deploy:write" {
		t.Errorf("creds/Deploy scope = %v, want deploy:write", got)
	}
}

func TestRoleCacheFollowsOtherNodesWrites(t *testing.T) {
	env := getTestBackend(t)
	env.mustRequest(logical.UpdateOperation, "roles/deploy", map[string]interface{}{"scopes": "deploy:read"})
	if got := env.mustRequest(logical.ReadOperation, "roles/deploy", nil).Data["scopes"]; !equalData(map[string]interface{}{"s": got}, map[string]interface{}{"s": []string{"deploy:read"}}) {
		t.Fatalf("scopes = %v, want [deploy:read]", got)
	}

	// Another node rewrites the role in shared storage, and Vault
	// notifies this node through Invalidate.
	entry, err := logical.StorageEntryJSON(roleStoragePrefix+"deploy", &roleEntry{Strategy: strategyClientCredentials, Scopes: []string{"deploy:write"}})
	if err != nil {
		t.Fatalf("encoding role: %v", err)
	}
	if err := env.storage.Put(t.Context(), entry); err != nil {
		t.Fatalf("storing role: %v", err)
	}
	env.b.invalidate(t.Context(), roleStoragePrefix+"deploy")

	if got := env.mustRequest(logical.ReadOperation, "roles/deploy", nil).Data["scopes"]; !equalData(map[string]interface{}{"s": got}, map[string]interface{}{"s": []string{"deploy:write"}}) {
		t.Errorf("scopes after invalidation = %v, want [deploy:write]", got)
	}
	env.mustRequest(logical.DeleteOperation, "roles/deploy", nil)
	if resp := env.mustRequest(logical.ReadOperation, "roles/deploy", nil); resp != nil {
		t.Errorf("role still readable after delete: %v", resp.Data)
	}
}

// countingSystemView counts the calls the SDK makes before each request.
type countingSystemView struct {
	logical.SystemView
	localCalls int
	stateCalls int
}

func (v *countingSystemView) LocalMount() bool {
	v.localCalls++
	return true
}

func (v *countingSystemView) ReplicationState() consts.ReplicationState {
	v.stateCalls++
	return consts.ReplicationUnknown
}

func TestFactoryCachesPerRequestCalls(t *testing.T) {
	system := &countingSystemView{SystemView: logical.TestSystemView()}
	config := logical.TestBackendConfig()
	config.StorageView = &logical.InmemStorage{}
	config.System = system
	raw, err := Factory(t.Context(), config)
	if err != nil {
		t.Fatalf("Factory: %v", err)
	}
	writeRole := func() {
		t.Helper()
		req := &logical.Request{Operation: logical.UpdateOperation, Path: "roles/deploy", Storage: config.StorageView, Data: map[string]interface{}{"scopes": "deploy:read"}}
		if _, err := raw.HandleRequest(t.Context(), req); err != nil {
			t.Fatalf("role write: %v", err)
		}
	}
	for range 3 {
		writeRole()
	}
	if system.localCalls != 1 || system.stateCalls != 1 {
		t.Errorf("after 3 requests: LocalMount calls = %d, ReplicationState calls = %d, want 1 and 1", system.localCalls, system.stateCalls)
	}

	b := raw.(*backend)
	view := b.System().(*cachedSystemView)
	view.stateMu.Lock()
	view.stateFetched = time.Now().Add(-replicationStateTTL)
	view.stateMu.Unlock()
	writeRole()
	if system.stateCalls != 2 {
		t.Errorf("ReplicationState calls after the cached state aged = %d, want 2", system.stateCalls)
	}

	// writeSafeNow reads the state from Vault on every call.
	for range 2 {
		if !b.writeSafeNow() {
			t.Fatalf("writeSafeNow = false on a node without replication")
		}
	}
	if system.stateCalls != 4 {
		t.Errorf("ReplicationState calls after two writeSafeNow = %d, want 4", system.stateCalls)
	}
}
