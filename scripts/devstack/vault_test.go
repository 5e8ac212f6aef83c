package devstack

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// startTestVault starts Vault for one test, building it first when the
// cache has no binary (about ten minutes), and stops it when the test ends.
func startTestVault(t *testing.T, opts VaultOptions) *Vault {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a real Vault server")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if opts.Binary == "" {
		binary, err := ensureTool(ctx, vaultTool, t.Logf)
		if err != nil {
			t.Fatalf("ensure vault: %v", err)
		}
		opts.Binary = binary
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	vault, err := StartVault(ctx, opts)
	if err != nil {
		t.Fatalf("start vault: %v", err)
	}
	t.Cleanup(func() {
		if err := vault.Close(); err != nil {
			t.Errorf("close vault: %v", err)
		}
	})
	return vault
}

func TestVaultRestartKeepsState(t *testing.T) {
	tests := []struct {
		name       string
		persistent bool
		crash      bool
		wantKept   bool
	}{
		{name: "dev restart", persistent: false, wantKept: false},
		{name: "persistent restart", persistent: true, wantKept: true},
		{name: "persistent kill", persistent: true, crash: true, wantKept: true},
	}
	const policy = `path "ci-tokens/creds/deploy" { capabilities = ["update"] }`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vault := startTestVault(t, VaultOptions{Persistent: tt.persistent})
			ctx := testContext(t)
			sys := vault.Client.Sys()
			if err := sys.PutPolicyWithContext(ctx, "devstack-test", policy); err != nil {
				t.Fatalf("write policy: %v", err)
			}

			pidBefore := vault.PID()
			if tt.crash {
				if err := vault.Kill(); err != nil {
					t.Fatalf("kill: %v", err)
				}
				if vault.Running() {
					t.Fatalf("running after kill, want stopped")
				}
				if err := vault.Start(ctx); err != nil {
					t.Fatalf("start after kill: %v", err)
				}
			} else if err := vault.Restart(ctx); err != nil {
				t.Fatalf("restart: %v", err)
			}
			if vault.PID() == pidBefore {
				t.Fatalf("pid after restart = %d, want a new process", pidBefore)
			}

			got, err := sys.GetPolicyWithContext(ctx, "devstack-test")
			if err != nil {
				t.Fatalf("read policy: %v", err)
			}
			if gotKept := got == policy; gotKept != tt.wantKept {
				t.Errorf("policy after restart = %q, want kept = %t", got, tt.wantKept)
			}
		})
	}
}

func TestVaultCommandIgnoresShellEnv(t *testing.T) {
	vault := startTestVault(t, VaultOptions{})
	ctx := testContext(t)

	// A developer's shell may point at another server; Command must not
	// inherit that.
	t.Setenv("VAULT_ADDR", "http://127.0.0.1:1")
	t.Setenv("VAULT_TOKEN", "not-this-token")
	output, err := vault.Command(ctx, "token", "lookup", "-format=json").CombinedOutput()
	if err != nil {
		t.Fatalf("vault token lookup: %v\n%s", err, output)
	}
	if !strings.Contains(string(output), `"root"`) {
		t.Errorf("token lookup output does not name the root policy:\n%s", output)
	}
}

// TestStartVaultAgainOnSameDir stops a persistent server and starts a new
// one on the same directory, which can unseal it only from the init file.
func TestStartVaultAgainOnSameDir(t *testing.T) {
	tests := []struct {
		name         string
		keepInitFile bool
		wantStarted  bool
	}{
		{name: "with init file", keepInitFile: true, wantStarted: true},
		{name: "without init file", keepInitFile: false, wantStarted: false},
	}
	const policy = `path "ci-tokens/creds/deploy" { capabilities = ["update"] }`
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := VaultOptions{Persistent: true, KeepInitFile: tt.keepInitFile, Dir: t.TempDir()}
			first := startTestVault(t, opts)
			ctx := testContext(t)
			if err := first.Client.Sys().PutPolicyWithContext(ctx, "devstack-test", policy); err != nil {
				t.Fatalf("write policy: %v", err)
			}
			if err := first.Stop(); err != nil {
				t.Fatalf("stop: %v", err)
			}
			checkInitFile(t, first, tt.keepInitFile)

			opts.Binary = first.Binary
			second, err := StartVault(ctx, opts)
			if gotStarted := err == nil; gotStarted != tt.wantStarted {
				t.Fatalf("second StartVault error = %v, want started = %t", err, tt.wantStarted)
			}
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = second.Close() })
			if second.Token != first.Token {
				t.Errorf("root token after the second start differs from the first")
			}
			got, err := second.Client.Sys().GetPolicyWithContext(ctx, "devstack-test")
			if err != nil {
				t.Fatalf("read policy: %v", err)
			}
			if got != policy {
				t.Errorf("policy after the second start = %q, want %q", got, policy)
			}
		})
	}
}

// checkInitFile checks that the init file exists with mode 0600 exactly
// when it should.
func checkInitFile(t *testing.T, vault *Vault, wantFile bool) {
	t.Helper()
	if !wantFile {
		if vault.InitPath != "" {
			t.Errorf("InitPath = %q, want empty", vault.InitPath)
		}
		return
	}
	info, err := os.Stat(vault.InitPath)
	if err != nil {
		t.Fatalf("stat init file: %v", err)
	}
	if got := info.Mode().Perm(); got != 0o600 {
		t.Errorf("init file mode = %o, want 600", got)
	}
}
