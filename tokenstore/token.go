// Package tokenstore holds OAuth 2.0 token sets and the stores that keep them:
// the Token type, the Store interface and a bigcache-backed in-memory store.
//
// A Token's expiry lives inside the stored value: bigcache has no per-entry
// TTL and its Get does not look at time, so every store checks the expiry
// itself on read.
//
// See also: middleware (the Gate that uses these stores),
// middleware/tasknationtest (a fake TaskNation server) and caddymodule.
package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token is one token set as issued by an authorization server.
//
// The zero value is not a usable token. Tokens are values: a Store returns a
// fresh copy, and callers must not share one across goroutines while
// mutating it.
type Token struct {
	// AccessToken is the bearer credential sent to the API.
	AccessToken string
	// TokenType is the type as the server sent it ("Bearer", "bearer").
	TokenType string
	// RefreshToken renews the set; empty for client_credentials.
	RefreshToken string
	// Expiry is when the access token stops being valid (server time as
	// seen by this process when the request was sent, plus expires_in).
	Expiry time.Time
	// RefreshExpiry is when the refresh token stops being valid (for
	// TaskNation 180 days after the grant); zero when unknown or none.
	RefreshExpiry time.Time
	// Scopes are the scopes the server granted, in its order.
	Scopes []string
	// ObtainedAt is when the token request that produced this set was sent.
	ObtainedAt time.Time
	// ConnectedAt is when the user connected: the authorization_code grant
	// this set descends from (rotations keep it). Zero when unknown (sets
	// stored before it was recorded, client_credentials).
	ConnectedAt time.Time
	// Version changes on every refresh; a caller that saw a token fail can
	// invalidate exactly that version and not a newer one.
	Version uint64
}

// Valid reports whether the access token is present and not expired at now.
func (t *Token) Valid(now time.Time) bool {
	return t != nil && t.AccessToken != "" && now.Before(t.Expiry)
}

// Lifetime is how long the access token was issued for.
func (t *Token) Lifetime() time.Duration { return t.Expiry.Sub(t.ObtainedAt) }

// Usable reports whether anything in the set can still be used at now: a
// valid access token, or a refresh token that has not run out.
func (t *Token) Usable(now time.Time) bool {
	if t.Valid(now) {
		return true
	}
	return t.RefreshToken != "" && (t.RefreshExpiry.IsZero() || now.Before(t.RefreshExpiry))
}

// HasScope reports whether scope was granted.
func (t *Token) HasScope(scope string) bool {
	for _, s := range t.Scopes {
		if s == scope {
			return true
		}
	}
	return false
}

// String never prints a credential: tokens end up in logs by accident
// through %v, and this keeps them out.
func (t Token) String() string {
	var b strings.Builder
	b.WriteString("Token{type=")
	b.WriteString(t.TokenType)
	b.WriteString(" expiry=")
	b.WriteString(t.Expiry.UTC().Format(time.RFC3339))
	if t.RefreshToken != "" {
		b.WriteString(" refresh=yes")
	}
	b.WriteString(" scopes=")
	b.WriteString(strings.Join(t.Scopes, " "))
	b.WriteString("}")
	return b.String()
}

// GoString is String, so %#v does not print credentials either.
func (t Token) GoString() string { return t.String() }

// ErrNotFound is returned by Get when a store holds no usable token for a key.
var ErrNotFound = errors.New("tokenstore: token not found")

// ErrExpired is returned by Get (instead of plain ErrNotFound, which it
// wraps) when the key held a set of which nothing is usable any more: the
// refresh token ran out. The store deletes such a set, so the next Get
// returns ErrNotFound.
var ErrExpired = fmt.Errorf("%w: nothing in the stored set is usable any more", ErrNotFound)

// Store keeps token sets by key. Keys are opaque to the store; callers
// derive them so that they carry no client id or user id in clear.
//
// Implementations must be safe for concurrent use. Get returns ErrNotFound
// (possibly wrapped) when the key is absent or nothing in the stored set is
// usable any more (see Token.Usable); in the latter case the error should
// be ErrExpired, which wraps ErrNotFound.
type Store interface {
	Get(ctx context.Context, key string) (*Token, error)
	Set(ctx context.Context, key string, tok *Token) error
	Delete(ctx context.Context, key string) error
}

// ErrConflict is returned by CompareAndSet when the stored set is not the one the caller expected.
var ErrConflict = errors.New("tokenstore: the stored token set changed")

// ErrNotReplicated is returned by a write that the primary stored but
// fewer replicas than asked acknowledged in time (RedisOptions.MinReplicas):
// a failover may still lose it. The write is not to be retried as if it
// had failed: a compare-and-set of it again would meet the set itself (a
// Delete may be called again: it waits again).
var ErrNotReplicated = errors.New("tokenstore: the write was not acknowledged by enough replicas")

// CASStore is implemented by stores that can replace a set only if it is still the expected version (RedisStore, and Sealed over one).
//
// It fences a writer that lost its lock while refreshing (a lease that
// expired mid-refresh): its set, built from an older one, must not replace
// the newer set another holder stored in the meantime.
type CASStore interface {
	// CompareAndSet stores tok under key if the set stored there has Version old (old == 0: if nothing usable is stored), else returns an error wrapping ErrConflict.
	CompareAndSet(ctx context.Context, key string, old uint64, tok *Token) error
}
