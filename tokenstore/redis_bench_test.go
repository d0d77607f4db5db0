package tokenstore_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
)

// BenchmarkRedisStore_Get reads one of 1,000 token sets from a RedisStore
// on a redis-server over loopback, bare and under Sealed. The baseline is a
// MemoryStore holding the same sets: what a read costs without a round
// trip.
func BenchmarkRedisStore_Get(b *testing.B) {
	const n = 1000
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	fill := func(b *testing.B, s tokenstore.Store) {
		for i, k := range keys {
			tok := sample(t0)
			tok.AccessToken = "tn_at_" + strconv.Itoa(i) + "_0123456789abcdef0123456789abcdef"
			if err := s.Set(ctx, k, tok); err != nil {
				b.Fatal(err)
			}
		}
	}
	run := func(b *testing.B, s tokenstore.Store) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Get(ctx, keys[i%n]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	}
	newRedis := func(b *testing.B) tokenstore.Store {
		return newRedisStore(b, redistest.Start(b).Client(b), tokenstore.RedisOptions{Now: newClock(t0).Now})
	}
	b.Run("impl=memory", func(b *testing.B) {
		m := newStore(b, newClock(t0))
		fill(b, m)
		run(b, m)
	})
	b.Run("impl=redis", func(b *testing.B) {
		s := newRedis(b)
		fill(b, s)
		run(b, s)
	})
	b.Run("impl=redis-sealed", func(b *testing.B) {
		s := newSealed(b, newRedis(b), testKey("one"))
		fill(b, s)
		run(b, s)
	})
}
