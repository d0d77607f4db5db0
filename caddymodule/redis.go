package caddymodule

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// defaultRedisNamespace prefixes the keys of store redis unless
// redis_namespace says otherwise.
const defaultRedisNamespace = "tokengate"

// redisSpec is the Redis server of store redis, placeholders resolved.
type redisSpec struct {
	addr      string // host:port
	db        int
	username  string
	password  string
	tls       bool
	namespace string
}

// options are the go-redis client options of r. The client dials lazily:
// creating it makes no connection. TLS verifies the server against the
// system's roots as the host of addr.
func (r redisSpec) options() *redis.Options {
	o := &redis.Options{
		Addr:     r.addr,
		DB:       r.db,
		Username: r.username,
		Password: r.password,
		// The middleware bounds every store call with a context: let
		// its deadline bound the network I/O too.
		ContextTimeoutEnabled: true,
	}
	if r.tls {
		host, _, _ := net.SplitHostPort(r.addr)
		o.TLSConfig = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	return o
}

// redisSubdirectives are the subdirectives of store redis only.
var redisSubdirectives = []string{"redis_password", "redis_username", "redis_tls", "redis_namespace"}

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
	r := redisSpec{db: h.RedisDB, tls: h.RedisTLS, namespace: h.RedisNamespace}
	if h.RedisAddr == "" {
		return r, fmt.Errorf("oauth2_token: store: redis needs an address: store redis <host:port> [<db>] (redis_addr in JSON)")
	}
	var err error
	if r.addr, err = resolve("redis_addr", h.RedisAddr); err != nil {
		return r, err
	}
	if !hasPlaceholder(r.addr) {
		if err := checkRedisAddr(r.addr); err != nil {
			return r, err
		}
	}
	if r.db < 0 {
		return r, fmt.Errorf("oauth2_token: redis_db: %d is negative (want a database number, 0 or more)", r.db)
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
	if strings.ContainsFunc(r.namespace, func(c rune) bool { return c <= ' ' || c == 0x7f }) {
		return r, fmt.Errorf("oauth2_token: redis_namespace: %q has a space or a control character", r.namespace)
	}
	return r, nil
}

// checkRedisAddr checks that addr is host:port. An address that looks
// like a URL is not quoted back: it may carry a password.
func checkRedisAddr(addr string) error {
	if strings.Contains(addr, "://") || strings.Contains(addr, "@") {
		return fmt.Errorf("oauth2_token: redis_addr: want host:port, not a URL (give the password with redis_password, the database as the db argument, TLS with redis_tls)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("oauth2_token: redis_addr: %q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("oauth2_token: redis_addr: %q: the port is not a number from 1 to 65535", addr)
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
