// Package agent_test runs the Vault Agent configurations in this directory
// with the real vault binary against Vault with the plugin and Hydra.
package agent_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/vault/api"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// Values in the example configurations that a test replaces.
const (
	exampleVaultAddr    = "https://vault.example.com:8200"
	exampleRoleIDPath   = "/etc/vault-agent/role-id"
	exampleSecretIDPath = "/etc/vault-agent/secret-id"
	exampleDestination  = "/run/ci-tokens/deploy.env"
	exampleCommand      = `["/usr/local/bin/deploy-worker"]`
)

// runnerPolicy is the policy that bootstrap/terraform writes for the deploy
// role. The AppRole token also keeps the default policy, which lets the
// agent renew its token and the CI token leases.
const runnerPolicy = `
path "ci-tokens/creds/deploy" {
  capabilities = ["read", "update"]
}

path "auth/token/revoke-self" {
  capabilities = ["update"]
}
`

// agentEnv is a started stack with an AppRole login for the agent.
type agentEnv struct {
	stack        *devstack.Stack
	dir          string
	roleIDPath   string
	secretIDPath string
}

func newAgentEnv(t *testing.T, opts devstack.Options) *agentEnv {
	t.Helper()
	stack := devstack.UpForTest(t, opts)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	vault := stack.Vault.Client

	if err := vault.Sys().EnableAuthWithOptionsWithContext(ctx, "approle", &api.EnableAuthOptions{Type: "approle"}); err != nil {
		t.Fatalf("enable approle: %v", err)
	}
	if err := vault.Sys().PutPolicyWithContext(ctx, "ci-tokens-deploy", runnerPolicy); err != nil {
		t.Fatalf("write policy: %v", err)
	}
	if _, err := vault.Logical().WriteWithContext(ctx, "auth/approle/role/runner", map[string]interface{}{
		"token_policies": "ci-tokens-deploy",
		"token_ttl":      "20m",
	}); err != nil {
		t.Fatalf("write approle role: %v", err)
	}
	roleID, err := vault.Logical().ReadWithContext(ctx, "auth/approle/role/runner/role-id")
	if err != nil {
		t.Fatalf("read role-id: %v", err)
	}
	secretID, err := vault.Logical().WriteWithContext(ctx, "auth/approle/role/runner/secret-id", nil)
	if err != nil {
		t.Fatalf("generate secret-id: %v", err)
	}

	env := &agentEnv{stack: stack, dir: t.TempDir()}
	env.roleIDPath = filepath.Join(env.dir, "role-id")
	env.secretIDPath = filepath.Join(env.dir, "secret-id")
	writeFile(t, env.roleIDPath, roleID.Data["role_id"].(string))
	writeFile(t, env.secretIDPath, secretID.Data["secret_id"].(string))
	return env
}

// config reads an example configuration and points it at this environment.
// It fails the test when a value it replaces is no longer in the file, so
// the test keeps exercising the shipped example.
func (e *agentEnv) config(t *testing.T, name string, extra map[string]string) string {
	t.Helper()
	raw, err := os.ReadFile(name)
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	replacements := map[string]string{
		exampleVaultAddr:    e.stack.Vault.Addr,
		exampleRoleIDPath:   e.roleIDPath,
		exampleSecretIDPath: e.secretIDPath,
	}
	for from, to := range extra {
		replacements[from] = to
	}
	text := string(raw)
	for from, to := range replacements {
		if !strings.Contains(text, from) {
			t.Fatalf("%s no longer contains %q", name, from)
		}
		text = strings.ReplaceAll(text, from, to)
	}
	path := filepath.Join(e.dir, name)
	writeFile(t, path, text)
	return path
}

// startAgent runs vault agent until the test ends. The agent logs in with
// AppRole only: the root token of the stack is removed from its environment.
func (e *agentEnv) startAgent(t *testing.T, configPath string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := e.stack.Vault.Command(ctx, "agent", "-config="+configPath)
	cmd.Env = withoutVar(cmd.Env, "VAULT_TOKEN")
	logPath := filepath.Join(e.dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create agent log: %v", err)
	}
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start vault agent: %v", err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		logFile.Close()
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("vault agent log:\n%s", log)
		}
	})
}

// deployLeases lists the live leases of ci-tokens/creds/deploy.
func (e *agentEnv) deployLeases(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	secret, err := e.stack.Vault.Client.Logical().ListWithContext(ctx, "sys/leases/lookup/ci-tokens/creds/deploy/")
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	if secret == nil {
		return nil
	}
	keys, _ := secret.Data["keys"].([]interface{})
	leases := make([]string, 0, len(keys))
	for _, key := range keys {
		leases = append(leases, fmt.Sprint(key))
	}
	return leases
}

func TestAgentTemplateRendersOneLease(t *testing.T) {
	env := newAgentEnv(t, devstack.Options{})
	destination := filepath.Join(env.dir, "deploy.env")
	env.startAgent(t, env.config(t, "agent.hcl", map[string]string{exampleDestination: destination}))

	values := waitForEnvFile(t, destination, 90*time.Second)
	info, err := os.Stat(destination)
	if err != nil {
		t.Fatalf("stat %s: %v", destination, err)
	}
	if mode := info.Mode().Perm(); mode != 0o600 {
		t.Errorf("file mode: got %o, want 600", mode)
	}
	checkTokenValues(t, values)

	// Give the agent time to render twice if it were going to.
	time.Sleep(3 * time.Second)
	if leases := env.deployLeases(t); len(leases) != 1 {
		t.Errorf("leases after one render: got %d, want 1", len(leases))
	}
	introspection, err := env.stack.Hydra.Introspect(context.Background(), values["CI_TOKEN"])
	if err != nil {
		t.Fatalf("introspect: %v", err)
	}
	if !introspection.Active {
		t.Errorf("rendered token is not active at Hydra")
	}
}

func TestAgentRendersNewTokenBeforeExpiry(t *testing.T) {
	// Hydra's access tokens live 60s, so the engine's leases are shorter
	// than a minute and the agent must fetch new tokens during the test.
	env := newAgentEnv(t, devstack.Options{AccessTokenTTL: time.Minute})
	destination := filepath.Join(env.dir, "deploy.env")
	env.startAgent(t, env.config(t, "agent.hcl", map[string]string{exampleDestination: destination}))

	first := waitForEnvFile(t, destination, 90*time.Second)
	checkTokenValues(t, first)
	renders := []map[string]string{first}
	deadline := time.Now().Add(2 * time.Minute)
	for len(renders) < 3 && time.Now().Before(deadline) {
		time.Sleep(time.Second)
		values := readEnvFile(t, destination)
		if values["CI_TOKEN_ID"] == "" || values["CI_TOKEN_ID"] == renders[len(renders)-1]["CI_TOKEN_ID"] {
			continue
		}
		previousExpiry := parseExpiry(t, renders[len(renders)-1])
		if now := time.Now(); !now.Before(previousExpiry) {
			t.Errorf("render %d came at %s, after the previous token expired at %s", len(renders), now.Format(time.RFC3339), previousExpiry.Format(time.RFC3339))
		}
		checkTokenValues(t, values)
		renders = append(renders, values)
	}
	if len(renders) < 3 {
		t.Fatalf("renders in 2 minutes: got %d, want 3", len(renders))
	}

	// Each render minted one lease. Leases of earlier renders may still be
	// live until they expire, but there are never more than renders.
	if leases := env.deployLeases(t); len(leases) > len(renders) {
		t.Errorf("live leases: got %d, want at most one per render (%d)", len(leases), len(renders))
	}
}

func TestAgentExecSetsEnvironment(t *testing.T) {
	env := newAgentEnv(t, devstack.Options{})
	output := filepath.Join(env.dir, "child.env")
	command := fmt.Sprintf(`["/bin/sh", "-c", "env | grep ^CI_TOKEN > %s; exec sleep 600"]`, output)
	env.startAgent(t, env.config(t, "agent-exec.hcl", map[string]string{exampleCommand: command}))

	values := waitForEnvFile(t, output, 90*time.Second)
	if values["CI_TOKEN"] == "" {
		t.Fatalf("CI_TOKEN is not set in the child's environment")
	}
	parseExpiry(t, values)

	time.Sleep(3 * time.Second)
	if leases := env.deployLeases(t); len(leases) != 1 {
		t.Errorf("leases for two env_template blocks on one path: got %d, want 1", len(leases))
	}
}

// checkTokenValues checks that the rendered lines belong to one token.
func checkTokenValues(t *testing.T, values map[string]string) {
	t.Helper()
	token := values["CI_TOKEN"]
	if token == "" {
		t.Fatalf("CI_TOKEN is empty")
	}
	sum := sha256.Sum256([]byte(token))
	if want := "sha256:" + hex.EncodeToString(sum[:])[:16]; values["CI_TOKEN_ID"] != want {
		t.Errorf("CI_TOKEN_ID: got %q, want the fingerprint of CI_TOKEN %q", values["CI_TOKEN_ID"], want)
	}
	if expiry := parseExpiry(t, values); !expiry.After(time.Now()) {
		t.Errorf("CI_TOKEN_EXPIRES_AT %s is not in the future", expiry.Format(time.RFC3339))
	}
}

func parseExpiry(t *testing.T, values map[string]string) time.Time {
	t.Helper()
	expiry, err := time.Parse(time.RFC3339, values["CI_TOKEN_EXPIRES_AT"])
	if err != nil {
		t.Fatalf("CI_TOKEN_EXPIRES_AT %q is not RFC 3339: %v", values["CI_TOKEN_EXPIRES_AT"], err)
	}
	return expiry
}

// waitForEnvFile waits until path holds a CI_TOKEN line and returns its
// NAME=value pairs.
func waitForEnvFile(t *testing.T, path string, timeout time.Duration) map[string]string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if values := readEnvFile(t, path); values["CI_TOKEN"] != "" {
			return values
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s has no CI_TOKEN after %s", path, timeout)
	return nil
}

func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	file, err := os.Open(path)
	if os.IsNotExist(err) {
		return map[string]string{}
	}
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer file.Close()
	values := map[string]string{}
	scanner := bufio.NewScanner(file)
	for scanner.Scan() {
		if name, value, ok := strings.Cut(scanner.Text(), "="); ok {
			values[name] = value
		}
	}
	return values
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
}

func withoutVar(env []string, name string) []string {
	kept := env[:0:0]
	for _, entry := range env {
		if !strings.HasPrefix(entry, name+"=") {
			kept = append(kept, entry)
		}
	}
	return kept
}
