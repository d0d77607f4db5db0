package storetest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// Opener makes a fresh, empty store that reads the time from now, and
// held, which counts the entries the store keeps (a dead set included,
// until a Get drops it). A nil held leaves that check out.
type Opener func(t *testing.T, now func() time.Time) (s tokenstore.Store, held func() int)

// Contract checks what every tokenstore.Store promises: round trips of
// every shape of token set, overwrite, absent keys, idempotent delete, and
// expiry checked on read: a dead set is reported as tokenstore.ErrExpired
// (which wraps ErrNotFound) and dropped, so the next Get finds nothing.
// Each subtest opens a store of its own.
func Contract(t *testing.T, open Opener) {
	ctx := context.Background()
	shapes := []struct {
		name string
		tok  func() *tokenstore.Token
	}{
		{"full set", func() *tokenstore.Token { return Sample(t0) }},
		{"client credentials, no refresh token", func() *tokenstore.Token {
			tok := Sample(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}},
		{"no scopes, zero times", func() *tokenstore.Token {
			return &tokenstore.Token{AccessToken: "at", TokenType: "bearer", Expiry: t0.Add(time.Minute)}
		}},
		{"large JWT access token", func() *tokenstore.Token {
			tok := Sample(t0)
			tok.AccessToken = "eyJ" + strings.Repeat("x.Y-z_0", 1200)
			return tok
		}},
		{"refresh token only", func() *tokenstore.Token {
			tok := Sample(t0)
			tok.AccessToken, tok.Expiry = "", time.Time{}
			return tok
		}},
	}
	for _, tt := range shapes {
		t.Run("round trip/"+tt.name, func(t *testing.T) {
			s, _ := open(t, newClock().Now)
			want := tt.tok()
			if err := s.Set(ctx, "k", want); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "k")
			if err != nil {
				t.Fatal(err)
			}
			if !Equal(got, want) {
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
		{"access valid", Sample, 59 * time.Minute, true},
		{"access expired, refresh valid", Sample, 2 * time.Hour, true},
		{"both expired", Sample, 181 * 24 * time.Hour, false},
		{"no refresh token, access expired", func(now time.Time) *tokenstore.Token {
			t := Sample(now)
			t.RefreshToken = ""
			return t
		}, time.Hour, false},
		{"refresh token without known expiry", func(now time.Time) *tokenstore.Token {
			t := Sample(now)
			t.RefreshExpiry = time.Time{}
			return t
		}, 365 * 24 * time.Hour, true},
	}
	for _, tt := range expiry {
		t.Run("expiry on read/"+tt.name, func(t *testing.T) {
			c := newClock()
			s, held := open(t, c.Now)
			stored := tt.tok(t0)
			if err := s.Set(ctx, "k", stored); err != nil {
				t.Fatal(err)
			}
			c.Advance(tt.advance)
			got, err := s.Get(ctx, "k")
			if found := err == nil; found != tt.found {
				t.Fatalf("found = %v (err %v), want %v", found, err, tt.found)
			}
			if tt.found && !Equal(got, stored) {
				t.Fatalf("Get = %v, want the set stored, %v", got, stored)
			}
			if !tt.found && !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
			if !tt.found && !errors.Is(err, tokenstore.ErrExpired) {
				t.Fatalf("err = %v, want ErrExpired (a set was stored, nothing in it is usable)", err)
			}
			if held != nil {
				if n := held(); tt.found != (n == 1) {
					t.Fatalf("%d entries held after Get, want %d", n, map[bool]int{true: 1, false: 0}[tt.found])
				}
			}
			if tt.found {
				return
			}
			if _, err := s.Get(ctx, "k"); !errors.Is(err, tokenstore.ErrNotFound) || errors.Is(err, tokenstore.ErrExpired) {
				t.Fatalf("Get after the dead set was dropped = %v, want plain ErrNotFound", err)
			}
		})
	}
}
