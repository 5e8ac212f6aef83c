package devstack

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// Tools holds the absolute paths of the cached server binaries. The Vault
// binary is also the vault CLI and Vault Agent.
type Tools struct {
	Vault string
	Hydra string
}

// tool describes how to build one cached binary from its tools module.
type tool struct {
	name   string // binary name prefix in the cache
	module string // module whose version in go.mod keys the cache
	dir    string // tools module, relative to the repository root
	tags   string // go build -tags value
	note   string // printed before a build starts
}

var (
	vaultTool = tool{
		name:   "vault",
		module: "github.com/hashicorp/vault",
		dir:    "scripts/tools/vault",
		note:   "the first build takes about 10 minutes and 4 GB of modules",
	}
	hydraTool = tool{
		name:   "hydra",
		module: "github.com/ory/hydra/v2",
		dir:    "scripts/tools/hydra",
		// Hydra's SQLite driver needs cgo; the tags match Hydra's own
		// release build.
		tags: "sqlite,sqlite_omit_load_extension",
		note: "the first build takes about a minute",
	}
)

// CacheDir returns ${CI_TOKENS_CACHE:-$HOME/.cache/ci-tokens}.
func CacheDir() (string, error) {
	if dir := os.Getenv("CI_TOKENS_CACHE"); dir != "" {
		return filepath.Abs(dir)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("find the tools cache: set CI_TOKENS_CACHE: %w", err)
	}
	return filepath.Join(home, ".cache", "ci-tokens"), nil
}

// RepoRoot returns the directory of the main module's go.mod, found with
// `go env GOMOD` from the current directory, so it works from the repository
// root (go run) and from a package directory (go test).
func RepoRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("find the repository root with go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", fmt.Errorf("find the repository root: the current directory is outside a Go module")
	}
	return filepath.Dir(gomod), nil
}

// EnsureTools returns the cached Vault and Hydra binaries, building each one
// that is missing. logf, if not nil, receives one line per build.
func EnsureTools(ctx context.Context, logf func(format string, args ...any)) (Tools, error) {
	vault, err := ensureTool(ctx, vaultTool, logf)
	if err != nil {
		return Tools{}, err
	}
	hydra, err := ensureTool(ctx, hydraTool, logf)
	if err != nil {
		return Tools{}, err
	}
	return Tools{Vault: vault, Hydra: hydra}, nil
}

// ensureTool returns the cached binary of t, building it when missing. A
// file lock serializes builds across test binaries that go test runs in
// parallel, and the build writes to a temporary name that is renamed into
// place, so a killed build never leaves a broken binary at the cached path.
func ensureTool(ctx context.Context, t tool, logf func(format string, args ...any)) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	moduleDir := filepath.Join(root, t.dir)
	version, err := requiredVersion(filepath.Join(moduleDir, "go.mod"), t.module)
	if err != nil {
		return "", err
	}
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(cache, "bin")
	target := filepath.Join(binDir, t.name+"-"+version)
	if isExecutable(target) {
		return target, nil
	}

	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("create tools cache: %w", err)
	}
	unlock, err := lockFile(filepath.Join(binDir, "."+t.name+".lock"))
	if err != nil {
		return "", err
	}
	defer unlock()

	// Another process may have finished the build while this one waited.
	if isExecutable(target) {
		return target, nil
	}
	if logf != nil {
		logf("building %s %s into %s (%s)", t.name, version, target, t.note)
	}
	if err := buildTool(ctx, moduleDir, t.tags, target); err != nil {
		return "", fmt.Errorf("build %s %s: %w", t.name, version, err)
	}
	return target, nil
}

// buildTool runs go build in moduleDir and renames the result to target.
func buildTool(ctx context.Context, moduleDir, tags, target string) error {
	tmp := fmt.Sprintf("%s.tmp-%d", target, os.Getpid())
	defer os.Remove(tmp)

	args := []string{"build", "-o", tmp}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, ".")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, output.String())
	}
	return os.Rename(tmp, target)
}

// requiredVersion returns the version of module required by the go.mod file
// at path.
func requiredVersion(path, module string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read tools module: %w", err)
	}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		fields := strings.Fields(scanner.Text())
		if len(fields) > 0 && fields[0] == "require" {
			fields = fields[1:]
		}
		if len(fields) >= 2 && fields[0] == module {
			return fields[1], nil
		}
	}
	return "", fmt.Errorf("%s does not require %s", path, module)
}

func isExecutable(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0
}

// lockFile takes an exclusive flock on path and returns the function that
// releases it. scripts/build-tools.sh takes the same lock with flock(1).
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open build lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
