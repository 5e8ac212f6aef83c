package backend

import (
	"context"
	"fmt"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/logical"
)

// nextRotation returns when the grant that last rotated at last is due
// next, computed only from stored state so that restarts, leader changes and
// missed ticks neither skip nor repeat a rotation. It returns zero when
// automated rotation is off.
//
// With a rotation_window, a scheduled time may run until the window closes;
// once it has closed the next scheduled time applies. Without one, a missed
// time is caught up at the next tick.
func nextRotation(cfg *engineConfig, last, now time.Time) (time.Time, error) {
	if cfg.DisableAutomatedRotation {
		return time.Time{}, nil
	}
	sched, err := cfg.schedule()
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing rotation_schedule: %w", err)
	}
	if sched == nil {
		return last.Add(cfg.RotationPeriod), nil
	}

	from := last
	if cfg.RotationWindow > 0 {
		if windowStart := now.Add(-cfg.RotationWindow); windowStart.After(from) {
			from = windowStart
		}
	}
	// cron's Next returns the first time strictly after its argument, and
	// schedules are interpreted in UTC.
	return sched.Next(from.UTC()), nil
}

// rootDueAt returns when the root grant should rotate next, including the
// backoff after a transient failure; zero means never.
func rootDueAt(cfg *engineConfig, root *rootGrant, now time.Time) (time.Time, error) {
	if root == nil || root.RefreshToken == "" || root.terminal() {
		return time.Time{}, nil
	}
	return dueAt(cfg, root.LastRotatedAt, root.RetryAt, root.RotateNow, now)
}

// standbyDueAt returns when the standby grant should rotate next; zero
// means never.
func standbyDueAt(cfg *engineConfig, standby *standbyGrant, now time.Time) (time.Time, error) {
	if standby == nil || standby.RefreshToken == "" || standby.State != stateHealthy {
		return time.Time{}, nil
	}
	return dueAt(cfg, standby.LastRotatedAt, standby.RetryAt, standby.RotateNow, now)
}

// dueAt returns when a grant last rotated at last is due, no earlier than
// retryAt. A grant whose rotation was interrupted is due now, even with
// automated rotation off, because the upstream's grace period for the
// spent token may be short. The backoff still applies after such a retry
// failed, so a broken upstream is not asked on every tick.
func dueAt(cfg *engineConfig, last, retryAt time.Time, rotateNow bool, now time.Time) (time.Time, error) {
	due := now
	if !rotateNow {
		next, err := nextRotation(cfg, last, now)
		if err != nil || next.IsZero() {
			return next, err
		}
		due = next
	}
	if retryAt.After(due) {
		due = retryAt
	}
	return due, nil
}

// periodic runs on every node once a minute (Vault's rollback manager). It
// rotates the root and standby grants when due, on the node whose storage is
// writable only.
func (b *backend) periodic(ctx context.Context, req *logical.Request) error {
	if !b.writeSafeNow() {
		return nil
	}
	cfg, err := b.getConfig(ctx, req.Storage)
	if err != nil || cfg == nil {
		return err
	}

	if err := b.rotateRootIfDue(ctx, req.Storage, cfg); err != nil {
		b.Logger().Warn("scheduled rotation of the root grant failed", "error", err)
	}
	if err := b.rotateStandbyIfDue(ctx, req.Storage, cfg); err != nil {
		b.Logger().Warn("scheduled rotation of the standby grant failed", "error", err)
	}
	if err := b.purgeExpiredLeaseRecords(ctx, req.Storage); err != nil {
		b.Logger().Warn("purging lease records failed", "error", err)
	}
	return nil
}

// rotateRootIfDue rotates the root grant when its time has come.
func (b *backend) rotateRootIfDue(ctx context.Context, s logical.Storage, cfg *engineConfig) error {
	root, err := b.getRoot(ctx, s)
	if err != nil || root == nil {
		return err
	}
	if pending := b.pendingRoot.Load(); pending != nil {
		b.rootMu.Lock()
		err := b.storePending(ctx, s)
		b.rootMu.Unlock()
		if err != nil {
			return err
		}
	}

	now := b.now()
	due, err := rootDueAt(cfg, root, now)
	if err != nil || due.IsZero() || now.Before(due) {
		return err
	}
	_, err = b.rotateRoot(ctx, s, root.Generation, "scheduled")
	return err
}

// walRollback handles WAL entries that Vault's rollback manager finds older
// than walRollbackMinAge: their request did not finish.
func (b *backend) walRollback(ctx context.Context, req *logical.Request, kind string, data interface{}) error {
	switch kind {
	case walKindRootRefresh:
		return b.rollbackRootRefresh(ctx, req.Storage, data)
	case walKindMint:
		return b.rollbackMint(ctx, req.Storage, data)
	default:
		// An unknown kind comes from a newer version; dropping it is safer
		// than keeping it forever.
		b.Logger().Warn("dropping WAL entry of unknown kind", "kind", kind)
		return nil
	}
}

// rollbackRootRefresh notes a refresh of the root or standby grant that
// was interrupted before its result was stored. The refresh token has
// already been marked as sent, so the next rotation classifies an
// invalid_grant as a lost response rather than reuse. The next tick
// retries at once, which an upstream with a rotation grace period still
// accepts.
func (b *backend) rollbackRootRefresh(ctx context.Context, s logical.Storage, data interface{}) error {
	var entry rootRefreshWAL
	if err := mapToStruct(data, &entry); err != nil {
		b.Logger().Warn("dropping malformed WAL entry", "kind", walKindRootRefresh, "error", err)
		return nil
	}

	b.rootMu.Lock()
	defer b.rootMu.Unlock()
	root, err := b.getRoot(ctx, s)
	if err != nil || root == nil {
		return err
	}
	switch {
	case entry.Slot == slotPrimary && root.Generation == entry.Generation:
		root.RetryAt = time.Time{}
		root.RotateNow = true
	case entry.Slot == slotStandby && root.Standby != nil && root.Standby.Generation == entry.Generation:
		root.Standby.RetryAt = time.Time{}
		root.Standby.RotateNow = true
	default:
		// The rotation finished after all, or the grant was replaced.
		return nil
	}
	b.Logger().Warn("found an interrupted rotation; retrying it", "slot", entry.Slot, "generation", entry.Generation, "started_at", entry.StartedAt.Format(time.RFC3339))
	return b.putRoot(ctx, s, root)
}

// recoverInterruptedRotations runs once when the mount is initialized on
// the active node: a root_refresh WAL entry present then was left by a
// previous process. Retrying at once matters for upstreams whose rotation
// grace period is shorter than walRollbackMinAge.
func (b *backend) recoverInterruptedRotations(ctx context.Context, req *logical.InitializationRequest) error {
	if !b.writeSafeNow() {
		return nil
	}
	ids, err := framework.ListWAL(ctx, req.Storage)
	if err != nil {
		return fmt.Errorf("listing WAL entries: %w", err)
	}
	for _, id := range ids {
		entry, err := framework.GetWAL(ctx, req.Storage, id)
		if err != nil || entry == nil || entry.Kind != walKindRootRefresh {
			continue
		}
		if err := b.rollbackRootRefresh(ctx, req.Storage, entry.Data); err != nil {
			return err
		}
		b.deleteWAL(ctx, req.Storage, id)
	}

	go func() {
		// The first tick of the rollback manager may be a minute away.
		cfg, err := b.getConfig(context.Background(), req.Storage)
		if err != nil || cfg == nil {
			return
		}
		if err := b.rotateRootIfDue(context.Background(), req.Storage, cfg); err != nil {
			b.Logger().Warn("rotation after an interrupted one failed", "error", err)
		}
		if err := b.rotateStandbyIfDue(context.Background(), req.Storage, cfg); err != nil {
			b.Logger().Warn("rotation of the standby grant after an interrupted one failed", "error", err)
		}
	}()
	return nil
}
