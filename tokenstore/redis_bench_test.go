package tokenstore_test

import (
	"testing"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
)

// BenchmarkRedisStore_Get reads one of 1,000 token sets from a RedisStore
// on a redis-server over loopback, bare and under Sealed. The baseline is a
// MemoryStore holding the same sets: what a read costs without a round
// trip.
func BenchmarkRedisStore_Get(b *testing.B) {
	g := newBenchGets(1000)
	newRedis := func(b *testing.B) tokenstore.Store {
		return newRedisStore(b, redistest.Start(b).Client(b), tokenstore.RedisOptions{Now: newClock(t0).Now})
	}
	b.Run("impl=memory", func(b *testing.B) { g.run(b, newStore(b, newClock(t0).Now)) })
	b.Run("impl=redis", func(b *testing.B) { g.run(b, newRedis(b)) })
	b.Run("impl=redis-sealed", func(b *testing.B) { g.run(b, newSealed(b, newRedis(b), testKey("one"))) })
}
