package caddymodule

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	zapobserver "go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// redisPassword is the Redis password the tests put in the environment:
// no error, log line or pool key may show it.
const redisPassword = "r3dis-pw-0f3c9a"

// redisHandler is an authorization_code handler against srv with its
// tokens in Redis at addr, sealed, the password from the environment.
func redisHandler(t *testing.T, srv *tasknationtest.Server, addr string) *Handler {
	t.Helper()
	h := userHandler(t, srv)
	t.Setenv("TG_TEST_REDIS_PASSWORD", redisPassword)
	h.Store.Kind, h.Store.Dir = storeRedis, ""
	h.Store.Redis = &RedisConfig{Addr: addr, Password: "{env.TG_TEST_REDIS_PASSWORD}"}
	return h
}

// sentinel is the sentinel object of h's Redis, made when it has none.
func sentinel(h *Handler) *SentinelConfig {
	if h.Store.Redis.Sentinel == nil {
		h.Store.Redis.Sentinel = new(SentinelConfig)
	}
	return h.Store.Redis.Sentinel
}

// closedAddr is a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnmarshalCaddyfile_Redis(t *testing.T) {
	const head = "oauth2_token {\n\tclient_id {env.ID}\n\tclient_secret {env.SECRET}\n"
	tests := []struct {
		name  string
		lines string
		want  RedisConfig
	}{
		{"addr only", "store redis cache.internal:6379", RedisConfig{Addr: "cache.internal:6379"}},
		{"addr and db", "store redis 127.0.0.1:6379 2", RedisConfig{Addr: "127.0.0.1:6379", DB: 2}},
		{"db 0", "store redis 127.0.0.1:6379 0", RedisConfig{Addr: "127.0.0.1:6379"}},
		{"ipv6", "store redis [::1]:6380", RedisConfig{Addr: "[::1]:6380"}},
		{"addr placeholder", "store redis {env.REDIS_ADDR}", RedisConfig{Addr: "{env.REDIS_ADDR}"}},
		{
			"every subdirective",
			"store redis cache.internal:6380 5\n\tredis_password {env.REDIS_PASSWORD}\n\tredis_username gateway\n\tredis_tls on\n\tredis_namespace eu-gw",
			RedisConfig{Addr: "cache.internal:6380", DB: 5, Password: "{env.REDIS_PASSWORD}", Username: "gateway", TLS: true, Namespace: "eu-gw"},
		},
		{"tls off", "store redis 127.0.0.1:6379\n\tredis_tls off", RedisConfig{Addr: "127.0.0.1:6379"}},
		{
			"sentinel",
			"store redis\n\tredis_sentinel tokengate 10.0.0.1:26379 10.0.0.2:26379 {env.SENTINEL3}\n\tredis_sentinel_password {env.SENTINEL_PASSWORD}",
			RedisConfig{Sentinel: &SentinelConfig{Master: "tokengate", Addrs: []string{"10.0.0.1:26379", "10.0.0.2:26379", "{env.SENTINEL3}"},
				Password: "{env.SENTINEL_PASSWORD}"}},
		},
		{"sentinel before store", "redis_sentinel m 10.0.0.1:26379\n\tstore redis", RedisConfig{Sentinel: &SentinelConfig{Master: "m", Addrs: []string{"10.0.0.1:26379"}}}},
		{"cluster", "store redis\n\tredis_cluster 10.0.0.1:6379 10.0.0.2:6379", RedisConfig{Cluster: []string{"10.0.0.1:6379", "10.0.0.2:6379"}}},
		{"min replicas", "store redis 127.0.0.1:6379\n\tredis_min_replicas 2\n\tredis_wait_timeout 250ms",
			RedisConfig{Addr: "127.0.0.1:6379", MinReplicas: 2, WaitTimeout: caddy.Duration(250 * time.Millisecond)}},
		{"wait timeout in days", "store redis 127.0.0.1:6379\n\tredis_wait_timeout 1d", RedisConfig{Addr: "127.0.0.1:6379", WaitTimeout: caddy.Duration(24 * time.Hour)}},
		{"min replicas off", "store redis 127.0.0.1:6379\n\tredis_min_replicas off", RedisConfig{Addr: "127.0.0.1:6379", MinReplicas: -1}},
		{"min replicas auto", "store redis 127.0.0.1:6379\n\tredis_min_replicas auto", RedisConfig{Addr: "127.0.0.1:6379"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(head + "\t" + tt.lines + "\n}")); err != nil {
				t.Fatal(err)
			}
			want := Handler{ClientID: "{env.ID}", ClientSecret: "{env.SECRET}", Store: &StoreConfig{Kind: "redis", Redis: &tt.want}}
			if !reflect.DeepEqual(h, want) {
				t.Fatalf("parsed\n%+v\nwant\n%+v", h.Store.Redis, tt.want)
			}
		})
	}
}

func TestUnmarshalCaddyfile_RedisErrors(t *testing.T) {
	const head = "oauth2_token {\n\tclient_id {env.ID}\n\tclient_secret {env.SECRET}\n"
	tests := []struct {
		name, lines, want string
	}{
		{"no addr", "store redis", "store: redis needs an address: store redis <host:port> [<db>], or redis_sentinel"},
		{"db not a number", "store redis 127.0.0.1:6379 two", `redis database "two" is not a number 0 or more`},
		{"negative db", "store redis 127.0.0.1:6379 -3", `redis database "-3"`},
		{"too many arguments", "store redis 127.0.0.1:6379 1 2", "store: too many arguments"},
		{"no port", "store redis cache.internal", `store: redis address: "cache.internal" is not host:port`},
		{"port out of range", "store redis cache.internal:70000", "store: redis address: \"cache.internal:70000\": the port is not a number"},
		{"url with password", "store redis redis://:" + redisPassword + "@cache.internal:6379", "store: redis address: want host:port, not a URL"},
		{"user and password", "store redis gw:" + redisPassword + "@cache.internal:6379", "store: redis address: want host:port, not a URL"},
		{"tls value", "store redis 127.0.0.1:6379\n\tredis_tls true", `redis_tls: "true" is not on or off`},
		{"password with caddy store", "store caddy\n\tredis_password " + redisPassword, "redis_password: only applies to store redis (the store is caddy)"},
		{"password extra argument", "store redis 127.0.0.1:6379\n\tredis_password " + redisPassword + " x", "redis_password takes one argument"},
		{"tls off with default store", "redis_tls off", "redis_tls: only applies to store redis (the store is memory)"},
		{"username with file store", "store file /var/lib/tg\n\tredis_username gw", "redis_username: only applies to store redis (the store is file)"},
		{"namespace with a space", "store redis 127.0.0.1:6379\n\tredis_namespace \"a b\"", `redis_namespace: "a b" has a space`},
		{"duplicate", "store redis 127.0.0.1:6379\n\tredis_tls on\n\tredis_tls off", `duplicate subdirective "redis_tls"`},
		{"address and sentinel", "store redis 127.0.0.1:6379\n\tredis_sentinel m 127.0.0.1:26379", "redis_sentinel: store redis has an address already"},
		{"sentinel and address", "redis_sentinel m 127.0.0.1:26379\n\tstore redis 127.0.0.1:6379", "redis_sentinel: store redis has an address already"},
		{"address and cluster", "store redis 127.0.0.1:6379\n\tredis_cluster 127.0.0.1:7000", "redis_cluster: store redis has an address already"},
		{"sentinel and cluster", "store redis\n\tredis_sentinel m 127.0.0.1:26379\n\tredis_cluster 127.0.0.1:7000", "redis_cluster: redis_sentinel is given already"},
		{"cluster and sentinel", "store redis\n\tredis_cluster 127.0.0.1:7000\n\tredis_sentinel m 127.0.0.1:26379", "redis_cluster: redis_sentinel is given already"},
		{"sentinel without sentinels", "store redis\n\tredis_sentinel m", "redis_sentinel: want the master name and the sentinels"},
		{"cluster without nodes", "store redis\n\tredis_cluster", "redis_cluster: want the addresses of some nodes"},
		{"sentinel address", "store redis\n\tredis_sentinel m sentinel.internal", `redis_sentinel: "sentinel.internal" is not host:port`},
		{"cluster url", "store redis\n\tredis_cluster redis://:" + redisPassword + "@n1:6379", "redis_cluster: want host:port, not a URL"},
		{"sentinel password without sentinel", "store redis 127.0.0.1:6379\n\tredis_sentinel_password " + redisPassword, "redis_sentinel_password: only applies with redis_sentinel"},
		{"sentinel with caddy store", "store caddy\n\tredis_sentinel m 127.0.0.1:26379", "redis_sentinel: only applies to store redis (the store is caddy)"},
		{"cluster with default store", "redis_cluster 127.0.0.1:7000", "redis_cluster: only applies to store redis (the store is memory)"},
		{"min replicas 0", "store redis 127.0.0.1:6379\n\tredis_min_replicas 0", `redis_min_replicas: "0" is not a number of replicas (1 or more), auto or off`},
		{"wait timeout", "store redis 127.0.0.1:6379\n\tredis_wait_timeout soon", `redis_wait_timeout: "soon" is not a positive duration`},
		{"namespace with a brace", "store redis 127.0.0.1:6379\n\tredis_namespace a{b}", `redis_namespace: "a{b}" has a space, a brace`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(head + "\t" + tt.lines + "\n}"))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), redisPassword) {
				t.Fatalf("the error shows the Redis password: %v", err)
			}
		})
	}
}

// Provision refuses a bad Redis configuration (as JSON may give it, past
// the Caddyfile's checks) naming the field, and never shows the password.
func TestProvision_RedisErrors(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	const fragment = "k3yP4rt"
	tests := []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"no addr", func(h *Handler) { h.Store.Redis.Addr = "" }, "store: redis needs an address"},
		{"no redis object", func(h *Handler) { h.Store.Redis = nil }, "store: redis needs an address"},
		{"redis object without kind", func(h *Handler) { h.Store.Kind = "" }, ""}, // the redis object says redis
		{"addr not host:port", func(h *Handler) { h.Store.Redis.Addr = "cache.internal" }, `store: redis address: "cache.internal" is not host:port`},
		{"addr a url", func(h *Handler) { h.Store.Redis.Addr = "rediss://gw:" + redisPassword + "@cache.internal:6379/0" }, "store: redis address: want host:port, not a URL"},
		{"addr placeholder unset", func(h *Handler) { h.Store.Redis.Addr = "{env.TG_TEST_UNSET_ADDR}" }, "store: placeholder {env.TG_TEST_UNSET_ADDR} is unset"},
		{"addr placeholder not host:port", func(h *Handler) { h.Store.Redis.Addr = "{env.TG_TEST_CLIENT_ID}" }, "store: redis address"},
		{"negative db", func(h *Handler) { h.Store.Redis.DB = -1 }, "store: redis database -1 is not a number 0 or more"},
		{"password placeholder unset", func(h *Handler) { h.Store.Redis.Password = "{env.TG_TEST_UNSET_PW}" }, "redis_password: placeholder {env.TG_TEST_UNSET_PW} is unset"},
		{"literal password with braces", func(h *Handler) { h.Store.Redis.Password = "Zq8{" + fragment + "}w" }, "redis_password: has an unknown or empty placeholder"},
		{"username placeholder unset", func(h *Handler) { h.Store.Redis.Username = "{env.TG_TEST_UNSET_USER}" }, "redis_username"},
		{"namespace with a newline", func(h *Handler) { h.Store.Redis.Namespace = "a\nb" }, "redis_namespace"},
		{"redis object with caddy store", func(h *Handler) { h.Store.Kind = "caddy" }, "store: a redis object only applies to store redis (the store is caddy)"},
		{"redis object with memory store", func(h *Handler) { h.Store.Kind, h.Store.EncryptionKeys = "memory", nil },
			"store: a redis object only applies to store redis (the store is memory)"},
		{"key with memory store", func(h *Handler) { h.Store.Kind, h.Store.Redis = "memory", nil }, "encryption_key: only applies to a durable store (file, caddy or redis)"},
		{"addr and sentinel", func(h *Handler) { sentinel(h).Master, sentinel(h).Addrs = "m", []string{"127.0.0.1:26379"} }, "redis_sentinel: store redis has an address already"},
		{"addr and cluster", func(h *Handler) { h.Store.Redis.Cluster = []string{"127.0.0.1:7000"} }, "redis_cluster: store redis has an address already"},
		{"sentinel and cluster", func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs, h.Store.Redis.Cluster = "", "m", []string{"127.0.0.1:26379"}, []string{"127.0.0.1:7000"}
		}, "redis_cluster: redis_sentinel is given already"},
		{"sentinel without master", func(h *Handler) { h.Store.Redis.Addr, sentinel(h).Addrs = "", []string{"127.0.0.1:26379"} }, "redis_sentinel: want the master name and the sentinels"},
		{"sentinel without sentinels", func(h *Handler) { h.Store.Redis.Addr, sentinel(h).Master = "", "m" }, "redis_sentinel: want the master name and the sentinels"},
		{"sentinel placeholder unset", func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs = "", "m", []string{"{env.TG_TEST_UNSET_SENTINEL}"}
		}, "redis_sentinel: placeholder {env.TG_TEST_UNSET_SENTINEL} is unset"},
		{"cluster address", func(h *Handler) { h.Store.Redis.Addr, h.Store.Redis.Cluster = "", []string{"n1"} }, `redis_cluster: "n1" is not host:port`},
		{"cluster with a db", func(h *Handler) {
			h.Store.Redis.Addr, h.Store.Redis.Cluster, h.Store.Redis.DB = "", []string{"127.0.0.1:7000"}, 1
		}, "store: redis database 1: a cluster has database 0 only"},
		{"min replicas below -1", func(h *Handler) { h.Store.Redis.MinReplicas = -2 }, "redis_min_replicas: -2 is below -1"},
		{"negative wait timeout", func(h *Handler) { h.Store.Redis.WaitTimeout = caddy.Duration(-time.Second) }, "redis_wait_timeout: -1s is not a duration of 1ms or more"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := redisHandler(t, srv, "127.0.0.1:6379")
			tt.change(h)
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.Provision(ctx)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Provision: %v", err)
				}
				h.Cleanup()
				return
			}
			if err == nil {
				h.Cleanup()
				t.Fatalf("Provision succeeded, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			for _, secret := range []string{redisPassword, fragment, tasknationtest.DefaultClientSecret} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows a secret: %v", err)
				}
			}
		})
	}
}

// pooled returns the pooled Gate of key, without taking a reference.
func pooled(t *testing.T, key string) *pooledGate {
	t.Helper()
	var p *pooledGate
	gates.Range(func(k, v any) bool {
		if k == key {
			p = v.(*pooledGate)
			return false
		}
		return true
	})
	if p == nil {
		t.Fatalf("no pooled token source for %s", key)
	}
	return p
}

// Provision makes no network request (`caddy validate` runs it): with
// nothing listening at redis_addr it succeeds, and the Redis client is
// the pooled Gate's, which the last Cleanup closes after the Gate.
func TestProvision_RedisLazyAndClosedWithGate(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	addr := closedAddr(t)
	a, b := redisHandler(t, srv, addr), redisHandler(t, srv, addr)
	_, cancelA := provision(t, a)
	defer cancelA()
	_, cancelB := provision(t, b)
	defer cancelB()
	if a.gate != b.gate {
		t.Fatal("the same Redis configuration has two token sources")
	}
	p := pooled(t, a.poolKey)
	if p.redis == nil {
		t.Fatal("the pooled Gate of store redis holds no Redis client")
	}
	if got := p.redis.(*redis.Client).Options().Addr; got != addr {
		t.Fatalf("the client dials %s, want %s", got, addr)
	}
	if strings.Contains(a.poolKey, redisPassword) {
		t.Fatal("the pool key holds the Redis password")
	}
	// A done context: an open client gives up before dialing, a closed
	// one says it is closed.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	a.Cleanup()
	if err := p.redis.Ping(ctx).Err(); errors.Is(err, redis.ErrClosed) {
		t.Fatal("the Redis client was closed while a config still uses the token source")
	}
	b.Cleanup()
	if err := p.redis.Ping(ctx).Err(); !errors.Is(err, redis.ErrClosed) {
		t.Fatalf("after the last Cleanup Ping = %v, want redis.ErrClosed: the client outlives its Gate", err)
	}
}

// openStore gives store redis a Locker with compare-and-set, sealed or
// not, over a client configured as the spec says.
func TestOpenStore_Redis(t *testing.T) {
	key := [][]byte{[]byte(strings.Repeat("k", 32))}
	tests := []struct {
		name       string
		spec       redisSpec
		key        [][]byte
		serverName string // "": no TLS
	}{
		{"plain", redisSpec{addr: "127.0.0.1:6379", namespace: "tokengate"}, nil, ""},
		{"sealed", redisSpec{addr: "127.0.0.1:6379", namespace: "tokengate"}, key, ""},
		{"tls, db, acl user", redisSpec{addr: "cache.internal:6380", db: 3, username: "gw", password: redisPassword, tls: true, namespace: "eu"}, key, "cache.internal"},
		{"tls to an ip", redisSpec{addr: "[2001:db8::7]:6379", tls: true, namespace: "tokengate"}, nil, "2001:db8::7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := openStore(storeSpec{kind: storeRedis, redis: tt.spec, keys: tt.key}, nil, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer st.close()
			if _, ok := st.store.(tokenstore.Locker); !ok {
				t.Errorf("%T is not a tokenstore.Locker: refreshes across instances would not be serialized", st.store)
			}
			if _, ok := st.store.(tokenstore.CASStore); !ok {
				t.Errorf("%T is not a tokenstore.CASStore: a lapsed lease could overwrite a newer set", st.store)
			}
			if _, sealed := st.store.(*tokenstore.Sealed); sealed != (tt.key != nil) {
				t.Errorf("store %T, want sealed %v", st.store, tt.key != nil)
			}
			o := st.redis.(*redis.Client).Options()
			if !o.DisableIdentity {
				t.Errorf("the client sends CLIENT SETINFO on connect, which the README's ACL refuses on Redis 7.2+")
			}
			if o.Addr != tt.spec.addr || o.DB != tt.spec.db || o.Username != tt.spec.username || o.Password != tt.spec.password {
				t.Errorf("client options addr %q db %d user %q, want %q %d %q (and the password)",
					o.Addr, o.DB, o.Username, tt.spec.addr, tt.spec.db, tt.spec.username)
			}
			switch {
			case tt.serverName == "" && o.TLSConfig != nil:
				t.Errorf("TLS configured with redis_tls off")
			case tt.serverName != "" && o.TLSConfig == nil:
				t.Errorf("no TLS with redis_tls on")
			case tt.serverName != "":
				if o.TLSConfig.ServerName != tt.serverName || o.TLSConfig.InsecureSkipVerify || o.TLSConfig.RootCAs != nil {
					t.Errorf("TLS ServerName %q (skip verify %v, own roots %v), want %q verified with the system roots",
						o.TLSConfig.ServerName, o.TLSConfig.InsecureSkipVerify, o.TLSConfig.RootCAs != nil, tt.serverName)
				}
			}
		})
	}
}

// The warnings at load: Redis in clear over the network, a literal
// password; never the password itself.
func TestWarn_Redis(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	const inClear = "redis_tls is off and a Redis address is not loopback"
	const literal = "a secret is written in the config in clear"
	tests := []struct {
		name   string
		change func(h *Handler)
		want   []string // messages, in order, besides none else of these two
	}{
		{"loopback ip", func(h *Handler) {}, nil},
		{"localhost", func(h *Handler) { h.Store.Redis.Addr = "localhost:6379" }, nil},
		{"ipv6 loopback", func(h *Handler) { h.Store.Redis.Addr = "[::1]:6379" }, nil},
		{"remote without tls", func(h *Handler) { h.Store.Redis.Addr = "cache.internal:6379" }, []string{inClear}},
		{"remote ip without tls", func(h *Handler) { h.Store.Redis.Addr = "10.1.2.3:6379" }, []string{inClear}},
		{"remote with tls", func(h *Handler) { h.Store.Redis.Addr, h.Store.Redis.TLS = "cache.internal:6379", true }, nil},
		{"literal password", func(h *Handler) { h.Store.Redis.Password = redisPassword }, []string{literal}},
		{"remote, literal password", func(h *Handler) { h.Store.Redis.Addr, h.Store.Redis.Password = "cache.internal:6379", redisPassword }, []string{inClear, literal}},
		{"loopback sentinels", func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs = "", "m", []string{"127.0.0.1:26379", "[::1]:26380"}
		}, nil},
		{"a remote sentinel", func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs = "", "m", []string{"127.0.0.1:26379", "10.0.0.2:26379"}
		}, []string{inClear}},
		{"remote cluster with tls", func(h *Handler) {
			h.Store.Redis.Addr, h.Store.Redis.Cluster, h.Store.Redis.TLS = "", []string{"10.0.0.1:6379"}, true
		}, nil},
		{"remote cluster", func(h *Handler) { h.Store.Redis.Addr, h.Store.Redis.Cluster = "", []string{"10.0.0.1:6379"} }, []string{inClear}},
		{"literal sentinel password", func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs, sentinel(h).Password = "", "m", []string{"127.0.0.1:26379"}, redisPassword
		}, []string{literal}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := redisHandler(t, srv, "127.0.0.1:6379")
			tt.change(h)
			g, err := h.config(resolver{caddy.NewReplacer()})
			if err != nil {
				t.Fatal(err)
			}
			core, logs := zapobserver.New(zapcore.WarnLevel)
			h.logger = zap.New(core)
			h.warn(g.store)
			var got []string
			for _, e := range logs.All() {
				if strings.HasPrefix(e.Message, literal) {
					if f, _ := e.ContextMap()["field"].(string); !strings.HasSuffix(f, "password") {
						t.Errorf("the literal-secret warning names field %v, want a password", f)
					}
				}
				if strings.HasPrefix(e.Message, inClear) || strings.HasPrefix(e.Message, literal) {
					got = append(got, strings.SplitN(e.Message, ":", 2)[0])
				}
				if strings.Contains(fmt.Sprint(e.Message, e.ContextMap()), redisPassword) {
					t.Errorf("a warning shows the Redis password: %s %v", e.Message, e.ContextMap())
				}
			}
			var want []string
			for _, w := range tt.want {
				want = append(want, strings.SplitN(w, ":", 2)[0])
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("warnings %q, want %q", got, want)
			}
		})
	}
}

// Every Redis setting takes part in the pool key (another server,
// database, user, password, TLS or namespace is another token source);
// the default namespace written out is the same source.
func TestPoolKey_Redis(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	base := redisHandler(t, srv, "127.0.0.1:6379")
	t.Setenv("TG_TEST_REDIS_PASSWORD2", redisPassword+"2")
	t.Setenv("TG_TEST_KEY2", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("K", 32))))
	key := func(h *Handler) string { return poolKeyOf(t, h) }
	k0 := key(base)
	if strings.Contains(k0, redisPassword) {
		t.Fatal("the pool key holds the Redis password")
	}
	changes := map[string]func(h *Handler){
		"redis_addr":      func(h *Handler) { h.Store.Redis.Addr = "127.0.0.1:6380" },
		"redis_db":        func(h *Handler) { h.Store.Redis.DB = 1 },
		"redis_username":  func(h *Handler) { h.Store.Redis.Username = "gw" },
		"redis_password":  func(h *Handler) { h.Store.Redis.Password = "{env.TG_TEST_REDIS_PASSWORD2}" },
		"no password":     func(h *Handler) { h.Store.Redis.Password = "" },
		"redis_tls":       func(h *Handler) { h.Store.Redis.TLS = true },
		"redis_namespace": func(h *Handler) { h.Store.Redis.Namespace = "other" },
		"encryption_key":  func(h *Handler) { h.Store.EncryptionKeys = []string{"{env.TG_TEST_KEY2}"} },
		"store":           func(h *Handler) { h.Store.Kind, h.Store.Redis = "caddy", nil },
		"redis_sentinel": func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs = "", "m", []string{"127.0.0.1:26379"}
		},
		"redis_cluster":      func(h *Handler) { h.Store.Redis.Addr, h.Store.Redis.Cluster = "", []string{"127.0.0.1:6379"} },
		"redis_min_replicas": func(h *Handler) { h.Store.Redis.MinReplicas = -1 },
		"redis_wait_timeout": func(h *Handler) { h.Store.Redis.WaitTimeout = caddy.Duration(time.Minute) },
		"redis_sentinel_password": func(h *Handler) {
			h.Store.Redis.Addr, sentinel(h).Master, sentinel(h).Addrs = "", "m", []string{"127.0.0.1:26379"}
			sentinel(h).Password = "{env.TG_TEST_REDIS_PASSWORD2}"
		},
	}
	for name, change := range changes {
		h := clone(t, base)
		change(h)
		if key(h) == k0 {
			t.Errorf("changing %s keeps the pool key", name)
		}
	}
	h := clone(t, base)
	h.Store.Redis.Namespace = defaultRedisNamespace
	if key(h) != k0 {
		t.Error("redis_namespace tokengate (the default) written out changes the pool key")
	}
}

// serveUser runs r through h as user (basic_auth's {http.auth.user.id})
// and returns the answer and the Authorization header the next handler
// saw ("" when it was not called).
func serveUser(t *testing.T, h *Handler, r *http.Request, user string) (*httptest.ResponseRecorder, string) {
	t.Helper()
	repl := caddy.NewReplacer()
	repl.Set("http.auth.user.id", user)
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	var auth string
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		auth = r.Header.Get("Authorization")
		return nil
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w, auth
}

// connectVia runs user's connect flow through h, approved at srv as the
// TaskNation user tnUser.
func connectVia(t *testing.T, h *Handler, srv *tasknationtest.Server, user, tnUser string) {
	t.Helper()
	w, _ := serveUser(t, h, httptest.NewRequest(http.MethodGet, "/oauth2/connect", nil), user)
	auth, err := url.Parse(w.Header().Get("Location"))
	if w.Code != http.StatusFound || err != nil {
		t.Fatalf("connect: %d %q", w.Code, w.Header().Get("Location"))
	}
	q := auth.Query()
	q.Set("login_hint", tnUser)
	auth.RawQuery = q.Encode()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(auth.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	callback, err := url.Parse(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusFound || err != nil {
		t.Fatalf("the fake's authorization endpoint: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	r := httptest.NewRequest(http.MethodGet, callback.RequestURI(), nil)
	for _, c := range w.Result().Cookies() {
		r.AddCookie(c)
	}
	if w, _ := serveUser(t, h, r, user); w.Code != http.StatusOK {
		t.Fatalf("callback: %d %s", w.Code, w.Body)
	}
}

// Two token sources on one Redis (two gateways of a fleet, here two
// configs in one process) share the users' tokens: alice connects
// through one and is served by the other. Another database or namespace
// is another set of tokens.
func TestRedisStore_SharedAcrossTokenSources(t *testing.T) {
	rs := redistest.Start(t)
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	handler := func(change func(h *Handler)) *Handler {
		h := redisHandler(t, srv, rs.Addr())
		h.Store.Redis.Password = "" // the test server has none
		change(h)
		_, cancel := provision(t, h)
		t.Cleanup(func() { cancel(); h.Cleanup() })
		return h
	}
	a := handler(func(h *Handler) {})
	connectVia(t, a, srv, "alice", "tn-alice")

	tests := []struct {
		name   string
		change func(h *Handler)
		shared bool
	}{
		{"the same redis, another token source", func(h *Handler) { h.RequestTimeout = caddy.Duration(9 * time.Second) }, true},
		{"the default namespace written out", func(h *Handler) {
			h.Store.Redis.Namespace, h.RequestTimeout = "tokengate", caddy.Duration(8*time.Second)
		}, true},
		{"another database", func(h *Handler) { h.Store.Redis.DB = 1 }, false},
		{"another namespace", func(h *Handler) { h.Store.Redis.Namespace = "other-gateway" }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := handler(tt.change)
			if b.gate == a.gate {
				t.Fatal("the test needs a token source of its own")
			}
			w, auth := serveUser(t, b, httptest.NewRequest(http.MethodGet, "/api/v1/leads", nil), "alice")
			if tt.shared {
				if !strings.HasPrefix(auth, "Bearer "+tasknationtest.AccessTokenPrefix) {
					t.Fatalf("alice through the other token source: %d %s (forwarded %v); want her token from Redis", w.Code, w.Body, auth != "")
				}
				return
			}
			if auth != "" || w.Code != http.StatusUnauthorized || !strings.Contains(w.Body.String(), "not_connected") {
				t.Fatalf("alice through a token source on other keys: %d %s (forwarded with a token %v), want 401 not_connected", w.Code, w.Body, auth != "")
			}
		})
	}
	if n := srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1", n)
	}
	if n := srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 0 {
		t.Errorf("refreshes = %d, want 0", n)
	}
}

// openStore makes a failover client for redis_sentinel and a cluster
// client for redis_cluster; TLS then verifies each server as the host it
// dials (no fixed ServerName).
func TestOpenStore_RedisSentinelAndCluster(t *testing.T) {
	t.Run("sentinel", func(t *testing.T) {
		st, err := openStore(storeSpec{kind: storeRedis, redis: redisSpec{sentinelMaster: "m", sentinelAddrs: []string{"127.0.0.1:26379"},
			namespace: "tokengate", tls: true}}, nil, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		c, ok := st.redis.(*redis.Client)
		if !ok || c.Options().Addr != "FailoverClient" {
			t.Fatalf("client %T, want a failover client", st.redis)
		}
		if !c.Options().DisableIdentity {
			t.Errorf("the client sends CLIENT SETINFO on connect, which the README's ACL refuses on Redis 7.2+")
		}
		if tc := c.Options().TLSConfig; tc == nil || tc.ServerName != "" || tc.InsecureSkipVerify {
			t.Fatalf("TLS config %+v, want one verifying each address's host", tc)
		}
	})
	t.Run("cluster", func(t *testing.T) {
		addrs := []string{"127.0.0.1:7000", "127.0.0.1:7001"}
		st, err := openStore(storeSpec{kind: storeRedis, redis: redisSpec{clusterAddrs: addrs, namespace: "tokengate", tls: true}}, nil, zap.NewNop())
		if err != nil {
			t.Fatal(err)
		}
		defer st.close()
		c, ok := st.redis.(*redis.ClusterClient)
		if !ok || !reflect.DeepEqual(c.Options().Addrs, addrs) {
			t.Fatalf("client %T, want a cluster client of %v", st.redis, addrs)
		}
		if !c.Options().DisableIdentity {
			t.Errorf("the client sends CLIENT SETINFO on connect, which the README's ACL refuses on Redis 7.2+")
		}
		if tc := c.Options().TLSConfig; tc == nil || tc.ServerName != "" || tc.InsecureSkipVerify {
			t.Fatalf("TLS config %+v, want one verifying each address's host", tc)
		}
	})
}

// Two token sources (two gateways) on a Redis under Sentinel and on a
// cluster, configured as a Caddyfile gives them: alice connects through
// one and is served by the other.
func TestRedisStore_SentinelAndCluster(t *testing.T) {
	for _, tt := range []struct {
		name  string
		setup func(t *testing.T) func(h *Handler)
	}{
		{"sentinel", func(t *testing.T) func(h *Handler) {
			s := redistest.StartSentinel(t)
			return func(h *Handler) {
				sentinel(h).Master, sentinel(h).Addrs = redistest.MasterName, s.SentinelAddrs()
			}
		}},
		{"cluster", func(t *testing.T) func(h *Handler) {
			cl := redistest.StartCluster(t)
			return func(h *Handler) { h.Store.Redis.Cluster = cl.Addrs()[:2] }
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			where := tt.setup(t)
			srv := tasknationtest.NewServer(tasknationtest.Options{})
			defer srv.Close()
			handler := func(timeout time.Duration) *Handler {
				h := redisHandler(t, srv, "")
				h.Store.Redis.Password = "" // the test servers have none
				h.RequestTimeout = caddy.Duration(timeout)
				where(h)
				_, cancel := provision(t, h)
				t.Cleanup(func() { cancel(); h.Cleanup() })
				return h
			}
			a, b := handler(10*time.Second), handler(9*time.Second)
			if a.gate == b.gate {
				t.Fatal("the test needs two token sources")
			}
			connectVia(t, a, srv, "alice", "tn-alice")
			w, auth := serveUser(t, b, httptest.NewRequest(http.MethodGet, "/api/v1/leads", nil), "alice")
			if !strings.HasPrefix(auth, "Bearer "+tasknationtest.AccessTokenPrefix) {
				t.Fatalf("alice through the other token source: %d %s; want her token from Redis", w.Code, w.Body)
			}
		})
	}
}
