package devstack

import (
	"context"
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
