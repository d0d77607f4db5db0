package tokenstore_test

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// BenchmarkStore_Get looks up one of 100,000 stored token sets.
func BenchmarkStore_Get(b *testing.B) {
	const n = 100_000
	c := newClock(t0)
	m := newStore(b, c)
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		tok := sample(t0)
		tok.AccessToken = "tn_at_" + strconv.Itoa(i) + "_0123456789abcdef0123456789abcdef"
		if err := m.Set(ctx, keys[i], tok); err != nil {
			b.Fatal(err)
		}
	}
	c.Add(time.Minute)
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		if _, err := m.Get(ctx, keys[i%n]); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
}

// BenchmarkStore_GetParallel is BenchmarkStore_Get from all CPUs.
func BenchmarkStore_GetParallel(b *testing.B) {
	const n = 100_000
	c := newClock(t0)
	m := newStore(b, c)
	ctx := context.Background()
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(i)
		if err := m.Set(ctx, keys[i], sample(t0)); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, err := m.Get(ctx, keys[i%n]); err != nil {
				b.Error(err)
				return
			}
			i += 7919
		}
	})
}
