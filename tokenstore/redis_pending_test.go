package tokenstore_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// redisPendingOpener opens RedisStores on one namespace over the clients
// client makes, two of them, as two processes would have.
func redisPendingOpener(client func(t *testing.T) redis.UniversalClient) storetest.PendingOpener {
	return func(t *testing.T, now func() time.Time) func() storetest.PendingStore {
		ns := nextNS()
		clients := []redis.UniversalClient{client(t), client(t)}
		var n atomic.Int64
		return func() storetest.PendingStore {
			return newRedisStore(t, clients[n.Add(1)%2], tokenstore.RedisOptions{Namespace: ns, Now: now})
		}
	}
}

// Over a standalone Redis, storetest.Run checks pending connects
// (TestRedisStore_Contract).
func TestRedisStore_PendingContract(t *testing.T) {
	setups := []struct {
		name   string
		client func(t *testing.T) func(t *testing.T) redis.UniversalClient
	}{
		{"sentinel", func(t *testing.T) func(t *testing.T) redis.UniversalClient {
			s := redistest.StartSentinel(t)
			return func(t *testing.T) redis.UniversalClient { return s.Client(t) }
		}},
		{"cluster", func(t *testing.T) func(t *testing.T) redis.UniversalClient {
			cl := redistest.StartCluster(t)
			return func(t *testing.T) redis.UniversalClient { return cl.Client(t) }
		}},
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			open := redisPendingOpener(s.client(t))
			storetest.PendingContract(t, open, "tokenstore: ")
			t.Run("sealed", func(t *testing.T) {
				storetest.PendingContract(t, storetest.SealedPending(open, testKey("one")), "tokenstore: ")
			})
		})
	}
}

// TestRedisStore_PendingLayout: a subject's pending keys share the hash
// slot of its token set, carry a TTL, hold neither the subject key nor the
// id in their names, and under Sealed hold the record in no readable form.
func TestRedisStore_PendingLayout(t *testing.T) {
	ctx := context.Background()
	srv := redistest.Start(t)
	rc := srv.Client(t)
	ns := nextNS()
	s := newRedisStore(t, rc, tokenstore.RedisOptions{Namespace: ns})
	sealed, err := tokenstore.NewSealed(s, testKey("one"))
	if err != nil {
		t.Fatal(err)
	}
	const (
		subject = "user:SUBJECT-KEY-MARKER-5c1e8a0b"
		id      = "ID-MARKER-0f3b9d27c4e1"
		record  = "PENDING-RECORD-MARKER-VERIFIER-9a7d3e5f1b2c"
	)
	if err := s.Set(ctx, subject, storetest.Sample(time.Now())); err != nil {
		t.Fatal(err)
	}
	if err := sealed.PutPending(ctx, subject, id, []byte(record), time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	keys := redistest.Keys(t, rc, ns+":*")
	if len(keys) != 3 {
		t.Fatalf("keys %v, want the token set, the pending set and one record", keys)
	}
	slot := func(k string) string { return k[strings.Index(k, "{"):strings.Index(k, "}")] }
	for _, k := range keys {
		if slot(k) != slot(keys[0]) {
			t.Errorf("key %s is not in the hash slot of %s", k, keys[0])
		}
		if strings.Contains(k, "MARKER") {
			t.Errorf("key name %s shows the subject key or the id", k)
		}
		if ttl := rc.PTTL(ctx, k).Val(); ttl <= 0 {
			t.Errorf("key %s has no TTL (%v)", k, ttl)
		}
		if strings.Contains(k, ":pend:") {
			v := []byte(rc.Get(ctx, k).Val())
			if bytes.Contains(v, []byte("MARKER")) {
				t.Errorf("the sealed pending record %s holds the record in clear: %q", k, v)
			}
		}
	}
	got, err := sealed.TakePending(ctx, subject, id)
	if err != nil || string(got) != record {
		t.Fatalf("TakePending = %q, %v", got, err)
	}
	// Moved to another subject, a sealed record does not open.
	if err := sealed.PutPending(ctx, subject, id, []byte(record), time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	var moved string
	for _, k := range redistest.Keys(t, rc, ns+":*:pend:*") {
		moved = rc.Get(ctx, k).Val()
	}
	if err := s.PutPending(ctx, "user:mallory", id, []byte(moved)[8:], time.Minute, 5); err != nil {
		t.Fatal(err)
	}
	if got, err := sealed.TakePending(ctx, "user:mallory", id); err == nil || !errors.Is(err, tokenstore.ErrTampered) {
		t.Fatalf("a record moved to another subject: TakePending = %q, %v; want ErrTampered", got, err)
	}
}
