package backend

import (
	"context"
	"errors"
	"strings"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"

	"github.com/ci-tokens/vault-plugin-secrets-ci-tokens/backend/upstream"
)

// deviceCodeGrantType is the grant type of RFC 8628 section 3.4.
const deviceCodeGrantType = "urn:ietf:params:oauth:grant-type:device_code"

// pathSeed returns the seed path, where the seeding command hands over an
// authorization so that the engine redeems it itself: the resulting refresh
// token never leaves Vault.
func pathSeed(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "seed",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "ci-tokens",
			OperationVerb:   "seed",
			OperationSuffix: "root",
		},
		Fields: map[string]*framework.FieldSchema{
			"code": {
				Type:         framework.TypeString,
				Description:  "Authorization code from the upstream's redirect.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"code_verifier": {
				Type:         framework.TypeString,
				Description:  "PKCE code verifier (RFC 7636) that matches the code challenge of the authorization request.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
			"redirect_uri": {
				Type:        framework.TypeString,
				Description: "Redirect URI of the authorization request.",
			},
			"device_code": {
				Type:         framework.TypeString,
				Description:  "RFC 8628 device code, in place of code. Answers 400 with authorization_pending until the user approves.",
				DisplayAttrs: &framework.DisplayAttributes{Sensitive: true},
			},
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathSeedWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Seed the root grant from an authorization code or a device code.",
		HelpDescription: "The engine exchanges the code with its own client credentials and keeps the refresh token it receives as the new root grant. Answers with generation and state.",
	}
}

func (b *backend) pathSeedWrite(ctx context.Context, req *logical.Request, d *framework.FieldData) (*logical.Response, error) {
	code := d.Get("code").(string)
	verifier := d.Get("code_verifier").(string)
	redirectURI := d.Get("redirect_uri").(string)
	deviceCode := d.Get("device_code").(string)

	switch {
	case code == "" && deviceCode == "":
		return logical.ErrorResponse("code: missing; pass code (with code_verifier and redirect_uri) or device_code"), logical.ErrInvalidRequest
	case code != "" && deviceCode != "":
		return logical.ErrorResponse("device_code: pass either code or device_code, not both"), logical.ErrInvalidRequest
	case code != "" && redirectURI == "":
		return logical.ErrorResponse("redirect_uri: missing; it must equal the one of the authorization request"), logical.ErrInvalidRequest
	}
	eng, err := b.getEngine(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), logical.ErrInvalidRequest
	}

	// The lock is held across the exchange, so that two writes of the same
	// code cannot both reach the upstream: a replayed code makes most
	// upstreams revoke the tokens issued for it.
	b.rootMu.Lock()
	defer b.rootMu.Unlock()
	prep, err := b.prepareExchange(ctx, req.Storage, code+deviceCode)
	if err != nil {
		return nil, err
	}
	if prep.root.hasSeen(prep.codeHash) {
		resp := seedResponse(prep.root, "")
		resp.AddWarning("The code was already exchanged; the root grant is unchanged.")
		return resp, nil
	}

	// Like a refresh, a sent exchange must finish even if the caller gives
	// up, because its response carries the only copy of the new token.
	sendCtx := context.WithoutCancel(ctx)
	var tok *upstream.Token
	if deviceCode != "" {
		tok, err = eng.client.Exchange(sendCtx, deviceCodeGrantType, map[string]string{"device_code": deviceCode})
	} else {
		tok, err = eng.client.ExchangeCode(sendCtx, code, verifier, redirectURI)
	}
	var upstreamErr *upstream.Error
	if errors.As(err, &upstreamErr) {
		field := "code"
		if deviceCode != "" {
			field = "device_code"
		}
		return logical.ErrorResponse("%s: %s", field, upstreamErr), logical.ErrInvalidRequest
	}
	if err != nil {
		return nil, err
	}
	if tok.RefreshToken == "" {
		return logical.ErrorResponse("code: the upstream returned no refresh token; request the offline_access scope (or the upstream's equivalent) in the authorization"), logical.ErrInvalidRequest
	}

	root, err := b.installExchangedGrant(ctx, req.Storage, prep, tok)
	if err != nil {
		return nil, err
	}
	return seedResponse(root, tok.Scope), nil
}

// seedResponse returns the non-secret result of a seed write.
func seedResponse(root *rootGrant, scope string) *logical.Response {
	return &logical.Response{Data: map[string]interface{}{
		"generation": root.Generation,
		"state":      root.State,
		"scope":      strings.TrimSpace(scope),
	}}
}
