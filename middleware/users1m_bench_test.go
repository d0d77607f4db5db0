package middleware_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/population"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// A million connected users behind one Gate: its bigcache layer holds
// every set, its hot set (bounded) the ones served most recently. The
// baseline is the obvious cache, a map of *Token by subject.
const (
	implMap  = "map"
	implGate = "gate"
	// users1MCacheMB holds 1M sets of ~300 bytes with room to spare; the
	// hot set stays at its bound (16,384) whatever the cache's size.
	users1MCacheMB = 1024
	hotLookups     = 8192 // subjects a hot-path round cycles over: all fit in the hot set
)

type users1M struct {
	subjects population.Packed // "user-0000042", in the order of the lookups
	m        map[string]*tokenstore.Token
	gate     *middleware.Gate
	close    func()
}

func newUsers1M(tb testing.TB, impl string) *users1M {
	tb.Helper()
	u := &users1M{subjects: population.Pack(population.N, len("user-0000000"), func(i int, dst []byte) []byte {
		return fmt.Appendf(dst, "user-%07d", i)
	})}
	src := population.Source()
	order := population.Order(src, population.N)
	now := time.Now()
	switch impl {
	case implMap:
		u.m = make(map[string]*tokenstore.Token, population.N)
		for _, i := range order {
			u.m[strings.Clone(u.subjects.At(int(i)))] = population.Token(src, int(i), now)
		}
		u.close = func() {}
	case implGate:
		srv := tasknationtest.NewServer(tasknationtest.Options{})
		g, err := middleware.New(middleware.Config{
			Grant: middleware.GrantAuthorizationCode, TokenURL: srv.TokenURL(), AuthURL: srv.AuthURL(),
			RedirectURI: "https://gw.example/oauth2/callback",
			ClientID:    tasknationtest.DefaultClientID, ClientSecret: tasknationtest.DefaultClientSecret,
			Scopes: userScopes, Subject: basicUser, CacheSizeMB: users1MCacheMB,
		})
		if err != nil {
			srv.Close()
			tb.Fatal(err)
		}
		for _, i := range order {
			if err := middleware.CacheUserForTest(g, u.subjects.At(int(i)), population.Token(src, int(i), now)); err != nil {
				g.Close()
				srv.Close()
				tb.Fatal(err)
			}
		}
		// The hot set at its bound, as after a while of traffic.
		for i := range middleware.HotBound(g) + 1000 {
			if _, err := g.UserToken(context.Background(), u.subjects.At(population.N-1-i)); err != nil {
				tb.Fatal(err)
			}
		}
		if n := middleware.HotEntries(g); n != middleware.HotBound(g) {
			tb.Fatalf("hot set holds %d subjects, want its bound %d", n, middleware.HotBound(g))
		}
		u.gate = g
		u.close = func() { g.Close(); srv.Close() }
	}
	return u
}

var live1M population.Live

func loadUsers1M(b *testing.B, impl string) *users1M {
	return live1M.Load(impl, func() (any, func()) {
		u := newUsers1M(b, impl)
		return u, u.close
	}).(*users1M)
}

// BenchmarkUsers1M_Gate looks up users among a million connected ones, in
// an order unrelated to the one they connected in, then measures what a
// garbage collection costs with all of them live (gc-ms/cycle, heap-MB):
//
//	impl=map       a map of *Token by subject (the baseline)
//	impl=gate      Gate.UserToken over all 1M subjects: the miss path of
//	               the hot set (SHA-256, bigcache read and decode, header
//	               built, hot-set put evicting another)
//	impl=gate-hot  Gate.UserToken over 8,192 of them, all in the hot set
func BenchmarkUsers1M_Gate(b *testing.B) {
	defer live1M.Drop()
	ctx := context.Background()
	b.Run("impl="+implMap, func(b *testing.B) {
		u := loadUsers1M(b, implMap)
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if tok := u.m[u.subjects.At(i)]; tok == nil || tok.AccessToken == "" {
				b.Fatalf("user %d: no token", i)
			}
			if i++; i == population.N {
				i = 0
			}
		}
		b.StopTimer()
		population.Report(b, u)
	})
	for _, c := range []struct {
		name string
		n    int
	}{{implGate, population.N}, {implGate + "-hot", hotLookups}} {
		b.Run("impl="+c.name, func(b *testing.B) {
			u := loadUsers1M(b, implGate)
			i := 0
			if c.n < population.N {
				for j := range c.n { // into the hot set
					u.gate.UserToken(ctx, u.subjects.At(j))
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if tok, err := u.gate.UserToken(ctx, u.subjects.At(i)); err != nil || tok.AccessToken == "" {
					b.Fatalf("user %d: %v", i, err)
				}
				if i++; i == c.n {
					i = 0
				}
			}
			b.StopTimer()
			if n, bound := middleware.HotEntries(u.gate), middleware.HotBound(u.gate); n > bound {
				b.Fatalf("hot set holds %d subjects, over its bound %d", n, bound)
			}
			population.Report(b, u)
		})
	}
}

// TestUsers1MGCRatio_Gate checks that a collection with a million
// connected users behind a Gate (bigcache layer and full hot set) costs at
// least 20 times less GC CPU than with their sets in a map of *Token.
// Slow (it builds both populations): it runs only when asked for.
func TestUsers1MGCRatio_Gate(t *testing.T) {
	population.CheckGCRatio(t, implMap, implGate, func(impl string) (any, func()) {
		u := newUsers1M(t, impl)
		if impl == implGate {
			t.Logf("hot set: %d subjects", middleware.HotEntries(u.gate))
		}
		return u, func() { u.close(); *u = users1M{} }
	})
}
