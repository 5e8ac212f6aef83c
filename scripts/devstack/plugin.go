package devstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

const (
	// PluginName is the plugin's name in Vault's catalog and its binary name.
	PluginName = "vault-plugin-secrets-ci-tokens"

	// DefaultPluginVersion is the version that BuildPlugin stamps into the
	// binary when the caller gives none.
	DefaultPluginVersion = "v0.1.0"

	// versionVariable is the linker symbol that holds the plugin's version.
	versionVariable = "github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend.Version"
)

// Plugin is a plugin binary in a Vault plugin directory.
type Plugin struct {
	Name    string // catalog name, also the file name in Dir
	Version string // semantic version with a leading v
	Dir     string // Vault's plugin_directory
	Path    string // Dir/Name
	SHA256  string // hex SHA-256 of the binary, as the catalog expects

	// Env is the catalog's environment for the plugin process, as
	// KEY=VALUE entries.
	Env []string
}

// BuildPlugin builds ./cmd/vault-plugin-secrets-ci-tokens from the working
// tree into dir with version stamped in and the given build tags, and
// returns it with its checksum. An empty version means DefaultPluginVersion.
func BuildPlugin(ctx context.Context, dir, version string, tags ...string) (Plugin, error) {
	if version == "" {
		version = DefaultPluginVersion
	}
	root, err := RepoRoot()
	if err != nil {
		return Plugin{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Plugin{}, fmt.Errorf("create plugin directory: %w", err)
	}
	dir, err = filepath.EvalSymlinks(dir)
	if err != nil {
		return Plugin{}, fmt.Errorf("resolve plugin directory: %w", err)
	}

	target := filepath.Join(dir, PluginName)
	tmp := target + ".tmp"
	defer os.Remove(tmp)
	args := []string{
		"build", "-trimpath",
		"-ldflags", "-X " + versionVariable + "=" + version,
		"-tags", strings.Join(tags, ","),
		"-o", tmp, "./cmd/" + PluginName,
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	var output bytes.Buffer
	cmd.Stdout = &output
	cmd.Stderr = &output
	if err := cmd.Run(); err != nil {
		return Plugin{}, fmt.Errorf("build plugin: go %s: %w\n%s",
			strings.Join(args, " "), err, output.String())
	}
	if err := os.Rename(tmp, target); err != nil {
		return Plugin{}, fmt.Errorf("install plugin: %w", err)
	}
	return PluginFromFile(target, version)
}

// PluginFromFile describes an existing plugin binary at path, which must
// already sit in Vault's plugin directory.
func PluginFromFile(path, version string) (Plugin, error) {
	sum, err := fileSHA256(path)
	if err != nil {
		return Plugin{}, err
	}
	return Plugin{
		Name:    filepath.Base(path),
		Version: version,
		Dir:     filepath.Dir(path),
		Path:    path,
		SHA256:  sum,
	}, nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("checksum plugin: %w", err)
	}
	defer f.Close()
	hash := sha256.New()
	if _, err := io.Copy(hash, f); err != nil {
		return "", fmt.Errorf("checksum plugin: %w", err)
	}
	return hex.EncodeToString(hash.Sum(nil)), nil
}
