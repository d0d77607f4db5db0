package tokenstore_test

import (
	"context"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/population"
	"github.com/tasknation/tokengate/tokenstore"
)

// The Users1M population (internal/population): one token set per user,
// of TaskNation's sizes.
const (
	usersN       = population.N
	userKeyLen   = len("user:") + 32 // "user:" and 16 bytes in hex, as the middleware derives keys
	usersMaxMB   = 1024              // MemoryConfig.MaxSizeMB: about 4x what 1M entries of ~250 bytes need
	implMap      = "map"
	implBigcache = "bigcache"
)

// usersNow is when the population is read: every access token is valid.
var usersNow = t0.Add(time.Minute)

// userSets is usersN token sets held by one implementation.
type userSets struct {
	// keys are the usersN keys in the order of the lookups (a request has
	// its key at hand); the sets were stored in a random order.
	keys  population.Packed
	m     map[string]*tokenstore.Token // implMap
	store *tokenstore.MemoryStore      // implBigcache
}

func (u *userSets) key(i uint32) string { return u.keys.At(int(i)) }

// newUserSets builds the population for impl: in the map every set is its
// own handful of heap objects, key included.
func newUserSets(tb testing.TB, impl string) *userSets {
	tb.Helper()
	src := population.Source()
	var raw [16]byte
	u := &userSets{keys: population.Pack(usersN, userKeyLen, func(_ int, dst []byte) []byte {
		_, _ = src.Read(raw[:])
		return hex.AppendEncode(append(dst, "user:"...), raw[:])
	})}
	order := population.Order(src, usersN)
	switch impl {
	case implMap:
		u.m = make(map[string]*tokenstore.Token, usersN)
		for _, i := range order {
			u.m[strings.Clone(u.key(i))] = population.Token(src, int(i), t0)
		}
		if len(u.m) != usersN {
			tb.Fatalf("map holds %d users, want %d (duplicate keys)", len(u.m), usersN)
		}
	case implBigcache:
		s, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{
			Shards:          256, // as the middleware's user cache
			ExpectedEntries: usersN,
			MaxSizeMB:       usersMaxMB,
			Now:             func() time.Time { return usersNow },
		})
		if err != nil {
			tb.Fatal(err)
		}
		ctx := context.Background()
		for _, i := range order {
			if err := s.Set(ctx, u.key(i), population.Token(src, int(i), t0)); err != nil {
				s.Close()
				tb.Fatal(err)
			}
		}
		if got := s.Len(); got != usersN {
			s.Close()
			tb.Fatalf("MemoryStore holds %d users, want %d: evicted (MaxSizeMB %d too small) or hash collisions", got, usersN, usersMaxMB)
		}
		u.store = s
	default:
		tb.Fatalf("unknown impl %q", impl)
	}
	return u
}

func (u *userSets) close() {
	if u.store != nil {
		u.store.Close()
	}
	*u = userSets{}
}

// liveUsers is the one population alive at a time.
var liveUsers population.Live

func loadUsers(b *testing.B, impl string) *userSets {
	b.Helper()
	return liveUsers.Load(impl, func() (any, func()) {
		u := newUserSets(b, impl)
		return u, u.close
	}).(*userSets)
}

// BenchmarkUsers1M looks up one of 1,000,000 users' token sets, in an
// order unrelated to the one they were stored in, then measures what a garbage collection costs with all of them
// live (gc-ms/cycle, heap-MB). The baseline is a plain map of *Token, the
// obvious cache; bigcache keeps the sets in pointer-free byte slices, which
// the collector does not scan.
func BenchmarkUsers1M(b *testing.B) {
	defer liveUsers.Drop() // don't leave 1M entries to the benchmarks after this one
	b.Run("impl="+implMap, func(b *testing.B) {
		u := loadUsers(b, implMap)
		b.ReportAllocs()
		var i uint32
		for b.Loop() {
			if tok := u.m[u.key(i)]; !tok.Valid(usersNow) {
				b.Fatalf("user %d: no valid token", i)
			}
			if i++; i == usersN {
				i = 0
			}
		}
		b.StopTimer()
		population.Report(b, u)
	})
	b.Run("impl="+implBigcache, func(b *testing.B) {
		u := loadUsers(b, implBigcache)
		ctx := context.Background()
		b.ReportAllocs()
		var i uint32
		for b.Loop() {
			tok, err := u.store.Get(ctx, u.key(i))
			if err != nil || !tok.Valid(usersNow) {
				b.Fatalf("user %d: no valid token (%v)", i, err)
			}
			if i++; i == usersN {
				i = 0
			}
		}
		b.StopTimer()
		if got := u.store.Len(); got != usersN {
			b.Fatalf("MemoryStore holds %d users after the lookups, want %d", got, usersN)
		}
		population.Report(b, u)
	})
}

// TestUsers1MGCRatio checks that a collection with 1,000,000 users' token
// sets in a MemoryStore costs at least 20 times less GC CPU than with the
// same sets in a map of *Token. It builds both populations, which is slow
// (and slower under -race), so it runs only when asked for.
func TestUsers1MGCRatio(t *testing.T) {
	population.CheckGCRatio(t, implMap, implBigcache, func(impl string) (any, func()) {
		u := newUserSets(t, impl)
		return u, u.close
	})
}
