package backend

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

const roleStoragePrefix = "roles/"

// Mint strategies of a role.
const (
	// strategyClientCredentials mints an independent token per request with
	// the client credentials grant, narrowed by scopes and audience.
	strategyClientCredentials = "client_credentials"

	// strategyRefresh hands out the access token of a root grant rotation.
	strategyRefresh = "refresh"
)

// roleEntry is a stored recipe for CI tokens.
type roleEntry struct {
	Strategy string        `json:"strategy"`
	Scopes   []string      `json:"scopes"`
	Audience []string      `json:"audience"`
	TTL      time.Duration `json:"ttl"`
	MaxTTL   time.Duration `json:"max_ttl"`
}

// responseData returns the role with the names and units a write accepts.
func (r *roleEntry) responseData() map[string]interface{} {
	return map[string]interface{}{
		"strategy": r.Strategy,
		"scopes":   nonNil(r.Scopes),
		"audience": nonNil(r.Audience),
		"ttl":      int64(r.TTL.Seconds()),
		"max_ttl":  int64(r.MaxTTL.Seconds()),
	}
}

// nonNil returns an empty list for nil, so reads show [] rather than null.
func nonNil(list []string) []string {
	if list == nil {
		return []string{}
	}
	return list
}

// pathRoles returns the roles/<name> and roles/ paths.
func pathRoles(b *backend) []*framework.Path {
	return []*framework.Path{
		{
			Pattern: "roles/" + framework.GenericNameRegex("name"),
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "ci-tokens",
				OperationSuffix: "role",
			},
			Fields: map[string]*framework.FieldSchema{
				"name": {
					Type:        framework.TypeString,
					Description: "Name of the role. Case-sensitive, as Vault policies are.",
					Required:    true,
				},
				"strategy": {
					Type:          framework.TypeString,
					Description:   fmt.Sprintf("How tokens are minted: %s (an independent token per request, narrowed by scopes and audience) or %s (the access token of a root grant rotation). Default %s.", strategyClientCredentials, strategyRefresh, strategyClientCredentials),
					AllowedValues: []interface{}{strategyClientCredentials, strategyRefresh},
					Default:       strategyClientCredentials,
				},
				"scopes": {
					Type:        framework.TypeCommaStringSlice,
					Description: "OAuth 2.0 scopes to request, as a list or a comma-separated string. Default: none, which lets the upstream apply its default.",
				},
				"audience": {
					Type:        framework.TypeCommaStringSlice,
					Description: "Audiences (resource servers) to request, as a list or a comma-separated string.",
				},
				"ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Default lease TTL in seconds. 0 uses the mount's default; a lease never outlives the upstream token.",
				},
				"max_ttl": {
					Type:        framework.TypeDurationSecond,
					Description: "Maximum lease TTL in seconds, renewals included. 0 uses the mount's maximum.",
				},
			},
			ExistenceCheck: b.pathRoleExists,
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ReadOperation: &framework.PathOperation{Callback: b.pathRoleRead},
				logical.CreateOperation: &framework.PathOperation{
					Callback:                    b.pathRoleWrite,
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.UpdateOperation: &framework.PathOperation{
					Callback:                    b.pathRoleWrite,
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
				logical.DeleteOperation: &framework.PathOperation{
					Callback:                    b.pathRoleDelete,
					ForwardPerformanceStandby:   true,
					ForwardPerformanceSecondary: true,
				},
			},
			HelpSynopsis:    pathRoleHelpSynopsis,
			HelpDescription: pathRoleHelpDescription,
		},
		{
			Pattern: "roles/?$",
			DisplayAttrs: &framework.DisplayAttributes{
				OperationPrefix: "ci-tokens",
				OperationSuffix: "roles",
			},
			Operations: map[logical.Operation]framework.OperationHandler{
				logical.ListOperation: &framework.PathOperation{Callback: b.pathRoleList},
			},
			HelpSynopsis:    "List the roles.",
			HelpDescription: "Lists the names of all roles of this mount.",
		},
	}
}

func (b *backend) pathRoleExists(ctx context.Context, req *logical.Request, d *framework.FieldData) (bool, error) {
	role, err := b.getRole(ctx, req.Storage, d.Get("name").(string))
	return role != nil, err
}

func (b *backend) pathRoleRead(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	role, err := b.getRole(ctx, req.Storage, d.Get("name").(string))
	if err != nil || role == nil {
		return nil, err
	}
	return &logical.Response{Data: role.responseData()}, nil
}

func (b *backend) pathRoleWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	role, err := b.getRole(ctx, req.Storage, name)
	if err != nil {
		return nil, err
	}
	if role == nil {
		role = &roleEntry{Strategy: strategyClientCredentials}
	}

	problems := unknownFields(req, d)
	problems = append(problems, applyRoleFields(role, d)...)
	if len(problems) > 0 {
		return logical.ErrorResponse(strings.Join(problems, "; ")), logical.ErrInvalidRequest
	}
	if err := b.putRole(ctx, req.Storage, name, role); err != nil {
		return nil, err
	}
	if warnings := b.roleWarnings(role); len(warnings) > 0 {
		return &logical.Response{Warnings: warnings}, nil
	}
	return nil, nil
}

// applyRoleFields copies the request's fields into role and returns one
// message per invalid field.
func applyRoleFields(role *roleEntry, d *framework.FieldData) []string {
	var problems []string
	if raw, ok := d.GetOk("strategy"); ok {
		role.Strategy = raw.(string)
		if role.Strategy != strategyClientCredentials && role.Strategy != strategyRefresh {
			problems = append(problems, fmt.Sprintf("strategy: invalid value %q; expected %s or %s", role.Strategy, strategyClientCredentials, strategyRefresh))
		}
	}
	if raw, ok := d.GetOk("scopes"); ok {
		role.Scopes = cleanList(raw.([]string))
		problems = append(problems, validateList("scopes", role.Scopes, validScope)...)
	}
	if raw, ok := d.GetOk("audience"); ok {
		role.Audience = cleanList(raw.([]string))
		problems = append(problems, validateList("audience", role.Audience, validAudience)...)
	}
	if raw, ok := d.GetOk("ttl"); ok {
		if raw.(int) < 0 {
			problems = append(problems, fmt.Sprintf("ttl: must not be negative, got %d", raw.(int)))
		}
		role.TTL = time.Duration(raw.(int)) * time.Second
	}
	if raw, ok := d.GetOk("max_ttl"); ok {
		if raw.(int) < 0 {
			problems = append(problems, fmt.Sprintf("max_ttl: must not be negative, got %d", raw.(int)))
		}
		role.MaxTTL = time.Duration(raw.(int)) * time.Second
	}
	if role.MaxTTL > 0 && role.TTL > role.MaxTTL {
		problems = append(problems, fmt.Sprintf("ttl: %d seconds exceeds max_ttl of %d seconds", int(role.TTL.Seconds()), int(role.MaxTTL.Seconds())))
	}
	if role.Strategy == strategyRefresh && (len(role.Scopes) > 0 || len(role.Audience) > 0) {
		problems = append(problems, "scopes: a refresh role cannot narrow its tokens, because upstreams such as Hydra ignore a narrower scope on refresh; use strategy client_credentials")
	}
	return problems
}

// Limits of role lists.
const (
	maxListEntries   = 64
	maxScopeLength   = 256
	maxAudienceBytes = 2048
)

// validateList checks the length of a list and each of its entries.
func validateList(field string, list []string, valid func(string) error) []string {
	if len(list) > maxListEntries {
		return []string{fmt.Sprintf("%s: %d entries, at most %d allowed", field, len(list), maxListEntries)}
	}
	var problems []string
	for _, entry := range list {
		if err := valid(entry); err != nil {
			problems = append(problems, fmt.Sprintf("%s: %s", field, err))
		}
	}
	return problems
}

// validScope accepts a scope token of RFC 6749 section 3.3: printable ASCII
// without space, double quote or backslash.
func validScope(scope string) error {
	if len(scope) > maxScopeLength {
		return fmt.Errorf("a scope is longer than %d bytes", maxScopeLength)
	}
	for _, r := range scope {
		if r < 0x21 || r > 0x7e || r == '"' || r == '\\' {
			return fmt.Errorf("%q is not a valid scope token (RFC 6749 section 3.3 allows printable ASCII without spaces, quotes and backslashes)", scope)
		}
	}
	return nil
}

// validAudience accepts printable ASCII without spaces, since audiences are
// sent space-separated.
func validAudience(audience string) error {
	if strings.Contains(audience, " ") {
		return fmt.Errorf("%q must not contain spaces", audience)
	}
	return validateText(audience, maxAudienceBytes)
}

// cleanList trims entries and drops empty ones and repeats, keeping order.
func cleanList(list []string) []string {
	cleaned := make([]string, 0, len(list))
	for _, item := range list {
		if item = strings.TrimSpace(item); item != "" && !slices.Contains(cleaned, item) {
			cleaned = append(cleaned, item)
		}
	}
	return cleaned
}

// roleWarnings points out settings that the mount will silently cap.
func (b *backend) roleWarnings(role *roleEntry) []string {
	var warnings []string
	if system := b.System(); system != nil {
		if maxTTL := system.MaxLeaseTTL(); maxTTL > 0 {
			if role.TTL > maxTTL {
				warnings = append(warnings, fmt.Sprintf("ttl of %d seconds exceeds the mount's max lease TTL of %d seconds; leases will be capped.", int(role.TTL.Seconds()), int(maxTTL.Seconds())))
			}
			if role.MaxTTL > maxTTL {
				warnings = append(warnings, fmt.Sprintf("max_ttl of %d seconds exceeds the mount's max lease TTL of %d seconds; leases will be capped.", int(role.MaxTTL.Seconds()), int(maxTTL.Seconds())))
			}
		}
	}
	if observed := time.Duration(b.observedLifetime.Load()); observed > 0 && role.TTL > observed {
		warnings = append(warnings, fmt.Sprintf("ttl of %d seconds exceeds the lifetime of the upstream's tokens (%d seconds when last minted); leases will be capped to the token's lifetime.", int(role.TTL.Seconds()), int(observed.Seconds())))
	}
	if role.Strategy == strategyRefresh {
		warnings = append(warnings, "strategy refresh rotates the root grant on every mint, and upstreams such as Hydra revoke the previous access token at each rotation, so a token of this role lives only until the next mint or scheduled rotation.")
	}
	return warnings
}

func (b *backend) pathRoleDelete(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	name := d.Get("name").(string)
	err := req.Storage.Delete(ctx, roleStoragePrefix+name)
	b.roles.set(name, nil)
	if err != nil {
		return nil, fmt.Errorf("deleting role: %w", err)
	}
	return nil, nil
}

func (b *backend) pathRoleList(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	names, err := req.Storage.List(ctx, roleStoragePrefix)
	if err != nil {
		return nil, fmt.Errorf("listing roles: %w", err)
	}
	return logical.ListResponse(names), nil
}

// roleCache keeps decoded roles in memory, because every mint reads its role
// and a storage read is a round trip from the plugin to Vault. Writes on
// this node update it; writes on other nodes reach it through Invalidate.
type roleCache struct {
	mu    sync.Mutex
	roles map[string]*roleEntry
}

// get returns a copy of a cached role.
func (c *roleCache) get(name string) (*roleEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	role, ok := c.roles[name]
	if !ok {
		return nil, false
	}
	return role.clone(), true
}

// set caches a copy of role, or drops name when role is nil.
func (c *roleCache) set(name string, role *roleEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.setLocked(name, role)
}

func (c *roleCache) setLocked(name string, role *roleEntry) {
	if role == nil {
		delete(c.roles, name)
		return
	}
	if c.roles == nil {
		c.roles = map[string]*roleEntry{}
	}
	c.roles[name] = role.clone()
}

// clone returns a deep copy of the role.
func (r *roleEntry) clone() *roleEntry {
	c := *r
	c.Scopes = slices.Clone(r.Scopes)
	c.Audience = slices.Clone(r.Audience)
	return &c
}

// getRole reads a role, or returns nil when it does not exist.
func (b *backend) getRole(ctx context.Context, s logical.Storage, name string) (*roleEntry, error) {
	if role, ok := b.roles.get(name); ok {
		return role, nil
	}

	// The read runs under the cache's lock, so a concurrent putRole cannot
	// be overwritten by the older value this read returns.
	b.roles.mu.Lock()
	defer b.roles.mu.Unlock()
	entry, err := s.Get(ctx, roleStoragePrefix+name)
	if err != nil {
		return nil, fmt.Errorf("reading role %q: %w", name, err)
	}
	if entry == nil {
		return nil, nil
	}
	role := &roleEntry{}
	if err := entry.DecodeJSON(role); err != nil {
		return nil, fmt.Errorf("decoding role %q: %w", name, err)
	}
	if role.Strategy == "" {
		role.Strategy = strategyClientCredentials
	}
	b.roles.setLocked(name, role)
	return role, nil
}

func (b *backend) putRole(ctx context.Context, s logical.Storage, name string, role *roleEntry) error {
	entry, err := logical.StorageEntryJSON(roleStoragePrefix+name, role)
	if err != nil {
		return fmt.Errorf("encoding role %q: %w", name, err)
	}
	if err := s.Put(ctx, entry); err != nil {
		b.roles.set(name, nil)
		return fmt.Errorf("storing role %q: %w", name, err)
	}
	b.roles.set(name, role)
	return nil
}

const pathRoleHelpSynopsis = `Manage the recipes of CI tokens.`

const pathRoleHelpDescription = `
A role names how a CI token is minted (strategy), what it may do (scopes,
audience) and how long its lease lasts (ttl, max_ttl). Vault policies decide
who may use a role at creds/<name>. Durations read back as integer seconds.
`
