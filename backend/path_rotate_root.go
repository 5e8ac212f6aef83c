package backend

import (
	"context"
	"errors"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// pathRotateRoot returns the rotate-root path.
func pathRotateRoot(b *backend) *framework.Path {
	return &framework.Path{
		Pattern: "rotate-root",
		DisplayAttrs: &framework.DisplayAttributes{
			OperationPrefix: "ci-tokens",
			OperationVerb:   "rotate",
			OperationSuffix: "root",
		},
		Operations: map[logical.Operation]framework.OperationHandler{
			logical.UpdateOperation: &framework.PathOperation{
				Callback:                    b.pathRotateRootWrite,
				ForwardPerformanceStandby:   true,
				ForwardPerformanceSecondary: true,
			},
		},
		HelpSynopsis:    "Rotate the root refresh token now.",
		HelpDescription: "Redeems the root refresh token once and stores its replacement. Answers with generation, rotated_at and next_rotation_at, never a secret. A rotation that completes while this request waits for another one is shared, not repeated.",
	}
}

func (b *backend) pathRotateRootWrite(ctx context.Context, req *logical.Request, _ *framework.FieldData) (*logical.Response, error) {
	eng, err := b.getEngine(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if eng == nil {
		return logical.ErrorResponse(errNotConfigured.Error()), logical.ErrInvalidRequest
	}
	root, err := b.getRoot(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	if root == nil || root.RefreshToken == "" {
		return logical.ErrorResponse(errNoRootGrant.Error()), logical.ErrInvalidRequest
	}

	result, err := b.rotateRoot(ctx, req.Storage, root.Generation, "requested")
	if errors.Is(err, errNoRootGrant) || isGrantUnusable(err) {
		return logical.ErrorResponse(err.Error()), logical.ErrInvalidRequest
	}
	if err != nil {
		return nil, err
	}

	data := map[string]interface{}{
		"generation": result.Generation,
		"rotated_at": formatTime(result.RotatedAt),
	}
	rotated, err := b.getRoot(ctx, req.Storage)
	if err != nil {
		return nil, err
	}
	next, err := rootDueAt(eng.cfg, rotated, b.now())
	if err != nil {
		return nil, err
	}
	data["next_rotation_at"] = formatTime(next)
	return &logical.Response{Data: data}, nil
}

// formatTime renders t as RFC 3339 UTC, or nil for the zero time.
func formatTime(t time.Time) interface{} {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format(time.RFC3339)
}
