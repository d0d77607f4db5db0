package caddymodule

import (
	"crypto/tls"
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
// the addresses the cluster and the sentinels give). It does not send
// CLIENT SETINFO on connect (DisableIdentity): Redis 7.2 and later would
// refuse it to the README's ACL user and log each refusal in ACL LOG, and
// the ACL cannot allow it portably (Redis 7.0 refuses +client|setinfo in
// ACL SETUSER).
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
			DisableIdentity:       true,
		})
	case r.clusterAddrs != nil:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:                 r.clusterAddrs,
			Username:              r.username,
			Password:              r.password,
			TLSConfig:             tc,
			ContextTimeoutEnabled: true,
			DisableIdentity:       true,
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
		DisableIdentity:       true,
	})
}

// errNoRedisAddress is the error for a redis store without a server.
var errNoRedisAddress = refuse("store", "store: redis needs an address: store redis <host:port> [<db>], or redis_sentinel <master> <host:port...>, or redis_cluster <host:port...> (store.redis addr, sentinel or cluster in JSON)")

// spec checks rc and resolves its placeholders with r (an address that
// is a placeholder until the load is checked then).
func (rc *RedisConfig) spec(r resolver) (redisSpec, error) {
	s := redisSpec{db: rc.DB, tls: rc.TLS, namespace: rc.Namespace,
		minReplicas: rc.MinReplicas, waitTimeout: time.Duration(rc.WaitTimeout)}
	const oneOf = "give one of store redis <host:port>, redis_sentinel and redis_cluster (store.redis addr, sentinel and cluster in JSON)"
	var err error
	switch {
	case rc.Addr != "" && rc.Sentinel != nil:
		return s, refuse("redis_sentinel", "redis_sentinel: store redis has an address already: "+oneOf)
	case rc.Addr != "" && rc.Cluster != nil:
		return s, refuse("redis_cluster", "redis_cluster: store redis has an address already: "+oneOf)
	case rc.Sentinel != nil && rc.Cluster != nil:
		return s, refuse("redis_cluster", "redis_cluster: redis_sentinel is given already: "+oneOf)
	case rc.Sentinel != nil:
		if rc.Sentinel.Master == "" || len(rc.Sentinel.Addrs) == 0 {
			return s, refuse("redis_sentinel", "redis_sentinel: want the master name and the sentinels: redis_sentinel <master> <host:port...> (store.redis.sentinel master and addrs in JSON)")
		}
		if s.sentinelMaster, err = r.resolve("redis_sentinel", rc.Sentinel.Master); err != nil {
			return s, err
		}
		if s.sentinelAddrs, err = resolveAddrs("redis_sentinel", rc.Sentinel.Addrs, r); err != nil {
			return s, err
		}
		if s.sentinelPassword, err = r.resolve("redis_sentinel_password", rc.Sentinel.Password); err != nil {
			return s, err
		}
	case rc.Cluster != nil:
		if rc.DB != 0 {
			return s, refuse("store", "store: redis database %d: a cluster has database 0 only", rc.DB)
		}
		if s.clusterAddrs, err = resolveAddrs("redis_cluster", rc.Cluster, r); err != nil {
			return s, err
		}
	case rc.Addr == "":
		return s, errNoRedisAddress
	default:
		if s.addr, err = r.resolve("store", rc.Addr); err != nil {
			return s, err
		}
		if !r.pending(rc.Addr) {
			if err := checkRedisAddr("store", "redis address", s.addr); err != nil {
				return s, err
			}
		}
	}
	if s.db < 0 {
		return s, refuse("store", "store: redis database %d is not a number 0 or more", s.db)
	}
	if s.minReplicas < -1 {
		return s, refuse("redis_min_replicas", "redis_min_replicas: %d is below -1 (-1: never wait; 0: one replica when the primary has any)", s.minReplicas)
	}
	if s.waitTimeout < 0 || (s.waitTimeout > 0 && s.waitTimeout < time.Millisecond) {
		return s, refuse("redis_wait_timeout", "redis_wait_timeout: %v is not a duration of 1ms or more", s.waitTimeout)
	}
	if s.username, err = r.resolve("redis_username", rc.Username); err != nil {
		return s, err
	}
	if s.password, err = r.resolve("redis_password", rc.Password); err != nil {
		return s, err
	}
	if s.namespace == "" {
		s.namespace = defaultRedisNamespace
	}
	if strings.ContainsFunc(s.namespace, func(c rune) bool { return c <= ' ' || c == 0x7f || c == '{' || c == '}' }) {
		return s, refuse("redis_namespace", "redis_namespace: %q has a space, a brace or a control character", s.namespace)
	}
	return s, nil
}

// resolveAddrs resolves and checks the host:port addresses of field.
func resolveAddrs(field string, addrs []string, r resolver) ([]string, error) {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		v, err := r.resolve(field, a)
		if err != nil {
			return nil, err
		}
		if !r.pending(a) {
			if err := checkRedisAddr(field, "", v); err != nil {
				return nil, err
			}
		}
		out = append(out, v)
	}
	return out, nil
}

// checkRedisAddr checks that addr, of field (what in it: "" for the
// whole value), is host:port. An address that looks like a URL is not
// quoted back: it may carry a password.
func checkRedisAddr(field, what, addr string) error {
	name := field
	if what != "" {
		name += ": " + what
	}
	if strings.Contains(addr, "://") || strings.Contains(addr, "@") {
		return refuse(field, "%s: want host:port, not a URL (give the password with redis_password, the database as the db argument, TLS with redis_tls)", name)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return refuse(field, "%s: %q is not host:port", name, addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return refuse(field, "%s: %q: the port is not a number from 1 to 65535", name, addr)
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
