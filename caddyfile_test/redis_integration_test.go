package caddyfile_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// The user context with `store redis` through a real Caddy, on a real
// redis-server secured as in production: the gateway logs in as an ACL
// user allowed only the keys of its namespace, and the default user has a
// password, so a gateway that did not authenticate, or wrote outside its
// namespace, would fail the connect.

const (
	redisUser      = "tokengate"
	redisPassword  = "redis-gw-pw-5e1b07"    // in the environment only: {env.REDIS_PASSWORD}
	redisAdminPass = "redis-admin-pw-90c2d1" // the default user's
	redisDB        = 3
	redisNS        = "tokengate" // the default redis_namespace
)

// secureRedis gives rs (just started, or restarted: it keeps no data nor
// ACL across restarts) the gateway's ACL user and a password on the
// default user.
func secureRedis(t *testing.T, rs *redistest.Server) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	defer c.Close()
	ctx := context.Background()
	if err := c.Do(ctx, "ACL", "SETUSER", redisUser, "reset", "on", ">"+redisPassword, "~"+redisNS+":*", "+@all").Err(); err != nil {
		t.Fatalf("creating the Redis ACL user: %v", err)
	}
	if err := c.ConfigSet(ctx, "requirepass", redisAdminPass).Err(); err != nil {
		t.Fatalf("setting the Redis password: %v", err)
	}
}

// redisContents are the keys of one Redis database with their values (a
// hash's field values, a string's value).
type redisContents map[string][]string

// readRedis reads database db of rs as the gateway's user.
func readRedis(t *testing.T, rs *redistest.Server, db int) redisContents {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: rs.Addr(), DB: db, Username: redisUser, Password: redisPassword})
	defer c.Close()
	ctx := context.Background()
	out := redisContents{}
	iter := c.Scan(ctx, 0, "*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		out[k] = nil
		switch typ, err := c.Type(ctx, k).Result(); {
		case err != nil:
			t.Fatalf("TYPE %s: %v", k, err)
		case typ == "hash":
			m, err := c.HGetAll(ctx, k).Result()
			if err != nil {
				t.Fatalf("HGETALL %s: %v", k, err)
			}
			for _, v := range m {
				out[k] = append(out[k], v)
			}
		case typ == "string":
			v, err := c.Get(ctx, k).Result()
			if err != nil && !errors.Is(err, redis.Nil) { // a lease released meanwhile
				t.Fatalf("GET %s: %v", k, err)
			}
			out[k] = append(out[k], v)
		}
	}
	if err := iter.Err(); err != nil {
		t.Fatalf("SCAN: %v", err)
	}
	return out
}

// mustBeOpaque checks what the gateway left in Redis: keys in its
// namespace only, in redisDB only, none naming a user or the client, no
// credential in clear (encryption_key seals them). It returns the number
// of token sets.
func mustBeOpaque(t *testing.T, rs *redistest.Server) int {
	t.Helper()
	if other := readRedis(t, rs, 0); len(other) != 0 {
		t.Errorf("database 0 has %d keys; the gateway was given database %d", len(other), redisDB)
	}
	sets, records := 0, 0
	for k, vals := range readRedis(t, rs, redisDB) {
		if !strings.HasPrefix(k, redisNS+":") {
			t.Errorf("Redis key %q is outside the namespace %s:", k, redisNS)
		}
		if strings.HasPrefix(k, redisNS+":{") && strings.HasSuffix(k, "}:tok") {
			sets++
		}
		for _, s := range []string{"alice", "bob", tasknationtest.DefaultClientID} {
			if strings.Contains(k, s) {
				t.Errorf("Redis key %q names %q", k, s)
			}
		}
		for _, v := range vals {
			// Long markers only: a sealed value is random base64, in which
			// a short name such as "bob" turns up by chance (about once
			// in a thousand records).
			for what, s := range map[string]string{
				"an access token": tasknationtest.AccessTokenPrefix, "a refresh token": tasknationtest.RefreshTokenPrefix,
				"the client secret": tasknationtest.DefaultClientSecret,
			} {
				if strings.Contains(v, s) {
					t.Errorf("the value of Redis key %s shows %s in clear", k, what)
				}
			}
			// A token set's record, decoded: its credentials sealed, and
			// no field in clear naming a user.
			var tok tokenstore.Token
			if tok.UnmarshalBinary([]byte(v)) != nil {
				continue
			}
			records++
			for _, c := range []string{tok.AccessToken, tok.RefreshToken} {
				if c != "" && !strings.HasPrefix(c, "tgs1.") {
					t.Errorf("the set in Redis key %s holds a credential that is not sealed", k)
				}
			}
			for _, f := range append([]string{tok.TokenType}, tok.Scopes...) {
				if strings.Contains(f, "alice") || strings.Contains(f, "bob") {
					t.Errorf("the set in Redis key %s names a user in clear: %q", k, f)
				}
			}
		}
	}
	if records != sets {
		t.Errorf("decoded %d token-set records from %d token keys", records, sets)
	}
	return sets
}

// TestUserContext_RedisStore: alice connects through a Caddy whose tokens
// are in Redis; a new Caddy on the same Redis serves her without a new
// connect. Redis goes down while Caddy runs: alice, whose token is in the
// middleware's memory, is still served; bob, who has none, is refused
// (503, not forwarded). Redis comes back (empty: the test server keeps no
// data): bob connects and his tokens are stored there without any action
// on Caddy, so the next Caddy serves him; alice's set went with Redis'
// data, so that Caddy asks her to connect.
func TestUserContext_RedisStore(t *testing.T) {
	rs := redistest.Start(t)
	secureRedis(t, rs)
	s := newUserSite(t)
	t.Setenv("TOKENGATE_KEY", keyOne)
	t.Setenv("REDIS_PASSWORD", redisPassword)
	opts := userOptions{extra: fmt.Sprintf("\t\tstore redis %s %d\n\t\tredis_username %s\n\t\tredis_password {env.REDIS_PASSWORD}\n\t\tencryption_key {env.TOKENGATE_KEY}\n",
		rs.Addr(), redisDB, redisUser)}
	s.start(opts)
	alice, bob := s.user(t, "alice"), s.user(t, "bob")

	alice.connect(t, "tn-alice")
	alice.mustCallAPIAs(t, "tn-alice")
	if n := mustBeOpaque(t, rs); n != 1 {
		t.Fatalf("Redis holds %d token sets, want alice's", n)
	}

	// A new Caddy on the same Redis. The changed request_timeout makes it
	// a token source of its own: only Redis can serve alice.
	s.restartServes(t, opts, alice)
	bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")

	// Redis goes down.
	rs.Stop()
	for range 3 {
		alice.mustCallAPIAs(t, "tn-alice")
	}
	bob.mustBeRefused(t, http.StatusServiceUnavailable, "token_unavailable")

	// Redis is back, empty; Caddy is left as it is.
	rs.Restart(t)
	secureRedis(t, rs)
	if n := mustBeOpaque(t, rs); n != 0 {
		t.Fatalf("the restarted Redis holds %d token sets, want none", n)
	}
	alice.mustCallAPIAs(t, "tn-alice")
	bob.connect(t, "tn-bob")
	bob.mustCallAPIAs(t, "tn-bob")
	if n := mustBeOpaque(t, rs); n != 1 {
		t.Fatalf("Redis holds %d token sets after bob connected, want his", n)
	}

	// The next Caddy finds bob's tokens in Redis; alice's are gone.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	third := opts
	third.extra += "\t\trequest_timeout 8s\n"
	s.start(third)
	bob.mustCallAPIAs(t, "tn-bob")
	alice.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
	if n := s.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 2 {
		t.Errorf("code exchanges = %d, want 2 (alice's and bob's connects)", n)
	}
}
