package backend

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/vault/sdk/logical"
)

// leaseRecordPrefix holds one small entry per outstanding CI token, keyed
// "<token expiry, unix seconds>-<token_id>", so that config delete can tell
// whether leases are outstanding and expired entries can be dropped by key
// alone. Entries carry no secret.
const leaseRecordPrefix = "leases/"

// maxLeaseRecordsPurged bounds the expired entries one periodic tick
// deletes, so a backlog never makes a tick slow.
const maxLeaseRecordsPurged = 1000

// leaseRecord is the stored entry of an outstanding CI token.
type leaseRecord struct {
	Role      string    `json:"role"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// leaseRecordKey returns the storage key of a token's record.
func leaseRecordKey(expiresAt time.Time, id string) string {
	return leaseRecordPrefix + strconv.FormatInt(expiresAt.Unix(), 10) + "-" + strings.TrimPrefix(id, "sha256:")
}

// putLeaseRecord stores the record of a minted token.
func putLeaseRecord(ctx context.Context, s logical.Storage, key string, record *leaseRecord) error {
	entry, err := logical.StorageEntryJSON(key, record)
	if err != nil {
		return fmt.Errorf("encoding lease record: %w", err)
	}
	if err := s.Put(ctx, entry); err != nil {
		return fmt.Errorf("storing lease record: %w", err)
	}
	return nil
}

// recordExpiry returns the token expiry encoded in a record key.
func recordExpiry(key string) (time.Time, bool) {
	unix, _, found := strings.Cut(key, "-")
	if !found {
		return time.Time{}, false
	}
	seconds, err := strconv.ParseInt(unix, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(seconds, 0), true
}

// countOutstandingLeases returns how many minted tokens have not expired and
// were not revoked.
func countOutstandingLeases(ctx context.Context, s logical.Storage, now time.Time) (int, error) {
	keys, err := s.List(ctx, leaseRecordPrefix)
	if err != nil {
		return 0, fmt.Errorf("listing lease records: %w", err)
	}
	count := 0
	for _, key := range keys {
		if expiry, ok := recordExpiry(key); !ok || expiry.After(now) {
			count++
		}
	}
	return count, nil
}

// purgeExpiredLeaseRecords deletes records of tokens that expired, which
// remain when a lease was dropped without revocation (for example a mint
// whose response was lost).
func (b *backend) purgeExpiredLeaseRecords(ctx context.Context, s logical.Storage) error {
	keys, err := s.List(ctx, leaseRecordPrefix)
	if err != nil {
		return fmt.Errorf("listing lease records: %w", err)
	}
	now := b.now()
	purged := 0
	for _, key := range keys {
		if purged >= maxLeaseRecordsPurged {
			break
		}
		expiry, ok := recordExpiry(key)
		if ok && expiry.After(now) {
			continue
		}
		if err := s.Delete(ctx, leaseRecordPrefix+key); err != nil {
			return fmt.Errorf("deleting lease record: %w", err)
		}
		purged++
	}
	if purged > 0 {
		b.Logger().Debug("purged lease records of expired tokens", "count", purged)
	}
	return nil
}
