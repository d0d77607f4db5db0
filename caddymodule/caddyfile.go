package caddymodule

import (
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"

	"github.com/tasknation/tokengate/middleware"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("oauth2_token", parseCaddyfile)
	// Right after the authentication directives and request_header (which
	// set what a user grant reads), so before encode, handle, route and
	// reverse_proxy: no `order` line is needed, a site-level oauth2_token
	// also covers the reverse_proxy inside a `handle` block, a
	// request_header that sets the subject's header runs first, and one
	// that deletes Authorization (the client's) cannot delete the token.
	httpcaddyfile.RegisterDirectiveOrder("oauth2_token", httpcaddyfile.After, "request_header")
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
//	    client_auth     basic|post
//	    private_key_jwt <key_file> [<alg> [<kid>]] {
//	        algorithm <alg>
//	        key_id    <kid>
//	        audience  <url>
//	        lifetime  <duration>
//	    }
//	    tls_client_auth <cert_file> <key_file>
//	    trusted_ca      <pem_file>
//	    token_params    <name> <value...>
//	    issuer          <url>
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
// client_id is required, and client_secret unless private_key_jwt or
// tls_client_auth authenticates the client instead; with
// authorization_code, user and redirect_uri too. private_key_jwt's block
// is optional, and its algorithm and key id may be given in it or after
// the key file. client_auth, private_key_jwt, tls_client_auth,
// token_params and issuer are for provider generic (tasknation takes
// client_auth post only). The db of store redis is a database number, 0 by
// default. store redis takes one server's address, or none with
// redis_sentinel (a primary the sentinels name) or redis_cluster (some
// nodes of a cluster). encryption_key's first key seals, the older keys
// only open (a key rotation). Each subdirective may appear once but
// token_params, once per parameter or more (resource may repeat).
//
// The block is read into the nested JSON (the store, its redis and the
// authorization_code objects); a subdirective of an object the block
// does not have (redis_tls without store redis, user without grant
// authorization_code) is an error at its line. The rules are Validate's:
// it runs on the result, and its error is reported at the line of the
// subdirective at fault, or of the directive when that is missing.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive name
	b := block{h: h, directive: *d, at: map[string]caddyfile.Dispenser{}, params: map[string]caddyfile.Dispenser{}}
	if d.NextArg() {
		return d.ArgErr()
	}
	for d.NextBlock(0) {
		sub := d.Val()
		if _, dup := b.at[sub]; dup && sub != "token_params" {
			return d.Errf("oauth2_token: duplicate subdirective %q", sub)
		}
		b.at[sub] = *d
		if err := b.parse(d, sub); err != nil {
			return err
		}
	}
	if err := b.assemble(); err != nil {
		return err
	}
	if err := h.Validate(); err != nil {
		return b.wrap(err)
	}
	return nil
}

// Subdirectives by the object of the JSON config they set.
var (
	// clientSubdirectives set the handler's own fields and the store.
	clientSubdirectives = []string{"provider", "token_url", "client_id", "client_secret", "client_auth",
		"private_key_jwt", "tls_client_auth", "trusted_ca", "token_params", "issuer", "scopes", "grant",
		"store", "encryption_key", "request_timeout", "max_replay_body", "refresh_window", "backoff"}
	// redisSubdirectives set store.redis: store redis only.
	redisSubdirectives = []string{"redis_password", "redis_username", "redis_tls", "redis_namespace",
		"redis_sentinel", "redis_sentinel_password", "redis_cluster", "redis_min_replicas", "redis_wait_timeout"}
	// userSubdirectives set authorization_code: grant authorization_code only.
	userSubdirectives = []string{"user", "redirect_uri", "auth_url", "connect_path", "callback_path", "disconnect_path",
		"status_path", "revocation_url", "events_include_subject", "pkce", "connected_redirect", "state_lifetime",
		"max_pending_states", "max_pending_per_subject", "max_callback_query", "cache_size", "grace_period",
		"refresh_token_warning"}
)

// subdirectives are all of them.
var subdirectives = slices.Concat(clientSubdirectives, redisSubdirectives, userSubdirectives)

// grants are the values of the grant subdirective.
var grants = []string{middleware.GrantClientCredentials, middleware.GrantAuthorizationCode}

// block is an oauth2_token block being read: the objects of the JSON
// config its subdirectives fill, and where each subdirective was.
type block struct {
	h         *Handler
	directive caddyfile.Dispenser            // at the directive's name
	at        map[string]caddyfile.Dispenser // at each subdirective's name
	params    map[string]caddyfile.Dispenser // at each token_params, by the parameter's name
	grant     string
	auth      ClientAuth
	store     StoreConfig
	redis     RedisConfig
	sentinel  SentinelConfig
	user      AuthorizationCode
}

// parse reads the arguments of the subdirective sub, at d.
func (b *block) parse(d *caddyfile.Dispenser, sub string) error {
	h, u, rc := b.h, &b.user, &b.redis
	// one reads the single argument of sub. An extra argument is not
	// quoted back: it may be part of a secret.
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
	// duration reads a positive duration (0 would be the default).
	duration := func(dst *caddy.Duration) error {
		var s string
		if err := one(&s); err != nil {
			return err
		}
		v, err := caddy.ParseDuration(s)
		if err != nil || v <= 0 {
			return d.Errf("oauth2_token: %s: %q is not a positive duration", sub, s)
		}
		*dst = caddy.Duration(v)
		return nil
	}
	// onOff reads on or off.
	onOff := func(dst *bool, on bool) error {
		var s string
		if err := one(&s); err != nil {
			return err
		}
		switch s {
		case "on":
			*dst = on
		case "off":
			*dst = !on
		default:
			return d.Errf("oauth2_token: %s: %q is not on or off", sub, s)
		}
		return nil
	}
	// count reads a positive number (0 would be the default); size in
	// bytes, as 8KiB, with bytes.
	count := func(dst *int, bytes bool) error {
		var v string
		if err := one(&v); err != nil {
			return err
		}
		n, err := strconv.Atoi(v)
		if bytes {
			var size uint64
			size, err = humanize.ParseBytes(v)
			n = int(min(size, 1<<30))
		}
		if err != nil || n <= 0 {
			return d.Errf("oauth2_token: %s: %q is not a positive number", sub, v)
		}
		*dst = n
		return nil
	}
	switch sub {
	case "provider":
		return one(&h.Provider)
	case "token_url":
		return one(&h.TokenURL)
	case "client_id":
		return one(&h.ClientID)
	case "client_secret":
		return one(&h.ClientSecret)
	case "client_auth":
		return one(&b.auth.Method)
	case "private_key_jwt":
		return b.parsePrivateKeyJWT(d)
	case "tls_client_auth":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.Errf("oauth2_token: tls_client_auth: want the certificate and key files: tls_client_auth <cert_file> <key_file>")
		}
		b.auth.TLSClientAuth = &TLSClientAuth{CertFile: args[0], KeyFile: args[1]}
	case "trusted_ca":
		return one(&h.TrustedCA)
	case "token_params":
		args := d.RemainingArgs()
		if len(args) < 2 {
			return d.Errf("oauth2_token: token_params: want a name and its values: token_params <name> <value...>")
		}
		if h.TokenParams == nil {
			h.TokenParams = map[string][]string{}
		}
		h.TokenParams[args[0]] = append(h.TokenParams[args[0]], args[1:]...)
		if _, ok := b.params[args[0]]; !ok {
			b.params[args[0]] = *d
		}
	case "issuer":
		return one(&h.Issuer)
	case "scopes":
		if h.Scopes = d.RemainingArgs(); len(h.Scopes) == 0 {
			return d.ArgErr()
		}
	case "grant":
		if err := one(&b.grant); err != nil {
			return err
		}
		if !slices.Contains(grants, b.grant) {
			return d.Errf("oauth2_token: grant: unknown grant %q (want client_credentials or authorization_code)%s", b.grant, didYouMean(b.grant, grants))
		}
	case "store":
		return b.parseStore(d)
	case "encryption_key":
		if b.store.EncryptionKeys = d.RemainingArgs(); len(b.store.EncryptionKeys) == 0 {
			return d.ArgErr()
		}
	case "request_timeout":
		return duration(&h.RequestTimeout)
	case "max_replay_body":
		var v string
		if err := one(&v); err != nil {
			return err
		}
		if v == "-1" || v == "off" {
			h.MaxReplayBody = -1
		} else if n, err := humanize.ParseBytes(v); err != nil || n == 0 || n > 1<<30 {
			return d.Errf("oauth2_token: max_replay_body: %q is not a size between 1B and 1GiB (or off)", v)
		} else {
			h.MaxReplayBody = int64(n)
		}
	case "refresh_window":
		var s string
		if err := one(&s); err != nil {
			return err
		}
		// The range is the middleware's rule; 0 would be the default.
		var err error
		if h.RefreshWindow, err = strconv.ParseFloat(s, 64); err != nil || h.RefreshWindow == 0 {
			return d.Errf("oauth2_token: refresh_window: %q is not a fraction between 0 and 1", s)
		}
	case "backoff":
		args := d.RemainingArgs()
		if len(args) != 2 {
			return d.ArgErr()
		}
		for i, dst := range []*caddy.Duration{&h.MinBackoff, &h.MaxBackoff} {
			v, err := caddy.ParseDuration(args[i])
			if err != nil || v <= 0 {
				return d.Errf("oauth2_token: backoff: %q is not a positive duration", args[i])
			}
			*dst = caddy.Duration(v)
		}

	case "redis_password":
		return one(&rc.Password)
	case "redis_username":
		return one(&rc.Username)
	case "redis_tls":
		return onOff(&rc.TLS, true)
	case "redis_namespace":
		return one(&rc.Namespace)
	case "redis_sentinel":
		args := d.RemainingArgs()
		if len(args) < 2 {
			return d.Errf("oauth2_token: redis_sentinel: want the master name and the sentinels: redis_sentinel <master> <host:port...>")
		}
		b.sentinel.Master, b.sentinel.Addrs = args[0], args[1:]
	case "redis_sentinel_password":
		return one(&b.sentinel.Password)
	case "redis_cluster":
		if rc.Cluster = d.RemainingArgs(); len(rc.Cluster) == 0 {
			return d.Errf("oauth2_token: redis_cluster: want the addresses of some nodes: redis_cluster <host:port...>")
		}
	case "redis_min_replicas":
		var v string
		if err := one(&v); err != nil {
			return err
		}
		switch n, err := strconv.Atoi(v); {
		case v == "auto":
			rc.MinReplicas = 0
		case v == "off":
			rc.MinReplicas = -1
		case err != nil || n < 1:
			return d.Errf("oauth2_token: redis_min_replicas: %q is not a number of replicas (1 or more), auto or off", v)
		default:
			rc.MinReplicas = n
		}
	case "redis_wait_timeout":
		return duration(&rc.WaitTimeout)

	case "user":
		return one(&u.User)
	case "redirect_uri":
		return one(&u.RedirectURI)
	case "auth_url":
		return one(&u.AuthURL)
	case "connect_path":
		return one(&u.ConnectPath)
	case "callback_path":
		return one(&u.CallbackPath)
	case "disconnect_path":
		return one(&u.DisconnectPath)
	case "status_path":
		return one(&u.StatusPath)
	case "revocation_url":
		return one(&u.RevocationURL)
	case "events_include_subject":
		return onOff(&u.EventsIncludeSubject, true)
	case "pkce":
		return onOff(&u.DisablePKCE, false)
	case "connected_redirect":
		return one(&u.ConnectedRedirect)
	case "state_lifetime":
		return duration(&u.StateLifetime)
	case "max_pending_states":
		return count(&u.MaxPendingStates, false)
	case "max_pending_per_subject":
		return count(&u.MaxPendingPerSubject, false)
	case "max_callback_query":
		return count(&u.MaxCallbackQuery, true)
	case "cache_size":
		return count(&u.CacheSizeMB, false)
	case "grace_period":
		return duration(&u.GracePeriod)
	case "refresh_token_warning":
		return duration(&u.RefreshTokenWarning)
	default:
		return d.Errf("oauth2_token: unrecognized subdirective %q%s", sub, didYouMean(sub, subdirectives))
	}
	return nil
}

// parseStore reads store memory|caddy, store file <dir> and
// store redis [<host:port> [<db>]].
func (b *block) parseStore(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 {
		return d.ArgErr()
	}
	b.store.Kind = args[0]
	most := 1
	switch args[0] {
	case storeFile:
		if len(args) == 1 {
			return d.Errf("oauth2_token: store: file needs a directory: store file <dir>")
		}
		b.store.Dir, most = args[1], 2
	case storeRedis:
		if len(args) > 1 {
			b.redis.Addr = args[1]
		}
		if len(args) > 2 {
			db, err := strconv.Atoi(args[2])
			if err != nil || db < 0 {
				return d.Errf("oauth2_token: store: redis database %q is not a number 0 or more (store redis <host:port> [<db>])", args[2])
			}
			b.redis.DB = db
		}
		most = 3
	}
	// An unknown kind is Validate's to report, with the kinds there are.
	if len(args) > most && slices.Contains(storeKinds, args[0]) {
		return d.Errf("oauth2_token: store: too many arguments (want %s)", storeChoices)
	}
	return nil
}

// privateKeyJWTOptions are the subdirectives of private_key_jwt's block.
var privateKeyJWTOptions = []string{"algorithm", "key_id", "audience", "lifetime"}

// parsePrivateKeyJWT reads private_key_jwt <key_file> [<alg> [<kid>]]
// and its optional block of privateKeyJWTOptions.
func (b *block) parsePrivateKeyJWT(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) == 0 || len(args) > 3 {
		return d.Errf("oauth2_token: private_key_jwt: want the key file, then optionally the algorithm and the key id: private_key_jwt <key_file> [<alg> [<kid>]]")
	}
	p := &PrivateKeyJWT{KeyFile: args[0]}
	if len(args) > 1 {
		p.Algorithm = args[1]
	}
	if len(args) > 2 {
		p.KeyID = args[2]
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !slices.Contains(privateKeyJWTOptions, opt) {
			return d.Errf("oauth2_token: private_key_jwt: unrecognized option %q (want %s)%s", opt, strings.Join(privateKeyJWTOptions, ", "),
				didYouMean(opt, privateKeyJWTOptions))
		}
		if seen[opt] {
			return d.Errf("oauth2_token: private_key_jwt: duplicate option %q", opt)
		}
		seen[opt] = true
		if !d.NextArg() {
			return d.ArgErr()
		}
		v := d.Val()
		if d.NextArg() {
			return d.Errf("oauth2_token: private_key_jwt: %s takes one argument", opt)
		}
		switch opt {
		case "algorithm", "key_id":
			dst, pos := &p.Algorithm, 2
			if opt == "key_id" {
				dst, pos = &p.KeyID, 3
			}
			if *dst != "" {
				return d.Errf("oauth2_token: private_key_jwt: %s is given twice, as argument %d and in the block", opt, pos)
			}
			*dst = v
		case "audience":
			p.Audience = v
		case "lifetime":
			l, err := caddy.ParseDuration(v)
			if err != nil || l <= 0 {
				return d.Errf("oauth2_token: private_key_jwt: lifetime: %q is not a positive duration", v)
			}
			if l < middleware.MinAssertionLifetime || l > middleware.MaxAssertionLifetime {
				return d.Errf("oauth2_token: private_key_jwt lifetime must be between 1s and 1h, got %v", l)
			}
			p.Lifetime = caddy.Duration(l)
		}
	}
	b.auth.PrivateKeyJWT = p
	return nil
}

// assemble puts the objects the block filled into the handler, and
// refuses a subdirective of an object the block does not have.
func (b *block) assemble() error {
	if b.grant == middleware.GrantAuthorizationCode {
		b.h.AuthorizationCode = &b.user
	} else if sub := b.first(userSubdirectives); sub != "" {
		d := b.at[sub]
		return d.Errf("oauth2_token: %s: only applies to grant authorization_code (the grant is client_credentials)", sub)
	}
	if b.store.Kind == storeRedis {
		b.store.Redis = &b.redis
		if _, ok := b.at["redis_sentinel"]; ok {
			b.redis.Sentinel = &b.sentinel
		} else if _, ok := b.at["redis_sentinel_password"]; ok {
			d := b.at["redis_sentinel_password"]
			return d.Errf("oauth2_token: redis_sentinel_password: only applies with redis_sentinel")
		}
	} else if sub := b.first(redisSubdirectives); sub != "" {
		kind := b.store.Kind
		if kind == "" {
			kind = storeMemory
			if b.h.AuthorizationCode != nil {
				kind = storeCaddy
			}
		}
		d := b.at[sub]
		return d.Errf("oauth2_token: %s: only applies to store redis (the store is %s)", sub, kind)
	}
	if b.store.Kind != "" || b.store.EncryptionKeys != nil {
		b.h.Store = &b.store
	}
	if b.auth != (ClientAuth{}) {
		b.h.ClientAuth = &b.auth
	}
	return nil
}

// first is the subdirective of subs that comes first in the block, or "".
func (b *block) first(subs []string) string {
	first, line := "", 0
	for _, sub := range subs {
		if d, ok := b.at[sub]; ok && (first == "" || d.Line() < line) {
			first, line = sub, d.Line()
		}
	}
	return first
}

// wrap reports err, of Validate, at the line of the subdirective it is
// about; when the block does not have that one (a required one missing,
// a default at fault), at the line of the subdirective it depends on, or
// else of the directive.
func (b *block) wrap(err error) error {
	field := errorField(err)
	d, ok := b.at[field]
	var ce *middleware.ConfigError
	if field == "token_params" && errors.As(err, &ce) {
		if pd, found := b.params[ce.Value]; found {
			d = pd // the line of the parameter at fault
		}
	}
	if !ok {
		d, ok = b.at[dependsOn[field]]
	}
	if !ok {
		d = b.directive
	}
	return d.WrapErr(err)
}

// dependsOn is, for a setting that may be missing or defaulted, the
// subdirective that makes it needed or gives its default.
var dependsOn = map[string]string{
	"token_url":     "provider",
	"auth_url":      "provider",
	"user":          "grant",
	"redirect_uri":  "grant",
	"callback_path": "redirect_uri",
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
