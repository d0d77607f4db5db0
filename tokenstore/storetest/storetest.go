// Package storetest runs the contract every token store keeps toward its
// callers, as testing/fstest runs the one of an fs.FS: Get, Set and Delete
// with expiry checked on read (Contract), and compare-and-set, atomic
// across instances of one store (CASContract), against a store the caller
// makes on a Clock the contract moves.
//
// tokenstore's tests run it on the memory, file and Redis stores and on
// Sealed over them; the Caddy module's tests run it on its Storage. The
// fleet scenarios of package fleettest are the contract a shared store
// keeps toward the middleware.
package storetest

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// Clock is a settable clock, safe for concurrent use: the store under test
// reads it, the contract moves it.
type Clock struct{ ns atomic.Int64 }

// NewClock returns a clock at t.
func NewClock(t time.Time) *Clock {
	c := &Clock{}
	c.ns.Store(t.UnixNano())
	return c
}

// Now is the clock's time.
func (c *Clock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// t0 is the time every case's clock starts at.
var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// Sample is a full token set obtained at now: an access token valid for an
// hour, a refresh token for 180 days, scopes, version 42.
func Sample(now time.Time) *tokenstore.Token {
	return &tokenstore.Token{
		AccessToken:   "tn_at_access",
		TokenType:     "Bearer",
		RefreshToken:  "tn_rt_refresh",
		Expiry:        now.Add(time.Hour),
		RefreshExpiry: now.Add(180 * 24 * time.Hour),
		Scopes:        []string{"supply::businesses", "supply::leads", "offline_access"},
		ObtainedAt:    now,
		Version:       42,
	}
}

// Credentials that must never appear in an error, a log or at rest under
// encryption; each holds "S3CRET".
const (
	SecretAccess  = "tn_at_S3CRET-ACCESS-TOKEN-4d1f0c9e"
	SecretRefresh = "tn_rt_S3CRET-REFRESH-TOKEN-77ab20e1"
)

// SecretSample is Sample with SecretAccess and SecretRefresh for
// credentials.
func SecretSample(now time.Time) *tokenstore.Token {
	tok := Sample(now)
	tok.AccessToken, tok.RefreshToken = SecretAccess, SecretRefresh
	return tok
}

// Equal reports whether a and b are the same token set: every field, times
// compared as instants.
func Equal(a, b *tokenstore.Token) bool {
	return a.AccessToken == b.AccessToken && a.TokenType == b.TokenType && a.RefreshToken == b.RefreshToken &&
		a.Expiry.Equal(b.Expiry) && a.RefreshExpiry.Equal(b.RefreshExpiry) && a.ObtainedAt.Equal(b.ObtainedAt) &&
		a.ConnectedAt.Equal(b.ConnectedAt) && a.Version == b.Version && strings.Join(a.Scopes, " ") == strings.Join(b.Scopes, " ")
}

// CheckError fails t if err's message does not start with prefix (the
// store's package prefix, such as "tokenstore: ") or carries any of the
// texts that must never be in an error.
func CheckError(t testing.TB, err error, prefix string, never ...string) {
	t.Helper()
	msg := err.Error()
	if !strings.HasPrefix(msg, prefix) {
		t.Errorf("error %q does not start with %q", msg, prefix)
	}
	for _, s := range never {
		if strings.Contains(msg, s) {
			t.Errorf("error %q contains %q", msg, s)
		}
	}
}
