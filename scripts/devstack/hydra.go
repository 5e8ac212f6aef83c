package devstack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// HydraOptions configures StartHydra. The zero value starts Hydra with
// in-memory storage and Hydra's default token lifetimes.
type HydraOptions struct {
	// Binary is the hydra executable; empty means the cached build.
	Binary string

	// Dir holds the config file, the log and the SQLite database. Empty
	// means a new temporary directory that Close removes.
	Dir string

	// AccessTokenTTL sets ttl.access_token; zero keeps Hydra's default (1h).
	AccessTokenTTL time.Duration

	// RefreshTokenTTL sets ttl.refresh_token; zero keeps Hydra's default
	// (720h).
	RefreshTokenTTL time.Duration

	// RotationGracePeriod sets oauth2.grant.refresh_token.rotation_grace_period,
	// the time during which a spent refresh token is still accepted. Zero
	// keeps Hydra's default, which is no grace period.
	RotationGracePeriod time.Duration

	// SQLite stores Hydra's state in Dir/hydra.sqlite instead of memory, so
	// that clients and grants survive Restart, Stop and Kill.
	SQLite bool

	// LogLevel is Hydra's log.level; empty means "info".
	LogLevel string
}

// Hydra is a running Ory Hydra server on 127.0.0.1.
type Hydra struct {
	// PublicURL is the issuer and the base of the public OAuth 2.0 endpoints.
	PublicURL string

	// AdminURL is the base of the admin API.
	AdminURL string

	// LogPath is the file that receives Hydra's stdout and stderr across
	// restarts.
	LogPath string

	// ConfigPath is Hydra's configuration file.
	ConfigPath string

	sqlite     bool
	dir        string
	removeDir  bool
	proc       *process
	httpClient *http.Client
}

// hydraConfig is the subset of Hydra's configuration used here, written to
// hydra.json.
type hydraConfig struct {
	DSN   string `json:"dsn"`
	Serve struct {
		Public listener `json:"public"`
		Admin  listener `json:"admin"`
	} `json:"serve"`
	URLs struct {
		Self struct {
			Issuer string `json:"issuer"`
		} `json:"self"`
		Login   string `json:"login"`
		Consent string `json:"consent"`
		Logout  string `json:"logout"`
		Error   string `json:"error"`
	} `json:"urls"`
	Secrets struct {
		System []string `json:"system"`
	} `json:"secrets"`
	TTL        map[string]string `json:"ttl,omitempty"`
	OAuth2     map[string]any    `json:"oauth2,omitempty"`
	Strategies struct {
		AccessToken string `json:"access_token"`
	} `json:"strategies"`
	Log struct {
		Level string `json:"level"`
	} `json:"log"`
}

type listener struct {
	Host string `json:"host"`
	Port int    `json:"port"`
}

// hydraEnvPrefixes are environment variables that Hydra reads as
// configuration; they are dropped so that only the config file applies.
var hydraEnvPrefixes = []string{
	"DSN=", "SECRETS_", "URLS_", "SERVE_", "TTL_", "LOG_", "OAUTH2_", "STRATEGIES_",
}

// hydraRequestTimeout bounds each request to Hydra's public and admin APIs.
// It is generous because on a loaded 2-core machine the first requests
// after Hydra starts on SQLite were seen to take more than 10 seconds.
const hydraRequestTimeout = 30 * time.Second

// StartHydra writes a configuration, runs migrations when SQLite is set,
// starts `hydra serve all --dev` and waits until both listeners report ready.
func StartHydra(ctx context.Context, opts HydraOptions) (*Hydra, error) {
	binary := opts.Binary
	if binary == "" {
		var err error
		binary, err = ensureTool(ctx, hydraTool, nil)
		if err != nil {
			return nil, err
		}
	}
	dir, removeDir, err := workDir(opts.Dir, "hydra")
	if err != nil {
		return nil, err
	}

	h := &Hydra{
		LogPath:    filepath.Join(dir, "hydra.log"),
		ConfigPath: filepath.Join(dir, "hydra.json"),
		sqlite:     opts.SQLite,
		dir:        dir,
		removeDir:  removeDir,
		httpClient: &http.Client{Timeout: hydraRequestTimeout},
	}
	config, err := h.writeConfig(opts)
	if err != nil {
		h.cleanupDir()
		return nil, err
	}
	h.proc = &process{
		name:    "hydra",
		binary:  binary,
		args:    []string{"serve", "all", "--dev", "--sqa-opt-out", "--config", h.ConfigPath},
		env:     childEnv(hydraEnvPrefixes),
		dir:     dir,
		logPath: h.LogPath,
	}
	if opts.SQLite {
		if err := h.migrate(ctx, binary, config.DSN); err != nil {
			h.cleanupDir()
			return nil, err
		}
	}
	if err := h.Start(ctx); err != nil {
		h.cleanupDir()
		return nil, err
	}
	return h, nil
}

func (h *Hydra) writeConfig(opts HydraOptions) (hydraConfig, error) {
	var config hydraConfig
	publicPort, err := FreePort()
	if err != nil {
		return config, err
	}
	adminPort, err := FreePort()
	if err != nil {
		return config, err
	}
	h.PublicURL = loopbackURL(publicPort)
	h.AdminURL = loopbackURL(adminPort)

	systemSecret, err := h.systemSecret(opts.SQLite)
	if err != nil {
		return config, err
	}

	config.DSN = "memory"
	if opts.SQLite {
		config.DSN = "sqlite://" + filepath.Join(h.dir, "hydra.sqlite") + "?_fk=true"
	}
	config.Serve.Public = listener{Host: "127.0.0.1", Port: publicPort}
	config.Serve.Admin = listener{Host: "127.0.0.1", Port: adminPort}
	config.URLs.Self.Issuer = h.PublicURL
	// Nothing serves these pages: the harness accepts login and consent
	// through the admin API, and only reads the challenge from the redirect.
	config.URLs.Login = h.PublicURL + "/devstack/login"
	config.URLs.Consent = h.PublicURL + "/devstack/consent"
	config.URLs.Logout = h.PublicURL + "/devstack/logout"
	config.URLs.Error = h.PublicURL + "/devstack/error"
	config.Secrets.System = []string{systemSecret}
	config.Strategies.AccessToken = "opaque"
	config.Log.Level = opts.LogLevel
	if config.Log.Level == "" {
		config.Log.Level = "info"
	}

	config.TTL = map[string]string{}
	if opts.AccessTokenTTL > 0 {
		config.TTL["access_token"] = hydraDuration(opts.AccessTokenTTL)
	}
	if opts.RefreshTokenTTL > 0 {
		config.TTL["refresh_token"] = hydraDuration(opts.RefreshTokenTTL)
	}
	if opts.RotationGracePeriod > 0 {
		config.OAuth2 = map[string]any{
			"grant": map[string]any{
				"refresh_token": map[string]any{
					"rotation_grace_period": hydraDuration(opts.RotationGracePeriod),
				},
			},
		}
	}

	data, err := json.MarshalIndent(config, "", "  ")
	if err != nil {
		return config, fmt.Errorf("encode hydra config: %w", err)
	}
	// The file holds the system secret, which only protects this
	// throwaway server's data.
	if err := os.WriteFile(h.ConfigPath, data, 0o600); err != nil {
		return config, fmt.Errorf("write hydra config: %w", err)
	}
	return config, nil
}

// systemSecret returns the system secret of the existing configuration when
// SQLite is set and Dir already has one, because Hydra cannot decrypt the
// signing keys in its database with another secret. Otherwise it returns a
// new random secret.
func (h *Hydra) systemSecret(sqlite bool) (string, error) {
	if sqlite {
		data, err := os.ReadFile(h.ConfigPath)
		switch {
		case err == nil:
			var previous hydraConfig
			if err := json.Unmarshal(data, &previous); err != nil {
				return "", fmt.Errorf("invalid hydra config %s: %w", h.ConfigPath, err)
			}
			if len(previous.Secrets.System) > 0 && previous.Secrets.System[0] != "" {
				return previous.Secrets.System[0], nil
			}
		case !errors.Is(err, os.ErrNotExist):
			return "", fmt.Errorf("read hydra config: %w", err)
		}
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return "", fmt.Errorf("generate hydra system secret: %w", err)
	}
	return hex.EncodeToString(secret), nil
}

// hydraDuration formats d in whole seconds, the form Hydra's config schema
// accepts ("600s").
func hydraDuration(d time.Duration) string {
	return strconv.FormatInt(int64(d/time.Second), 10) + "s"
}

// migrate creates the SQLite schema with `hydra migrate sql up`.
func (h *Hydra) migrate(ctx context.Context, binary, dsn string) error {
	cmd := exec.CommandContext(ctx, binary, "migrate", "sql", "up", "--read-from-env", "--yes")
	cmd.Dir = h.dir
	cmd.Env = childEnv([]string{"DSN="}, "DSN="+dsn)
	output, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("hydra migrate sql up: %w\n%s", err, output)
	}
	return nil
}

// Start starts Hydra with the same configuration and ports after Stop or
// Kill, and waits until it is ready. With in-memory storage the new server
// starts empty: every client and grant is gone.
func (h *Hydra) Start(ctx context.Context) error {
	if err := h.proc.start(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	err := waitFor(ctx, h.proc, "hydra to become ready", func(ctx context.Context) error {
		for _, base := range []string{h.AdminURL, h.PublicURL} {
			if err := h.checkReady(ctx, base); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = h.proc.kill()
		return err
	}
	return nil
}

func (h *Hydra) checkReady(ctx context.Context, base string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/health/ready", nil)
	if err != nil {
		return err
	}
	resp, err := h.httpClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/health/ready returned %s", base, resp.Status)
	}
	return nil
}

// Stop ends Hydra with SIGTERM and waits for it to exit.
func (h *Hydra) Stop() error { return h.proc.stop() }

// Kill ends Hydra with SIGKILL, as in a crash, and waits for it to exit.
func (h *Hydra) Kill() error { return h.proc.kill() }

// Restart stops Hydra and starts it again on the same ports. See Start for
// what in-memory storage loses.
func (h *Hydra) Restart(ctx context.Context) error {
	if err := h.Stop(); err != nil {
		return err
	}
	return h.Start(ctx)
}

// Persistent reports whether Hydra's state survives a restart.
func (h *Hydra) Persistent() bool { return h.sqlite }

// Running reports whether the Hydra process is alive.
func (h *Hydra) Running() bool { return h.proc.running() }

// PID returns the Hydra server's process id, or 0 when it is not running.
func (h *Hydra) PID() int { return h.proc.pid() }

// TokenEndpoint returns the URL of Hydra's token endpoint.
func (h *Hydra) TokenEndpoint() string { return h.PublicURL + "/oauth2/token" }

// RevocationEndpoint returns the URL of Hydra's RFC 7009 revocation endpoint.
func (h *Hydra) RevocationEndpoint() string { return h.PublicURL + "/oauth2/revoke" }

// Close stops Hydra and removes its directory when StartHydra created it.
func (h *Hydra) Close() error {
	err := h.Stop()
	h.cleanupDir()
	return err
}

func (h *Hydra) cleanupDir() {
	if h.removeDir {
		os.RemoveAll(h.dir)
	}
}

// workDir returns dir, creating it, or a new temporary directory that the
// caller must remove.
func workDir(dir, name string) (string, bool, error) {
	if dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return "", false, fmt.Errorf("create %s directory: %w", name, err)
		}
		abs, err := filepath.Abs(dir)
		if err != nil {
			return "", false, err
		}
		resolved, err := filepath.EvalSymlinks(abs)
		return resolved, false, err
	}
	tmp, err := os.MkdirTemp("", "ci-tokens-"+name+"-")
	if err != nil {
		return "", false, fmt.Errorf("create %s directory: %w", name, err)
	}
	resolved, err := filepath.EvalSymlinks(tmp)
	if err != nil {
		os.RemoveAll(tmp)
		return "", false, err
	}
	return resolved, true, nil
}
