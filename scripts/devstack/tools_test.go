package devstack

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRequiredVersion(t *testing.T) {
	gomod := `module example.test/tools

go 1.25

require github.com/hashicorp/vault v1.21.0

require (
	github.com/hashicorp/vault/api v1.22.0 // indirect
	github.com/ory/hydra/v2 v2.3.0
)
`
	path := filepath.Join(t.TempDir(), "go.mod")
	if err := os.WriteFile(path, []byte(gomod), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		module  string
		want    string
		wantErr bool
	}{
		{name: "one-line require", module: "github.com/hashicorp/vault", want: "v1.21.0"},
		{name: "require block", module: "github.com/ory/hydra/v2", want: "v2.3.0"},
		{name: "module path prefix", module: "github.com/hashicorp/vault/api", want: "v1.22.0"},
		{name: "missing module", module: "github.com/ory/hydra", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := requiredVersion(path, tt.module)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("requiredVersion(%q) = %q, want an error", tt.module, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("requiredVersion(%q): %v", tt.module, err)
			}
			if got != tt.want {
				t.Errorf("requiredVersion(%q) = %q, want %q", tt.module, got, tt.want)
			}
		})
	}
}

func TestToolVersionsMatchCacheNames(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		tool tool
		want string
	}{
		{tool: vaultTool, want: "v1.21.0"},
		{tool: hydraTool, want: "v2.3.0"},
	}
	for _, tt := range tests {
		t.Run(tt.tool.name, func(t *testing.T) {
			got, err := requiredVersion(filepath.Join(root, tt.tool.dir, "go.mod"), tt.tool.module)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("%s tools module requires %s, want %s (update the docs that name the cached binary)",
					tt.tool.name, got, tt.want)
			}
		})
	}
}

func TestEnsureToolCache(t *testing.T) {
	if testing.Short() {
		t.Skip("builds hydra")
	}
	cache := t.TempDir()
	t.Setenv("CI_TOKENS_CACHE", cache)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// A missing binary is built, and nothing is left under a temporary name.
	built, err := ensureTool(ctx, hydraTool, t.Logf)
	if err != nil {
		t.Fatalf("ensure hydra in an empty cache: %v", err)
	}
	if want := filepath.Join(cache, "bin", "hydra-v2.3.0"); built != want {
		t.Errorf("built binary at %s, want %s", built, want)
	}
	if !isExecutable(built) {
		t.Fatalf("%s is not an executable file", built)
	}
	leftovers, err := filepath.Glob(filepath.Join(cache, "bin", "*.tmp-*"))
	if err != nil {
		t.Fatal(err)
	}
	if len(leftovers) != 0 {
		t.Errorf("temporary files left in the cache: %q", leftovers)
	}

	// A cached binary is reused as it is, without a build.
	before, err := os.Stat(built)
	if err != nil {
		t.Fatal(err)
	}
	again, err := ensureTool(ctx, hydraTool, func(format string, args ...any) {
		t.Errorf("ensure hydra rebuilt a cached binary: "+format, args...)
	})
	if err != nil {
		t.Fatalf("ensure cached hydra: %v", err)
	}
	after, err := os.Stat(again)
	if err != nil {
		t.Fatal(err)
	}
	if !after.ModTime().Equal(before.ModTime()) {
		t.Errorf("cached binary modified at %s, want unchanged %s", after.ModTime(), before.ModTime())
	}
}
