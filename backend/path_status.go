package backend

import (
	"context"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// pathStatus returns the status path.
func pathStatus(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "status",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "ci-tokens",
			OperationVerb:   "read",
			OperationSuffix: "status",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.ReadOperation: &framework.PathOperation{Callback: b.pathStatusRead},
		},
		HelpSynopsis:    "Report the health of the root grant.",
		HelpDescription: pathStatusHelpDescription,
	}
}

func (b *backend) pathStatusRead(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	root, err := b.getRoot(ctx, req.Storage)
	if err != nil {
		return nil, err
	}

	data := map[string]interface{}{
		"state":                   stateUnconfigured,
		"generation":              int64(0),
		"last_rotated_at":         nil,
		"next_rotation_at":        nil,
		"consecutive_failures":    0,
		"last_error":              "",
		"last_error_at":           nil,
		"standby_state":           "none",
		"rotation_held_in_memory": b.pendingRoot.Load() != nil,
		"tokens_minted":           b.tokensMinted.Load(),
		"mint_failures":           b.mintFailures.Load(),
		"last_mint_error":         "",
		"last_mint_error_at":      nil,
	}
	if failure := b.lastMintFailure.Load(); failure != nil {
		data["last_mint_error"] = failure.message
		data["last_mint_error_at"] = formatTime(failure.at)
	}
	if root == nil || cfg == nil || root.RefreshToken == "" {
		return &logical.Response{Data: data}, nil
	}

	next, err := rootDueAt(cfg, root, b.now())
	if err != nil {
		return nil, err
	}
	data["state"] = root.State
	data["generation"] = root.Generation
	data["last_rotated_at"] = formatTime(root.LastRotatedAt)
	data["next_rotation_at"] = formatTime(next)
	data["consecutive_failures"] = root.ConsecutiveFailures
	data["last_error"] = root.LastError
	data["last_error_at"] = formatTime(root.LastErrorAt)
	data["standby_state"] = standbyState(root)

	resp := &logical.Response{Data: data}
	if root.terminal() {
		resp.AddWarning("The root grant needs an operator: seed a new refresh token with \"vault write <mount>/config refresh_token=...\" or the ci-tokens-seed command.")
	}
	if root.StandbyNeeded {
		resp.AddWarning("The standby grant was promoted after the root grant failed; seed a new standby_refresh_token.")
	}
	return resp, nil
}

// standbyState summarises the standby grant for status.
func standbyState(root *rootGrant) string {
	switch {
	case root.Standby != nil:
		return root.Standby.State
	case root.StandbyNeeded:
		return "promoted"
	default:
		return "none"
	}
}

const pathStatusHelpDescription = `
Reports the root grant: state (unconfigured, healthy, degraded, needs_reseed
or compromised), generation, last_rotated_at, next_rotation_at,
consecutive_failures, last_error (without secrets), the standby grant's
state, whether a rotated token is held in memory because storage failed, and
how many tokens this plugin process minted or failed to mint since it
started, with the last mint error.
`
