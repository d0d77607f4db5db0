package tokenstore_test

import (
	"context"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// BenchmarkFileStore_Get reads one of 1,000 token sets from a FileStore.
// The baseline is a bare os.ReadFile of the same files (what any file
// store pays before checking and decoding).
func BenchmarkFileStore_Get(b *testing.B) {
	const n = 1000
	dir := b.TempDir()
	c := newClock(t0)
	f := newFileStore(b, dir, c.Now)
	ctx := context.Background()
	keys := make([]string, n)
	paths := make([]string, n)
	for i := range keys {
		keys[i] = benchKey(i)
		paths[i] = recordPath(dir, keys[i])
		tok := sample(t0)
		tok.AccessToken = "tn_at_" + strconv.Itoa(i) + "_0123456789abcdef0123456789abcdef"
		// What Set writes, without its two fsyncs per file.
		if err := os.WriteFile(paths[i], encodedFile(keys[i], tok), 0o600); err != nil {
			b.Fatal(err)
		}
	}
	c.Advance(time.Minute)
	b.Run("impl=baseline", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := os.ReadFile(paths[i%n]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
	b.Run("impl=tokengate", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := f.Get(ctx, keys[i%n]); err != nil {
				b.Fatal(err)
			}
			i += 7919
		}
	})
}

// BenchmarkFileStore_Set is one durable write: temp file, fsync, rename,
// fsync of the directory. Its cost is the disk's.
func BenchmarkFileStore_Set(b *testing.B) {
	f := newFileStore(b, b.TempDir(), newClock(t0).Now)
	ctx := context.Background()
	tok := sample(t0)
	b.ReportAllocs()
	for b.Loop() {
		tok.Version++
		if err := f.Set(ctx, "k", tok); err != nil {
			b.Fatal(err)
		}
	}
}

// benchGets fills stores with n token sets and reads them back, in a
// stride that defeats the CPU cache the way many users do.
type benchGets struct{ keys []string }

func newBenchGets(n int) benchGets {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = benchKey(i)
	}
	return benchGets{keys}
}

func (g benchGets) fill(b *testing.B, s tokenstore.Store) {
	for i, k := range g.keys {
		tok := sample(t0)
		tok.AccessToken = "tn_at_" + strconv.Itoa(i) + "_0123456789abcdef0123456789abcdef"
		if err := s.Set(context.Background(), k, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func (g benchGets) run(b *testing.B, s tokenstore.Store) {
	g.fill(b, s)
	b.ReportAllocs()
	i, n := 0, len(g.keys)
	for b.Loop() {
		if _, err := s.Get(context.Background(), g.keys[i%n]); err != nil {
			b.Fatal(err)
		}
		i += 7919
	}
}

// BenchmarkSealed_Get reads one of 10,000 sealed token sets through Sealed
// over a MemoryStore. The baseline is the same MemoryStore holding the same
// sets unsealed.
func BenchmarkSealed_Get(b *testing.B) {
	g := newBenchGets(10_000)
	b.Run("impl=baseline", func(b *testing.B) { g.run(b, newStore(b, newClock(t0).Now)) })
	b.Run("impl=tokengate", func(b *testing.B) {
		g.run(b, newSealed(b, newStore(b, newClock(t0).Now), testKey("one")))
	})
}
