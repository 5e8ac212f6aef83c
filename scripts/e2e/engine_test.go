package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// unconfiguredMount is a second mount of the plugin that never gets a
// config.
const unconfiguredMount = "ci-tokens-unconfigured"

func TestEngineEndToEnd(t *testing.T) {
	st := newTestStack(t, devstack.Options{})
	ctx := testContext(t, 5*time.Minute)
	st.enableAuditLog(t, ctx)
	st.writeGrantRole(t, ctx)

	t.Run("plugin registered by sha256 and version", func(t *testing.T) {
		assertPluginRegistered(t, ctx, st)
	})
	t.Run("creds", func(t *testing.T) {
		for _, tt := range []struct {
			name string
			read bool
		}{
			{name: "write", read: false},
			{name: "read", read: true},
		} {
			t.Run(tt.name, func(t *testing.T) {
				tok, err := st.mint(ctx, st.Vault.Client, devstack.RoleName, tt.read, nil)
				if err != nil {
					t.Fatalf("mint by %s: %v", tt.name, err)
				}
				assertCredsResponse(t, ctx, st, tok)
				assertLeaseRevokeDeactivates(t, ctx, st, tok)
			})
		}
	})
	t.Run("rotate-root moves the generation", func(t *testing.T) {
		assertRotateRoot(t, ctx, st)
	})
	t.Run("status fields", func(t *testing.T) {
		assertStatusFields(t, ctx, st)
	})
	t.Run("config read holds no secret", func(t *testing.T) {
		assertConfigReadHidesSecrets(t, ctx, st)
	})
	t.Run("bad input", func(t *testing.T) {
		assertBadInputRejected(t, ctx, st)
	})
}

// assertPluginRegistered checks the catalog entry and the mount's running
// plugin against the binary on disk.
func assertPluginRegistered(t *testing.T, ctx context.Context, st *testStack) {
	wantSHA := fileSHA256(t, st.Plugin.Path)
	client := st.Vault.Client

	entry, err := client.Logical().ReadWithDataWithContext(ctx,
		"sys/plugins/catalog/secret/"+devstack.PluginName,
		map[string][]string{"version": {st.Plugin.Version}})
	if err != nil || entry == nil {
		t.Fatalf("read catalog entry: %v (entry %v)", err, entry)
	}
	for field, want := range map[string]string{
		"sha256":  wantSHA,
		"version": devstack.DefaultPluginVersion,
		"name":    devstack.PluginName,
		"command": devstack.PluginName,
	} {
		if got, _ := entry.Data[field].(string); got != want {
			t.Errorf("catalog %s = %q, want %q", field, got, want)
		}
	}

	mountInfo, err := client.Logical().ReadWithContext(ctx, "sys/mounts/"+mount)
	if err != nil || mountInfo == nil {
		t.Fatalf("read sys/mounts/%s: %v", mount, err)
	}
	for field, want := range map[string]string{
		"type":                   devstack.PluginName,
		"plugin_version":         devstack.DefaultPluginVersion,
		"running_plugin_version": devstack.DefaultPluginVersion,
		"running_sha256":         wantSHA,
	} {
		if got, _ := mountInfo.Data[field].(string); got != want {
			t.Errorf("mount %s = %q, want %q", field, got, want)
		}
	}
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("open plugin binary: %v", err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatalf("hash plugin binary: %v", err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// assertCredsResponse checks every field of a creds response, the lease
// against the token's real lifetime at Hydra, and Hydra's view of the token.
func assertCredsResponse(t *testing.T, ctx context.Context, st *testStack, tok ciToken) {
	t.Helper()
	for _, field := range []string{"access_token", "token_type", "expires_at", "scope", "audience", "role", "token_id"} {
		if _, ok := tok.Data[field]; !ok {
			t.Errorf("creds response has no field %q", field)
		}
	}
	if got, _ := tok.Data["token_type"].(string); !strings.EqualFold(got, "bearer") {
		t.Errorf("token_type = %q, want bearer", got)
	}
	if got, _ := tok.Data["scope"].(string); got != devstack.RoleScope {
		t.Errorf("scope = %q, want %q", got, devstack.RoleScope)
	}
	if got := stringList(tok.Data["audience"]); !reflect.DeepEqual(got, []string{devstack.Audience}) {
		t.Errorf("audience = %q, want [%q]", got, devstack.Audience)
	}
	if got, _ := tok.Data["role"].(string); got != devstack.RoleName {
		t.Errorf("role = %q, want %q", got, devstack.RoleName)
	}
	if want := fingerprint(tok.AccessToken); tok.TokenID != want {
		t.Errorf("token_id = %q, want %q (sha256 of the access token)", tok.TokenID, want)
	}
	if tok.LeaseID == "" || !strings.HasPrefix(tok.LeaseID, credsPath+"/") {
		t.Errorf("lease_id = %q, want a lease under %s/", tok.LeaseID, credsPath)
	}

	rawExpiresAt, _ := tok.Data["expires_at"].(string)
	expiresAt, err := time.Parse(time.RFC3339, rawExpiresAt)
	if err != nil {
		t.Fatalf("expires_at %q is not RFC 3339: %v", rawExpiresAt, err)
	}
	if !strings.HasSuffix(rawExpiresAt, "Z") {
		t.Errorf("expires_at = %q, want UTC with a Z suffix", rawExpiresAt)
	}
	leaseEnd, err := leaseExpireTime(ctx, st.Vault.Client, tok.LeaseID)
	if err != nil {
		t.Fatalf("lease lookup: %v", err)
	}
	if diff := expiresAt.Sub(leaseEnd).Abs(); diff > 2*time.Second {
		t.Errorf("expires_at = %s, lease ends %s: %s apart, want at most 2s",
			expiresAt.Format(time.RFC3339), leaseEnd.Format(time.RFC3339Nano), diff)
	}

	got := st.introspect(t, ctx, tok.AccessToken)
	if !got.Active {
		t.Fatalf("hydra introspection: active = false, want true")
	}
	if !slices.Contains(got.Scopes(), devstack.RoleScope) {
		t.Errorf("hydra scope = %q, want it to contain %q", got.Scope, devstack.RoleScope)
	}
	if slices.Contains(got.Scopes(), "deploy:write") {
		t.Errorf("hydra scope = %q, want no deploy:write (the role narrows to %q)", got.Scope, devstack.RoleScope)
	}
	if !slices.Contains(got.Audience, devstack.Audience) {
		t.Errorf("hydra aud = %q, want it to contain %q", got.Audience, devstack.Audience)
	}
	if got.ClientID != st.EngineClient.ID {
		t.Errorf("hydra client_id = %q, want %q", got.ClientID, st.EngineClient.ID)
	}
	if tokenLeft := got.ExpiresAt.Sub(tok.MintedAt); tok.LeaseDuration > tokenLeft {
		t.Errorf("lease TTL = %s, token exp - now = %s at Hydra, want TTL <= that", tok.LeaseDuration, tokenLeft)
	}
	if leaseEnd.After(got.ExpiresAt) {
		t.Errorf("lease ends %s, after the token's exp %s at Hydra", leaseEnd.Format(time.RFC3339Nano), got.ExpiresAt.Format(time.RFC3339))
	}
}

// stringList converts a decoded JSON list of strings.
func stringList(v any) []string {
	raw, _ := v.([]any)
	list := make([]string, 0, len(raw))
	for _, item := range raw {
		s, _ := item.(string)
		list = append(list, s)
	}
	return list
}

// assertLeaseRevokeDeactivates revokes the lease with the CLI and checks
// that Hydra no longer accepts the token.
func assertLeaseRevokeDeactivates(t *testing.T, ctx context.Context, st *testStack, tok ciToken) {
	t.Helper()
	if output, err := st.vaultCLI(ctx, "lease", "revoke", "-sync", tok.LeaseID); err != nil {
		t.Fatalf("%v\n%s", err, output)
	}
	if got := st.introspect(t, ctx, tok.AccessToken); got.Active {
		t.Errorf("hydra introspection after vault lease revoke: active = true, want false")
	}
	if !leaseGone(ctx, st.Vault.Client, tok.LeaseID) {
		t.Errorf("lease %s still exists after vault lease revoke", tok.LeaseID)
	}
}

// assertRotateRoot rotates the root grant and checks the generation, the
// response and, at Hydra, that the previous rotation's access token is
// revoked, which Hydra does on every refresh of the chain.
func assertRotateRoot(t *testing.T, ctx context.Context, st *testStack) {
	previous, err := st.mint(ctx, st.Vault.Client, grantRoleName, false, nil)
	if err != nil {
		t.Fatalf("mint through the root grant: %v", err)
	}
	if !st.introspect(t, ctx, previous.AccessToken).Active {
		t.Fatalf("hydra introspection of the root grant's access token: active = false, want true")
	}
	before := st.mustStatus(t, ctx)

	data, err := st.rotateRoot(ctx, st.Vault.Client)
	if err != nil {
		t.Fatalf("rotate-root: %v", err)
	}
	gotGeneration, err := asInt64(data["generation"])
	if err != nil {
		t.Fatalf("rotate-root generation: %v", err)
	}
	if want := before.Generation + 1; gotGeneration != want {
		t.Errorf("rotate-root generation = %d, want %d", gotGeneration, want)
	}
	rotatedAt := parseTimeField(t, data, "rotated_at")
	if age := time.Since(rotatedAt); age < -2*time.Second || age > time.Minute {
		t.Errorf("rotated_at = %s, want about now", rotatedAt.Format(time.RFC3339))
	}
	nextAt := parseTimeField(t, data, "next_rotation_at")
	if diff := nextAt.Sub(rotatedAt.Add(24 * time.Hour)).Abs(); diff > 2*time.Second {
		t.Errorf("next_rotation_at = %s, want rotated_at + 24h (default rotation_period)", nextAt.Format(time.RFC3339))
	}
	if after := st.mustStatus(t, ctx); after.Generation != gotGeneration {
		t.Errorf("status generation = %d, want %d from rotate-root", after.Generation, gotGeneration)
	}
	if got := st.introspect(t, ctx, previous.AccessToken); got.Active {
		t.Errorf("hydra introspection of the previous rotation's access token: active = true, want false (refresh revokes it)")
	}
	st.assertRootGrantWorks(t, ctx)
}

// parseTimeField parses an RFC 3339 field of a response.
func parseTimeField(t *testing.T, data map[string]any, field string) time.Time {
	t.Helper()
	raw, _ := data[field].(string)
	parsed, err := time.Parse(time.RFC3339, raw)
	if err != nil {
		t.Fatalf("%s = %q, want RFC 3339: %v", field, raw, err)
	}
	return parsed
}

// assertStatusFields checks every status field of a healthy mount.
func assertStatusFields(t *testing.T, ctx context.Context, st *testStack) {
	s := st.mustStatus(t, ctx)
	for _, field := range []string{
		"state", "generation", "last_rotated_at", "next_rotation_at",
		"consecutive_failures", "last_error", "last_error_at", "standby_state",
	} {
		if _, ok := s.Raw[field]; !ok {
			t.Errorf("status has no field %q", field)
		}
	}
	if s.State != "healthy" {
		t.Errorf("state = %q, want healthy", s.State)
	}
	if s.Generation < 1 {
		t.Errorf("generation = %d, want >= 1 after seeding", s.Generation)
	}
	if s.ConsecutiveFailures != 0 {
		t.Errorf("consecutive_failures = %d, want 0", s.ConsecutiveFailures)
	}
	if s.LastError != "" {
		t.Errorf("last_error = %q, want empty", s.LastError)
	}
	if got, _ := s.Raw["standby_state"].(string); got != "none" {
		t.Errorf("standby_state = %q, want none", got)
	}
	lastRotated := parseTimeField(t, s.Raw, "last_rotated_at")
	nextRotation := parseTimeField(t, s.Raw, "next_rotation_at")
	if got := nextRotation.Sub(lastRotated); got != 24*time.Hour {
		t.Errorf("next_rotation_at - last_rotated_at = %s, want 24h", got)
	}
}

// secretConfigFields are the write-only fields of ci-tokens/config.
var secretConfigFields = []string{"client_secret", "refresh_token", "standby_refresh_token"}

// assertConfigReadHidesSecrets checks that a config read returns the
// non-secret fields and no secret, by key or by value.
func assertConfigReadHidesSecrets(t *testing.T, ctx context.Context, st *testStack) {
	data := st.readConfig(t, ctx)
	for _, key := range secretConfigFields {
		if _, ok := data[key]; ok {
			t.Errorf("config read has key %q, want it write-only", key)
		}
	}
	if got, _ := data["issuer"].(string); got != st.Hydra.PublicURL {
		t.Errorf("config issuer = %q, want %q", got, st.Hydra.PublicURL)
	}
	if got, _ := data["client_id"].(string); got != st.EngineClient.ID {
		t.Errorf("config client_id = %q, want %q", got, st.EngineClient.ID)
	}
	if got, err := asInt64(data["rotation_period"]); err != nil || got != 86400 {
		t.Errorf("config rotation_period = %v, want 86400 seconds", data["rotation_period"])
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	for value, label := range st.secrets {
		if path := findValue(data, value, "config"); path != "" {
			t.Errorf("config read field %s contains the %s", path, label)
		}
	}
}

// findValue returns the path of the first string in v that contains
// secret, or "".
func findValue(v any, secret, path string) string {
	switch value := v.(type) {
	case string:
		if strings.Contains(value, secret) {
			return path
		}
	case map[string]any:
		for key, item := range value {
			if found := findValue(item, secret, path+"."+key); found != "" {
				return found
			}
		}
	case []any:
		for _, item := range value {
			if found := findValue(item, secret, path+"[]"); found != "" {
				return found
			}
		}
	}
	return ""
}

// engineSnapshot is the observable stored state that bad input must leave
// alone.
type engineSnapshot struct {
	Config     map[string]any
	Role       map[string]any
	Generation int64
	State      string
	Leases     int
}

// diff lists what differs from s in other, as "what: before -> after".
func (s engineSnapshot) diff(other engineSnapshot) []string {
	var changes []string
	for _, part := range []struct {
		name          string
		before, after map[string]any
	}{
		{"config", s.Config, other.Config},
		{"role", s.Role, other.Role},
	} {
		keys := map[string]bool{}
		for key := range part.before {
			keys[key] = true
		}
		for key := range part.after {
			keys[key] = true
		}
		for key := range keys {
			if !reflect.DeepEqual(part.before[key], part.after[key]) {
				changes = append(changes, fmt.Sprintf("%s %s: %v -> %v", part.name, key, part.before[key], part.after[key]))
			}
		}
	}
	if s.Generation != other.Generation {
		changes = append(changes, fmt.Sprintf("generation: %d -> %d", s.Generation, other.Generation))
	}
	if s.State != other.State {
		changes = append(changes, fmt.Sprintf("state: %s -> %s", s.State, other.State))
	}
	if s.Leases != other.Leases {
		changes = append(changes, fmt.Sprintf("leases of role %s: %d -> %d", devstack.RoleName, s.Leases, other.Leases))
	}
	slices.Sort(changes)
	return changes
}

func (st *testStack) snapshot(t *testing.T, ctx context.Context) engineSnapshot {
	t.Helper()
	role, err := st.Vault.Client.Logical().ReadWithContext(ctx, mount+"/roles/"+devstack.RoleName)
	if err != nil || role == nil {
		t.Fatalf("read role %s: %v", devstack.RoleName, err)
	}
	leases, err := listLeases(ctx, st.Vault.Client, devstack.RoleName)
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	s := st.mustStatus(t, ctx)
	return engineSnapshot{
		Config:     st.readConfig(t, ctx),
		Role:       role.Data,
		Generation: s.Generation,
		State:      s.State,
		Leases:     len(leases),
	}
}

// restore puts the deploy role and the config's non-secret fields back
// after a case that wrongly changed them, so later cases start clean.
func (st *testStack) restore(t *testing.T, ctx context.Context, want engineSnapshot) {
	t.Helper()
	if err := st.WriteRole(ctx); err != nil {
		t.Fatalf("restore role: %v", err)
	}
	fields := map[string]any{}
	for _, key := range []string{"issuer", "token_endpoint", "revocation_endpoint", "client_auth_method", "ca_pem", "tls_min_version", "request_timeout", "rotation_period"} {
		fields[key] = want.Config[key]
	}
	if _, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/config", fields); err != nil {
		t.Fatalf("restore config: %v", err)
	}
}

// assertBadInputRejected sends invalid requests over HTTP and checks for a
// 400 that names the field, and that nothing stored changed.
func assertBadInputRejected(t *testing.T, ctx context.Context, st *testStack) {
	const badPEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
	tests := []struct {
		name      string
		path      string
		data      map[string]any
		wantField string
	}{
		{name: "unknown strategy", path: mount + "/roles/" + devstack.RoleName, data: map[string]any{"strategy": "token_exchange"}, wantField: "strategy"},
		{name: "negative role ttl", path: mount + "/roles/" + devstack.RoleName, data: map[string]any{"ttl": -5}, wantField: "ttl"},
		{name: "negative role max_ttl", path: mount + "/roles/" + devstack.RoleName, data: map[string]any{"max_ttl": -5}, wantField: "max_ttl"},
		{name: "role ttl over max_ttl", path: mount + "/roles/" + devstack.RoleName, data: map[string]any{"ttl": "2h"}, wantField: "ttl"},
		{name: "negative creds ttl", path: credsPath, data: map[string]any{"ttl": -5}, wantField: "ttl"},
		{name: "unknown role", path: mount + "/creds/no-such-role", wantField: "role"},
		{name: "missing endpoint", path: mount + "/config", data: map[string]any{"issuer": "", "token_endpoint": ""}, wantField: "token_endpoint"},
		{name: "malformed ca_pem", path: mount + "/config", data: map[string]any{"ca_pem": badPEM}, wantField: "ca_pem"},
		{name: "unknown client_auth_method", path: mount + "/config", data: map[string]any{"client_auth_method": "private_key_jwt"}, wantField: "client_auth_method"},
		{name: "unknown tls_min_version", path: mount + "/config", data: map[string]any{"tls_min_version": "tls10"}, wantField: "tls_min_version"},
		{name: "negative request_timeout", path: mount + "/config", data: map[string]any{"request_timeout": -1}, wantField: "request_timeout"},
		{name: "rotation_period too short", path: mount + "/config", data: map[string]any{"rotation_period": 5}, wantField: "rotation_period"},
		{name: "refresh token the upstream rejects", path: mount + "/config", data: map[string]any{"refresh_token": "ory_rt_not-a-real-token"}, wantField: "refresh_token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := st.snapshot(t, ctx)
			_, err := st.Vault.Client.Logical().WriteWithContext(ctx, tt.path, tt.data)
			if err != nil {
				st.record(err.Error())
			}
			assertBadRequest(t, err, tt.wantField)
			after := st.snapshot(t, ctx)
			if changes := before.diff(after); len(changes) > 0 {
				t.Errorf("stored state changed by the rejected write: %s", strings.Join(changes, "; "))
				st.restore(t, ctx, before)
			}
		})
	}

	t.Run("unconfigured mount", func(t *testing.T) {
		assertUnconfiguredMountRejects(t, ctx, st)
	})
}

// assertBadRequest checks that err is an HTTP 400 whose message names
// field, as "field: ..." or "field \"...\"".
func assertBadRequest(t *testing.T, err error, field string) {
	t.Helper()
	if err == nil {
		t.Errorf("write succeeded, want HTTP 400 naming %q", field)
		return
	}
	if got := statusCode(err); got != 400 {
		t.Errorf("HTTP status = %d, want 400 (error: %v)", got, err)
	}
	if msg := err.Error(); !strings.Contains(msg, field+":") && !strings.Contains(msg, `"`+field+`"`) {
		t.Errorf("error = %q, want it to name the field %q", msg, field)
	}
}

// assertUnconfiguredMountRejects mounts the plugin a second time without
// config and checks that minting and rotating return 400 naming config.
func assertUnconfiguredMountRejects(t *testing.T, ctx context.Context, st *testStack) {
	if err := st.Vault.MountPlugin(ctx, unconfiguredMount, st.Plugin); err != nil {
		t.Fatalf("mount: %v", err)
	}
	client := st.Vault.Client
	if _, err := client.Logical().WriteWithContext(ctx, unconfiguredMount+"/roles/deploy", map[string]any{"scopes": devstack.RoleScope}); err != nil {
		t.Fatalf("write role on the unconfigured mount: %v", err)
	}

	for _, tt := range []struct {
		name string
		path string
	}{
		{name: "creds", path: unconfiguredMount + "/creds/deploy"},
		{name: "rotate-root", path: unconfiguredMount + "/rotate-root"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := client.Logical().WriteWithContext(ctx, tt.path, nil)
			if err != nil {
				st.record(err.Error())
			}
			if err == nil {
				t.Fatalf("write succeeded, want HTTP 400")
			}
			if got := statusCode(err); got != 400 {
				t.Errorf("HTTP status = %d, want 400 (error: %v)", got, err)
			}
			if !strings.Contains(err.Error(), "config") {
				t.Errorf("error = %q, want it to say that config is missing", err)
			}
		})
	}

	status, err := client.Logical().ReadWithContext(ctx, unconfiguredMount+"/status")
	if err != nil || status == nil {
		t.Fatalf("read status of the unconfigured mount: %v", err)
	}
	if got, _ := status.Data["state"].(string); got != "unconfigured" {
		t.Errorf("state = %q, want unconfigured", got)
	}
	leases, err := client.Logical().ListWithContext(ctx, "sys/leases/lookup/"+unconfiguredMount+"/creds/deploy/")
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	if leases != nil && len(stringList(leases.Data["keys"])) > 0 {
		t.Errorf("unconfigured mount has leases %v, want none", leases.Data["keys"])
	}
	if err := client.Sys().UnmountWithContext(ctx, unconfiguredMount); err != nil {
		t.Errorf("unmount %s: %v", unconfiguredMount, err)
	}
}
