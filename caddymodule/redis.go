package caddymodule

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// defaultRedisNamespace prefixes the keys of store redis unless
// redis_namespace says otherwise.
const defaultRedisNamespace = "tokengate"

// redisSpec is the Redis of store redis, placeholders resolved: one
// server (addr), a primary found through sentinels, or a cluster.
type redisSpec struct {
	addr             string // host:port
	db               int
	sentinelMaster   string
	sentinelAddrs    []string
	sentinelPassword string
	clusterAddrs     []string
	username         string
	password         string
	tls              bool
	namespace        string
	minReplicas      int
	waitTimeout      time.Duration
}

// addrs are every address r names.
func (r redisSpec) addrs() []string {
	switch {
	case r.sentinelMaster != "":
		return r.sentinelAddrs
	case r.clusterAddrs != nil:
		return r.clusterAddrs
	}
	return []string{r.addr}
}

// client is the go-redis client of r: a failover client under Sentinel, a
// cluster client for a cluster, else a plain one. It dials lazily:
// creating it makes no connection. TLS verifies each server against the
// system's roots as the host of its address (for a cluster and Sentinel,
// the addresses the cluster and the sentinels give).
func (r redisSpec) client() redis.UniversalClient {
	var tc *tls.Config
	if r.tls {
		tc = &tls.Config{MinVersion: tls.VersionTLS12} // no ServerName: the host of each address dialed
	}
	switch {
	case r.sentinelMaster != "":
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName:       r.sentinelMaster,
			SentinelAddrs:    r.sentinelAddrs,
			SentinelPassword: r.sentinelPassword,
			DB:               r.db,
			Username:         r.username,
			Password:         r.password,
			TLSConfig:        tc,
			// The middleware bounds every store call with a context:
			// let its deadline bound the network I/O too.
			ContextTimeoutEnabled: true,
		})
	case r.clusterAddrs != nil:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 r.clusterAddrs,
			Username:              r.username,
			Password:              r.password,
			TLSConfig:             tc,
			ContextTimeoutEnabled: true,
		})
	}
	if tc != nil {
		tc.ServerName, _, _ = net.SplitHostPort(r.addr)
	}
	return redis.NewClient(&redis.Options{
		Addr:                  r.addr,
		DB:                    r.db,
		Username:              r.username,
		Password:              r.password,
		TLSConfig:             tc,
		ContextTimeoutEnabled: true,
	})
}

// redisSubdirectives are the subdirectives of store redis only.
var redisSubdirectives = []string{"redis_password", "redis_username", "redis_tls", "redis_namespace",
	"redis_sentinel", "redis_sentinel_password", "redis_cluster", "redis_min_replicas", "redis_wait_timeout"}

// redisFieldSet returns the name of the first store redis field that h
// sets, or "".
func (h *Handler) redisFieldSet() string {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"redis_addr", h.RedisAddr != ""}, {"redis_db", h.RedisDB != 0},
		{"redis_password", h.RedisPassword != ""}, {"redis_username", h.RedisUsername != ""},
		{"redis_tls", h.RedisTLS}, {"redis_namespace", h.RedisNamespace != ""},
		{"redis_sentinel_master", h.RedisSentinelMaster != ""}, {"redis_sentinel_addrs", h.RedisSentinelAddrs != nil},
		{"redis_sentinel_password", h.RedisSentinelPassword != ""}, {"redis_cluster_addrs", h.RedisClusterAddrs != nil},
		{"redis_min_replicas", h.RedisMinReplicas != 0}, {"redis_wait_timeout", h.RedisWaitTimeout != 0},
	} {
		if f.set {
			return f.name
		}
	}
	return ""
}

// redisSpec checks the store redis fields of h and resolves their
// placeholders with resolve (which leaves them as they are at adapt
// time: an address that is still a placeholder is checked at load).
func (h *Handler) redisSpec(resolve func(field, v string) (string, error)) (redisSpec, error) {
	r := redisSpec{db: h.RedisDB, tls: h.RedisTLS, namespace: h.RedisNamespace,
		minReplicas: h.RedisMinReplicas, waitTimeout: time.Duration(h.RedisWaitTimeout)}
	sentinel := h.RedisSentinelMaster != "" || h.RedisSentinelAddrs != nil
	cluster := h.RedisClusterAddrs != nil
	var err error
	switch {
	case h.RedisAddr != "" && sentinel:
		return r, fmt.Errorf("oauth2_token: redis_sentinel: store redis has an address already: give one of store redis <host:port>, redis_sentinel and redis_cluster (redis_addr, redis_sentinel_master and redis_cluster_addrs in JSON)")
	case h.RedisAddr != "" && cluster:
		return r, fmt.Errorf("oauth2_token: redis_cluster: store redis has an address already: give one of store redis <host:port>, redis_sentinel and redis_cluster (redis_addr, redis_sentinel_master and redis_cluster_addrs in JSON)")
	case sentinel && cluster:
		return r, fmt.Errorf("oauth2_token: redis_cluster: store redis is under Sentinel already: give one of redis_sentinel and redis_cluster")
	case sentinel:
		if h.RedisSentinelMaster == "" || len(h.RedisSentinelAddrs) == 0 {
			return r, fmt.Errorf("oauth2_token: redis_sentinel: needs the master name and the sentinels: redis_sentinel <master> <host:port...> (redis_sentinel_master and redis_sentinel_addrs in JSON)")
		}
		if r.sentinelMaster, err = resolve("redis_sentinel_master", h.RedisSentinelMaster); err != nil {
			return r, err
		}
		if r.sentinelAddrs, err = resolveAddrs("redis_sentinel", h.RedisSentinelAddrs, resolve); err != nil {
			return r, err
		}
		if r.sentinelPassword, err = resolve("redis_sentinel_password", h.RedisSentinelPassword); err != nil {
			return r, err
		}
	case cluster:
		if h.RedisDB != 0 {
			return r, fmt.Errorf("oauth2_token: redis_db: a cluster has database 0 only")
		}
		if r.clusterAddrs, err = resolveAddrs("redis_cluster", h.RedisClusterAddrs, resolve); err != nil {
			return r, err
		}
	case h.RedisAddr == "":
		return r, fmt.Errorf("oauth2_token: store: redis needs an address: store redis <host:port> [<db>], redis_sentinel or redis_cluster (redis_addr, redis_sentinel_master or redis_cluster_addrs in JSON)")
	default:
		if r.addr, err = resolve("redis_addr", h.RedisAddr); err != nil {
			return r, err
		}
		if !hasPlaceholder(r.addr) {
			if err := checkRedisAddr("redis_addr", r.addr); err != nil {
				return r, err
			}
		}
	}
	if !sentinel && h.RedisSentinelPassword != "" {
		return r, fmt.Errorf("oauth2_token: redis_sentinel_password: only applies with redis_sentinel")
	}
	if r.db < 0 {
		return r, fmt.Errorf("oauth2_token: redis_db: %d is negative (want a database number, 0 or more)", r.db)
	}
	if r.minReplicas < -1 {
		return r, fmt.Errorf("oauth2_token: redis_min_replicas: %d is below -1 (-1: never wait; 0: one replica when the primary has any)", r.minReplicas)
	}
	if r.waitTimeout < 0 || (r.waitTimeout > 0 && r.waitTimeout < time.Millisecond) {
		return r, fmt.Errorf("oauth2_token: redis_wait_timeout: %v is not a duration of 1ms or more", r.waitTimeout)
	}
	if r.username, err = resolve("redis_username", h.RedisUsername); err != nil {
		return r, err
	}
	if r.password, err = resolve("redis_password", h.RedisPassword); err != nil {
		return r, err
	}
	if r.namespace == "" {
		r.namespace = defaultRedisNamespace
	}
	if strings.ContainsFunc(r.namespace, func(c rune) bool { return c <= ' ' || c == 0x7f || c == '{' || c == '}' }) {
		return r, fmt.Errorf("oauth2_token: redis_namespace: %q has a space, a brace or a control character", r.namespace)
	}
	return r, nil
}

// resolveAddrs resolves and checks the host:port addresses of field.
func resolveAddrs(field string, addrs []string, resolve func(field, v string) (string, error)) ([]string, error) {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		v, err := resolve(field, a)
		if err != nil {
			return nil, err
		}
		if !hasPlaceholder(v) {
			if err := checkRedisAddr(field, v); err != nil {
				return nil, err
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// checkRedisAddr checks that addr, of field, is host:port. An address
// that looks like a URL is not quoted back: it may carry a password.
func checkRedisAddr(field, addr string) error {
	if strings.Contains(addr, "://") || strings.Contains(addr, "@") {
		return fmt.Errorf("oauth2_token: %s: want host:port, not a URL (give the password with redis_password, the database as the db argument, TLS with redis_tls)", field)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("oauth2_token: %s: %q is not host:port", field, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("oauth2_token: %s: %q: the port is not a number from 1 to 65535", field, addr)
	}
	return nil
}

// loopback reports whether the host of addr (host:port) is a loopback
// address or localhost: traffic to it does not leave the machine.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
