package backend

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

const secretTypeCIToken = "ci_token"

// maxRevocationTimeout bounds one revocation request, so that a slow
// upstream cannot hold up Vault's revocation queue.
const maxRevocationTimeout = 10 * time.Second

// tokenRevocation is a lease's internal data: everything that revoking the
// token needs, so that deleting the role or changing config strands no
// lease. Vault keeps it encrypted in its lease store and never returns it.
type tokenRevocation struct {
	AccessToken        string    `json:"access_token"`
	TokenID            string    `json:"token_id"`
	RecordKey          string    `json:"record_key"`
	Role               string    `json:"role"`
	Strategy           string    `json:"strategy"`
	TokenExpiresAt     time.Time `json:"token_expires_at"`
	RevocationEndpoint string    `json:"revocation_endpoint"`
	ClientID           string    `json:"client_id"`
	ClientSecret       string    `json:"client_secret"`
	ClientAuthMethod   string    `json:"client_auth_method"`
	CAPEM              string    `json:"ca_pem,omitempty"`
	TLSMinVersion      string    `json:"tls_min_version,omitempty"`
}

// revocationData captures what revoking tok will need.
func revocationData(cfg *engineConfig, role *roleEntry, roleName string, tok *upstream.Token, expiresAt time.Time) *tokenRevocation {
	return &tokenRevocation{
		AccessToken:        tok.AccessToken,
		TokenID:            tokenID(tok.AccessToken),
		RecordKey:          leaseRecordKey(expiresAt, tokenID(tok.AccessToken)),
		Role:               roleName,
		Strategy:           role.Strategy,
		TokenExpiresAt:     expiresAt.UTC(),
		RevocationEndpoint: cfg.revocationURL(),
		ClientID:           cfg.ClientID,
		ClientSecret:       cfg.ClientSecret,
		ClientAuthMethod:   cfg.ClientAuthMethod,
		CAPEM:              cfg.CAPEM,
		TLSMinVersion:      cfg.TLSMinVersion,
	}
}

// toMap converts the record to the map form that leases store.
func (r *tokenRevocation) toMap() map[string]interface{} {
	m := map[string]interface{}{}
	_ = mapToStruct(r, &m)
	return m
}

// mapToStruct converts between maps and structs through JSON, as leases
// and WAL entries store plain maps.
func mapToStruct(from, to interface{}) error {
	data, err := json.Marshal(from)
	if err != nil {
		return err
	}
	return json.Unmarshal(data, to)
}

// secretCIToken is the secret type of leases from creds/<role>.
func secretCIToken(b *backend) *framework.Secret {
	return &framework.Secret{
		Type: secretTypeCIToken,
		Fields: map[string]*framework.FieldSchema{
			"access_token": {Type: framework.TypeString, Description: "The CI token."},
			"token_type":   {Type: framework.TypeString, Description: "Token type, normally Bearer."},
			"expires_at":   {Type: framework.TypeString, Description: "End of the lease, RFC 3339 UTC."},
			"scope":        {Type: framework.TypeString, Description: "Scope granted by the upstream."},
			"audience":     {Type: framework.TypeStringSlice, Description: "Audiences requested."},
			"role":         {Type: framework.TypeString, Description: "Role the token was minted for."},
			"token_id":     {Type: framework.TypeString, Description: "Non-secret fingerprint of the token."},
		},
		Renew:  b.secretCITokenRenew,
		Revoke: b.secretCITokenRevoke,
	}
}

// secretCITokenRenew extends a lease within the token's real lifetime.
func (b *backend) secretCITokenRenew(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var data tokenRevocation
	if err := mapToStruct(req.Secret.InternalData, &data); err != nil {
		return nil, fmt.Errorf("decoding lease data: %w", err)
	}

	now := b.now().UTC()
	remaining := data.TokenExpiresAt.Sub(now)
	usable := (remaining - expirySkew(remaining)).Truncate(time.Second)
	if usable < time.Second {
		return logical.ErrorResponse("the token expires at %s and cannot be renewed; fetch a new token from creds/%s", data.TokenExpiresAt.Format(time.RFC3339), data.Role), logical.ErrInvalidRequest
	}

	ttl := req.Secret.Increment
	if ttl <= 0 {
		ttl = req.Secret.TTL
	}
	resp := &logical.Response{Secret: req.Secret}
	if ttl <= 0 || ttl > usable {
		ttl = usable
		resp.AddWarning(fmt.Sprintf("TTL capped at %d seconds because the token expires at %s; fetch a new token after that.", int64(ttl.Seconds()), data.TokenExpiresAt.Format(time.RFC3339)))
	}
	resp.Secret.TTL = ttl
	resp.Secret.Renewable = ttl < usable
	return resp, nil
}

// secretCITokenRevoke revokes the token upstream when its lease ends.
func (b *backend) secretCITokenRevoke(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	var data tokenRevocation
	if err := mapToStruct(req.Secret.InternalData, &data); err != nil {
		// Such a lease can never be revoked; Vault must be able to drop it.
		return nil, fmt.Errorf("decoding lease data: %w: %w", err, logical.ErrUnrecoverable)
	}
	if err := b.revokeUpstream(ctx, req.Storage, &data); err != nil {
		return nil, err
	}
	if err := b.deleteLeaseRecord(ctx, req.Storage, &data); err != nil {
		return nil, err
	}
	return nil, nil
}

// deleteLeaseRecord removes the record of a revoked token.
func (b *backend) deleteLeaseRecord(ctx context.Context, s logical.Storage, data *tokenRevocation) error {
	if data.RecordKey == "" {
		return nil
	}
	if err := s.Delete(ctx, data.RecordKey); err != nil {
		return fmt.Errorf("deleting lease record: %w", err)
	}
	return nil
}

// revokeUpstream revokes one token at the upstream, treating every outcome
// that leaves the token unusable as success. Transient failures return an
// error, so the lease stays and a later attempt retries. When the upstream
// rejects the client credentials stored in the lease, the credentials of the
// current config are tried, which covers a rotated client secret. A nil s
// skips that. A rejection that no credential can fix is logged at
// Error and counts as done: Vault 1.21 does not let a lease that fails with
// logical.ErrUnrecoverable go when a mount is disabled, and the token
// expires on its own.
func (b *backend) revokeUpstream(ctx context.Context, s logical.Storage, data *tokenRevocation) error {
	switch {
	case data.Strategy == strategyRefresh:
		// Revoking an access token of the root grant's chain makes Hydra
		// (and any upstream that revokes by grant, as RFC 7009 permits)
		// revoke the root grant itself. The next rotation revokes it
		// instead, and it expires on its own.
		b.Logger().Debug("lease of a refresh role ended; the token is left to expire", "token_id", data.TokenID)
		return nil
	case !data.TokenExpiresAt.IsZero() && b.now().After(data.TokenExpiresAt):
		return nil
	case data.RevocationEndpoint == "":
		if b.noRevocationLogged.CompareAndSwap(false, true) {
			b.Logger().Info("the upstream has no revocation endpoint; tokens expire on their own when leases end")
		}
		return nil
	}

	ctx, cancel := context.WithTimeout(ctx, maxRevocationTimeout)
	defer cancel()
	err := b.sendRevocation(ctx, data, data.credentials())
	if isClientRejected(err) {
		if current := b.currentCredentials(ctx, s, data); current != nil {
			b.Logger().Info("the upstream rejected the lease's client credentials; retrying with the current config", "token_id", data.TokenID)
			err = b.sendRevocation(ctx, data, *current)
		}
	}
	if err == nil {
		b.Logger().Debug("token revoked upstream", "token_id", data.TokenID, "role", data.Role)
		return nil
	}

	var upstreamErr *upstream.Error
	switch {
	case errors.As(err, &upstreamErr) && upstreamErr.Class == upstream.Terminal && (upstreamErr.Code == "invalid_token" || upstreamErr.Code == "unsupported_token_type"):
		// The upstream does not know the token or cannot revoke its type:
		// either way it ends with the token's own expiry.
		b.Logger().Info("upstream declined revocation; the token expires on its own", "token_id", data.TokenID, "code", upstreamErr.Code)
		return nil
	case errors.As(err, &upstreamErr) && upstreamErr.Class == upstream.Terminal, errors.Is(err, errUnusableLease):
		b.Logger().Error("revocation rejected, so the token stays valid upstream until it expires; revoke it at the upstream",
			"token_id", data.TokenID, "role", data.Role, "token_expires_at", data.TokenExpiresAt.Format(time.RFC3339), "error", err)
		return nil
	default:
		b.Logger().Warn("revocation failed; the lease is kept for another attempt", "token_id", data.TokenID, "role", data.Role, "error", err)
		return fmt.Errorf("revoking token %s: %w", data.TokenID, err)
	}
}

// errUnusableLease means the lease's revocation data cannot build a client.
var errUnusableLease = errors.New("the lease's TLS settings are unusable")

// sendRevocation sends one RFC 7009 request with creds.
func (b *backend) sendRevocation(ctx context.Context, data *tokenRevocation, creds upstream.Credentials) error {
	httpClient, err := b.revocationClient(data)
	if err != nil {
		return fmt.Errorf("%w: %w", errUnusableLease, err)
	}
	return upstream.Revoke(ctx, httpClient, data.RevocationEndpoint, creds, data.AccessToken, "access_token")
}

// credentials returns the client credentials stored in the lease.
func (r *tokenRevocation) credentials() upstream.Credentials {
	return upstream.Credentials{ClientID: r.ClientID, ClientSecret: r.ClientSecret, AuthMethod: r.ClientAuthMethod}
}

// isClientRejected reports whether the upstream refused the client's
// authentication.
func isClientRejected(err error) bool {
	var upstreamErr *upstream.Error
	return errors.As(err, &upstreamErr) && (upstreamErr.Code == "invalid_client" || upstreamErr.Code == "unauthorized_client")
}

// currentCredentials returns the config's credentials when they belong to
// the same client as the lease's and differ from them, else nil. Only the
// same client may revoke a token: RFC 7009 servers ignore another client's
// request for it.
func (b *backend) currentCredentials(ctx context.Context, s logical.Storage, data *tokenRevocation) *upstream.Credentials {
	if s == nil {
		return nil
	}
	eng, err := b.getEngine(ctx, s)
	if err != nil || eng == nil {
		return nil
	}
	current := eng.cfg.credentials()
	if current.ClientID != data.ClientID || current == data.credentials() {
		return nil
	}
	return &current
}

// revocationClients caches HTTP clients by TLS settings, so revocations
// reuse connections without reading the config.
var revocationClients sync.Map // map[upstream.TLSOptions]*http.Client

// revocationClient returns a pooled client for the TLS settings in data.
func (b *backend) revocationClient(data *tokenRevocation) (*http.Client, error) {
	cfg := &engineConfig{CAPEM: data.CAPEM, TLSMinVersion: data.TLSMinVersion}
	opts := cfg.tlsOptions()
	if cached, ok := revocationClients.Load(opts); ok {
		return cached.(*http.Client), nil
	}
	httpClient, err := upstream.NewHTTPClient(opts, maxRevocationTimeout)
	if err != nil {
		return nil, err
	}
	actual, _ := revocationClients.LoadOrStore(opts, httpClient)
	return actual.(*http.Client), nil
}
