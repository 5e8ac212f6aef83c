package devstack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Names and values of the stack that Up builds. The role mirrors what a
// platform team would define for a deploy job.
const (
	MountPath    = "ci-tokens"
	RoleName     = "deploy"
	Audience     = "https://deploy.example.test"
	RoleScope    = "deploy:read"
	RoleTTL      = "10m"
	RoleMaxTTL   = "1h"
	RoleStrategy = "client_credentials"
)

// SeedCommandRedirectURI is the loopback redirect URI that
// cmd/ci-tokens-seed listens on. Hydra v2.3.0 matches a registered loopback
// redirect URI on any port (RFC 8252, section 7.3), so one entry covers the
// random port the command picks.
const SeedCommandRedirectURI = "http://127.0.0.1/callback"

// EngineScopes are the scopes of the Hydra client that the engine uses, and
// of the root grant seeded for it.
var EngineScopes = []string{ScopeOfflineAccess, "openid", "deploy:read", "deploy:write"}

// Stage names how far Up goes. Each stage includes the ones before it.
type Stage int

const (
	// StageComplete writes the deploy role after StageConfigured.
	StageComplete Stage = iota

	// StageServers builds the tools and the plugin, starts Hydra and Vault
	// and creates EngineClient in Hydra. Nothing is registered in Vault.
	StageServers

	// StageMounted registers the plugin and mounts it at MountPath.
	StageMounted

	// StageConfigured seeds a root grant and writes ci-tokens/config.
	StageConfigured
)

// Options configures Up. The zero value builds the default stack.
type Options struct {
	// Dir holds every server's files. Empty means a new temporary
	// directory that Close removes.
	Dir string

	// PluginVersion is stamped into the plugin; empty means
	// DefaultPluginVersion.
	PluginVersion string

	// PluginBuildTags are Go build tags for the plugin binary, such as
	// "pprof" for the profiling listener.
	PluginBuildTags []string

	// PluginEnv is the environment, as KEY=VALUE entries, that Vault's
	// plugin catalog gives the plugin process.
	PluginEnv []string

	// PersistentVault runs Vault with file storage; see VaultOptions.
	PersistentVault bool

	// KeepVaultInitFile stores the unseal key and root token of a
	// PersistentVault in Dir/vault/init.json, so that a later Up on the same
	// Dir can unseal it; see VaultOptions.KeepInitFile.
	KeepVaultInitFile bool

	// HydraSQLite keeps Hydra's state in SQLite; see HydraOptions.
	HydraSQLite bool

	// AccessTokenTTL is Hydra's access token lifetime; zero means 1h.
	AccessTokenTTL time.Duration

	// RotationGracePeriod is Hydra's refresh token reuse window; zero
	// means none.
	RotationGracePeriod time.Duration

	// VaultLogLevel is Vault's log level; empty means debug.
	VaultLogLevel string

	// Until is the last stage Up completes; the zero value completes all.
	Until Stage

	// Logf receives one line per step; nil means silence.
	Logf func(format string, args ...any)
}

// Stack is a running Hydra and Vault with the plugin mounted at MountPath.
type Stack struct {
	// Dir holds the servers' files, logs included.
	Dir string

	Tools  Tools
	Plugin Plugin
	Hydra  *Hydra
	Vault  *Vault

	// EngineClient is the Hydra client written to ci-tokens/config.
	EngineClient OAuth2Client

	// RootSeed is the token response whose refresh token was last written
	// to ci-tokens/config. The engine rotates that refresh token at once,
	// so it is spent; tests keep it to prove that no log contains it.
	RootSeed Token

	removeDir bool
	logf      func(format string, args ...any)
}

// Up builds the tools and the plugin, starts Hydra and Vault, creates the
// engine's Hydra client, registers and mounts the plugin, writes
// ci-tokens/config with a freshly seeded root grant and writes the deploy
// role, stopping after opts.Until. On error it stops whatever it started.
func Up(ctx context.Context, opts Options) (*Stack, error) {
	dir, removeDir, err := workDir(opts.Dir, "stack")
	if err != nil {
		return nil, err
	}
	s := &Stack{Dir: dir, removeDir: removeDir, logf: opts.Logf}
	if s.logf == nil {
		s.logf = func(string, ...any) {}
	}
	if err := s.up(ctx, opts); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

func (s *Stack) up(ctx context.Context, opts Options) error {
	var err error
	s.Tools, err = EnsureTools(ctx, s.logf)
	if err != nil {
		return err
	}

	s.logf("building plugin %s", PluginName)
	s.Plugin, err = BuildPlugin(ctx, filepath.Join(s.Dir, "plugins"), opts.PluginVersion, opts.PluginBuildTags...)
	if err != nil {
		return err
	}
	s.Plugin.Env = opts.PluginEnv

	s.logf("starting hydra")
	s.Hydra, err = StartHydra(ctx, HydraOptions{
		Binary:              s.Tools.Hydra,
		Dir:                 filepath.Join(s.Dir, "hydra"),
		AccessTokenTTL:      opts.AccessTokenTTL,
		RotationGracePeriod: opts.RotationGracePeriod,
		SQLite:              opts.HydraSQLite,
	})
	if err != nil {
		return err
	}

	s.logf("starting vault")
	s.Vault, err = StartVault(ctx, VaultOptions{
		Binary:       s.Tools.Vault,
		Dir:          filepath.Join(s.Dir, "vault"),
		PluginDir:    s.Plugin.Dir,
		Persistent:   opts.PersistentVault,
		KeepInitFile: opts.KeepVaultInitFile,
		LogLevel:     opts.VaultLogLevel,
	})
	if err != nil {
		return err
	}

	// SeedRootGrant uses the first redirect URI, which nothing serves.
	s.EngineClient, err = s.Hydra.CreateClient(ctx, ClientOptions{
		Name:         "ci-tokens engine",
		Scopes:       EngineScopes,
		Audience:     []string{Audience},
		RedirectURIs: []string{s.Hydra.harnessRedirectURI(), SeedCommandRedirectURI},
	})
	if err != nil {
		return err
	}
	if opts.Until == StageServers {
		return nil
	}

	if err := s.mount(ctx); err != nil {
		return err
	}
	if opts.Until == StageMounted {
		return nil
	}

	s.logf("writing %s/config", MountPath)
	if err := s.Configure(ctx); err != nil {
		return err
	}
	if opts.Until == StageConfigured {
		return nil
	}
	s.logf("writing %s/roles/%s", MountPath, RoleName)
	return s.WriteRole(ctx)
}

// mount registers the plugin and mounts it at MountPath. A persistent Vault
// started again on the same Dir already has the mount, which is then pinned
// to the new build and reloaded.
func (s *Stack) mount(ctx context.Context) error {
	mounted, err := s.Vault.HasMount(ctx, MountPath)
	if err != nil {
		return err
	}
	s.logf("registering %s %s", s.Plugin.Name, s.Plugin.Version)
	if err := s.Vault.RegisterPlugin(ctx, s.Plugin); err != nil {
		return err
	}
	if mounted {
		s.logf("reloading the existing mount %s/ with %s", MountPath, s.Plugin.Version)
		return s.Vault.UpgradeMount(ctx, MountPath, s.Plugin)
	}
	s.logf("mounting %s at %s/", s.Plugin.Name, MountPath)
	return s.Vault.MountPlugin(ctx, MountPath, s.Plugin)
}

// SeedRootGrant runs Hydra's authorization code flow for EngineClient with
// EngineScopes and Audience, stores the result in RootSeed and returns it.
func (s *Stack) SeedRootGrant(ctx context.Context) (Token, error) {
	seed, err := s.Hydra.SeedRefreshToken(ctx, s.EngineClient, SeedOptions{
		Scopes:   EngineScopes,
		Audience: []string{Audience},
	})
	if err != nil {
		return Token{}, err
	}
	s.RootSeed = seed
	return seed, nil
}

// ConfigRequest returns the ci-tokens/config write for this stack: the
// issuer, EngineClient and the refresh token of RootSeed. It contains the
// client secret and the refresh token.
func (s *Stack) ConfigRequest() map[string]any {
	return map[string]any{
		"issuer":        s.Hydra.PublicURL,
		"client_id":     s.EngineClient.ID,
		"client_secret": s.EngineClient.Secret,
		"refresh_token": s.RootSeed.RefreshToken,
	}
}

// Configure seeds a new root grant and writes ConfigRequest to
// ci-tokens/config. Calling it again reseeds the mount.
func (s *Stack) Configure(ctx context.Context) error {
	if _, err := s.SeedRootGrant(ctx); err != nil {
		return err
	}
	_, err := s.Vault.Client.Logical().WriteWithContext(ctx, MountPath+"/config", s.ConfigRequest())
	if err != nil {
		return fmt.Errorf("write %s/config: %w", MountPath, err)
	}
	return nil
}

// WriteRole writes the deploy role: client_credentials, scope deploy:read,
// audience Audience, ttl 10m, max_ttl 1h.
func (s *Stack) WriteRole(ctx context.Context) error {
	_, err := s.Vault.Client.Logical().WriteWithContext(ctx, MountPath+"/roles/"+RoleName, map[string]any{
		"strategy": RoleStrategy,
		"scopes":   RoleScope,
		"audience": Audience,
		"ttl":      RoleTTL,
		"max_ttl":  RoleMaxTTL,
	})
	if err != nil {
		return fmt.Errorf("write %s/roles/%s: %w", MountPath, RoleName, err)
	}
	return nil
}

// Secrets returns every secret the stack handed to the engine: the client
// secret and the seeded refresh and access tokens. Tests grep server logs
// for them.
func (s *Stack) Secrets() []string {
	var secrets []string
	for _, value := range []string{
		s.EngineClient.Secret, s.RootSeed.RefreshToken, s.RootSeed.AccessToken,
	} {
		if value != "" {
			secrets = append(secrets, value)
		}
	}
	return secrets
}

// Close stops Vault (with its plugin processes) and Hydra, then removes Dir
// when Up created it. It is safe to call more than once.
func (s *Stack) Close() error {
	var closers []func() error
	if s.Vault != nil {
		closers = append(closers, s.Vault.Close)
	}
	if s.Hydra != nil {
		closers = append(closers, s.Hydra.Close)
	}
	err := closeAll(closers...)
	if s.removeDir {
		os.RemoveAll(s.Dir)
	}
	return err
}

// UpForTest runs Up for a test and closes the stack when the test ends. It
// skips the test under -short, gives Up 20 minutes so that a first Vault
// build fits, logs each step with tb.Logf and, when the test has failed,
// logs the last lines of both servers' logs before they are removed.
func UpForTest(tb testing.TB, opts Options) *Stack {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts real Vault and Hydra servers")
	}
	if opts.Dir == "" {
		opts.Dir = tb.TempDir()
	}
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := Up(ctx, opts)
	if err != nil {
		tb.Fatalf("start devstack: %v", err)
	}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("last lines of %s:\n%s", s.Vault.LogPath, tailFile(s.Vault.LogPath, 40))
			tb.Logf("last lines of %s:\n%s", s.Hydra.LogPath, tailFile(s.Hydra.LogPath, 20))
		}
		if err := s.Close(); err != nil {
			tb.Errorf("close devstack: %v", err)
		}
	})
	return s
}
