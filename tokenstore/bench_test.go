package tokenstore_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/allegro/bigcache/v3"

	"github.com/tasknation/tokengate/tokenstore"
)

const benchKeys = 100_000

func benchKey(i int) string { return "user:" + strconv.Itoa(i) }

// filled is a MemoryStore holding benchKeys token sets.
func filled(b *testing.B) *tokenstore.MemoryStore {
	c := newClock(t0)
	m := newStore(b, c.Now)
	ctx := context.Background()
	for i := 0; i < benchKeys; i++ {
		tok := sample(t0)
		tok.AccessToken = "tn_at_" + strconv.Itoa(i) + "_0123456789abcdef0123456789abcdef"
		if err := m.Set(ctx, benchKey(i), tok); err != nil {
			b.Fatal(err)
		}
	}
	c.Advance(time.Minute)
	return m
}

// BenchmarkStore_Get looks up one of 100,000 token sets. The baseline is a
// bare bigcache.Get of the same encoded records (what any bigcache-backed
// store pays before decoding).
func BenchmarkStore_Get(b *testing.B) {
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	b.Run("impl=baseline", func(b *testing.B) {
		cache, err := bigcache.New(context.Background(), bigcache.Config{
			Shards: 16, MaxEntriesInWindow: 1024, MaxEntrySize: 256, LifeWindow: time.Hour,
		})
		if err != nil {
			b.Fatal(err)
		}
		defer cache.Close()
		rec, _ := sample(t0).MarshalBinary()
		for _, k := range keys {
			cache.Set(k, rec)
		}
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := cache.Get(keys[i%benchKeys]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
	b.Run("impl=tokengate", func(b *testing.B) {
		m := filled(b)
		ctx := context.Background()
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := m.Get(ctx, keys[i%benchKeys]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
}

// BenchmarkStore_GetParallel is BenchmarkStore_Get from all CPUs.
func BenchmarkStore_GetParallel(b *testing.B) {
	m := filled(b)
	ctx := context.Background()
	keys := make([]string, benchKeys)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := m.Get(ctx, keys[i%benchKeys]); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}
