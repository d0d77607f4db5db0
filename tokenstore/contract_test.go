package tokenstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// storeContract checks what every Store promises: round trips of every
// shape of token set, overwrite, absent keys, idempotent delete, and
// expiry checked on read with the dead entry dropped. open returns a store
// on clock c and a count of the entries it holds.
func storeContract(t *testing.T, open func(t *testing.T, c *clock) (tokenstore.Store, func() int)) {
	ctx := context.Background()
	shapes := []struct {
		name string
		tok  func() *tokenstore.Token
	}{
		{"full set", func() *tokenstore.Token { return sample(t0) }},
		{"client credentials, no refresh token", func() *tokenstore.Token {
			tok := sample(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}},
		{"no scopes, zero times", func() *tokenstore.Token {
			return &tokenstore.Token{AccessToken: "at", TokenType: "bearer", Expiry: t0.Add(time.Minute)}
		}},
		{"large JWT access token", func() *tokenstore.Token {
			tok := sample(t0)
			tok.AccessToken = "eyJ" + strings.Repeat("x.Y-z_0", 1200)
			return tok
		}},
		{"refresh token only", func() *tokenstore.Token {
			tok := sample(t0)
			tok.AccessToken, tok.Expiry = "", time.Time{}
			return tok
		}},
	}
	for _, tt := range shapes {
		t.Run("round trip/"+tt.name, func(t *testing.T) {
			s, _ := open(t, newClock(t0))
			want := tt.tok()
			if err := s.Set(ctx, "k", want); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if !equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			next := tt.tok()
			next.Version++
			if err := s.Set(ctx, "k", next); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "k"); err != nil || got.Version != next.Version {
				t.Fatalf("after overwrite: %v, %v", got, err)
			}
			if _, err := s.Get(ctx, "other"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("absent key: err = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, "k"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("after delete: err = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, "k"); err != nil {
				t.Fatalf("deleting an absent key: %v", err)
			}
		})
	}

	expiry := []struct {
		name    string
		tok     func(now time.Time) *tokenstore.Token
		advance time.Duration
		found   bool
	}{
		{"access valid", sample, 59 * time.Minute, true},
		{"access expired, refresh valid", sample, 2 * time.Hour, true},
		{"both expired", sample, 181 * 24 * time.Hour, false},
		{"no refresh token, access expired", func(now time.Time) *tokenstore.Token {
			t := sample(now)
			t.RefreshToken = ""
			return t
		}, time.Hour, false},
		{"refresh token without known expiry", func(now time.Time) *tokenstore.Token {
			t := sample(now)
			t.RefreshExpiry = time.Time{}
			return t
		}, 365 * 24 * time.Hour, true},
	}
	for _, tt := range expiry {
		t.Run("expiry on read/"+tt.name, func(t *testing.T) {
			c := newClock(t0)
			s, held := open(t, c)
			if err := s.Set(ctx, "k", tt.tok(t0)); err != nil {
				t.Fatal(err)
			}
			c.Add(tt.advance)
			_, err := s.Get(ctx, "k")
			if found := err == nil; found != tt.found {
				t.Fatalf("found = %v (err %v), want %v", found, err, tt.found)
			}
			if !tt.found && !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if n := held(); tt.found != (n == 1) {
				t.Fatalf("%d entries held after Get, want %d", n, map[bool]int{true: 1, false: 0}[tt.found])
			}
		})
	}
}

func TestMemoryStore_Contract(t *testing.T) {
	storeContract(t, func(t *testing.T, c *clock) (tokenstore.Store, func() int) {
		m := newStore(t, c)
		return m, m.Len
	})
}

func TestFileStore_Contract(t *testing.T) {
	storeContract(t, func(t *testing.T, c *clock) (tokenstore.Store, func() int) {
		dir := t.TempDir()
		return newFileStore(t, dir, c), func() int { return len(dirNames(t, dir)) }
	})
}
