package devstack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// VaultOptions configures StartVault.
type VaultOptions struct {
	// Binary is the vault executable; empty means the cached build.
	Binary string

	// Dir holds the config file, the log, the file storage and the HOME of
	// the server (dev mode writes a token file there). Empty means a new
	// temporary directory that Close removes.
	Dir string

	// PluginDir is Vault's plugin_directory; empty means Dir/plugins.
	PluginDir string

	// Persistent runs Vault with file storage under Dir, initialized with one
	// key share and unsealed, so that state survives Stop, Kill and Start.
	// Otherwise Vault runs in dev mode with in-memory storage.
	Persistent bool

	// KeepInitFile stores the unseal key and root token of a Persistent
	// server in Dir/init.json (mode 0600) when it is initialized, and reads
	// them back when StartVault finds the server in Dir already initialized.
	// Use it only for throwaway servers, because the file unlocks the whole
	// storage.
	KeepInitFile bool

	// LogLevel is the server's -log-level; empty means "debug", which also
	// records the plugin's debug lines.
	LogLevel string
}

// Vault is a running Vault server on 127.0.0.1 with a root token.
type Vault struct {
	// Addr is the value for VAULT_ADDR.
	Addr string

	// Token is the root token.
	Token string

	// Client is a vault/api client for Addr, authenticated with Token.
	Client *api.Client

	// Binary is the vault executable, which is also the CLI and Vault Agent.
	Binary string

	// LogPath is the file that receives the server's stdout and stderr
	// across restarts; a dev server also prints its root token there.
	LogPath string

	// PluginDir is the server's plugin_directory.
	PluginDir string

	// InitPath is the file that stores the unseal key and root token, or
	// empty unless VaultOptions.KeepInitFile is set.
	InitPath string

	persistent bool
	unsealKey  string
	dir        string
	removeDir  bool
	proc       *process
}

// StartVault writes a configuration and starts a Vault server: a dev server
// with in-memory storage, or, with Persistent, a file-backed server that it
// initializes and unseals. It returns once the server is active.
func StartVault(ctx context.Context, opts VaultOptions) (*Vault, error) {
	binary := opts.Binary
	if binary == "" {
		var err error
		binary, err = ensureTool(ctx, vaultTool, nil)
		if err != nil {
			return nil, err
		}
	}
	dir, removeDir, err := workDir(opts.Dir, "vault")
	if err != nil {
		return nil, err
	}
	v := &Vault{
		Binary:     binary,
		LogPath:    filepath.Join(dir, "vault.log"),
		persistent: opts.Persistent,
		dir:        dir,
		removeDir:  removeDir,
	}
	if opts.Persistent && opts.KeepInitFile {
		v.InitPath = filepath.Join(dir, "init.json")
	}
	if err := v.setUp(ctx, opts); err != nil {
		v.cleanupDir()
		return nil, err
	}
	return v, nil
}

func (v *Vault) setUp(ctx context.Context, opts VaultOptions) error {
	pluginDir := opts.PluginDir
	if pluginDir == "" {
		pluginDir = filepath.Join(v.dir, "plugins")
	}
	if err := os.MkdirAll(pluginDir, 0o755); err != nil {
		return fmt.Errorf("create plugin directory: %w", err)
	}
	// Vault rejects a plugin_directory that is a symbolic link.
	resolved, err := filepath.EvalSymlinks(pluginDir)
	if err != nil {
		return fmt.Errorf("resolve plugin directory: %w", err)
	}
	v.PluginDir = resolved

	// A dev server also listens on port+1 for cluster traffic.
	port, err := freePortPair()
	if err != nil {
		return err
	}
	v.Addr = loopbackURL(port)

	configPath := filepath.Join(v.dir, "vault.hcl")
	if err := os.WriteFile(configPath, []byte(v.config(port)), 0o600); err != nil {
		return fmt.Errorf("write vault config: %w", err)
	}

	logLevel := opts.LogLevel
	if logLevel == "" {
		logLevel = "debug"
	}
	args := []string{"server", "-config=" + configPath, "-log-level=" + logLevel}
	if !v.persistent {
		v.Token, err = randomHex(16)
		if err != nil {
			return err
		}
		v.Token = "root-" + v.Token
		args = append(args,
			"-dev",
			"-dev-listen-address=127.0.0.1:"+strconv.Itoa(port),
			"-dev-root-token-id="+v.Token,
			"-dev-no-store-token",
		)
	}
	home := filepath.Join(v.dir, "home")
	if err := os.MkdirAll(home, 0o700); err != nil {
		return err
	}
	v.proc = &process{
		name:    "vault",
		binary:  v.Binary,
		args:    args,
		env:     childEnv([]string{"VAULT_", "HOME="}, "HOME="+home),
		dir:     v.dir,
		logPath: v.LogPath,
	}

	if err := v.readInitFile(); err != nil {
		return err
	}
	v.Client, err = newVaultClient(v.Addr, v.Token)
	if err != nil {
		return err
	}
	return v.Start(ctx)
}

// config returns the server configuration. The dev server brings its own
// listener and storage, so it only takes the plugin directory from here.
func (v *Vault) config(port int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plugin_directory = %q\n", v.PluginDir)
	if !v.persistent {
		return b.String()
	}
	address := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	fmt.Fprintf(&b, "api_addr = %q\n", v.Addr)
	b.WriteString("disable_mlock = true\n")
	b.WriteString("ui = false\n")
	fmt.Fprintf(&b, "storage \"file\" {\n  path = %q\n}\n", filepath.Join(v.dir, "data"))
	fmt.Fprintf(&b, "listener \"tcp\" {\n  address = %q\n  tls_disable = true\n}\n", address)
	return b.String()
}

func newVaultClient(addr, token string) (*api.Client, error) {
	config := api.DefaultConfig()
	config.Address = addr
	config.Timeout = 60 * time.Second
	client, err := api.NewClient(config)
	if err != nil {
		return nil, fmt.Errorf("create vault client: %w", err)
	}
	// NewClient reads VAULT_TOKEN and VAULT_NAMESPACE from the caller's
	// shell; neither belongs to this server.
	client.SetToken(token)
	client.ClearNamespace()
	return client, nil
}

// Start starts the server after Stop or Kill with the same configuration
// and port, and waits until it is active. A persistent server is unsealed
// with the key from its first start. A dev server starts empty with the
// same root token, so every mount and plugin registration is gone.
func (v *Vault) Start(ctx context.Context) error {
	if err := v.proc.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if err := v.waitActive(ctx); err != nil {
		_ = v.proc.kill()
		return err
	}
	return nil
}

func (v *Vault) waitActive(ctx context.Context) error {
	err := waitFor(ctx, v.proc, "vault to listen", func(ctx context.Context) error {
		_, err := v.Client.Sys().SealStatusWithContext(ctx)
		return err
	})
	if err != nil {
		return err
	}
	if v.persistent {
		if err := v.initAndUnseal(ctx); err != nil {
			return err
		}
	}
	return waitFor(ctx, v.proc, "vault to become active", func(ctx context.Context) error {
		health, err := v.Client.Sys().HealthWithContext(ctx)
		if err != nil {
			return err
		}
		if !health.Initialized || health.Sealed || health.Standby {
			return fmt.Errorf("vault health: initialized %t, sealed %t, standby %t",
				health.Initialized, health.Sealed, health.Standby)
		}
		return nil
	})
}

// initAndUnseal initializes a new persistent server with one key share, or
// unseals an initialized one with the key kept from its first start.
func (v *Vault) initAndUnseal(ctx context.Context) error {
	sys := v.Client.Sys()
	initialized, err := sys.InitStatusWithContext(ctx)
	if err != nil {
		return fmt.Errorf("vault init status: %w", err)
	}
	if !initialized {
		resp, err := sys.InitWithContext(ctx, &api.InitRequest{SecretShares: 1, SecretThreshold: 1})
		if err != nil {
			return fmt.Errorf("vault operator init: %w", err)
		}
		v.unsealKey = resp.Keys[0]
		v.Token = resp.RootToken
		v.Client.SetToken(v.Token)
		if err := v.writeInitFile(); err != nil {
			return err
		}
	}
	if v.unsealKey == "" {
		if v.InitPath != "" {
			return fmt.Errorf("vault is initialized but no unseal key is known: %s is missing; remove %s to start with empty storage",
				v.InitPath, filepath.Join(v.dir, "data"))
		}
		return errors.New("vault is initialized but no unseal key is known")
	}
	return v.Unseal(ctx)
}

// vaultInitFile is the content of InitPath.
type vaultInitFile struct {
	UnsealKey string `json:"unseal_key"`
	RootToken string `json:"root_token"`
}

// writeInitFile stores the unseal key and root token in InitPath, when set.
// It writes a temporary file first, so that a crash leaves no partial file.
func (v *Vault) writeInitFile() error {
	if v.InitPath == "" {
		return nil
	}
	data, err := json.MarshalIndent(vaultInitFile{UnsealKey: v.unsealKey, RootToken: v.Token}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", v.InitPath, err)
	}
	tmp := v.InitPath + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o600); err != nil {
		return fmt.Errorf("write vault init file: %w", err)
	}
	if err := os.Rename(tmp, v.InitPath); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write vault init file: %w", err)
	}
	return nil
}

// readInitFile loads the unseal key and root token from InitPath, when set
// and present. A missing file means the server has not been initialized yet.
func (v *Vault) readInitFile() error {
	if v.InitPath == "" {
		return nil
	}
	data, err := os.ReadFile(v.InitPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read vault init file: %w", err)
	}
	var saved vaultInitFile
	if err := json.Unmarshal(data, &saved); err != nil {
		return fmt.Errorf("invalid vault init file %s: %w", v.InitPath, err)
	}
	if saved.UnsealKey == "" || saved.RootToken == "" {
		return fmt.Errorf("invalid vault init file %s: unseal_key or root_token is missing", v.InitPath)
	}
	v.unsealKey, v.Token = saved.UnsealKey, saved.RootToken
	return nil
}

// Unseal unseals a persistent server with its key. A dev server has no key
// to give and returns an error.
func (v *Vault) Unseal(ctx context.Context) error {
	if v.unsealKey == "" {
		return errors.New("vault unseal: no unseal key is known (dev servers start unsealed)")
	}
	status, err := v.Client.Sys().UnsealWithContext(ctx, v.unsealKey)
	if err != nil {
		return fmt.Errorf("vault operator unseal: %w", err)
	}
	if status.Sealed {
		return errors.New("vault operator unseal: still sealed after the only key share")
	}
	return nil
}

// Stop ends the server and its plugin processes with SIGTERM, waiting for
// them to exit.
func (v *Vault) Stop() error { return v.proc.stop() }

// Kill ends the server and its plugin processes with SIGKILL, as in a crash.
func (v *Vault) Kill() error { return v.proc.kill() }

// Restart stops the server and starts it again; see Start.
func (v *Vault) Restart(ctx context.Context) error {
	if err := v.Stop(); err != nil {
		return err
	}
	return v.Start(ctx)
}

// Persistent reports whether the server's state survives a restart.
func (v *Vault) Persistent() bool { return v.persistent }

// Running reports whether the server process is alive.
func (v *Vault) Running() bool { return v.proc.running() }

// PID returns the server's process id, or 0 when it is not running. The
// plugin processes share its process group.
func (v *Vault) PID() int { return v.proc.pid() }

// Env returns VAULT_ADDR and VAULT_TOKEN for a vault CLI or Agent process.
func (v *Vault) Env() []string {
	return []string{"VAULT_ADDR=" + v.Addr, "VAULT_TOKEN=" + v.Token}
}

// Command returns the vault CLI with args, with VAULT_ADDR and VAULT_TOKEN
// set and every other VAULT_ variable of the caller removed.
func (v *Vault) Command(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, v.Binary, args...)
	cmd.Env = childEnv([]string{"VAULT_"}, v.Env()...)
	return cmd
}

// ReadLog returns everything the server has written so far.
func (v *Vault) ReadLog() ([]byte, error) { return os.ReadFile(v.LogPath) }

// RegisterPlugin adds p to the plugin catalog as a secrets plugin with its
// SHA-256, version and environment.
func (v *Vault) RegisterPlugin(ctx context.Context, p Plugin) error {
	err := v.Client.Sys().RegisterPluginWithContext(ctx, &api.RegisterPluginInput{
		Name:    p.Name,
		Type:    api.PluginTypeSecrets,
		Command: filepath.Base(p.Path),
		SHA256:  p.SHA256,
		Version: p.Version,
		Env:     p.Env,
	})
	if err != nil {
		return fmt.Errorf("register plugin %s %s: %w", p.Name, p.Version, err)
	}
	return nil
}

// MountPlugin enables p at path, pinned to p's version.
func (v *Vault) MountPlugin(ctx context.Context, path string, p Plugin) error {
	err := v.Client.Sys().MountWithContext(ctx, path, &api.MountInput{
		Type:        p.Name,
		Description: "CI tokens from the upstream OAuth 2.0 server",
		Config:      api.MountConfigInput{PluginVersion: p.Version},
	})
	if err != nil {
		return fmt.Errorf("mount plugin %s at %s: %w", p.Name, path, err)
	}
	return nil
}

// HasMount reports whether a secrets engine is mounted at path.
func (v *Vault) HasMount(ctx context.Context, path string) (bool, error) {
	mounts, err := v.Client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return false, fmt.Errorf("list mounts: %w", err)
	}
	_, ok := mounts[strings.Trim(path, "/")+"/"]
	return ok, nil
}

// UpgradeMount pins the existing mount at path to p's version and reloads
// it, so that the binary now registered for that version serves the mount.
func (v *Vault) UpgradeMount(ctx context.Context, path string, p Plugin) error {
	sys := v.Client.Sys()
	if err := sys.TuneMountWithContext(ctx, path, api.MountConfigInput{PluginVersion: p.Version}); err != nil {
		return fmt.Errorf("pin mount %s to plugin version %s: %w", path, p.Version, err)
	}
	if _, err := sys.ReloadPluginWithContext(ctx, &api.ReloadPluginInput{Mounts: []string{path}}); err != nil {
		return fmt.Errorf("reload plugin mount %s: %w", path, err)
	}
	return nil
}

// Close stops the server and removes its directory when StartVault created
// it.
func (v *Vault) Close() error {
	err := v.Stop()
	v.cleanupDir()
	return err
}

func (v *Vault) cleanupDir() {
	if v.removeDir {
		os.RemoveAll(v.dir)
	}
}

// freePortPair returns a port p on 127.0.0.1 such that p and p+1 were both
// free a moment ago.
func freePortPair() (int, error) {
	const attempts = 20
	for range attempts {
		port, err := FreePort()
		if err != nil {
			return 0, err
		}
		next, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port+1)))
		if err == nil {
			next.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("find two adjacent free ports: none in %d attempts", attempts)
}
