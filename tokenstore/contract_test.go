package tokenstore_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
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

// casStore is a Store with CompareAndSet, as casContract needs it.
type casStore interface {
	tokenstore.Store
	tokenstore.CASStore
}

// casContract checks what every CASStore promises, RedisStore's semantics:
// CompareAndSet stores a set if the stored one has the version the caller
// expects (0: if nothing usable is stored), else it returns ErrConflict
// and writes nothing, atomically with respect to Set, Delete and other
// CompareAndSets. open makes one fresh store on clock c and returns a
// function that opens one more instance of it, as another process would
// (another FileStore on the directory, another client of the Redis).
func casContract(t *testing.T, open func(t *testing.T, c *clock) (instance func() casStore)) {
	ctx := context.Background()
	const key = "user:alice"
	withVersion := func(v uint64) *tokenstore.Token { tok := secretSample(t0); tok.Version = v; return tok }
	const big = 1<<63 + 1 // 2^63 and 2^63+1 are the same float64
	tests := []struct {
		name    string
		stored  *tokenstore.Token // nil: nothing stored
		advance time.Duration     // before the CompareAndSet
		old     uint64
		ok      bool
	}{
		{"absent, old 0: stored", nil, 0, 0, true},
		{"absent, old 5: conflict", nil, 0, 5, false},
		{"matching version: replaced", withVersion(5), 0, 5, true},
		{"stale version: conflict", withVersion(5), 0, 4, false},
		{"newer version expected: conflict", withVersion(5), 0, 6, false},
		{"usable set, old 0: conflict", withVersion(5), 0, 0, false},
		{"usable set of version 0, old 0: replaced", withVersion(0), 0, 0, true},
		{"access expired, refresh token good, old 0: conflict", withVersion(5), 2 * time.Hour, 0, false},
		{"dead set, old 0: stored", withVersion(5), 181 * 24 * time.Hour, 0, true},
		{"dead set, its own version: replaced", withVersion(5), 181 * 24 * time.Hour, 5, true},
		{"dead set, another version: conflict", withVersion(5), 181 * 24 * time.Hour, 4, false},
		{"refresh token of unknown lifetime stays usable, old 0: conflict", func() *tokenstore.Token {
			tok := withVersion(5)
			tok.RefreshExpiry = time.Time{}
			return tok
		}(), 365 * 24 * time.Hour, 0, false},
		{"access token only, expired, old 0: stored", func() *tokenstore.Token {
			tok := withVersion(5)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}(), time.Hour, 0, true},
		{"uint64 versions compared exactly: match", withVersion(big), 0, big, true},
		{"uint64 versions compared exactly: off by one", withVersion(big), 0, big - 1, false},
	}
	for _, tt := range tests {
		t.Run("compare-and-set/"+tt.name, func(t *testing.T) {
			c := newClock(t0)
			s := open(t, c)()
			if tt.stored != nil {
				if err := s.Set(ctx, key, tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			c.Add(tt.advance)
			next := secretSample(c.Now())
			next.Version = 77
			next.AccessToken = "tn_at_S3CRET-NEXT"
			err := s.CompareAndSet(ctx, key, tt.old, next)
			if tt.ok {
				if err != nil {
					t.Fatalf("CompareAndSet(old %d) = %v, want success", tt.old, err)
				}
				if got, err := s.Get(ctx, key); err != nil || !equal(got, next) {
					t.Fatalf("after: Get = %v, %v; want %v", got, err, next)
				}
				return
			}
			if !errors.Is(err, tokenstore.ErrConflict) {
				t.Fatalf("CompareAndSet(old %d) = %v, want ErrConflict", tt.old, err)
			}
			t.Log(err)
			checkErrorText(t, err, "S3CRET", "tn_", "alice")
			// Nothing was written: Get finds what was there (nothing
			// when that was dead), not next.
			got, err := s.Get(ctx, key)
			if tt.stored == nil || !tt.stored.Usable(c.Now()) {
				if !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("a refused CompareAndSet stored something: Get = %v, %v", got, err)
				}
				return
			}
			if err != nil || !equal(got, tt.stored) {
				t.Fatalf("after a refused CompareAndSet: Get = %v, %v; want the set stored before, %v", got, err, tt.stored)
			}
		})
	}

	t.Run("compare-and-set/nil token", func(t *testing.T) {
		s := open(t, newClock(t0))()
		if err := s.CompareAndSet(ctx, key, 0, nil); err == nil || errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("CompareAndSet of nil = %v, want an error other than a conflict", err)
		}
	})

	// The defect this fences: a disconnect (Delete) on one instance undone
	// by a refresh on another that writes the rotated set back.
	t.Run("compare-and-set after delete", func(t *testing.T) {
		inst := open(t, newClock(t0))
		refresher, disconnecter := inst(), inst()
		if err := refresher.Set(ctx, key, withVersion(5)); err != nil {
			t.Fatal(err)
		}
		if err := disconnecter.Delete(ctx, key); err != nil {
			t.Fatal(err)
		}
		err := refresher.CompareAndSet(ctx, key, 5, withVersion(6))
		if !errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("CompareAndSet(old 5) after Delete = %v, want ErrConflict", err)
		}
		checkErrorText(t, err, "S3CRET", "alice")
		if got, err := disconnecter.Get(ctx, key); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("after Delete and a refused CompareAndSet: Get = %v, %v; want ErrNotFound", got, err)
		}
		// A new connect (old 0) is not refused.
		if err := refresher.CompareAndSet(ctx, key, 0, withVersion(1)); err != nil {
			t.Fatalf("CompareAndSet(old 0) after Delete = %v, want success", err)
		}
		if got, err := disconnecter.Get(ctx, key); err != nil || got.Version != 1 {
			t.Fatalf("after a new connect: Get = %v, %v; want version 1", got, err)
		}
	})

	// Writers that all read version 1, each on an instance of its own:
	// exactly one of them wins, and its set is what is stored. Several
	// rounds, since a store without the atomicity loses only when two
	// compares fall between one compare and its write.
	t.Run("compare-and-set race from one version", func(t *testing.T) {
		const rounds, writers = 8, 16
		for round := range rounds {
			inst := open(t, newClock(t0))
			if err := inst().Set(ctx, key, withVersion(1)); err != nil {
				t.Fatal(err)
			}
			stores := make([]casStore, writers)
			for i := range stores {
				stores[i] = inst()
			}
			var won, lost atomic.Int64
			var winner atomic.Uint64
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i, s := range stores {
				wg.Go(func() {
					tok := withVersion(uint64(100 + i))
					<-start
					switch err := s.CompareAndSet(ctx, key, 1, tok); {
					case err == nil:
						won.Add(1)
						winner.Store(tok.Version)
					case errors.Is(err, tokenstore.ErrConflict):
						lost.Add(1)
					default:
						t.Error(err)
					}
				})
			}
			close(start)
			wg.Wait()
			if won.Load() != 1 || lost.Load() != writers-1 {
				t.Fatalf("round %d: %d writers won and %d lost, want 1 and %d", round, won.Load(), lost.Load(), writers-1)
			}
			if got, err := inst().Get(ctx, key); err != nil || !equal(got, withVersion(winner.Load())) {
				t.Fatalf("round %d: Get = %v, %v; want the winner's set, version %d", round, got, err, winner.Load())
			}
		}
	})

	// Writers rotate the set with CompareAndSet from the version they last
	// saw (re-reading on a conflict) while another instance deletes it.
	// None of them ever writes with old 0, so once Delete has returned
	// nothing may be stored again: a CompareAndSet that began after it
	// must fail, and the end state is no set at all. A store whose compare
	// and write are not atomic with Delete resurrects the set when a
	// Delete falls between them.
	t.Run("delete races compare-and-set", func(t *testing.T) {
		const rounds, writers = 64, 4
		for round := range rounds {
			inst := open(t, newClock(t0))
			if err := inst().Set(ctx, key, withVersion(1)); err != nil {
				t.Fatal(err)
			}
			var deleted atomic.Bool // Delete has returned
			var resurrected atomic.Int64
			wrote := make(chan struct{}, writers)
			var wg sync.WaitGroup
			for w := range writers {
				s := inst()
				wg.Go(func() {
					cur := uint64(1)
					for i := uint64(1); i < 100_000; i++ {
						next := withVersion(uint64(w+1)<<32 | i)
						after := deleted.Load()
						err := s.CompareAndSet(ctx, key, cur, next)
						switch {
						case err == nil:
							if after {
								resurrected.Add(1)
								return
							}
							cur = next.Version
							select {
							case wrote <- struct{}{}:
							default:
							}
						case errors.Is(err, tokenstore.ErrConflict):
							got, err := s.Get(ctx, key)
							if errors.Is(err, tokenstore.ErrNotFound) {
								return // deleted
							}
							if err != nil {
								t.Error(err)
								return
							}
							cur = got.Version
						default:
							t.Error(err)
							return
						}
					}
					t.Error("a writer never saw the set deleted")
				})
			}
			// Delete once a write went through: the writers are at it.
			select {
			case <-wrote:
			case <-time.After(30 * time.Second):
				t.Fatal("the writers made no progress")
			}
			if err := inst().Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
			deleted.Store(true)
			wg.Wait()
			if n := resurrected.Load(); n > 0 {
				t.Errorf("round %d: %d CompareAndSets that began after Delete returned succeeded", round, n)
			}
			if got, err := inst().Get(ctx, key); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("round %d: after Delete returned and every writer stopped: Get = %v, %v; want ErrNotFound (a disconnect was undone)", round, got, err)
			}
		}
	})
}

// sealedInstances wraps every instance open makes in Sealed.
func sealedInstances(open func(t *testing.T, c *clock) func() casStore) func(t *testing.T, c *clock) func() casStore {
	return func(t *testing.T, c *clock) func() casStore {
		inst := open(t, c)
		return func() casStore { return newSealed(t, inst(), testKey("one")) }
	}
}

func TestFileStore_CASContract(t *testing.T) {
	open := func(t *testing.T, c *clock) func() casStore {
		dir := t.TempDir()
		return func() casStore { return newFileStore(t, dir, c) }
	}
	casContract(t, open)
	t.Run("sealed", func(t *testing.T) { casContract(t, sealedInstances(open)) })
}
