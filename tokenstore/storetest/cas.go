package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// CASStore is a store with compare-and-set, as CASContract needs it.
type CASStore interface {
	tokenstore.Store
	tokenstore.CASStore
}

// CASOpener makes one fresh, empty store that reads the time from now and
// returns the function that opens one more instance of it, as another
// process would (another FileStore on the directory, another client of the
// Redis). Instances are opened before the goroutines that use them start.
type CASOpener func(t *testing.T, now func() time.Time) (instance func() CASStore)

// Options says how a store's errors begin and how hard CASContract's race
// cases push it.
type Options struct {
	// ErrPrefix begins every error the store returns, such as
	// "tokenstore: ". Required: the conflict errors are checked for it.
	ErrPrefix string
	// Race sizes "compare-and-set race from one version". Default: 8
	// rounds of 16 writers.
	Race Race
	// DeleteRace sizes "delete races compare-and-set". Default: 64 rounds
	// of 4 writers.
	DeleteRace Race
}

// Race sizes one of CASContract's race cases: how many rounds, each on a
// fresh store, with how many writers. A zero field takes the case's
// default.
type Race struct {
	Rounds, Writers int
	// Skip leaves the case out: for a backend whose lock waits make the
	// case too slow, when the caller runs it at full size over a faster
	// backend of the same store.
	Skip bool
}

// size is r with defaults for its zero fields.
func (r Race) size(rounds, writers int) (int, int) {
	if r.Rounds > 0 {
		rounds = r.Rounds
	}
	if r.Writers > 0 {
		writers = r.Writers
	}
	return rounds, writers
}

// CASContract checks what every tokenstore.CASStore promises, RedisStore's
// semantics: CompareAndSet stores a set if the stored one has the version
// the caller expects (0: if nothing usable is stored), else it returns an
// error wrapping ErrConflict, which names neither the key nor a
// credential, and writes nothing, atomically with respect to Set, Delete
// and other CompareAndSets of every instance of the store.
func CASContract(t *testing.T, open CASOpener, opts Options) {
	if opts.ErrPrefix == "" {
		t.Fatal("storetest: Options.ErrPrefix is required")
	}
	ctx := context.Background()
	const key = "user:alice"
	withVersion := func(v uint64) *tokenstore.Token { tok := SecretSample(t0); tok.Version = v; return tok }
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
			c := newClock()
			s := open(t, c.Now)()
			if tt.stored != nil {
				if err := s.Set(ctx, key, tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			c.Advance(tt.advance)
			next := SecretSample(c.Now())
			next.Version = 77
			next.AccessToken = "tn_at_S3CRET-NEXT"
			err := s.CompareAndSet(ctx, key, tt.old, next)
			if tt.ok {
				if err != nil {
					t.Fatalf("CompareAndSet(old %d) = %v, want success", tt.old, err)
				}
				if got, err := s.Get(ctx, key); err != nil || !Equal(got, next) {
					t.Fatalf("after: Get = %v, %v; want %v", got, err, next)
				}
				return
			}
			if !errors.Is(err, tokenstore.ErrConflict) {
				t.Fatalf("CompareAndSet(old %d) = %v, want ErrConflict", tt.old, err)
			}
			t.Log(err)
			CheckError(t, err, opts.ErrPrefix, "S3CRET", "tn_", "alice")
			// Nothing was written: Get finds what was there (nothing
			// when that was dead), not next.
			got, err := s.Get(ctx, key)
			if tt.stored == nil || !tt.stored.Usable(c.Now()) {
				if !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("a refused CompareAndSet stored something: Get = %v, %v", got, err)
				}
				return
			}
			if err != nil || !Equal(got, tt.stored) {
				t.Fatalf("after a refused CompareAndSet: Get = %v, %v; want the set stored before, %v", got, err, tt.stored)
			}
		})
	}

	t.Run("compare-and-set/nil token", func(t *testing.T) {
		s := open(t, newClock().Now)()
		if err := s.CompareAndSet(ctx, key, 0, nil); err == nil || errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("CompareAndSet of nil = %v, want an error other than a conflict", err)
		}
	})

	// The defect this fences: a disconnect (Delete) on one instance undone
	// by a refresh on another that writes the rotated set back.
	t.Run("compare-and-set after delete", func(t *testing.T) {
		inst := open(t, newClock().Now)
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
		CheckError(t, err, opts.ErrPrefix, "S3CRET", "alice")
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

	// seeded opens a fresh store that holds version 1 of the set.
	seeded := func(t *testing.T) (instance func() CASStore) {
		t.Helper()
		inst := open(t, newClock().Now)
		if err := inst().Set(ctx, key, withVersion(1)); err != nil {
			t.Fatal(err)
		}
		return inst
	}

	// Writers that all read version 1, each on an instance of its own:
	// exactly one of them wins, and its set is what is stored. Several
	// rounds, since a store without the atomicity loses only when two
	// compares fall between one compare and its write.
	if !opts.Race.Skip {
		t.Run("compare-and-set race from one version", func(t *testing.T) {
			rounds, writers := opts.Race.size(8, 16)
			for round := range rounds {
				inst := seeded(t)
				stores := make([]CASStore, writers)
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
				if won.Load() != 1 || lost.Load() != int64(writers-1) {
					t.Fatalf("round %d: %d writers won and %d lost, want 1 and %d", round, won.Load(), lost.Load(), writers-1)
				}
				if got, err := inst().Get(ctx, key); err != nil || !Equal(got, withVersion(winner.Load())) {
					t.Fatalf("round %d: Get = %v, %v; want the winner's set, version %d", round, got, err, winner.Load())
				}
			}
		})
	}

	// Writers rotate the set with CompareAndSet from the version they last
	// saw (re-reading on a conflict) while another instance deletes it.
	// None of them ever writes with old 0, so once Delete has returned
	// nothing may be stored again: a CompareAndSet that began after it
	// must fail, and the end state is no set at all. A store whose compare
	// and write are not atomic with Delete resurrects the set when a
	// Delete falls between them.
	if !opts.DeleteRace.Skip {
		t.Run("delete races compare-and-set", func(t *testing.T) {
			rounds, writers := opts.DeleteRace.size(64, 4)
			for round := range rounds {
				inst := seeded(t)
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
}

// Sealed is open with every instance it makes wrapped in tokenstore.Sealed
// under key (and the older keys, which only open): the contract holds
// through the encryption.
func Sealed(open CASOpener, key []byte, older ...[]byte) CASOpener {
	return func(t *testing.T, now func() time.Time) func() CASStore {
		inst := open(t, now)
		return func() CASStore {
			s, err := tokenstore.NewSealed(inst(), key, older...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
}

// SealedRotation is open with every instance it makes wrapped in
// tokenstore.Sealed over all of keys, each instance sealing with the next
// key in turn: a fleet in the middle of a key rotation, whose instances
// seal with different keys and open every set. The contract holds there
// too.
func SealedRotation(open CASOpener, keys ...[]byte) CASOpener {
	return func(t *testing.T, now func() time.Time) func() CASStore {
		inst := open(t, now)
		var n atomic.Int64
		return func() CASStore {
			i := int(n.Add(1)-1) % len(keys)
			order := append(append([][]byte{}, keys[i:]...), keys[:i]...)
			s, err := tokenstore.NewSealed(inst(), order[0], order[1:]...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
}
