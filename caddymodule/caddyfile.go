package caddymodule

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/tokenstore"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oauth2_token", parseCaddyfile)
	// Right after the authentication directives (which set what a user
	// grant reads), so before handle, route and reverse_proxy: no `order`
	// line is needed, and a site-level oauth2_token also covers the
	// reverse_proxy inside a `handle` block.
	httpcaddyfile.RegisterDirectiveOrder("oauth2_token", httpcaddyfile.After, "forward_auth")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(Handler)
	err := m.UnmarshalCaddyfile(h.Dispenser)
	return m, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	oauth2_token [<matcher>] {
//	    provider        tasknation|generic
//	    token_url       <url>
//	    client_id       <id>
//	    client_secret   <secret>
//	    scopes          <scope...>
//	    grant           client_credentials|authorization_code
//	    store           memory|file <dir>|caddy|redis [<host:port> [<db>]]
//	    encryption_key  <base64 32 bytes> [<older key>...]
//	    request_timeout <duration>
//	    max_replay_body <size>|off
//	    refresh_window  <fraction>
//	    backoff         <min> <max>
//
//	    # store redis only
//	    redis_password          <secret>
//	    redis_username          <name>
//	    redis_tls               on|off
//	    redis_namespace         <prefix>
//	    redis_sentinel          <master> <host:port...>
//	    redis_sentinel_password <secret>
//	    redis_cluster           <host:port...>
//	    redis_min_replicas      <n>|auto|off
//	    redis_wait_timeout      <duration>
//
//	    # authorization_code only
//	    user                  <placeholder>
//	    redirect_uri          <absolute url>
//	    auth_url              <url>
//	    connect_path          <path>
//	    callback_path         <path>
//	    disconnect_path       <path>
//	    status_path           <path>
//	    revocation_url        <url>
//	    events_include_subject on|off
//	    pkce                  on|off
//	    connected_redirect    <url or path>
//	    state_lifetime        <duration>
//	    grace_period          <duration>
//	    refresh_token_warning <duration>
//	    max_pending_states    <n>
//	    max_pending_per_subject <n>
//	    max_callback_query    <size>
//	    cache_size            <MB>
//	}
//
// client_id and client_secret are required; with authorization_code, user
// and redirect_uri too. The db of store redis is a database number, 0 by
// default. store redis takes one server's address, or none with
// redis_sentinel (a primary the sentinels name) or redis_cluster (some
// nodes of a cluster). encryption_key's first key seals, the older keys
// only open (a key rotation; older_encryption_keys in JSON). Each
// subdirective may appear once. Values are
// checked here as far as they can be without resolving placeholders, so
// that `caddy adapt` reports mistakes, at the line of the subdirective.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	// at is where each subdirective was, for the errors found after the
	// block is read.
	at := map[string]caddyfile.Dispenser{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] {
			return d.Errf("oauth2_token: duplicate subdirective %q", sub)
		}
		seen[sub] = true
		at[sub] = *d
		// one reads the single argument of sub. An extra argument is
		// not quoted back: it may be part of a secret.
		one := func(dst *string) error {
			if !d.NextArg() {
				return d.ArgErr()
			}
			*dst = d.Val()
			if d.NextArg() {
				return d.Errf("oauth2_token: %s takes one argument", sub)
			}
			return nil
		}
		// duration reads a positive duration into dst.
		duration := func(dst *caddy.Duration) error {
			var s string
			if err := one(&s); err != nil {
				return err
			}
			if err := dst.UnmarshalJSON([]byte(strconv.Quote(s))); err != nil || *dst <= 0 {
				return d.Errf("oauth2_token: %s: %q is not a positive duration", sub, s)
			}
			return nil
		}
		var err error
		switch sub {
		case "provider":
			if err = one(&h.Provider); err == nil && h.Provider != "tasknation" && h.Provider != "generic" {
				return d.Errf("oauth2_token: provider: unknown provider %q (want tasknation or generic)", h.Provider)
			}
		case "token_url":
			err = one(&h.TokenURL)
		case "client_id":
			err = one(&h.ClientID)
		case "client_secret":
			err = one(&h.ClientSecret)
		case "grant":
			if err = one(&h.Grant); err == nil && h.Grant != middleware.GrantClientCredentials && h.Grant != middleware.GrantAuthorizationCode {
				return d.Errf("oauth2_token: grant: unknown grant %q (want client_credentials or authorization_code)", h.Grant)
			}
		case "store":
			args := d.RemainingArgs()
			switch {
			case len(args) == 0:
				return d.ArgErr()
			case args[0] == storeFile && len(args) == 1:
				return d.Errf("oauth2_token: store: file needs a directory: store file <dir>")
			case args[0] == storeFile && len(args) == 2:
				h.Store, h.StoreDir = args[0], args[1]
			case args[0] == storeRedis && len(args) == 1:
				h.Store = args[0] // the servers come with redis_sentinel or redis_cluster
			case args[0] == storeRedis && len(args) <= 3:
				if other := firstSeen(seen, "redis_sentinel", "redis_cluster"); other != "" {
					return d.Errf("oauth2_token: store: redis with an address and %s: give one of store redis <host:port>, redis_sentinel and redis_cluster", other)
				}
				h.Store, h.RedisAddr = args[0], args[1]
				if len(args) == 3 {
					db, err := strconv.Atoi(args[2])
					if err != nil || db < 0 {
						return d.Errf("oauth2_token: store: redis database %q is not a number 0 or more (store redis <host:port> [<db>])", args[2])
					}
					h.RedisDB = db
				}
			case (args[0] == storeMemory || args[0] == storeCaddy) && len(args) == 1:
				h.Store = args[0]
			case args[0] == storeMemory || args[0] == storeCaddy || args[0] == storeFile || args[0] == storeRedis:
				return d.Errf("oauth2_token: store: too many arguments (want %s)", storeChoices)
			default:
				return d.Errf("oauth2_token: store: unknown store %q (want %s)", args[0], storeChoices)
			}
		case "redis_password":
			err = one(&h.RedisPassword)
		case "redis_username":
			err = one(&h.RedisUsername)
		case "redis_tls":
			var s string
			if err = one(&s); err == nil {
				switch s {
				case "on":
					h.RedisTLS = true
				case "off":
					h.RedisTLS = false
				default:
					return d.Errf("oauth2_token: redis_tls: %q is not on or off", s)
				}
			}
		case "redis_namespace":
			err = one(&h.RedisNamespace)
		case "redis_sentinel", "redis_cluster":
			args := d.RemainingArgs()
			if h.RedisAddr != "" {
				return d.Errf("oauth2_token: %s: store redis has an address already: give one of store redis <host:port>, redis_sentinel and redis_cluster", sub)
			}
			if other := map[string]string{"redis_sentinel": "redis_cluster", "redis_cluster": "redis_sentinel"}[sub]; seen[other] {
				return d.Errf("oauth2_token: %s: %s is given already: give one of them", sub, other)
			}
			if sub == "redis_sentinel" {
				if len(args) < 2 {
					return d.Errf("oauth2_token: redis_sentinel: want the master name and the sentinels: redis_sentinel <master> <host:port...>")
				}
				h.RedisSentinelMaster, args = args[0], args[1:]
			} else if len(args) == 0 {
				return d.Errf("oauth2_token: redis_cluster: want the addresses of some nodes: redis_cluster <host:port...>")
			}
			for _, a := range args {
				if !hasPlaceholder(a) {
					if err := checkRedisAddr(sub, a); err != nil {
						return d.WrapErr(err)
					}
				}
			}
			if sub == "redis_sentinel" {
				h.RedisSentinelAddrs = args
			} else {
				h.RedisClusterAddrs = args
			}
		case "redis_sentinel_password":
			err = one(&h.RedisSentinelPassword)
		case "redis_min_replicas":
			var v string
			if err = one(&v); err == nil {
				switch n, perr := strconv.Atoi(v); {
				case v == "auto":
					h.RedisMinReplicas = 0
				case v == "off":
					h.RedisMinReplicas = -1
				case perr != nil || n < 1:
					return d.Errf("oauth2_token: redis_min_replicas: %q is not a number of replicas (1 or more), auto or off", v)
				default:
					h.RedisMinReplicas = n
				}
			}
		case "redis_wait_timeout":
			err = duration(&h.RedisWaitTimeout)
		case "encryption_key":
			keys := d.RemainingArgs()
			if len(keys) == 0 {
				return d.ArgErr()
			}
			h.EncryptionKey, h.OlderEncryptionKeys = keys[0], keys[1:]
			if len(h.OlderEncryptionKeys) == 0 {
				h.OlderEncryptionKeys = nil
			}
			if _, err := sealKeys(keys, nil); err != nil {
				return d.WrapErr(err)
			}
		case "scopes":
			h.Scopes = d.RemainingArgs()
			if len(h.Scopes) == 0 {
				return d.ArgErr()
			}
		case "request_timeout":
			err = duration(&h.RequestTimeout)
		case "max_replay_body":
			var v string
			if err = one(&v); err == nil {
				if v == "-1" || v == "off" {
					h.MaxReplayBody = -1
				} else if n, perr := humanize.ParseBytes(v); perr != nil || n == 0 || n > 1<<30 {
					return d.Errf("oauth2_token: max_replay_body: %q is not a size between 1B and 1GiB (or off)", v)
				} else {
					h.MaxReplayBody = int64(n)
				}
			}
		case "refresh_window":
			var s string
			if err = one(&s); err == nil {
				if h.RefreshWindow, err = strconv.ParseFloat(s, 64); err != nil || h.RefreshWindow <= 0 || h.RefreshWindow >= 1 {
					return d.Errf("oauth2_token: refresh_window: %q is not a fraction between 0 and 1", s)
				}
			}
		case "backoff":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.ArgErr()
			}
			for i, dst := range []*caddy.Duration{&h.MinBackoff, &h.MaxBackoff} {
				if err := dst.UnmarshalJSON([]byte(strconv.Quote(args[i]))); err != nil || *dst <= 0 {
					return d.Errf("oauth2_token: backoff: %q is not a positive duration", args[i])
				}
			}
		case "user":
			if err = one(&h.User); err == nil {
				if err := checkUser(h.User); err != nil {
					return d.Err(err.Error())
				}
			}
		case "redirect_uri":
			err = one(&h.RedirectURI)
		case "auth_url":
			err = one(&h.AuthURL)
		case "connect_path":
			err = one(&h.ConnectPath)
		case "callback_path":
			err = one(&h.CallbackPath)
		case "disconnect_path":
			err = one(&h.DisconnectPath)
		case "status_path":
			err = one(&h.StatusPath)
		case "revocation_url":
			err = one(&h.RevocationURL)
		case "events_include_subject":
			var s string
			if err = one(&s); err == nil {
				switch s {
				case "on":
					h.EventsIncludeSubject = true
				case "off":
					h.EventsIncludeSubject = false
				default:
					return d.Errf("oauth2_token: events_include_subject: %q is not on or off", s)
				}
			}
		case "pkce":
			var s string
			if err = one(&s); err == nil {
				switch s {
				case "on":
					h.DisablePKCE = false
				case "off":
					h.DisablePKCE = true
				default:
					return d.Errf("oauth2_token: pkce: %q is not on or off", s)
				}
			}
		case "connected_redirect":
			err = one(&h.ConnectedRedirect)
		case "state_lifetime":
			err = duration(&h.StateLifetime)
		case "max_pending_states", "max_pending_per_subject", "max_callback_query", "cache_size":
			dst := map[string]*int{"max_pending_states": &h.MaxPendingStates, "max_pending_per_subject": &h.MaxPendingPerSubject,
				"max_callback_query": &h.MaxCallbackQuery, "cache_size": &h.CacheSizeMB}[sub]
			var v string
			if err = one(&v); err == nil {
				n, perr := strconv.Atoi(v)
				if sub == "max_callback_query" {
					var b uint64
					b, perr = humanize.ParseBytes(v)
					n = int(min(b, 1<<30))
				}
				if perr != nil || n <= 0 {
					return d.Errf("oauth2_token: %s: %q is not a positive number", sub, v)
				}
				*dst = n
			}
		case "grace_period":
			err = duration(&h.GracePeriod)
		case "refresh_token_warning":
			err = duration(&h.RefreshTokenWarning)
		default:
			return d.Errf("oauth2_token: unrecognized subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	if h.Grant == "" || h.Grant == middleware.GrantClientCredentials {
		// Also what config cannot see: "pkce on" is the zero value.
		for _, sub := range userOnlySubdirectives {
			if seen[sub] {
				return d.Err(userOnly(sub).Error())
			}
		}
	}
	if h.Store != storeRedis {
		// Also what config cannot see: "redis_tls off" is the zero value.
		store := h.Store
		if store == "" {
			store = storeMemory
			if h.Grant == middleware.GrantAuthorizationCode {
				store = storeCaddy
			}
		}
		for _, sub := range redisSubdirectives {
			if seen[sub] {
				d := at[sub]
				return d.Errf("oauth2_token: %s: only applies to store redis (the store is %s)", sub, store)
			}
		}
	} else if h.RedisAddr == "" && h.RedisSentinelMaster == "" && h.RedisClusterAddrs == nil {
		d := at["store"]
		return d.Errf("oauth2_token: store: redis needs an address: store redis <host:port> [<db>], or redis_sentinel <master> <host:port...>, or redis_cluster <host:port...>")
	}
	if seen["redis_sentinel_password"] && !seen["redis_sentinel"] {
		d := at["redis_sentinel_password"]
		return d.Errf("oauth2_token: redis_sentinel_password: only applies with redis_sentinel")
	}
	if err := h.check(); err != nil {
		return d.WrapErr(err)
	}
	return nil
}

// firstSeen is the first of subs that seen holds, or "".
func firstSeen(seen map[string]bool, subs ...string) string {
	for _, s := range subs {
		if seen[s] {
			return s
		}
	}
	return ""
}

// check validates what can be validated before placeholders are resolved.
func (h *Handler) check() error {
	c, _, err := h.config(nil)
	if err != nil {
		return err
	}
	// Stand-ins for values that are placeholders until load time.
	if c.ClientID == "" {
		return fmt.Errorf("oauth2_token: client_id is required")
	}
	if c.ClientSecret == "" {
		return fmt.Errorf("oauth2_token: client_secret is required")
	}
	if hasPlaceholder(c.TokenURL) {
		c.TokenURL = ""
		if c.Provider.TokenURL == "" {
			c.TokenURL = "https://placeholder.invalid/token"
		}
	}
	if hasPlaceholder(c.AuthURL) {
		c.AuthURL = "https://placeholder.invalid/auth"
	}
	if hasPlaceholder(c.RedirectURI) {
		path := c.CallbackPath
		if path == "" {
			path = middleware.DefaultCallbackPath
		}
		c.RedirectURI = "https://placeholder.invalid" + path
	}
	if hasPlaceholder(c.RevocationURL) {
		c.RevocationURL = "https://placeholder.invalid/revoke"
	}
	return validate(c)
}

// validate runs the middleware's checks; a refusal is worded as this
// module's own (see settingError).
func validate(c middleware.Config) error {
	if err := c.Validate(); err != nil {
		return settingError(err)
	}
	return nil
}

// settingError words a setting that the middleware (a *ConfigError) or
// the token store (a *tokenstore.KeyError) refuses as this module's own
// error, "oauth2_token: <subdirective> ...", from the fields of theirs,
// which it wraps. Other errors get the module's prefix.
func settingError(err error) error {
	var ce *middleware.ConfigError
	var ke *tokenstore.KeyError
	var msg strings.Builder
	msg.WriteString("oauth2_token: ")
	switch {
	case errors.As(err, &ce):
		msg.WriteString(ce.Field)
		detail := ce.Reason
		if ce.Err != nil {
			if detail != "" {
				detail += ": "
			}
			detail += ce.Err.Error()
		}
		switch {
		case ce.Value != "":
			fmt.Fprintf(&msg, " %q: %s", ce.Value, detail)
		case ce.Reason != "":
			msg.WriteString(" " + detail)
		default:
			msg.WriteString(": " + detail)
		}
	case errors.As(err, &ke):
		msg.WriteString("encryption_key: encryption key " + ke.Reason)
	default:
		return fmt.Errorf("oauth2_token: %w", err)
	}
	return &moduleError{msg: msg.String(), err: err}
}

// moduleError is an error worded by this module around another package's.
type moduleError struct {
	msg string
	err error
}

func (e *moduleError) Error() string { return e.msg }
func (e *moduleError) Unwrap() error { return e.err }

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
