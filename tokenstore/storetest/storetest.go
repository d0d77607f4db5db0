// Package storetest checks that a tokenstore.Store keeps the contract the
// middleware relies on, as testing/fstest checks an fs.FS: bring your own
// store, hand Run a function that opens a fresh, empty one reading the time
// from the clock it is given, and Run checks what your store's type
// promises.
//
//	func TestMyStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
//			s := mystore.New(mystore.Options{Now: now})
//			return func() tokenstore.Store { return s }, nil
//		}, storetest.Options{ErrPrefix: "mystore: "})
//	}
//
// Run runs Contract (Get, Set and Delete, expiry checked on read), then
// CASContract (compare-and-set, atomic across the instances of one store)
// when the store has a compare-and-set of its own, and PendingContract
// (pending connects taken once) when it keeps pending records. Each takes
// a fresh store for each case, on a clock the contract moves; a store
// shared between processes is opened once more per instance, as another
// process would open it, so that atomicity is checked across them.
//
// tokenstore's tests run it on the memory, file and Redis stores and on
// Sealed over each; the Caddy module's tests run it on its Storage. The
// fleet scenarios of package fleettest (internal to this module) are the
// contract a shared store keeps toward the middleware.
package storetest

import (
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// t0 is the time every case's clock starts at.
var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

// clock is a case's settable clock: the store under test reads it through
// its Now method, the case moves it. (Its own, so that the package imports
// tokenstore and the standard library only: a store's tests that run it
// do not build the middleware.)
type clock struct {
	mu sync.Mutex
	t  time.Time
}

// newClock is a case's clock, at t0.
func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

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
