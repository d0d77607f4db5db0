package tokenstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
)

// redisACL is the ACL rule the README gives for the store's user: its
// keys only (the namespace tokengate, hash-tagged names), the commands
// the store and go-redis's clients send, nothing else.
const redisACL = "on >gw-secret resetkeys ~tokengate:{*}:* resetchannels -@all " +
	"+hello +auth +ping +select " +
	"+hget +del +eval +evalsha +watch +unwatch +wait +info " +
	"+hmget +hset +pexpire +set +get " +
	"+zadd +zrange +zcard +zpopmin +zrem " +
	"+cluster|slots +cluster|shards"

// TestRedisStore_ACL runs the store as a user limited by redisACL, on one
// server, under Sentinel and on a cluster: every call works (the replica
// wait included), and the user can touch no other key.
func TestRedisStore_ACL(t *testing.T) {
	ctx := context.Background()
	setACL := func(t *testing.T, nodes ...*redistest.Server) {
		for _, n := range nodes {
			if err := n.Client(t).Do(ctx, append([]any{"ACL", "SETUSER", "tokengate-gw"}, aclArgs()...)...).Err(); err != nil {
				t.Fatal(err)
			}
		}
	}
	tests := []struct {
		name   string
		client func(t *testing.T) redis.UniversalClient
	}{
		{"standalone", func(t *testing.T) redis.UniversalClient {
			s := redistest.Start(t)
			setACL(t, s)
			return redis.NewClient(&redis.Options{Addr: s.Addr(), Username: "tokengate-gw", Password: "gw-secret"})
		}},
		{"sentinel", func(t *testing.T) redis.UniversalClient {
			s := redistest.StartSentinel(t)
			setACL(t, s.Nodes()...)
			return redis.NewFailoverClient(&redis.FailoverOptions{MasterName: redistest.MasterName, SentinelAddrs: s.SentinelAddrs(),
				Username: "tokengate-gw", Password: "gw-secret"})
		}},
		{"cluster", func(t *testing.T) redis.UniversalClient {
			cl := redistest.StartCluster(t)
			setACL(t, cl.Nodes()...)
			return redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), Username: "tokengate-gw", Password: "gw-secret"})
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rc := tt.client(t)
			defer rc.Close()
			s := newRedisStore(t, rc, tokenstore.RedisOptions{LeaseTTL: time.Second})
			tok := secretSample(time.Now())
			if err := s.Set(ctx, "user:alice", tok); err != nil {
				t.Fatal(err)
			}
			next := secretSample(time.Now())
			next.Version = 43
			if err := s.CompareAndSet(ctx, "user:alice", 42, next); err != nil {
				t.Fatal(err)
			}
			if err := s.CompareAndSet(ctx, "user:alice", 42, next); !errors.Is(err, tokenstore.ErrConflict) {
				t.Fatalf("stale compare-and-set = %v, want ErrConflict", err)
			}
			if got, err := s.Get(ctx, "user:alice"); err != nil || got.Version != 43 {
				t.Fatalf("Get = %v, %v", got, err)
			}
			unlock, err := s.Lock(ctx, "user:alice")
			if err != nil {
				t.Fatal(err)
			}
			unlock()
			if err := s.Delete(ctx, "user:alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("Get after Delete = %v, want ErrNotFound", err)
			}
			for _, id := range []string{"p1", "p2", "p3"} { // p1 goes beyond the cap
				if err := s.PutPending(ctx, "user:alice", id, []byte(id), time.Minute, 2); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.TakePending(ctx, "user:alice", "p1"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("TakePending of the pending record beyond the cap = %v, want ErrNotFound", err)
			}
			if rec, err := s.TakePending(ctx, "user:alice", "p3"); err != nil || string(rec) != "p3" {
				t.Fatalf("TakePending = %q, %v", rec, err)
			}
			// Outside the namespace, or another command: refused.
			if err := rc.Set(ctx, "other:key", "x", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Errorf("SET outside the namespace = %v, want NOPERM", err)
			}
			if err := rc.Do(ctx, "FLUSHALL").Err(); err == nil || !strings.Contains(err.Error(), "NOPERM") {
				t.Errorf("FLUSHALL = %v, want NOPERM", err)
			}
		})
	}
}

func aclArgs() []any {
	var args []any
	for _, f := range strings.Fields(redisACL) {
		args = append(args, f)
	}
	return args
}
