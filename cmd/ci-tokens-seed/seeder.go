package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/hashicorp/vault/api"
)

// seeder talks to one ci-tokens mount on behalf of the operator.
type seeder struct {
	vault *api.Client
	mount string
	// out receives the operator's instructions and progress messages.
	out io.Writer
	// openBrowser opens a URL for -open; tests replace it.
	openBrowser func(url string) error
	// sleep waits between device flow polls; tests replace it.
	sleep func(ctx context.Context, d time.Duration) error
}

// upstreamSettings are the fields of <mount>/config that seeding needs.
type upstreamSettings struct {
	issuer                      string
	clientID                    string
	authorizationEndpoint       string
	deviceAuthorizationEndpoint string
}

// seedResult is the engine's response to a successful seed.
type seedResult struct {
	generation string
	state      string
}

func newSeeder(client *api.Client, mount string, out io.Writer) *seeder {
	return &seeder{
		vault:       client,
		mount:       mount,
		out:         out,
		openBrowser: openInBrowser,
		sleep:       sleepContext,
	}
}

// run reads the upstream settings and runs the flow opts select.
func (s *seeder) run(ctx context.Context, opts *options) (*seedResult, error) {
	settings, err := s.readSettings(ctx)
	if err != nil {
		return nil, err
	}

	switch opts.flow {
	case flowDevice:
		if settings.deviceAuthorizationEndpoint == "" {
			return nil, fmt.Errorf("%s/config has no device_authorization_endpoint; the upstream does not offer the device flow, use -flow=%s", s.mount, flowCode)
		}
		return s.seedWithDeviceCode(ctx, settings, opts)
	default:
		if settings.authorizationEndpoint == "" {
			hint := ""
			if settings.deviceAuthorizationEndpoint != "" {
				hint = fmt.Sprintf(", or use -flow=%s", flowDevice)
			}
			return nil, fmt.Errorf("%s/config has no authorization_endpoint; set it or an issuer that publishes one%s", s.mount, hint)
		}
		return s.seedWithAuthorizationCode(ctx, settings, opts)
	}
}

// readSettings reads <mount>/config. Discovered endpoints are preferred over
// the explicitly configured fields, which are empty when an issuer is set.
func (s *seeder) readSettings(ctx context.Context) (*upstreamSettings, error) {
	path := s.mount + "/config"
	secret, err := s.vault.Logical().ReadWithContext(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if secret == nil || secret.Data == nil {
		return nil, fmt.Errorf("%s is not configured; write the upstream settings first (terraform apply, or vault write %s ...)", path, path)
	}

	data := secret.Data
	endpoints, _ := data["endpoints"].(map[string]interface{})
	settings := &upstreamSettings{
		issuer:                      stringField(data, "issuer"),
		clientID:                    stringField(data, "client_id"),
		authorizationEndpoint:       firstNonEmpty(stringField(endpoints, "authorization_endpoint"), stringField(data, "authorization_endpoint")),
		deviceAuthorizationEndpoint: firstNonEmpty(stringField(endpoints, "device_authorization_endpoint"), stringField(data, "device_authorization_endpoint")),
	}
	if settings.clientID == "" {
		return nil, fmt.Errorf("%s has no client_id", path)
	}
	return settings, nil
}

// writeSeed sends the grant's one-time values to <mount>/seed. The engine
// redeems them at the upstream with its stored client credentials.
func (s *seeder) writeSeed(ctx context.Context, data map[string]interface{}) (*seedResult, error) {
	secret, err := s.vault.Logical().WriteWithContext(ctx, s.mount+"/seed", data)
	if err != nil {
		return nil, err
	}
	result := &seedResult{generation: "unknown", state: "unknown"}
	if secret != nil && secret.Data != nil {
		if v, ok := secret.Data["generation"]; ok && v != nil {
			result.generation = fmt.Sprint(v)
		}
		if v := stringField(secret.Data, "state"); v != "" {
			result.state = v
		}
	}
	return result, nil
}

// vaultErrorContains reports whether err is a 400 from Vault whose error
// text contains code, such as authorization_pending.
func vaultErrorContains(err error, code string) bool {
	var respErr *api.ResponseError
	if !errors.As(err, &respErr) || respErr.StatusCode != 400 {
		return false
	}
	for _, msg := range respErr.Errors {
		if strings.Contains(msg, code) {
			return true
		}
	}
	return false
}

func stringField(data map[string]interface{}, name string) string {
	value, _ := data[name].(string)
	return value
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

// sleepContext waits for d or until ctx ends.
func sleepContext(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}
