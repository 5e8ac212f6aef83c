package backend

import (
	"errors"
	"fmt"
	"strings"
	"testing"

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
		{name: "unknown role", path: "creds/nope", wantField: "role"},
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
			// Vault answers 400 both for ErrInvalidRequest and for an error
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
