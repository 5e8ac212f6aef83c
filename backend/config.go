package backend

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

const configStoragePath = "config"

// Defaults and limits of config fields. Field descriptions and validation
// both read these.
const (
	defaultRequestTimeout   = 30 * time.Second
	maxRequestTimeout       = 120 * time.Second
	defaultRotationPeriod   = 24 * time.Hour
	minRotationPeriod       = time.Minute
	defaultDefaultExpiresIn = 10 * time.Minute
	tlsVersion12            = "tls12"
	tlsVersion13            = "tls13"
	configSchemaVersion     = 1
)

// engineConfig is the stored upstream configuration. Secrets in it
// (client_secret) are never returned by a read; the storage entry is
// seal-wrapped.
type engineConfig struct {
	// SchemaVersion lets later versions tell which defaults an entry was
	// written with.
	SchemaVersion int `json:"schema_version"`

	Issuer                      string `json:"issuer"`
	TokenEndpoint               string `json:"token_endpoint"`
	RevocationEndpoint          string `json:"revocation_endpoint"`
	AuthorizationEndpoint       string `json:"authorization_endpoint"`
	DeviceAuthorizationEndpoint string `json:"device_authorization_endpoint"`

	// Discovered holds the endpoints read from the issuer's metadata when
	// the config was written; explicit endpoints above take precedence.
	Discovered *upstream.Metadata `json:"discovered,omitempty"`

	ClientID         string `json:"client_id"`
	ClientSecret     string `json:"client_secret"`
	ClientAuthMethod string `json:"client_auth_method"`

	CAPEM         string `json:"ca_pem"`
	TLSMinVersion string `json:"tls_min_version"`

	RequestTimeout   time.Duration `json:"request_timeout"`
	DefaultExpiresIn time.Duration `json:"default_expires_in"`

	RotationPeriod           time.Duration `json:"rotation_period"`
	RotationSchedule         string        `json:"rotation_schedule"`
	RotationWindow           time.Duration `json:"rotation_window"`
	DisableAutomatedRotation bool          `json:"disable_automated_rotation"`
}

// applyDefaults fills fields that an older or partial entry left at zero, so
// that a zero value never switches rotation off or removes a timeout.
func (c *engineConfig) applyDefaults() {
	if c.ClientAuthMethod == "" {
		c.ClientAuthMethod = upstream.AuthClientSecretBasic
	}
	if c.TLSMinVersion == "" {
		c.TLSMinVersion = tlsVersion12
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = defaultRequestTimeout
	}
	if c.DefaultExpiresIn <= 0 {
		c.DefaultExpiresIn = defaultDefaultExpiresIn
	}
	if c.RotationPeriod <= 0 && c.RotationSchedule == "" {
		c.RotationPeriod = defaultRotationPeriod
	}
	c.SchemaVersion = configSchemaVersion
}

// endpoint returns the explicit value, or the discovered one.
func (c *engineConfig) endpoint(explicit string, discovered func(*upstream.Metadata) string) string {
	if explicit != "" || c.Discovered == nil {
		return explicit
	}
	return discovered(c.Discovered)
}

func (c *engineConfig) tokenURL() string {
	return c.endpoint(c.TokenEndpoint, func(m *upstream.Metadata) string { return m.TokenEndpoint })
}

func (c *engineConfig) revocationURL() string {
	return c.endpoint(c.RevocationEndpoint, func(m *upstream.Metadata) string { return m.RevocationEndpoint })
}

func (c *engineConfig) authorizationURL() string {
	return c.endpoint(c.AuthorizationEndpoint, func(m *upstream.Metadata) string { return m.AuthorizationEndpoint })
}

func (c *engineConfig) deviceAuthorizationURL() string {
	return c.endpoint(c.DeviceAuthorizationEndpoint, func(m *upstream.Metadata) string { return m.DeviceAuthorizationEndpoint })
}

func (c *engineConfig) credentials() upstream.Credentials {
	return upstream.Credentials{
		ClientID:     c.ClientID,
		ClientSecret: c.ClientSecret,
		AuthMethod:   c.ClientAuthMethod,
	}
}

func (c *engineConfig) tlsOptions() upstream.TLSOptions {
	opts := upstream.TLSOptions{CAPEM: c.CAPEM, MinVersion: tls.VersionTLS12}
	if c.TLSMinVersion == tlsVersion13 {
		opts.MinVersion = tls.VersionTLS13
	}
	return opts
}

// schedule returns the parsed cron schedule, or nil when rotation runs by
// period.
func (c *engineConfig) schedule() (rotationSchedule, error) {
	if c.RotationSchedule == "" {
		return nil, nil
	}
	return rotation.DefaultScheduler.Parse(c.RotationSchedule)
}

// rotationSchedule is the part of a cron schedule the engine uses.
type rotationSchedule interface {
	Next(time.Time) time.Time
}

// getConfig reads the config, or returns nil when the mount has none.
func (b *backend) getConfig(ctx context.Context, s logical.Storage) (*engineConfig, error) {
	entry, err := s.Get(ctx, configStoragePath)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	if entry == nil {
		return nil, nil
	}
	cfg := &engineConfig{}
	if err := entry.DecodeJSON(cfg); err != nil {
		return nil, fmt.Errorf("decoding config: %w", err)
	}
	cfg.applyDefaults()
	return cfg, nil
}

// putConfig stores cfg and drops the cached client built from the old one.
func (b *backend) putConfig(ctx context.Context, s logical.Storage, cfg *engineConfig) error {
	entry, err := logical.StorageEntryJSON(configStoragePath, cfg)
	if err != nil {
		return fmt.Errorf("encoding config: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing config: %w", err)
	}
	b.clients.reset()
	return nil
}

// engine bundles a config with the clients built from it.
type engine struct {
	cfg    *engineConfig
	http   *http.Client
	client *upstream.Client
}

// clientCache holds the upstream client for the stored config. Building one
// parses PEM and opens a connection pool, so it is built once per config.
type clientCache struct {
	mu      sync.RWMutex
	current *engine
}

// reset drops the cached client and closes its idle connections.
func (c *clientCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.current != nil {
		c.current.http.CloseIdleConnections()
		c.current = nil
	}
}

// getEngine returns the config and its upstream client, or nil, nil when the
// mount is not configured.
func (b *backend) getEngine(ctx context.Context, s logical.Storage) (*engine, error) {
	b.clients.mu.RLock()
	current := b.clients.current
	b.clients.mu.RUnlock()
	if current != nil {
		return current, nil
	}

	b.clients.mu.Lock()
	defer b.clients.mu.Unlock()
	if b.clients.current != nil {
		return b.clients.current, nil
	}
	cfg, err := b.getConfig(ctx, s)
	if err != nil || cfg == nil {
		return nil, err
	}
	eng, err := newEngine(cfg)
	if err != nil {
		return nil, err
	}
	b.clients.current = eng
	return eng, nil
}

// newEngine builds the upstream client for cfg.
func newEngine(cfg *engineConfig) (*engine, error) {
	httpClient, err := upstream.NewHTTPClient(cfg.tlsOptions(), cfg.RequestTimeout)
	if err != nil {
		return nil, err
	}
	return &engine{
		cfg:    cfg,
		http:   httpClient,
		client: upstream.NewClient(httpClient, cfg.tokenURL(), cfg.credentials()),
	}, nil
}
