package backend

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/automatedrotationutil"
	"github.com/hashicorp/vault/sdk/logical"
	"github.com/hashicorp/vault/sdk/rotation"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

// minRotationWindow is the shortest rotation_window the SDK's scheduler
// accepts.
const minRotationWindow = time.Hour

// pathConfig returns the config path.
func pathConfig(b *backend) *framework.Path {
	fields := map[string]*framework.FieldSchema{
		"issuer": {
			Type:        framework.TypeString,
			Description: "Issuer URL of the upstream; its metadata (OpenID Connect discovery or RFC 8414) supplies every endpoint not set explicitly.",
		},
		"token_endpoint": {
			Type:        framework.TypeString,
			Description: "Token endpoint URL. Required unless issuer is set.",
		},
		"revocation_endpoint": {
			Type:        framework.TypeString,
			Description: "RFC 7009 revocation endpoint URL. Without one, leases end without upstream revocation and tokens expire on their own.",
		},
		"authorization_endpoint": {
			Type:        framework.TypeString,
			Description: "Authorization endpoint URL, used by the ci-tokens-seed command.",
		},
		"device_authorization_endpoint": {
			Type:        framework.TypeString,
			Description: "RFC 8628 device authorization endpoint URL, used by the ci-tokens-seed command.",
		},
		"client_id": {
			Type:        framework.TypeString,
			Description: "OAuth 2.0 client ID of the engine at the upstream. Required.",
		},
		"client_secret": {
			Type:         framework.TypeString,
			Description:  "OAuth 2.0 client secret. Write-only: never returned.",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"client_auth_method": {
			Type:          framework.TypeString,
			Description:   fmt.Sprintf("How the client authenticates at the token and revocation endpoints: %s or %s. Default %s.", upstream.AuthClientSecretBasic, upstream.AuthClientSecretPost, upstream.AuthClientSecretBasic),
			AllowedValues: []interface{}{upstream.AuthClientSecretBasic, upstream.AuthClientSecretPost},
		},
		"refresh_token": {
			Type:         framework.TypeString,
			Description:  "Seed of the root grant. Write-only. A new value is redeemed once at once, which checks it and takes custody; writing a value the engine already holds or has consumed changes nothing.",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"standby_refresh_token": {
			Type:         framework.TypeString,
			Description:  "Seed of an optional second, independent grant that is kept fresh and replaces the root grant if that one stops working. Write-only.",
			DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
		},
		"ca_pem": {
			Type:        framework.TypeString,
			Description: "PEM bundle of the certificate authorities that sign the upstream's TLS certificate. Default: the system roots.",
		},
		"tls_min_version": {
			Type:          framework.TypeString,
			Description:   fmt.Sprintf("Minimum TLS version towards the upstream: %s or %s. Default %s.", tlsVersion12, tlsVersion13, tlsVersion12),
			AllowedValues: []interface{}{tlsVersion12, tlsVersion13},
		},
		"request_timeout": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Timeout of each upstream request, in seconds, from 1 to %d. Default %d.", int(maxRequestTimeout.Seconds()), int(defaultRequestTimeout.Seconds())),
		},
		"default_expires_in": {
			Type:        framework.TypeDurationSecond,
			Description: fmt.Sprintf("Lifetime, in seconds, assumed for an access token whose response has no expires_in and that is not a JWT. Default %d.", int(defaultDefaultExpiresIn.Seconds())),
		},
		"force": {
			Type:        framework.TypeBool,
			Description: "On delete: delete even though the mount holds a root grant, which is then lost.",
			Query:       true,
		},
	}
	automatedrotationutil.AddAutomatedRotationFields(fields)
	delete(fields, "rotation_policy")
	fields["rotation_period"].Description = fmt.Sprintf("Rotate the root refresh token this many seconds after the last rotation. Default %d; at least %d. Mutually exclusive with rotation_schedule.", int(defaultRotationPeriod.Seconds()), int(minRotationPeriod.Seconds()))
	fields["rotation_schedule"].Description = "Cron schedule (5 fields, UTC) on which to rotate the root refresh token. Mutually exclusive with rotation_period."
	fields["rotation_window"].Description = fmt.Sprintf("Seconds after each rotation_schedule time during which the rotation may run; at least %d. Default 0: a missed time is caught up at once.", int(minRotationWindow.Seconds()))
	fields["disable_automated_rotation"].Description = "Stop scheduled rotation of the root refresh token; rotate-root still works."

	return &framework.Path{
		Pattern: "config",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "ci-tokens",
		},
		Fields: fields,
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{
				Callback: b.pathConfigRead,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "read",
					OperationSuffix: "configuration",
				},
			},
			logical.CreateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathConfigWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
				DisplayAttrs: &framework.DisplayAttributes{
					OperationVerb:   "configure",
					OperationSuffix: "upstream",
				},
			},
			logical.DeleteOperation: &framework.PathOperation{
				Callback:                    b.pathConfigDelete,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		ExistenceCheck:  b.pathConfigExists,
		HelpSynopsis:    pathConfigHelpSynopsis,
		HelpDescription: pathConfigHelpDescription,
	}
}

func (b *backend) pathConfigExists(ctx context.Context, req *logical.Request, _ *framework.FieldData) (bool, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	return cfg != nil, err
}

func (b *backend) pathConfigRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if cfg == nil {
		return nil, nil
	}
	return &logical.Response{Data: configResponseData(cfg)}, nil
}

// configResponseData returns every non-secret field with the names and units
// a write accepts, plus the effective endpoints.
func configResponseData(cfg *engineConfig) map[string]interface{} {
	return map[string]interface{}{
		"issuer":                        cfg.Issuer,
		"token_endpoint":                cfg.TokenEndpoint,
		"revocation_endpoint":           cfg.RevocationEndpoint,
		"authorization_endpoint":        cfg.AuthorizationEndpoint,
		"device_authorization_endpoint": cfg.DeviceAuthorizationEndpoint,
		"client_id":                     cfg.ClientID,
		"client_auth_method":            cfg.ClientAuthMethod,
		"ca_pem":                        cfg.CAPEM,
		"tls_min_version":               cfg.TLSMinVersion,
		"request_timeout":               int64(cfg.RequestTimeout.Seconds()),
		"default_expires_in":            int64(cfg.DefaultExpiresIn.Seconds()),
		"rotation_period":               int64(cfg.RotationPeriod.Seconds()),
		"rotation_schedule":             cfg.RotationSchedule,
		"rotation_window":               int64(cfg.RotationWindow.Seconds()),
		"disable_automated_rotation":    cfg.DisableAutomatedRotation,
		"endpoints": map[string]interface{}{
			"token_endpoint":                cfg.tokenURL(),
			"revocation_endpoint":           cfg.revocationURL(),
			"authorization_endpoint":        cfg.authorizationURL(),
			"device_authorization_endpoint": cfg.deviceAuthorizationURL(),
		},
	}
}

func (b *backend) pathConfigWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	existing, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	cfg := &engineConfig{}
	if existing != nil {
		*cfg = *existing
	}

	problems := unknownFields(req, d, "endpoints")
	problems = append(problems, applyConfigFields(cfg, d)...)
	if len(problems) > 0 {
		return logical.ErrorResponse(strings.Join(problems, "; ")), logical.ErrInvalidRequest
	}
	cfg.applyDefaults()
	resp := &logical.Response{}
	if err := b.discover(ctx, cfg); err != nil {
		// A re-apply of an unchanged issuer must not fail because the
		// upstream's metadata is briefly unreachable: keep what was found.
		if existing == nil || existing.Issuer != cfg.Issuer || existing.Discovered == nil {
			return logical.ErrorResponse(err.Error()), logical.ErrInvalidRequest
		}
		cfg.Discovered = existing.Discovered
		resp.AddWarning(fmt.Sprintf("Discovery failed, so the endpoints found earlier stay in use: %s.", err))
		b.Logger().Warn("discovery failed; keeping the endpoints found earlier", "issuer", cfg.Issuer, "error", err)
	}
	eng, err := newEngine(cfg)
	if err != nil {
		return logical.ErrorResponse("ca_pem: %s", err), logical.ErrInvalidRequest
	}

	seeds := seedRequest{
		primary: d.Get("refresh_token").(string),
		standby: d.Get("standby_refresh_token").(string),
	}
	if seeds.primary == "" && clientIdentityChanged(existing, cfg) {
		resp.AddWarning("client_id or the token endpoint changed, but the root grant was issued to the previous client; seed a new refresh_token for this client, or rotations will fail with invalid_grant.")
	}
	if seeds.primary != "" || seeds.standby != "" {
		warnings, err := b.seedGrants(ctx, req.Storage, eng, seeds)
		if err != nil {
			return seedErrorResponse(err)
		}
		resp.Warnings = append(resp.Warnings, warnings...)
	}

	if err := b.putConfig(ctx, req.Storage, cfg); err != nil {
		return nil, err
	}
	b.Logger().Info("config written", "client_id", cfg.ClientID, "token_endpoint", cfg.tokenURL())
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// clientIdentityChanged reports whether a config write moves the engine to
// another client or another token endpoint, which a grant does not follow.
func clientIdentityChanged(existing, cfg *engineConfig) bool {
	if existing == nil {
		return false
	}
	return existing.ClientID != cfg.ClientID || existing.tokenURL() != cfg.tokenURL()
}

// applyConfigFields copies the request's fields into cfg and returns one
// message per invalid field.
func applyConfigFields(cfg *engineConfig, d *framework.FieldData) []string {
	var problems []string
	addProblem := func(format string, args ...interface{}) {
		problems = append(problems, fmt.Sprintf(format, args...))
	}

	for _, field := range []struct {
		name string
		dest *string
	}{
		{"issuer", &cfg.Issuer},
		{"token_endpoint", &cfg.TokenEndpoint},
		{"revocation_endpoint", &cfg.RevocationEndpoint},
		{"authorization_endpoint", &cfg.AuthorizationEndpoint},
		{"device_authorization_endpoint", &cfg.DeviceAuthorizationEndpoint},
	} {
		raw, ok := d.GetOk(field.name)
		if !ok {
			continue
		}
		value := strings.TrimSpace(raw.(string))
		if err := validateURL(value); err != nil {
			addProblem("%s: %s", field.name, err)
			continue
		}
		*field.dest = value
	}

	if raw, ok := d.GetOk("client_id"); ok {
		cfg.ClientID = strings.TrimSpace(raw.(string))
		if err := validateText(cfg.ClientID, maxClientIDLength); err != nil {
			addProblem("client_id: %s", err)
		}
	}
	if raw, ok := d.GetOk("client_secret"); ok {
		cfg.ClientSecret = raw.(string)
		if cfg.ClientSecret == "" {
			addProblem("client_secret: must not be empty; leave the field out to keep the stored secret")
		} else if len(cfg.ClientSecret) > maxSecretLength {
			addProblem("client_secret: longer than %d bytes", maxSecretLength)
		}
	}
	if raw, ok := d.GetOk("client_auth_method"); ok {
		cfg.ClientAuthMethod = raw.(string)
		if cfg.ClientAuthMethod != upstream.AuthClientSecretBasic && cfg.ClientAuthMethod != upstream.AuthClientSecretPost {
			addProblem("client_auth_method: invalid value %q; expected %s or %s", cfg.ClientAuthMethod, upstream.AuthClientSecretBasic, upstream.AuthClientSecretPost)
		}
	}
	if raw, ok := d.GetOk("ca_pem"); ok {
		cfg.CAPEM = raw.(string)
	}
	if raw, ok := d.GetOk("tls_min_version"); ok {
		cfg.TLSMinVersion = raw.(string)
		if cfg.TLSMinVersion != tlsVersion12 && cfg.TLSMinVersion != tlsVersion13 {
			addProblem("tls_min_version: invalid value %q; expected %s or %s", cfg.TLSMinVersion, tlsVersion12, tlsVersion13)
		}
	}
	if raw, ok := d.GetOk("request_timeout"); ok {
		timeout := time.Duration(raw.(int)) * time.Second
		if timeout < time.Second || timeout > maxRequestTimeout {
			addProblem("request_timeout: must be from 1 to %d seconds, got %d", int(maxRequestTimeout.Seconds()), raw.(int))
		}
		cfg.RequestTimeout = timeout
	}
	if raw, ok := d.GetOk("default_expires_in"); ok {
		lifetime := time.Duration(raw.(int)) * time.Second
		if lifetime < time.Second {
			addProblem("default_expires_in: must be at least 1 second, got %d", raw.(int))
		}
		cfg.DefaultExpiresIn = lifetime
	}
	problems = append(problems, applyRotationFields(cfg, d)...)

	if cfg.ClientID == "" {
		addProblem("client_id: missing")
	}
	if cfg.Issuer == "" && cfg.TokenEndpoint == "" {
		addProblem("token_endpoint: missing; set issuer for discovery or token_endpoint explicitly")
	}
	return problems
}

// applyRotationFields applies the rotation fields. Setting one of
// rotation_period and rotation_schedule clears the other, so a write of
// either alone switches the kind of schedule.
func applyRotationFields(cfg *engineConfig, d *framework.FieldData) []string {
	params := &automatedrotationutil.AutomatedRotationParams{}
	if err := params.ParseAutomatedRotationFields(d); err != nil {
		return []string{rotationFieldError(err)}
	}

	var problems []string
	_, periodSet := d.GetOk("rotation_period")
	_, scheduleSet := d.GetOk("rotation_schedule")
	_, windowSet := d.GetOk("rotation_window")

	if scheduleSet {
		if problem := checkSchedule(params.RotationSchedule); problem != "" {
			problems = append(problems, problem)
		}
		cfg.RotationSchedule = params.RotationSchedule
		if params.RotationSchedule != "" && !periodSet {
			cfg.RotationPeriod = 0
		}
	}
	if periodSet {
		cfg.RotationPeriod = params.RotationPeriod
		if params.RotationPeriod != 0 && !scheduleSet {
			cfg.RotationSchedule = ""
			cfg.RotationWindow = 0
		}
		if params.RotationPeriod != 0 && params.RotationPeriod < minRotationPeriod {
			problems = append(problems, fmt.Sprintf("rotation_period: must be at least %d seconds, got %d", int(minRotationPeriod.Seconds()), int(params.RotationPeriod.Seconds())))
		}
		if params.RotationPeriod < 0 {
			problems = append(problems, "rotation_period: must not be negative")
		}
	}
	if windowSet {
		cfg.RotationWindow = params.RotationWindow
	}
	if cfg.RotationWindow != 0 {
		if cfg.RotationSchedule == "" {
			problems = append(problems, "rotation_window: applies only with rotation_schedule")
		} else if err := rotation.DefaultScheduler.ValidateRotationWindow(int(cfg.RotationWindow.Seconds())); err != nil || cfg.RotationWindow < minRotationWindow {
			problems = append(problems, fmt.Sprintf("rotation_window: must be at least %d seconds, got %d", int(minRotationWindow.Seconds()), int(cfg.RotationWindow.Seconds())))
		}
	}
	if _, ok := d.GetOk("disable_automated_rotation"); ok {
		cfg.DisableAutomatedRotation = params.DisableAutomatedRotation
	}
	return problems
}

// maxScheduleGap is how far ahead a rotation_schedule must next fire; cron
// accepts expressions such as "0 0 30 2 *" that never do.
const maxScheduleGap = 366 * 24 * time.Hour

// checkSchedule rejects schedules that parse but would silently stop
// rotation or run in another time zone than the documented UTC.
func checkSchedule(schedule string) string {
	if schedule == "" {
		return ""
	}
	trimmed := strings.TrimSpace(schedule)
	if strings.HasPrefix(trimmed, "TZ=") || strings.HasPrefix(trimmed, "CRON_TZ=") {
		return "rotation_schedule: time zone prefixes are not supported; the schedule is in UTC"
	}
	sched, err := rotation.DefaultScheduler.Parse(schedule)
	if err != nil {
		return ""
	}
	now := time.Now().UTC()
	if next := sched.Next(now); next.IsZero() || next.Sub(now) > maxScheduleGap {
		return fmt.Sprintf("rotation_schedule: %q does not fire within a year, so rotation would stop", schedule)
	}
	return ""
}

// rotationFieldError names the field in an error from the SDK's parser.
func rotationFieldError(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, automatedrotationutil.ErrRotationMutuallyExclusiveFields):
		return "rotation_schedule: mutually exclusive with rotation_period; set only one"
	case strings.HasPrefix(msg, "failed to parse provided rotation_schedule"):
		return "rotation_schedule: invalid cron expression: " + strings.TrimPrefix(msg, "failed to parse provided rotation_schedule: ")
	case strings.Contains(msg, "rotation_window"):
		return "rotation_window: " + msg
	default:
		return msg
	}
}

// validateURL accepts an empty value (unset) or an absolute http(s) URL
// without credentials or a fragment.
func validateURL(value string) error {
	if value == "" {
		return nil
	}
	if len(value) > maxURLLength {
		return fmt.Errorf("longer than %d bytes", maxURLLength)
	}
	u, err := url.Parse(value)
	if err != nil || u.Host == "" {
		return fmt.Errorf("invalid URL %q; expected an absolute https URL", value)
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return fmt.Errorf("unsupported scheme %q; expected https", u.Scheme)
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	if u.Fragment != "" {
		return errors.New("must not contain a fragment")
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fmt.Errorf("plain http is allowed only on loopback hosts, got %q", u.Host)
	}
	return nil
}

// Length limits of config values, generous for real upstreams and small
// enough that a mistake cannot store or echo megabytes.
const (
	maxURLLength      = 2048
	maxClientIDLength = 1024
	maxSecretLength   = 8192
)

// validateText accepts printable ASCII up to limit bytes: client IDs
// (RFC 6749 appendix A.1, VSCHAR) and audiences.
func validateText(value string, limit int) error {
	if len(value) > limit {
		return fmt.Errorf("longer than %d bytes", limit)
	}
	for _, r := range value {
		if r < 0x20 || r > 0x7e {
			return fmt.Errorf("contains %U; only printable ASCII is allowed", r)
		}
	}
	return nil
}

// isLoopback reports whether host names this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// discover reads the issuer's metadata when the config names an issuer.
func (b *backend) discover(ctx context.Context, cfg *engineConfig) error {
	if cfg.Issuer == "" {
		cfg.Discovered = nil
		return nil
	}
	httpClient, err := upstream.NewHTTPClient(cfg.tlsOptions(), cfg.RequestTimeout)
	if err != nil {
		return fmt.Errorf("ca_pem: %w", err)
	}
	defer httpClient.CloseIdleConnections()

	md, err := upstream.Discover(ctx, httpClient, cfg.Issuer)
	if err != nil {
		return fmt.Errorf("issuer: discovery failed: %w", err)
	}
	cfg.Discovered = md
	return nil
}

func (b *backend) pathConfigDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	b.rootMu.Lock()
	defer b.rootMu.Unlock()

	root, err := b.getRoot(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	force := d.Get("force").(bool)
	outstanding, err := countOutstandingLeases(ctx, req.Storage, b.now())
	if err != nil {
		return nil, err
	}
	if outstanding > 0 && !force {
		return logical.ErrorResponse("force: %d CI token leases are outstanding; revoke them first (vault lease revoke -prefix %screds/) or pass force=true, after which they still revoke with the client credentials each lease stored", outstanding, req.MountPoint), logical.ErrInvalidRequest
	}
	if root != nil && root.RefreshToken != "" && !force {
		return logical.ErrorResponse("force: the mount holds a root grant that deleting config would discard, and it cannot be recovered without reseeding; pass force=true to delete anyway"), logical.ErrInvalidRequest
	}

	resp := &logical.Response{}
	if root != nil {
		resp.Warnings = b.revokeRootGrants(ctx, req.Storage, root)
	}
	if err := req.Storage.Delete(ctx, rootStoragePath); err != nil {
		return nil, fmt.Errorf("deleting root grant: %w", err)
	}
	b.pendingRoot.Store(nil)
	if err := req.Storage.Delete(ctx, configStoragePath); err != nil {
		return nil, fmt.Errorf("deleting config: %w", err)
	}
	b.clients.reset()
	b.Logger().Warn("config and root grant deleted")
	if len(resp.Warnings) == 0 {
		return nil, nil
	}
	return resp, nil
}

// revokeRootGrants revokes the refresh tokens of a config being deleted at
// the upstream (RFC 7009), so that no live credential outlives the engine's
// custody. A failure does not stop the delete; it returns a warning.
func (b *backend) revokeRootGrants(ctx context.Context, s logical.Storage, root *rootGrant) []string {
	eng, err := b.getEngine(ctx, s)
	if err != nil || eng == nil || eng.cfg.revocationURL() == "" {
		return []string{"The upstream has no revocation endpoint, so the discarded refresh tokens stay valid there until they expire; revoke the grant at the upstream."}
	}
	tokens := []string{root.RefreshToken}
	if root.Standby != nil {
		tokens = append(tokens, root.Standby.RefreshToken)
	}

	var warnings []string
	for _, token := range tokens {
		if token == "" || root.terminal() && token == root.RefreshToken {
			continue
		}
		revokeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), maxRevocationTimeout)
		err := upstream.Revoke(revokeCtx, eng.http, eng.cfg.revocationURL(), eng.cfg.credentials(), token, "refresh_token")
		cancel()
		if err != nil {
			b.Logger().Warn("revoking a discarded refresh token failed", "error", err)
			warnings = append(warnings, fmt.Sprintf("Revoking a discarded refresh token at the upstream failed (%s); revoke the grant at the upstream.", err))
		}
	}
	return warnings
}

const pathConfigHelpSynopsis = `Configure the upstream OAuth 2.0 server, the client and the root grant.`

const pathConfigHelpDescription = `
Sets the upstream authorization server (by issuer discovery or explicit
endpoints), the engine's OAuth 2.0 client, TLS settings, the rotation
schedule of the root refresh token, and seeds the root grant with
refresh_token. Secrets (client_secret, refresh_token, standby_refresh_token)
are write-only. A read returns every other field in the shape a write
accepts, durations as integer seconds, plus the effective endpoints.

Writing a refresh_token the engine already holds or has consumed is a no-op,
so re-applying the same configuration never disturbs the live grant.
`

// unknownFields returns one message per request field that the path does
// not define, so that a typo such as rotation_periods fails instead of being
// ignored. readOnly names fields that a read returns and a write may echo.
func unknownFields(req *logical.Request, d *framework.FieldData, readOnly ...string) []string {
	var problems []string
	for name := range req.Data {
		if _, known := d.Schema[name]; known || slices.Contains(readOnly, name) {
			continue
		}
		problems = append(problems, fmt.Sprintf("%s: unknown field", name))
	}
	slices.Sort(problems)
	return problems
}
