package tokenstore_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// The Sealed tests (sealed_test.go) run over a RedisStore too.
func init() {
	// go-redis logs each failed dial; the restart test fails thousands on
	// purpose, and the errors that matter come back from the calls.
	redis.SetLogger(discardLogger{})
	inners = append(inners, struct {
		name string
		new  func(t testing.TB, c *clock) (s tokenstore.Store, raw func() []byte)
	}{"redis", func(t testing.TB, c *clock) (tokenstore.Store, func() []byte) {
		rc := redistest.Start(t).Client(t)
		return newRedisStore(t, rc, tokenstore.RedisOptions{Now: c.Now}), func() []byte { return redisDump(t, rc) }
	}})
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

var redisNS atomic.Int64

// nextNS is a namespace of its own for one store of a test.
func nextNS() string { return fmt.Sprintf("test%d", redisNS.Add(1)) }

func newRedisStore(t testing.TB, c redis.UniversalClient, opts tokenstore.RedisOptions) *tokenstore.RedisStore {
	t.Helper()
	s, err := tokenstore.NewRedisStore(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// redisName is where a RedisStore in namespace ns keeps key: the documented
// naming scheme, which the tests check instead of trusting.
func redisName(ns, kind, key string) string {
	sum := sha256.Sum256([]byte(key))
	return ns + ":{" + hex.EncodeToString(sum[:]) + "}:" + kind
}

// redisDump is every key name, hash field and value in the database.
func redisDump(t testing.TB, c redis.UniversalClient) []byte {
	t.Helper()
	ctx := context.Background()
	var all []byte
	for _, k := range redistest.Keys(t, c, "*") {
		all = append(all, k...)
		switch typ := c.Type(ctx, k).Val(); typ {
		case "hash":
			for f, v := range c.HGetAll(ctx, k).Val() {
				all = append(all, f...)
				all = append(all, v...)
			}
		case "string":
			all = append(all, c.Get(ctx, k).Val()...)
		default:
			t.Fatalf("unexpected %s key %s", typ, k)
		}
	}
	return all
}

// checkErrorText fails if err's message does not start with the package
// prefix or carries any of the texts that must never be in an error.
func checkErrorText(t testing.TB, err error, never ...string) {
	t.Helper()
	storetest.CheckError(t, err, "tokenstore: ", never...)
}

// storetest.Run on RedisStore, plain and sealed: the instances of one
// store are RedisStores on one namespace over two clients, as two
// processes would have. Its pending connects run there too; on Sentinel
// and Cluster in TestRedisStore_PendingContract and redis_ha_test.go.
func TestRedisStore_Contract(t *testing.T) {
	srv := redistest.Start(t)
	open := func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
		ns := nextNS()
		clients := []*redis.Client{srv.Client(t), srv.Client(t)}
		var n atomic.Int64
		return func() tokenstore.Store {
				rc := clients[n.Add(1)%int64(len(clients))]
				return newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, Now: now})
			}, func() int {
				return len(redistest.Keys(t, clients[0], ns+":*:tok"))
			}
	}
	storetest.Run(t, open, casOptions)
	t.Run("sealed", func(t *testing.T) { storetest.Run(t, storetest.SealedOpen(open, testKey("one")), casOptions) })
}

func TestNewRedisStore_Errors(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"}) // never contacted
	defer rc.Close()
	tests := []struct {
		name string
		c    redis.UniversalClient
		opts tokenstore.RedisOptions
		want string
	}{
		{"nil client", nil, tokenstore.RedisOptions{}, "nil client"},
		{"lease too short", rc, tokenstore.RedisOptions{LeaseTTL: 10 * time.Millisecond}, "lease TTL 10ms is below 30ms"},
		{"negative lease", rc, tokenstore.RedisOptions{LeaseTTL: -time.Second}, "lease TTL -1s"},
		{"brace in the namespace", rc, tokenstore.RedisOptions{Namespace: "a{b}"}, "must not contain { or }"},
		{"min replicas below -1", rc, tokenstore.RedisOptions{MinReplicas: -2}, "min replicas -2 is below -1"},
		{"wait timeout too short", rc, tokenstore.RedisOptions{WaitTimeout: time.Microsecond}, "wait timeout 1µs is below 1ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tokenstore.NewRedisStore(tt.c, tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			checkErrorText(t, err)
		})
	}
	if _, err := tokenstore.NewRedisStore(rc, tokenstore.RedisOptions{}); err != nil {
		t.Fatalf("zero options: %v", err)
	}
}

// TestRedisStore_NamesHideKeys scans the whole keyspace: every key is the
// namespace and a hash, and no caller key text is in a name or a value.
func TestRedisStore_NamesHideKeys(t *testing.T) {
	rc := redistest.Start(t).Client(t)
	ctx := context.Background()
	keys := []string{"user:alice@example.com", "cc|client-id-XYZ|supply::leads", "user:bob"}
	for _, tt := range []struct {
		name, ns, wantNS string
	}{
		{"default namespace", "", "tokengate"},
		{"own namespace", "acme-prod", "acme-prod"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := rc.FlushDB(ctx).Err(); err != nil {
				t.Fatal(err)
			}
			s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: tt.ns, Now: newClock(t0).Now})
			want := map[string]bool{}
			var unlocks []func()
			for _, k := range keys {
				if err := s.Set(ctx, k, sample(t0)); err != nil {
					t.Fatal(err)
				}
				unlock, err := s.Lock(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				unlocks = append(unlocks, unlock)
				want[redisName(tt.wantNS, "tok", k)] = true
				want[redisName(tt.wantNS, "lock", k)] = true
			}
			shape := regexp.MustCompile(`^` + regexp.QuoteMeta(tt.wantNS) + `:\{[0-9a-f]{64}\}:(tok|lock)$`)
			got := redistest.Keys(t, rc, "*")
			for _, name := range got {
				if !shape.MatchString(name) || !want[name] {
					t.Errorf("unexpected key %q", name)
				}
			}
			if len(got) != len(want) {
				t.Errorf("%d keys in Redis, want %d", len(got), len(want))
			}
			dump := string(redisDump(t, rc))
			for _, secret := range []string{"alice", "example.com", "client-id-XYZ", "bob", "user:"} {
				if strings.Contains(dump, secret) {
					t.Errorf("%q found in Redis", secret)
				}
			}
			for _, unlock := range unlocks {
				unlock()
			}
			if left := redistest.Keys(t, rc, "*:lock"); len(left) != 0 {
				t.Errorf("leases left after unlock: %v", left)
			}
		})
	}
}

// TestRedisStore_TTL checks the TTL of a set's key: a minute past the last
// moment anything in it is usable, on the store's clock.
func TestRedisStore_TTL(t *testing.T) {
	rc := redistest.Start(t).Client(t)
	ctx := context.Background()
	const day = 24 * time.Hour
	tests := []struct {
		name string
		tok  func() *tokenstore.Token
		want time.Duration
	}{
		{"refresh expiry", func() *tokenstore.Token { return sample(t0) }, 180*day + time.Minute},
		{"no refresh token: the access token's expiry", func() *tokenstore.Token {
			tok := sample(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}, time.Hour + time.Minute},
		{"refresh token of unknown lifetime: 180 days", func() *tokenstore.Token {
			tok := sample(t0)
			tok.RefreshExpiry = time.Time{}
			return tok
		}, 180*day + time.Minute},
		{"access token outlives the refresh token", func() *tokenstore.Token {
			tok := sample(t0)
			tok.Expiry, tok.RefreshExpiry = t0.Add(2*time.Hour), t0.Add(time.Hour)
			return tok
		}, 2*time.Hour + time.Minute},
		{"access token outlives the default", func() *tokenstore.Token {
			tok := sample(t0)
			tok.Expiry, tok.RefreshExpiry = t0.Add(200*day), time.Time{}
			return tok
		}, 200*day + time.Minute},
		{"dead already: the margin", func() *tokenstore.Token {
			tok := sample(t0.Add(-2 * time.Hour))
			tok.RefreshToken = ""
			return tok
		}, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := nextNS()
			s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, Now: newClock(t0).Now})
			if err := s.Set(ctx, "k", tt.tok()); err != nil {
				t.Fatal(err)
			}
			got, err := rc.PTTL(ctx, redisName(ns, "tok", "k")).Result()
			if err != nil {
				t.Fatal(err)
			}
			if got > tt.want || got < tt.want-5*time.Second {
				t.Fatalf("PTTL = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestRedisStore_CorruptRecord(t *testing.T) {
	rc := redistest.Start(t).Client(t)
	ctx := context.Background()
	s := newRedisStore(t, rc, tokenstore.RedisOptions{Now: newClock(t0).Now})
	name := redisName("tokengate", "tok", "user:alice")
	for _, tt := range []struct {
		name  string
		value string
	}{
		{"garbage", "not a token record"},
		{"truncated", func() string { b, _ := secretSample(t0).MarshalBinary(); return string(b[:len(b)-3]) }()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := rc.HSet(ctx, name, "v", "1", "d", tt.value).Err(); err != nil {
				t.Fatal(err)
			}
			_, err := s.Get(ctx, "user:alice")
			if err == nil || errors.Is(err, tokenstore.ErrNotFound) || !strings.Contains(err.Error(), "corrupt") {
				t.Fatalf("Get = %v, want a corrupt record error", err)
			}
			checkErrorText(t, err, "alice", "S3CRET")
			if n := rc.Exists(ctx, name).Val(); n != 1 {
				t.Fatal("the corrupt record was not left in place")
			}
		})
	}
}

// TestRedisStore_Sealed runs Sealed over a RedisStore: nothing of a
// credential in Redis, a wrong key refused, CompareAndSet and Lock passed
// through.
func TestRedisStore_Sealed(t *testing.T) {
	rc := redistest.Start(t).Client(t)
	ctx := context.Background()
	inner := newRedisStore(t, rc, tokenstore.RedisOptions{Now: newClock(t0).Now, LeaseTTL: time.Second})
	s := newSealed(t, inner, testKey("one"))
	keys := []string{"user:alice", "user:bob"}
	for _, k := range keys {
		if err := s.Set(ctx, k, secretSample(t0)); err != nil {
			t.Fatal(err)
		}
	}
	dump := redisDump(t, rc)
	// Whole keys and long markers only: sealed values are random base64,
	// in which a short name such as "bob" turns up by chance (about once
	// in a thousand runs).
	for _, secret := range []string{secretAccess, secretRefresh, "S3CRET", keys[0], keys[1]} {
		if strings.Contains(string(dump), secret) {
			t.Errorf("%q found in Redis", secret)
		}
	}
	if !strings.Contains(string(dump), "tgs1.") || !strings.Contains(string(dump), "offline_access") {
		t.Fatal("the test did not look at the stored sets")
	}

	t.Run("wrong key", func(t *testing.T) {
		_, err := newSealed(t, inner, testKey("two")).Get(ctx, "user:alice")
		if !errors.Is(err, tokenstore.ErrWrongKey) {
			t.Fatalf("Get with another key = %v, want ErrWrongKey", err)
		}
		checkErrorText(t, err, "S3CRET", "alice")
	})

	t.Run("compare-and-set", func(t *testing.T) {
		next := secretSample(t0)
		next.Version = 43
		if err := s.CompareAndSet(ctx, "user:alice", 41, next); !errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("stale CompareAndSet = %v, want ErrConflict", err)
		}
		if err := s.CompareAndSet(ctx, "user:alice", 42, next); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "user:alice"); err != nil || !equal(got, next) {
			t.Fatalf("Get = %v, %v; want %v", got, err, next)
		}
		if strings.Contains(string(redisDump(t, rc)), "S3CRET") {
			t.Fatal("CompareAndSet stored a credential in clear")
		}
	})

	t.Run("compare-and-set over a store without it", func(t *testing.T) {
		err := newSealed(t, newStore(t, newClock(t0).Now), testKey("one")).CompareAndSet(ctx, "k", 0, secretSample(t0))
		if !errors.Is(err, errors.ErrUnsupported) {
			t.Fatalf("err = %v, want errors.ErrUnsupported", err)
		}
		checkErrorText(t, err, "S3CRET")
	})

	t.Run("lock is the inner store's lease", func(t *testing.T) {
		unlock, err := s.Lock(ctx, "user:alice")
		if err != nil {
			t.Fatal(err)
		}
		defer unlock()
		short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, err := inner.Lock(short, "user:alice"); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("the inner store's Lock = %v while Sealed holds the lease, want DeadlineExceeded", err)
		}
	})
}

// TestRedisStore_LockExcludes runs holders of one key on two stores and two
// clients: never two inside at once.
func TestRedisStore_LockExcludes(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	ns := nextNS()
	a := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns})
	b := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns})
	counter := srv.Client(t)

	t.Run("a waiter gets the lease when it is released", func(t *testing.T) {
		unlock, err := a.Lock(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		_, err = b.Lock(short, "k")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("second Lock while held = %v, want DeadlineExceeded", err)
		}
		checkErrorText(t, err)
		got := make(chan error, 1)
		go func() {
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			unlockB, err := b.Lock(wctx, "k")
			if err == nil {
				unlockB()
			}
			got <- err
		}()
		unlock()
		unlock() // extra calls do nothing
		if err := <-got; err != nil {
			t.Fatalf("the waiter did not get the lease: %v", err)
		}
		// Another key is independent.
		unlockK, err := a.Lock(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		defer unlockK()
		octx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		unlockOther, err := b.Lock(octx, "other")
		if err != nil {
			t.Fatalf("Lock of another key: %v", err)
		}
		unlockOther()
	})

	t.Run("mutual exclusion", func(t *testing.T) {
		const workers, rounds = 6, 5
		var inside, maxInside atomic.Int64
		var wg sync.WaitGroup
		for w := range workers {
			s := []*tokenstore.RedisStore{a, b}[w%2]
			wg.Go(func() {
				for range rounds {
					lctx, cancel := context.WithTimeout(ctx, 20*time.Second)
					unlock, err := s.Lock(lctx, "shared")
					cancel()
					if err != nil {
						t.Error(err)
						return
					}
					n := inside.Add(1)
					for m := maxInside.Load(); n > m && !maxInside.CompareAndSwap(m, n); m = maxInside.Load() {
					}
					// A round trip while holding it, as a refresh does.
					if err := counter.Incr(ctx, "work").Err(); err != nil {
						t.Error(err)
					}
					inside.Add(-1)
					unlock()
				}
			})
		}
		wg.Wait()
		if m := maxInside.Load(); m != 1 {
			t.Fatalf("%d holders at once", m)
		}
		if n := counter.Get(ctx, "work").Val(); n != fmt.Sprint(workers*rounds) {
			t.Fatalf("work done %s times, want %d", n, workers*rounds)
		}
	})

	t.Run("canceled context", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := a.Lock(cctx, "c"); !errors.Is(err, context.Canceled) {
			t.Fatalf("Lock = %v, want context.Canceled", err)
		}
		if n := counter.Exists(ctx, redisName(ns, "lock", "c")).Val(); n != 0 {
			t.Fatal("a canceled Lock left a lease")
		}
	})
}

// TestRedisStore_LockRenewal holds a lease of 400ms for more than three
// times that: renewal keeps it, and a second locker cannot get it.
func TestRedisStore_LockRenewal(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	const lease = 400 * time.Millisecond
	ns := nextNS()
	a := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
	b := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
	rc := srv.Client(t)
	unlock, err := a.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	if ttl := rc.PTTL(ctx, redisName(ns, "lock", "k")).Val(); ttl <= 0 || ttl > lease {
		t.Fatalf("lease PTTL = %v, want in (0, %v]", ttl, lease)
	}
	start := time.Now()
	wait, cancel := context.WithTimeout(ctx, 3*lease+lease/4)
	defer cancel()
	if _, err := b.Lock(wait, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock %v after the first = %v, want DeadlineExceeded (the lease was not renewed)", time.Since(start), err)
	}
	if ttl := rc.PTTL(ctx, redisName(ns, "lock", "k")).Val(); ttl <= 0 {
		t.Fatalf("lease PTTL = %v after %v, want it renewed", ttl, time.Since(start))
	}
	unlock()
	if n := rc.Exists(ctx, redisName(ns, "lock", "k")).Val(); n != 0 {
		t.Fatal("unlock left the lease")
	}
	short, cancel2 := context.WithTimeout(ctx, lease)
	defer cancel2()
	unlockB, err := b.Lock(short, "k")
	if err != nil {
		t.Fatalf("Lock after unlock: %v", err)
	}
	unlockB()
}

// TestRedisStore_LockTakeover: a holder that died (its lease is not renewed)
// blocks the key until its lease runs out, not longer.
func TestRedisStore_LockTakeover(t *testing.T) {
	rc := redistest.Start(t).Client(t)
	ctx := context.Background()
	ns := nextNS()
	s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns})
	name := redisName(ns, "lock", "k")
	if err := rc.Set(ctx, name, "dead-holder", 300*time.Millisecond).Err(); err != nil {
		t.Fatal(err)
	}
	left := rc.PTTL(ctx, name).Val()
	start := time.Now()
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	unlock, err := s.Lock(lctx, "k")
	if err != nil {
		t.Fatalf("Lock did not take over the expired lease: %v", err)
	}
	defer unlock()
	if took := time.Since(start); took < left-20*time.Millisecond {
		t.Fatalf("Lock took over after %v, while the dead holder's lease had %v left", took, left)
	}
	if v := rc.Get(ctx, name).Val(); v == "dead-holder" || v == "" {
		t.Fatalf("lease value %q, want a new owner", v)
	}
}

// TestRedisStore_UnlockAfterLeaseLost: a holder whose lease was lost and
// taken by another must not release (or renew) the other's lease.
func TestRedisStore_UnlockAfterLeaseLost(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	const lease = 300 * time.Millisecond
	ns := nextNS()
	a := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
	b := newRedisStore(t, srv.Client(t), tokenstore.RedisOptions{Namespace: ns, LeaseTTL: lease})
	rc := srv.Client(t)
	name := redisName(ns, "lock", "k")

	unlockA, err := a.Lock(ctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	// A loses its lease (as when Redis failed over, or A was cut off for
	// longer than the lease): it is gone, and B takes the key.
	if err := rc.Del(ctx, name).Err(); err != nil {
		t.Fatal(err)
	}
	lctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	unlockB, err := b.Lock(lctx, "k")
	if err != nil {
		t.Fatal(err)
	}
	owner := rc.Get(ctx, name).Val()
	unlockA()
	if v := rc.Get(ctx, name).Val(); v != owner {
		t.Fatalf("A's unlock changed B's lease: %q, was %q", v, owner)
	}
	short, cancel2 := context.WithTimeout(ctx, 3*lease)
	defer cancel2()
	if _, err := a.Lock(short, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while B holds the lease = %v, want DeadlineExceeded", err)
	}
	unlockB()
	if n := rc.Exists(ctx, name).Val(); n != 0 {
		t.Fatal("B's unlock left its lease")
	}
}

// TestRedisStore_Restart stops Redis under a store: every call fails with a
// clear error (not ErrNotFound, not a hang), and once Redis is back the
// same store and client work again. A lease held across the restart is
// gone with Redis's data; its holder's unlock does not free the next one's.
func TestRedisStore_Restart(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	ns := nextNS()
	rc := srv.Client(t)
	s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns, LeaseTTL: 300 * time.Millisecond})
	if err := s.Set(ctx, "user:alice", secretSample(time.Now())); err != nil {
		t.Fatal(err)
	}
	unlockOld, err := s.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}

	srv.Stop()
	down, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	calls := []struct {
		name string
		call func() error
	}{
		{"get", func() error { _, err := s.Get(down, "user:alice"); return err }},
		{"set", func() error { return s.Set(down, "user:alice", secretSample(time.Now())) }},
		{"compare-and-set", func() error { return s.CompareAndSet(down, "user:alice", 42, secretSample(time.Now())) }},
		{"delete", func() error { return s.Delete(down, "user:alice") }},
		{"lock", func() error { _, err := s.Lock(down, "user:bob"); return err }},
	}
	for _, tt := range calls {
		t.Run("down/"+tt.name, func(t *testing.T) {
			err := tt.call()
			if err == nil || errors.Is(err, tokenstore.ErrNotFound) || errors.Is(err, tokenstore.ErrConflict) || down.Err() != nil {
				t.Fatalf("%s while Redis is down = %v, want a connection error at once", tt.name, err)
			}
			t.Log(err)
			checkErrorText(t, err, "alice", "bob", "S3CRET")
			if !strings.Contains(err.Error(), "redis "+tt.name) || !strings.Contains(err.Error(), "connection refused") {
				t.Errorf("error %q does not say what failed and why", err)
			}
		})
	}

	srv.Restart(t)
	// Redis came back empty: the first call may still see the dead
	// connection, go-redis then dials again.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = s.Get(ctx, "user:alice")
		if errors.Is(err, tokenstore.ErrNotFound) || time.Now().After(deadline) {
			break
		}
	}
	if !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("Get after restart = %v, want ErrNotFound (Redis keeps no data)", err)
	}
	if err := s.Set(ctx, "user:alice", secretSample(time.Now())); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, "user:alice"); err != nil || got.AccessToken != secretAccess {
		t.Fatalf("Get after restart = %v, %v", got, err)
	}
	lctx, cancel2 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel2()
	unlockNew, err := s.Lock(lctx, "user:alice")
	if err != nil {
		t.Fatalf("Lock after restart: %v", err)
	}
	owner := rc.Get(ctx, redisName(ns, "lock", "user:alice")).Val()
	unlockOld()
	if v := rc.Get(ctx, redisName(ns, "lock", "user:alice")).Val(); v != owner {
		t.Fatal("the unlock of a lease lost in the restart freed the new holder's")
	}
	unlockNew()
}
