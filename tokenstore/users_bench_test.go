package tokenstore_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// The Users1M population: one token set per user, of TaskNation's sizes.
const (
	usersN       = 1_000_000
	userKeyLen   = len("user:") + 32 // "user:" and 16 bytes in hex, as the middleware derives keys
	userScopes   = "supply::businesses supply::leads offline_access"
	usersMaxMB   = 1024 // MemoryConfig.MaxSizeMB: about 4x what 1M entries of ~250 bytes need
	usersGCRuns  = 5    // collections measured per gcCost
	implMap      = "map"
	implBigcache = "bigcache"
)

// usersNow is when the population is read: every access token is valid.
var usersNow = t0.Add(time.Minute)

// userSets is usersN token sets held by one implementation.
type userSets struct {
	// keys holds the usersN keys back to back in one pointer-free string,
	// in the order of the lookups: the list costs the collector nothing,
	// the lookups slice it without allocating, and reading it in order
	// adds no cache miss of its own (a request has its key at hand). The
	// sets were stored in a random order, so the entries the lookups reach
	// are scattered in memory as they would be after a million logins.
	keys  string
	m     map[string]*tokenstore.Token // implMap
	store *tokenstore.MemoryStore      // implBigcache
}

func (u *userSets) key(i uint32) string {
	return u.keys[int(i)*userKeyLen : int(i+1)*userKeyLen]
}

// newUserSets builds the population for impl. The tokens are built one by
// one, as decoding usersN token answers would: in the map every set is its
// own handful of heap objects, key included.
func newUserSets(tb testing.TB, impl string) *userSets {
	tb.Helper()
	src := rand.NewChaCha8([32]byte{'t', 'o', 'k', 'e', 'n', 'g', 'a', 't', 'e'})
	var raw [32]byte
	keys := make([]byte, 0, usersN*userKeyLen)
	for range usersN {
		_, _ = src.Read(raw[:16])
		keys = append(keys, "user:"...)
		keys = hex.AppendEncode(keys, raw[:16])
	}
	u := &userSets{keys: string(keys)}
	order := make([]uint32, usersN) // in which the sets are stored
	for i := range order {
		order[i] = uint32(i)
	}
	rand.New(src).Shuffle(usersN, func(i, j int) { order[i], order[j] = order[j], order[i] })

	token := func(i int) *tokenstore.Token {
		_, _ = src.Read(raw[:])
		access := "tn_at_" + base64.RawURLEncoding.EncodeToString(raw[:])
		_, _ = src.Read(raw[:])
		refresh := "tn_rt_" + base64.RawURLEncoding.EncodeToString(raw[:])
		return &tokenstore.Token{
			AccessToken:   access,
			TokenType:     strings.Clone("bearer"),
			RefreshToken:  refresh,
			Expiry:        t0.Add(time.Hour),
			RefreshExpiry: t0.Add(180 * 24 * time.Hour),
			Scopes:        strings.Split(strings.Clone(userScopes), " "),
			ObtainedAt:    t0,
			Version:       uint64(i) + 1,
		}
	}
	switch impl {
	case implMap:
		u.m = make(map[string]*tokenstore.Token, usersN)
		for _, i := range order {
			u.m[strings.Clone(u.key(i))] = token(int(i))
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
			if err := s.Set(ctx, u.key(i), token(int(i))); err != nil {
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

// liveUsers is the one population alive at a time. The sub-benchmarks of
// BenchmarkUsers1M share it across their -count runs, so that 1M entries
// are built once per impl and never while the other impl is still live.
// Benchmarks run one at a time, so it needs no lock.
var liveUsers struct {
	impl string
	u    *userSets
}

func loadUsers(b *testing.B, impl string) *userSets {
	b.Helper()
	if liveUsers.impl != impl {
		dropUsers()
		liveUsers.u = newUserSets(b, impl)
		liveUsers.impl = impl
		runtime.GC() // the timed loop must not collect the build's garbage
	}
	return liveUsers.u
}

// dropUsers frees the live population and collects it.
func dropUsers() {
	if liveUsers.u != nil {
		liveUsers.u.close()
	}
	liveUsers.u, liveUsers.impl = nil, ""
	runtime.GC()
}

// gcCost is what a full collection costs with a population live.
type gcCost struct {
	msPerCycle float64 // GC CPU (all workers and pauses) per cycle, in ms
	heapMB     float64 // live heap after the last cycle, in MiB
}

// measureGC runs usersGCRuns collections while live is reachable.
func measureGC(live any) gcCost {
	samples := []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"},
	}
	runtime.GC() // the measured cycles see only live data, no garbage left over
	metrics.Read(samples)
	cpu0, cycles0 := samples[0].Value.Float64(), samples[1].Value.Uint64()
	for range usersGCRuns {
		runtime.GC()
	}
	metrics.Read(samples)
	runtime.KeepAlive(live)
	cycles := samples[1].Value.Uint64() - cycles0 // at least usersGCRuns
	return gcCost{
		msPerCycle: (samples[0].Value.Float64() - cpu0) * 1e3 / float64(cycles),
		heapMB:     float64(samples[2].Value.Uint64()) / (1 << 20),
	}
}

// BenchmarkUsers1M looks up one of 1,000,000 users' token sets, in an
// order unrelated to the one they were stored in, then measures what a garbage collection costs with all of them
// live (gc-ms/cycle, heap-MB). The baseline is a plain map of *Token, the
// obvious cache; bigcache keeps the sets in pointer-free byte slices, which
// the collector does not scan.
func BenchmarkUsers1M(b *testing.B) {
	defer dropUsers() // don't leave 1M entries to the benchmarks after this one
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
		reportGC(b, u)
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
		reportGC(b, u)
	})
}

func reportGC(b *testing.B, u *userSets) {
	c := measureGC(u)
	b.ReportMetric(c.msPerCycle, "gc-ms/cycle")
	b.ReportMetric(c.heapMB, "heap-MB")
}

// TestUsers1MGCRatio checks that a collection with 1,000,000 users' token
// sets in a MemoryStore costs at least 20 times less GC CPU than with the
// same sets in a map of *Token. It builds both populations, which is slow
// (and slower under -race), so it runs only when asked for.
func TestUsers1MGCRatio(t *testing.T) {
	if testing.Short() || os.Getenv("TOKENGATE_GC_RATIO") != "1" {
		t.Skip("builds 1,000,000 token sets twice: set TOKENGATE_GC_RATIO=1 (and no -short) to run")
	}
	const minRatio = 20
	cost := map[string]gcCost{}
	for _, impl := range []string{implMap, implBigcache} {
		u := newUserSets(t, impl)
		cost[impl] = measureGC(u)
		u.close()
		runtime.GC() // free it before the next one is built
		t.Logf("impl=%s: %.2f gc-ms/cycle, %.0f heap-MB", impl, cost[impl].msPerCycle, cost[impl].heapMB)
	}
	m, bc := cost[implMap].msPerCycle, cost[implBigcache].msPerCycle
	if bc*minRatio > m {
		t.Errorf("GC CPU per cycle: map %.2f ms, bigcache %.2f ms: ratio %.1f, want at least %d", m, bc, m/bc, minRatio)
	}
}
