// Package backend implements ci-tokens, a Vault secrets engine that mints
// short-lived, leased CI tokens from an upstream OAuth 2.0 authorization
// server while it keeps the one long-lived credential, the root refresh
// token, inside Vault and rotates it on a schedule.
package backend

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/vault/sdk/framework"
	"github.com/hashicorp/vault/sdk/helper/consts"
	"github.com/hashicorp/vault/sdk/helper/salt"
	"github.com/hashicorp/vault/sdk/logical"
)

// Version is the plugin version that Vault registers and mounts. The
// Makefile sets it with -ldflags "-X .../backend.Version=...".
var Version = "v0.1.0"

// walRollbackMinAge is the minimum age of a WAL entry before Vault's
// rollback manager hands it to walRollback. It is longer than the longest request the
// engine makes (maxRequestTimeout plus the ambiguous retry), so a rollback
// never races a request that is still running.
const walRollbackMinAge = 5 * time.Minute

// backend is the ci-tokens engine for one mount.
type backend struct {
	*framework.Backend

	// rootMu is held for every change of the root grant: at most one
	// upstream refresh of it is in flight per mount.
	rootMu sync.Mutex

	// pendingRoot is a root grant that the upstream rotated but storage did
	// not accept. It is the newest refresh token and is stored again before
	// anything else uses the grant.
	pendingRoot atomic.Pointer[rootGrant]

	// clients caches the upstream client built from the stored config.
	clients clientCache

	// roles caches decoded roles.
	roles roleCache

	// mountTTLCache holds the mount's lease TTLs read last.
	mountTTLCache atomic.Pointer[mountTTLs]

	saltMu sync.RWMutex
	salt   *salt.Salt

	// noRevocationLogged makes the "no revocation endpoint" notice appear once.
	noRevocationLogged atomic.Bool

	// tokensMinted and mintFailures count mints by this plugin process,
	// and lastMintFailure is the most recent failure, for status.
	tokensMinted    atomic.Int64
	mintFailures    atomic.Int64
	lastMintFailure atomic.Pointer[mintFailure]

	// observedLifetime is the lifetime of the last minted token, in
	// nanoseconds, for the warning on role writes that ask for more.
	observedLifetime atomic.Int64

	// background runs the deletes of mint WAL entries that outlive their
	// request; clean waits for them.
	background backgroundTasks

	// now is the clock, replaceable in tests.
	now func() time.Time
}

// Factory returns a configured ci-tokens backend; Vault calls it when the
// plugin is mounted.
func Factory(ctx context.Context, conf *logical.BackendConfig) (logical.Backend, error) {
	b := newBackend()
	if conf.System != nil {
		conf.System = &cachedSystemView{SystemView: conf.System}
	}
	if err := b.Setup(ctx, conf); err != nil {
		return nil, err
	}
	return b, nil
}

// newBackend wires the paths, the secret type and the periodic function.
func newBackend() *backend {
	b := &backend{now: time.Now}
	b.Backend = &framework.Backend{
		Help:        strings.TrimSpace(backendHelp),
		BackendType: logical.TypeLogical,
		PathsSpecial: &logical.Paths{
			SealWrapStorage: []string{configStoragePath, rootStoragePath, "wal/"},
		},
		Paths: framework.PathAppend(
			[]*framework.Path{
				pathConfig(b),
				pathRotateRoot(b),
				pathStatus(b),
				pathSeed(b),
			},
			pathRoles(b),
			[]*framework.Path{pathCreds(b)},
		),
		Secrets:           []*framework.Secret{secretCIToken(b)},
		PeriodicFunc:      b.periodic,
		InitializeFunc:    b.recoverInterruptedRotations,
		WALRollback:       b.walRollback,
		WALRollbackMinAge: walRollbackMinAge,
		Invalidate:        b.invalidate,
		Clean:             b.clean,
		RunningVersion:    Version,
	}
	return b
}

// replicationStateTTL is how long cachedSystemView reuses a replication
// state. The state changes only when the node's replication or HA role
// changes, and the TTL bounds how long a request may see the previous one.
const replicationStateTTL = time.Second

// cachedSystemView saves the two calls to Vault the SDK makes before every
// request. For an external plugin each call is a round trip to the Vault
// process on the request's critical path. Whether the mount is local is
// fixed when the mount is created, so the first value is kept for good. The
// replication state is kept for replicationStateTTL. Writes that the engine
// starts on its own (the periodic rotation) check the state with
// writeSafeNow, which does not use the cache.
type cachedSystemView struct {
	logical.SystemView

	localOnce sync.Once
	local     bool

	stateMu      sync.Mutex
	state        consts.ReplicationState
	stateFetched time.Time
}

// LocalMount returns the value the wrapped system view reported first.
func (v *cachedSystemView) LocalMount() bool {
	v.localOnce.Do(func() { v.local = v.SystemView.LocalMount() })
	return v.local
}

// ReplicationState returns the wrapped system view's state, reading it
// again once the cached value is older than replicationStateTTL.
func (v *cachedSystemView) ReplicationState() consts.ReplicationState {
	v.stateMu.Lock()
	defer v.stateMu.Unlock()
	if time.Since(v.stateFetched) >= replicationStateTTL {
		v.state = v.SystemView.ReplicationState()
		v.stateFetched = time.Now()
	}
	return v.state
}

// expireReplicationState makes the next ReplicationState call read the
// state from Vault.
func (v *cachedSystemView) expireReplicationState() {
	v.stateMu.Lock()
	defer v.stateMu.Unlock()
	v.stateFetched = time.Time{}
}

// writeSafeNow reports, with the SDK's WriteSafeReplicationState, whether
// this node may write the mount's shared storage, from the replication
// state Vault reports now rather than a cached one.
func (b *backend) writeSafeNow() bool {
	if cached, ok := b.System().(*cachedSystemView); ok {
		cached.expireReplicationState()
	}
	return b.WriteSafeReplicationState()
}

// invalidate drops cached state when another node changes storage.
func (b *backend) invalidate(_ context.Context, key string) {
	if name, ok := strings.CutPrefix(key, roleStoragePrefix); ok {
		b.roles.set(name, nil)
		return
	}
	switch key {
	case configStoragePath:
		b.clients.reset()
	case salt.DefaultLocation:
		b.saltMu.Lock()
		b.salt = nil
		b.saltMu.Unlock()
	}
}

// clean closes idle upstream connections when the mount is unloaded.
func (b *backend) clean(context.Context) {
	b.background.wait()
	b.clients.reset()
}

// getSalt returns the mount's salt, creating it on first use. Salted hashes
// let the engine recognise a refresh token it has seen without storing it.
func (b *backend) getSalt(ctx context.Context, s logical.Storage) (*salt.Salt, error) {
	b.saltMu.RLock()
	if b.salt != nil {
		defer b.saltMu.RUnlock()
		return b.salt, nil
	}
	b.saltMu.RUnlock()

	b.saltMu.Lock()
	defer b.saltMu.Unlock()
	if b.salt != nil {
		return b.salt, nil
	}
	created, err := salt.NewSalt(ctx, s, &salt.Config{
		HashFunc: salt.SHA256Hash,
		Location: salt.DefaultLocation,
	})
	if err != nil {
		return nil, err
	}
	b.salt = created
	return created, nil
}

const backendHelp = `
The ci-tokens secrets engine mints short-lived, leased tokens for CI/CD jobs
from an upstream OAuth 2.0 authorization server. It holds one OAuth 2.0
client and one root grant (a refresh token seeded once by an operator),
rotates the root refresh token on a schedule, and revokes each CI token
upstream (RFC 7009) when its lease ends.

Configure the upstream at "config", describe CI tokens at "roles/<name>",
and mint them with "vault write <mount>/creds/<name>".
`
