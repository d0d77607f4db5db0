package tokenstore_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// The store on the production setups, real servers of internal/redistest:
// Sentinel (a primary, a replica, three sentinels; go-redis's failover
// client) and Cluster (three primaries with a replica each; its cluster
// client). Each runs the store contracts, the wait for replicas, and a
// failover right after a rotation, with a lease held across it.

// haSetup is one of the production setups under test.
type haSetup struct {
	client func(t testing.TB) redis.UniversalClient
	// kill SIGKILLs the primary that holds name and returns once a
	// replica has taken over.
	kill func(t testing.TB, name string)
	// replicaHas reads the version stored under name on a replica.
	replicaHas func(t testing.TB, name string) string
}

func TestRedisStore_Sentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	testHA(t, haSetup{
		client: func(t testing.TB) redis.UniversalClient { return s.Client(t) },
		kill: func(t testing.TB, _ string) {
			old := s.KillPrimary(t)
			s.WaitFailover(t, old)
		},
		replicaHas: func(t testing.TB, name string) string {
			var replica *redistest.Server
			for _, n := range s.Nodes() {
				if n != s.Primary(t) {
					replica = n
				}
			}
			return replica.Client(t).HGet(context.Background(), name, "v").Val()
		},
	})
}

func TestRedisStore_Cluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	testHA(t, haSetup{
		client: func(t testing.TB) redis.UniversalClient { return cl.Client(t) },
		kill: func(t testing.TB, name string) {
			old := cl.PrimaryOf(t, name)
			old.Stop()
			cl.WaitFailover(t, old)
		},
		replicaHas: func(t testing.TB, name string) string {
			p := cl.PrimaryOf(t, name)
			for i, n := range cl.Nodes()[:3] {
				if n == p {
					c := cl.Nodes()[i+3].Client(t)
					// A cluster replica serves reads after READONLY, on
					// the same connection.
					var v string
					err := c.Watch(context.Background(), func(tx *redis.Tx) error {
						if err := tx.ReadOnly(context.Background()).Err(); err != nil {
							return err
						}
						v = tx.HGet(context.Background(), name, "v").Val()
						return nil
					})
					if err != nil {
						t.Fatal(err)
					}
					return v
				}
			}
			t.Fatalf("the primary of %s is not one of the first three nodes", name)
			return ""
		},
	})
}

func testHA(t *testing.T, ha haSetup) {
	ctx := context.Background()
	t.Run("Contract", func(t *testing.T) {
		rc := ha.client(t)
		storetest.Contract(t, func(t *testing.T, now func() time.Time) (tokenstore.Store, func() int) {
			ns := nextNS()
			s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, Now: now})
			return s, func() int { return len(redistest.Keys(t, rc, ns+":*:tok")) }
		})
	})

	t.Run("CASContract", func(t *testing.T) {
		clients := []redis.UniversalClient{ha.client(t), ha.client(t)}
		open := func(t *testing.T, now func() time.Time) func() storetest.CASStore {
			ns := nextNS()
			var n atomic.Int64
			return func() storetest.CASStore {
				rc := clients[n.Add(1)%int64(len(clients))]
				return newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, Now: now})
			}
		}
		storetest.CASContract(t, open, casOptions)
	})

	t.Run("WaitsForReplicas", func(t *testing.T) {
		rc := ha.client(t)
		ns := nextNS()
		s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns})
		if err := s.Set(ctx, "user:alice", secretSample(time.Now())); err != nil {
			t.Fatal(err)
		}
		next := secretSample(time.Now())
		next.Version = 43
		if err := s.CompareAndSet(ctx, "user:alice", 42, next); err != nil {
			t.Fatal(err)
		}
		// Acknowledged: the replica has it once CompareAndSet returns.
		if v := ha.replicaHas(t, redisName(ns, "tok", "user:alice")); v != "43" {
			t.Fatalf("the replica holds version %q after the compare-and-set, want 43", v)
		}
		// More replicas than there are: stored, and reported.
		two := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, MinReplicas: 2, WaitTimeout: 50 * time.Millisecond})
		next.Version = 44
		err := two.CompareAndSet(ctx, "user:alice", 43, next)
		if !errors.Is(err, tokenstore.ErrNotReplicated) || errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("compare-and-set waiting for 2 replicas of 1 = %v, want ErrNotReplicated", err)
		}
		checkErrorText(t, err, "alice", "S3CRET")
		if got, err := s.Get(ctx, "user:alice"); err != nil || got.Version != 44 {
			t.Fatalf("Get = %v, %v; want the set the primary stored", got, err)
		}

		// A delete (a disconnect) is waited for too: a failover must not
		// bring the set back. Waiting for more replicas than there are
		// deletes it from the primary and says so; deleting it again,
		// now absent, still waits (for what the primary wrote before).
		err = two.Delete(ctx, "user:alice")
		if !errors.Is(err, tokenstore.ErrNotReplicated) {
			t.Fatalf("Delete waiting for 2 replicas of 1 = %v, want ErrNotReplicated", err)
		}
		checkErrorText(t, err, "alice", "S3CRET")
		if _, err := s.Get(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("Get after the unacknowledged delete = %v, want ErrNotFound (the primary deleted it)", err)
		}
		if err := two.Delete(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrNotReplicated) {
			t.Fatalf("Delete again of the absent set, waiting for 2 of 1 = %v, want ErrNotReplicated", err)
		}
		if err := s.Set(ctx, "user:bob", secretSample(time.Now())); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "user:bob"); err != nil {
			t.Fatalf("Delete waiting for the one replica: %v", err)
		}
		if v := ha.replicaHas(t, redisName(ns, "tok", "user:bob")); v != "" {
			t.Fatalf("the replica still holds version %q after Delete returned", v)
		}
	})

	// Failover: a rotation acknowledged by the replica survives the
	// primary's death; a lease held across the failover is lost with it
	// (it ran out while no primary answered), so two writers may both
	// believe they hold it: compare-and-set lets only one of them win.
	t.Run("Failover", func(t *testing.T) {
		ns := nextNS()
		const lease = 300 * time.Millisecond
		a := newRedisStore(t, ha.client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
		b := newRedisStore(t, ha.client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
		const key = "user:alice"
		withRefresh := func(v uint64, rt string) *tokenstore.Token {
			tok := secretSample(time.Now())
			tok.Version, tok.RefreshToken = v, rt
			return tok
		}
		if err := a.Set(ctx, key, withRefresh(42, "rt-42")); err != nil {
			t.Fatal(err)
		}
		if err := a.CompareAndSet(ctx, key, 42, withRefresh(43, "rt-43")); err != nil {
			t.Fatal(err)
		}
		unlockA, err := a.Lock(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		defer unlockA()

		start := time.Now()
		ha.kill(t, redisName(ns, "tok", key))
		t.Logf("failover in %v", time.Since(start).Round(time.Millisecond))

		got := eventuallyGet(t, b, key)
		if got.Version != 43 || got.RefreshToken != "rt-43" {
			t.Fatalf("after the failover the store holds version %d (%s), want the rotated 43", got.Version, got.RefreshToken)
		}
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		unlockB, err := b.Lock(lctx, key)
		if err != nil {
			t.Fatalf("B's Lock after the failover: %v (A's lease should have run out)", err)
		}
		defer unlockB()

		// A and B both hold "the" lease and both rotated version 43.
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i, s := range []*tokenstore.RedisStore{a, b} {
			wg.Go(func() { errs[i] = casSettled(t, s, key, 43, withRefresh(44, []string{"rt-44a", "rt-44b"}[i])) })
		}
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, tokenstore.ErrConflict):
				t.Errorf("writer %d: %v, want nil or ErrConflict", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("%d writers won the compare-and-set from version 43, want exactly 1 (%v)", won, errs)
		}
		final := eventuallyGet(t, a, key)
		if final.Version != 44 || (final.RefreshToken == "rt-44a") != (errs[0] == nil) {
			t.Fatalf("stored %d (%s) after the race, want the winner's set", final.Version, final.RefreshToken)
		}
	})
}

// eventuallyGet reads key until the store answers (a client may first
// meet the dead primary).
func eventuallyGet(t *testing.T, s tokenstore.Store, key string) *tokenstore.Token {
	t.Helper()
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) { // polling interval
		var tok *tokenstore.Token
		if tok, err = s.Get(context.Background(), key); err == nil {
			return tok
		}
	}
	t.Fatalf("Get after the failover: %v", err)
	return nil
}

// casSettled runs CompareAndSet until it succeeds or conflicts: a client
// may first meet the dead primary, as writeFenced in the middleware retries.
func casSettled(t *testing.T, s *tokenstore.RedisStore, key string, old uint64, tok *tokenstore.Token) error {
	var err error
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) { // polling interval
		if err = s.CompareAndSet(context.Background(), key, old, tok); err == nil || errors.Is(err, tokenstore.ErrConflict) {
			return err
		}
	}
	return err
}
