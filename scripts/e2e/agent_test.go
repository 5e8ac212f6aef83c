package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/scripts/devstack"
)

// Lease of the deploy role in the Agent test. ttl equals max_ttl, so the
// lease is not renewable, and Vault Agent fetches a new token after 85 to
// 95 % of it (consul-template v0.41.1, which Vault 1.21.0 embeds, waits
// lease_renewal_threshold 0.9 plus or minus 0.05). Hydra's access tokens
// live 1h here, so the engine does not shorten the lease.
const (
	agentLeaseTTL = 15 * time.Second
	agentRenders  = 3
)

// agentTemplates are the files Vault Agent renders, by the creds field each
// holds. Identical secret calls share one request, so all three come from
// one lease.
var agentTemplates = []string{"access_token", "expires_at", "token_id"}

// agentRender is one set of files rendered from one creds response.
type agentRender struct {
	token     string
	tokenID   string
	expiresAt time.Time

	// renderedAt is the newest modification time of the three files.
	renderedAt time.Time
}

// agentLease is a lease seen under the deploy role while the Agent ran.
type agentLease struct {
	id        string
	issuedAt  time.Time
	expiresAt time.Time
}

func TestAgentTemplate(t *testing.T) {
	st := newTestStack(t, devstack.Options{})
	ctx := testContext(t, 4*time.Minute)
	ttl := fmt.Sprintf("%ds", int(agentLeaseTTL.Seconds()))
	if _, err := st.Vault.Client.Logical().WriteWithContext(ctx, mount+"/roles/"+devstack.RoleName, map[string]any{
		"ttl":     ttl,
		"max_ttl": ttl,
	}); err != nil {
		t.Fatalf("write role with a short ttl: %v", err)
	}

	dir := t.TempDir()
	_, token := st.childClient(t, ctx)
	tokenFile := filepath.Join(dir, "vault-token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatalf("write token file: %v", err)
	}
	agent := st.startAgent(t, ctx, dir, tokenFile)

	renders, seen := st.watchAgent(t, ctx, dir, agent)
	stopAgent(t, agent)
	leases := st.collectLeases(t, ctx, seen)
	for i, render := range renders {
		t.Logf("render %d: token %s rendered %s, expires_at %s", i+1, render.tokenID,
			render.renderedAt.UTC().Format("15:04:05.000"), render.expiresAt.Format(time.RFC3339))
	}
	for i, lease := range leases {
		t.Logf("lease %d: %s issued %s, ends %s", i+1, lease.id,
			lease.issuedAt.UTC().Format("15:04:05.000"), lease.expiresAt.UTC().Format("15:04:05.000"))
	}

	t.Run("files are private", func(t *testing.T) {
		for _, field := range agentTemplates {
			info, err := os.Stat(filepath.Join(dir, field))
			if err != nil {
				t.Fatalf("stat rendered file: %v", err)
			}
			if got := info.Mode().Perm(); got != 0o600 {
				t.Errorf("mode of %s = %o, want 600", field, got)
			}
		}
	})
	t.Run("one lease per render", func(t *testing.T) {
		if len(renders) < agentRenders {
			t.Fatalf("renders = %d, want at least %d", len(renders), agentRenders)
		}
		if len(leases) != len(renders) {
			t.Errorf("leases under %s = %d, renders = %d, want one lease per render", credsPath, len(leases), len(renders))
		}
	})
	t.Run("expires_at matches the lease", func(t *testing.T) {
		for i := range min(len(renders), len(leases)) {
			if diff := renders[i].expiresAt.Sub(leases[i].expiresAt).Abs(); diff > 2*time.Second {
				t.Errorf("render %d: expires_at %s, lease %s ends %s, want at most 2s apart",
					i+1, renders[i].expiresAt.Format(time.RFC3339), leases[i].id, leases[i].expiresAt.Format(time.RFC3339Nano))
			}
		}
	})
	t.Run("new token before the old lease ends", func(t *testing.T) {
		for i := 1; i < min(len(renders), len(leases)+1); i++ {
			if !renders[i].renderedAt.Before(leases[i-1].expiresAt) {
				t.Errorf("render %d written at %s, lease of render %d ended %s, want the new token first",
					i+1, renders[i].renderedAt.Format(time.RFC3339Nano), i, leases[i-1].expiresAt.Format(time.RFC3339Nano))
			}
		}
	})
	t.Run("expired lease revokes the old token", func(t *testing.T) {
		if len(renders) == 0 || len(leases) == 0 {
			t.Fatalf("no render to check")
		}
		time.Sleep(time.Until(leases[0].expiresAt))
		if !st.waitInactive(t, ctx, renders[0].token, 10*time.Second) {
			t.Errorf("hydra introspection of the first rendered token: still active 10s after its lease ended")
		}
	})
}

// startAgent starts Vault Agent with token_file auto-auth and one template
// per field, and records its log in the transcript when the test ends.
func (st *testStack) startAgent(t *testing.T, ctx context.Context, dir, tokenFile string) *exec.Cmd {
	t.Helper()
	var config strings.Builder
	fmt.Fprintf(&config, "vault {\n  address = %q\n}\n", st.Vault.Addr)
	fmt.Fprintf(&config, "auto_auth {\n  method \"token_file\" {\n    config = {\n      token_file_path = %q\n    }\n  }\n}\n", tokenFile)
	config.WriteString("template_config {\n  exit_on_retry_failure = true\n}\n")
	for _, field := range agentTemplates {
		contents := fmt.Sprintf(`{{ with secret %q }}{{ .Data.%s }}{{ end }}`, credsPath, field)
		fmt.Fprintf(&config, "template {\n  contents = %q\n  destination = %q\n  perms = \"0600\"\n}\n",
			contents, filepath.Join(dir, field))
	}
	configPath := filepath.Join(dir, "agent.hcl")
	if err := os.WriteFile(configPath, []byte(config.String()), 0o600); err != nil {
		t.Fatalf("write agent config: %v", err)
	}

	logPath := filepath.Join(dir, "agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("create agent log: %v", err)
	}
	cmd := st.Vault.Command(ctx, "agent", "-config="+configPath)
	// The Agent must authenticate with its token file, not the root token.
	cmd.Env = slices.DeleteFunc(cmd.Env, func(kv string) bool { return strings.HasPrefix(kv, "VAULT_TOKEN=") })
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start vault agent: %v", err)
	}
	t.Cleanup(func() {
		stopAgent(t, cmd)
		logFile.Close()
		if data, err := os.ReadFile(logPath); err == nil {
			st.record(string(data))
			if t.Failed() {
				t.Logf("vault agent log:\n%s", tail(string(data), 30))
			}
		}
	})
	return cmd
}

// stopAgent ends the Agent with SIGTERM, and SIGKILL if it does not exit.
func stopAgent(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// watchAgent polls the rendered files and the deploy role's leases until
// agentRenders consistent renders were seen or a deadline passes. A render
// counts once all three files hold values of the same token.
func (st *testStack) watchAgent(t *testing.T, ctx context.Context, dir string, agent *exec.Cmd) ([]agentRender, map[string]agentLease) {
	t.Helper()
	deadline := time.Now().Add(agentRenders*agentLeaseTTL + 30*time.Second)
	var renders []agentRender
	leases := map[string]agentLease{}
	for len(renders) < agentRenders && time.Now().Before(deadline) {
		if agent.ProcessState != nil {
			t.Fatalf("vault agent exited: %v", agent.ProcessState)
		}
		st.collectLeases(t, ctx, leases)
		if render, ok := readRender(dir); ok && (len(renders) == 0 || renders[len(renders)-1].tokenID != render.tokenID) {
			st.remember("token rendered by vault agent", render.token)
			got := st.introspect(t, ctx, render.token)
			if !got.Active || !slices.Contains(got.Scopes(), devstack.RoleScope) {
				t.Errorf("render %d: hydra introspection active = %t, scope %q; want active with %q",
					len(renders)+1, got.Active, got.Scope, devstack.RoleScope)
			}
			renders = append(renders, render)
		}
		time.Sleep(250 * time.Millisecond)
	}
	return renders, leases
}

// readRender reads the three files and reports whether they form one
// consistent render.
func readRender(dir string) (agentRender, bool) {
	values := map[string]string{}
	var renderedAt time.Time
	for _, field := range agentTemplates {
		path := filepath.Join(dir, field)
		data, err := os.ReadFile(path)
		if err != nil {
			return agentRender{}, false
		}
		values[field] = strings.TrimSpace(string(data))
		// The newest modification time of the three files is when the
		// render finished, which polling alone would see late.
		if info, err := os.Stat(path); err == nil && info.ModTime().After(renderedAt) {
			renderedAt = info.ModTime()
		}
	}
	token := values["access_token"]
	if token == "" || fingerprint(token) != values["token_id"] {
		return agentRender{}, false
	}
	expiresAt, err := time.Parse(time.RFC3339, values["expires_at"])
	if err != nil {
		return agentRender{}, false
	}
	return agentRender{token: token, tokenID: values["token_id"], expiresAt: expiresAt, renderedAt: renderedAt}, true
}

// collectLeases adds the deploy role's current leases to seen and returns
// them sorted by issue time.
func (st *testStack) collectLeases(t *testing.T, ctx context.Context, seen map[string]agentLease) []agentLease {
	t.Helper()
	ids, err := listLeases(ctx, st.Vault.Client, devstack.RoleName)
	if err != nil {
		t.Fatalf("list leases: %v", err)
	}
	for _, suffix := range ids {
		id := credsPath + "/" + suffix
		if _, ok := seen[id]; ok {
			continue
		}
		data, err := lookupLease(ctx, st.Vault.Client, id)
		if err != nil {
			continue // expired after the list; earlier polls 250 ms apart recorded it
		}
		issued, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(data["issue_time"]))
		expires, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(data["expire_time"]))
		seen[id] = agentLease{id: id, issuedAt: issued, expiresAt: expires}
	}
	sorted := make([]agentLease, 0, len(seen))
	for _, lease := range seen {
		sorted = append(sorted, lease)
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].issuedAt.Before(sorted[j].issuedAt) })
	return sorted
}

// tail returns the last n lines of text.
func tail(text string, n int) string {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
