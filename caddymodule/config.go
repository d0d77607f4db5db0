package caddymodule

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/tokenstore"
)

// StoreConfig is where the handler keeps its tokens (the `store` object
// of the JSON config).
type StoreConfig struct {
	// "memory" (this process only; lost on restart), "file" (the
	// directory dir, on this host), "caddy" (Caddy's storage, as set by
	// the `storage` global option: shared by the instances that share it)
	// or "redis" (the Redis of redis: shared by the instances that use
	// it). Default: file with dir, redis with redis, else memory, or caddy
	// with authorization_code
	Kind string `json:"kind,omitempty"`

	// The directory of the file store. Placeholders are resolved at load.
	// Required with kind file.
	Dir string `json:"dir,omitempty"`

	// The Redis of the redis store. Required with kind redis.
	Redis *RedisConfig `json:"redis,omitempty"`

	// The keys that seal access and refresh tokens (AES-256-GCM) in a
	// durable store (file, caddy or redis): 32 bytes in base64 each, for
	// example from `openssl rand -base64 32`. The first seals and opens;
	// the others, older keys during a key rotation, only open (a set
	// opened with one is sealed with the first when it is next written).
	// Use placeholders ({env.NAME} or {file./path}) so that the keys stay
	// out of the config. At most 4, none repeated. Tokens sealed with
	// another key are not used. Default: none (tokens in clear, with a
	// warning)
	EncryptionKeys []string `json:"encryption_keys,omitempty"`
}

// RedisConfig is the Redis of the redis store: one server (addr), a
// primary under Sentinel (sentinel) or a Redis Cluster (cluster).
type RedisConfig struct {
	// The server, as host:port. Placeholders are resolved at load.
	// Required unless sentinel or cluster is given.
	Addr string `json:"addr,omitempty"`

	// The database number. Default: 0
	DB int `json:"db,omitempty"`

	// The ACL user, with password. Placeholders are resolved at load.
	// Default: none (the default user)
	Username string `json:"username,omitempty"`

	// The password (AUTH). Use a placeholder ({env.NAME} or
	// {file./path}) so that it stays out of the config. Default: none
	Password string `json:"password,omitempty"`

	// Connects over TLS, verified with the system's roots for the host of
	// each address (addr, the sentinels, the nodes the sentinels or the
	// cluster name). Without it the password and the tokens (unless
	// encryption_keys seal them) cross the network in clear: a warning at
	// load says so when an address is not loopback. Default: false
	TLS bool `json:"tls,omitempty"`

	// The prefix of every key, so that several gateways, or other
	// applications, can share one database. Default: tokengate
	Namespace string `json:"namespace,omitempty"`

	// A primary under Sentinel, instead of addr: the store follows the
	// primary the sentinels name.
	Sentinel *SentinelConfig `json:"sentinel,omitempty"`

	// Some nodes of a Redis Cluster, host:port each, instead of addr: a
	// few are enough, the others are discovered. A cluster has database
	// 0 only. Placeholders are resolved at load.
	Cluster []string `json:"cluster,omitempty"`

	// How many replicas must acknowledge the write of a rotated refresh
	// token (WAIT) before it counts as stored; a write fewer acknowledged
	// is logged, and the new token set is kept in memory and written
	// again at the next refresh. A disconnect's delete is waited for too
	// (fewer acknowledged: the browser is told to try again). 0: one
	// replica when the primary has any
	// connected, none otherwise; -1: never wait. Default: 0
	MinReplicas int `json:"min_replicas,omitempty"`

	// How long the write of a rotated refresh token waits for
	// min_replicas. Default: 1s
	WaitTimeout caddy.Duration `json:"wait_timeout,omitempty"`
}

// SentinelConfig is a Redis primary found through Redis Sentinel.
type SentinelConfig struct {
	// The master name the sentinels monitor. Placeholders are resolved
	// at load. Required.
	Master string `json:"master,omitempty"`

	// The sentinels, host:port each. Placeholders are resolved at load.
	// Required.
	Addrs []string `json:"addrs,omitempty"`

	// The sentinels' own password (their requirepass), when they have
	// one; the redis password is the data nodes'. Use a placeholder.
	// Default: none
	Password string `json:"password,omitempty"`
}

// AuthorizationCode is the user context (the authorization_code grant):
// its presence in the config is the grant. Each request acts for a user,
// the subject, whose tokens are obtained through the connect and
// callback endpoints the handler serves.
type AuthorizationCode struct {
	// The subject of a request: a placeholder, resolved per request, that
	// an authentication handler running first sets, such as
	// {http.auth.user.id} (basic_auth, or forward_auth's copy_headers as
	// {http.request.header.Remote-User}). It must come from a trusted
	// source: whoever controls it chooses whose tokens a request gets. A
	// placeholder that is unknown or empty makes the request
	// unauthenticated (401). Required.
	User string `json:"user,omitempty"`

	// The absolute URL of the callback endpoint as registered with the
	// authorization server. Must be https:// unless the host is
	// loopback. Its path is the default callback_path; its origin makes
	// connect_url absolute. Placeholders are resolved at load. Required.
	RedirectURI string `json:"redirect_uri,omitempty"`

	// The authorization endpoint the connect endpoint redirects to. Must
	// be https:// unless the host is loopback. Placeholders are resolved
	// at load. Default: the provider's
	// (https://auth.tasknation.com/oauth2/auth)
	AuthURL string `json:"auth_url,omitempty"`

	// The path of the connect endpoint (GET: redirects to the
	// authorization server). Default: /oauth2/connect
	ConnectPath string `json:"connect_path,omitempty"`

	// The path of the callback endpoint. Default: redirect_uri's path, or
	// /oauth2/callback when it has none
	CallbackPath string `json:"callback_path,omitempty"`

	// The path of the disconnect endpoint (POST: deletes the user's
	// tokens). Default: /oauth2/disconnect
	DisconnectPath string `json:"disconnect_path,omitempty"`

	// The path of the connection status endpoint (GET: JSON for the
	// request's user: connected, state, scopes, connected_at,
	// refresh_token_expires_at, connect_url; never a token).
	// Default: /oauth2/status
	StatusPath string `json:"status_path,omitempty"`

	// The RFC 7009 revocation endpoint (provider generic only): a
	// disconnect revokes the user's refresh token there after deleting it
	// (best effort, within request_timeout). Must be https:// unless the
	// host is loopback. Placeholders are resolved at load. Default: none
	RevocationURL string `json:"revocation_url,omitempty"`

	// Puts the subject (the user id) in the data of the oauth2_token.*
	// events, beside subject_key (its hash), which is always there.
	// Default: false
	EventsIncludeSubject bool `json:"events_include_subject,omitempty"`

	// Turns PKCE (S256) off, for authorization servers that reject it.
	// Default: false (PKCE on)
	DisablePKCE bool `json:"disable_pkce,omitempty"`

	// Where the callback sends the browser once the account is connected:
	// an absolute URL or a path. Default: a page saying it is connected
	ConnectedRedirect string `json:"connected_redirect,omitempty"`

	// How long a connect may take, from the connect endpoint to the
	// callback. Default: 10m
	StateLifetime caddy.Duration `json:"state_lifetime,omitempty"`

	// How many connects may be in progress at once (held in memory, per
	// token source, when the store does not keep them: memory, file);
	// past it the oldest is dropped. Default: 10000
	MaxPendingStates int `json:"max_pending_states,omitempty"`

	// How many connects one user may have in progress at once, in memory
	// or in the shared store (redis, caddy); past it the user's oldest is
	// dropped, and no other user's. Default: 5
	MaxPendingPerSubject int `json:"max_pending_per_subject,omitempty"`

	// The longest callback query string, in bytes (each value at most a
	// quarter of it); longer is refused with 400. Default: 8192
	MaxCallbackQuery int `json:"max_callback_query,omitempty"`

	// The memory, in MB, of the in-memory layer of user tokens in front of
	// the store; past it the oldest sets are evicted and read again from
	// the store (the source of truth). Default: 64
	CacheSizeMB int `json:"cache_size_mb,omitempty"`

	// How long after its first attempt a refresh that got no answer (a
	// network error) is retried with the same refresh token; TaskNation
	// accepts a rotated refresh token again for 60 seconds. Default: 60s
	GracePeriod caddy.Duration `json:"grace_period,omitempty"`

	// From how long before a user's refresh token runs out each refresh
	// logs a warning and counts in
	// caddy_oauth2_token_refresh_tokens_expiring_total. Default: 14d
	RefreshTokenWarning caddy.Duration `json:"refresh_token_warning,omitempty"`
}

// ClientAuth is how the client authenticates at the token and
// revocation endpoints (the client_auth object): with its secret, in an
// HTTP Basic header or in the form body, or instead of a secret with a
// signed assertion (private_key_jwt) or a TLS client certificate
// (tls_client_auth). The two without a secret are for provider generic
// only, and exclude each other and method basic.
type ClientAuth struct {
	// Where client_id and client_secret go: "basic" (an HTTP Basic
	// header, RFC 6749 §2.3.1) or "post" (the form body,
	// client_secret_post). Provider tasknation takes post only.
	// Default: the provider's (tasknation: post; generic: basic)
	Method string `json:"method,omitempty"`

	// Authenticates with a JWT signed with a private key (RFC 7523
	// §2.2): no client_secret. Default: none
	PrivateKeyJWT *PrivateKeyJWT `json:"private_key_jwt,omitempty"`

	// Authenticates with a TLS client certificate (RFC 8705 §2): no
	// client_secret. Default: none
	TLSClientAuth *TLSClientAuth `json:"tls_client_auth,omitempty"`
}

// PrivateKeyJWT is private_key_jwt client authentication: each token
// (and revocation) request carries a new JWT signed with the key of
// key_file, with iss and sub the client ID and a fresh jti.
type PrivateKeyJWT struct {
	// The PEM file of the private key (PKCS #8, PKCS #1 or SEC 1; RSA of
	// 2048 bits or more, ECDSA P-256/P-384/P-521 or Ed25519), read at
	// load: replacing the file and reloading takes the new key. Never
	// the key itself. Placeholders are resolved at load. Required.
	KeyFile string `json:"key_file,omitempty"`

	// The JWS algorithm: RS256, RS384, RS512, PS256, PS384, PS512, ES256,
	// ES384, ES512 or EdDSA, one that fits the key. Default: RS256 for
	// RSA keys, the curve's for ECDSA keys, EdDSA for Ed25519 keys
	Algorithm string `json:"algorithm,omitempty"`

	// The kid header, naming the key among those the client registered.
	// Default: none
	KeyID string `json:"key_id,omitempty"`

	// The aud claim. Placeholders are resolved at load. Default: the
	// token endpoint
	Audience string `json:"audience,omitempty"`

	// How long an assertion is valid, between 1s and 1h. Default: 1m
	Lifetime caddy.Duration `json:"lifetime,omitempty"`
}

// TLSClientAuth is tls_client_auth client authentication: the token and
// revocation requests present the certificate, and carry the client ID
// in the form body.
type TLSClientAuth struct {
	// The PEM file of the client certificate, with its chain.
	// Placeholders are resolved at load. Required.
	CertFile string `json:"cert_file,omitempty"`

	// The PEM file of the certificate's private key. Placeholders are
	// resolved at load. Required.
	KeyFile string `json:"key_file,omitempty"`
}

// Token stores (StoreConfig.Kind).
const (
	storeMemory = "memory"
	storeFile   = "file"
	storeCaddy  = "caddy"
	storeRedis  = "redis"
)

// storeKinds are the kinds of store, for errors and suggestions.
var storeKinds = []string{storeMemory, storeFile, storeCaddy, storeRedis}

// providers are the provider presets by name.
var providers = map[string]middleware.Provider{
	middleware.TaskNation.Name: middleware.TaskNation,
	middleware.Generic.Name:    middleware.Generic,
}

// gateConfig is what config makes of a Handler: the middleware's
// configuration, where the tokens are kept, and the SHA-256 of the
// trusted_ca file, which the pool key takes in (a pool of certificates
// cannot be read back).
type gateConfig struct {
	middleware.Config
	store     storeSpec
	trustedCA []byte
}

// storeSpec is where a Gate keeps its tokens.
type storeSpec struct {
	kind  string    // storeMemory, storeFile, storeCaddy or storeRedis
	dir   string    // storeFile
	redis redisSpec // storeRedis
	keys  [][]byte  // nil: no sealing; else keys[0] seals and all open
}

func (s storeSpec) durable() bool { return s.kind != storeMemory }

// Validate checks the configuration as far as it can be checked before
// placeholders are resolved (a value with one is checked at load, by
// Provision): every rule of the module is in config, which Provision
// runs with the placeholders resolved, and which the Caddyfile adapter
// runs through Validate so that `caddy adapt` reports a mistake at the
// line of the subdirective at fault. Caddy calls it after Provision,
// which has run every check already, with the values resolved: then
// there is nothing left to check.
func (h *Handler) Validate() error {
	if h.gate != nil {
		return nil
	}
	_, err := h.config(resolver{})
	return err
}

// resolver resolves the placeholders of the config's values with repl;
// with none (at adapt time, in Validate) it leaves them as they are, and
// the checks a value with a placeholder needs wait for the load.
type resolver struct{ repl *caddy.Replacer }

// resolve returns v, of field, with its placeholders resolved.
func (r resolver) resolve(field, v string) (string, error) {
	if r.repl == nil || v == "" {
		return v, nil
	}
	out, err := r.repl.ReplaceOrErr(v, true, true)
	if err != nil {
		// The replacer's error quotes the text it could not resolve,
		// which for a literal secret with braces is part of the secret:
		// name the placeholder only when the whole value is one.
		if isPlaceholder(v) {
			return "", refuse(field, "%s: placeholder %s is unset or empty", field, v)
		}
		return "", refuse(field, "%s: has an unknown or empty placeholder (write literal braces as \\{ and \\})", field)
	}
	return out, nil
}

// pending reports whether v still has a placeholder: at adapt time, a
// value whose checks wait for the load.
func (r resolver) pending(v string) bool { return r.repl == nil && hasPlaceholder(v) }

// loading reports whether r resolves for the load (Provision), when the
// files of the config are read; at adapt time they are not (the config
// may be adapted on another machine), and stand-ins take their place.
func (r resolver) loading() bool { return r.repl != nil }

// config is the one place of the module's rules: it checks h and returns
// the middleware configuration and where the tokens are kept, with
// placeholders resolved by r, and the key, certificate and CA files read
// (or, at adapt time, stand-ins for the URLs that are still placeholders
// and for what the files hold). The middleware's own checks
// (Config.Validate) run last, their errors worded as the module's.
func (h *Handler) config(r resolver) (gateConfig, error) {
	var g gateConfig
	c := &g.Config
	var err error
	name := h.Provider
	if name == "" {
		name = middleware.TaskNation.Name
	}
	var ok bool
	if c.Provider, ok = providers[name]; !ok {
		return g, refuse("provider", "provider: unknown provider %q (want tasknation or generic)%s", h.Provider,
			didYouMean(h.Provider, slices.Sorted(maps.Keys(providers))))
	}
	c.Grant = middleware.GrantClientCredentials
	ac := h.AuthorizationCode
	if ac != nil {
		c.Grant = middleware.GrantAuthorizationCode
		if err := checkUser(ac.User); err != nil {
			return g, err
		}
	} else {
		ac = new(AuthorizationCode) // the zero values: none is used
	}
	if g.store, err = h.Store.spec(c.Grant, r); err != nil {
		return g, err
	}
	for _, f := range []struct {
		name string
		dst  *string
		v    string
		// standIn is the URL checked at adapt time instead of a value
		// that is a placeholder until the load; "" when none is needed.
		standIn string
	}{
		{"token_url", &c.TokenURL, h.TokenURL, "https://placeholder.invalid/token"},
		{"client_id", &c.ClientID, h.ClientID, ""},
		{"client_secret", &c.ClientSecret, h.ClientSecret, ""},
		{"auth_url", &c.AuthURL, ac.AuthURL, "https://placeholder.invalid/auth"},
		{"redirect_uri", &c.RedirectURI, ac.RedirectURI, "https://placeholder.invalid" + cmp.Or(ac.CallbackPath, middleware.DefaultCallbackPath)},
		{"revocation_url", &c.RevocationURL, ac.RevocationURL, "https://placeholder.invalid/revoke"},
		{"connected_redirect", &c.ConnectedRedirect, ac.ConnectedRedirect, "https://placeholder.invalid/connected"},
		{"issuer", &c.Issuer, h.Issuer, "https://placeholder.invalid"},
	} {
		if *f.dst, err = r.resolve(f.name, f.v); err != nil {
			return g, err
		}
		if f.standIn != "" && r.pending(f.v) {
			*f.dst = f.standIn
			if f.name == "token_url" && c.Provider.TokenURL != "" {
				*f.dst = "" // the provider's, which the placeholder overrides
			}
		}
	}
	for _, sc := range h.Scopes {
		if hasPlaceholder(sc) {
			return g, refuse("scopes", "scopes %q: placeholders are not resolved in scopes; write the scopes themselves", sc)
		}
	}
	c.Scopes = h.Scopes
	c.RequestTimeout = time.Duration(h.RequestTimeout)
	c.MaxReplayBody = h.MaxReplayBody
	c.RefreshWindow = h.RefreshWindow
	c.MinBackoff = time.Duration(h.MinBackoff)
	c.MaxBackoff = time.Duration(h.MaxBackoff)
	c.ConnectPath = ac.ConnectPath
	c.CallbackPath = ac.CallbackPath
	c.DisconnectPath = ac.DisconnectPath
	c.StatusPath = ac.StatusPath
	c.DisablePKCE = ac.DisablePKCE
	c.StateLifetime = time.Duration(ac.StateLifetime)
	c.MaxPendingStates = ac.MaxPendingStates
	c.MaxPendingPerSubject = ac.MaxPendingPerSubject
	c.MaxCallbackQuery = ac.MaxCallbackQuery
	c.CacheSizeMB = ac.CacheSizeMB
	c.GracePeriod = time.Duration(ac.GracePeriod)
	c.RefreshTokenWarning = time.Duration(ac.RefreshTokenWarning)
	if g.trustedCA, err = h.clientAuth(c, r); err != nil {
		return g, err
	}
	if err := c.Validate(); err != nil {
		return g, settingError(err, c.Provider)
	}
	return g, nil
}

// spec checks the store s (nil: the default) of a config of grant and
// resolves its placeholders with r.
func (s *StoreConfig) spec(grant string, r resolver) (storeSpec, error) {
	var sc StoreConfig
	if s != nil {
		sc = *s
	}
	spec := storeSpec{kind: sc.Kind}
	switch {
	case spec.kind != "":
	case sc.Redis != nil:
		spec.kind = storeRedis
	case sc.Dir != "":
		spec.kind = storeFile
	case grant == middleware.GrantAuthorizationCode:
		spec.kind = storeCaddy
	default:
		spec.kind = storeMemory
	}
	if !slices.Contains(storeKinds, spec.kind) {
		return spec, refuse("store", "store: unknown store %q (want %s)%s", sc.Kind, storeChoices, didYouMean(sc.Kind, storeKinds))
	}
	var err error
	switch {
	case spec.kind != storeFile && sc.Dir != "":
		return spec, refuse("store", "store: a directory only applies to store file (the store is %s)", spec.kind)
	case spec.kind != storeRedis && sc.Redis != nil:
		return spec, refuse("store", "store: a redis object only applies to store redis (the store is %s)", spec.kind)
	case spec.kind == storeFile && sc.Dir == "":
		return spec, refuse("store", "store: file needs a directory: store file <dir> (store.dir in JSON)")
	case spec.kind == storeFile:
		if spec.dir, err = r.resolve("store", sc.Dir); err != nil {
			return spec, err
		}
	case spec.kind == storeRedis && sc.Redis == nil:
		return spec, errNoRedisAddress
	case spec.kind == storeRedis:
		if spec.redis, err = sc.Redis.spec(r); err != nil {
			return spec, err
		}
	}
	if len(sc.EncryptionKeys) > 0 {
		if !spec.durable() {
			return spec, refuse("encryption_key", "encryption_key: only applies to a durable store (file, caddy or redis); the store is memory")
		}
		if spec.keys, err = sealKeys(sc.EncryptionKeys, r); err != nil {
			return spec, err
		}
	}
	return spec, nil
}

// storeChoices are the arguments of the store subdirective, for errors.
const storeChoices = "memory, file <dir>, caddy or redis [<host:port> [<db>]]"

// sealKeys checks the encryption keys, the key that seals first, and
// returns them decoded. With a value that is a placeholder until the
// load (at adapt time), sealKeys returns no keys, only the checks it
// could make: how many keys there are, none repeated, each literal one a
// valid key. Errors name a key by its place, never by its value.
func sealKeys(values []string, r resolver) ([][]byte, error) {
	n := len(values)
	if n > tokenstore.MaxSealKeys {
		return nil, refuse("encryption_key", "encryption_key: %d keys, want at most %d (the key that seals and %d older keys that still open)",
			n, tokenstore.MaxSealKeys, tokenstore.MaxSealKeys-1)
	}
	keys := make([][]byte, 0, n)
	for i, v := range values {
		if j := slices.Index(values[:i], v); j >= 0 {
			return nil, refuse("encryption_key", "encryption_key: %s repeats %s", sealKeyName(i, n), sealKeyName(j, n))
		}
		if r.pending(v) {
			continue
		}
		v, err := r.resolve("encryption_key", v)
		if err != nil {
			return nil, err
		}
		key, err := tokenstore.ParseKey(v)
		var ke *tokenstore.KeyError
		switch {
		case err != nil && errors.As(err, &ke):
			return nil, &moduleError{field: "encryption_key", msg: "oauth2_token: encryption_key: " + sealKeyName(i, n) + " " + ke.Reason, err: err}
		case err != nil:
			return nil, &moduleError{field: "encryption_key", msg: "oauth2_token: encryption_key: " + sealKeyName(i, n) + " is not valid", err: err}
		}
		for j, k := range keys {
			if bytes.Equal(k, key) {
				return nil, refuse("encryption_key", "encryption_key: %s repeats %s", sealKeyName(i, n), sealKeyName(j, n))
			}
		}
		keys = append(keys, key)
	}
	if len(keys) < n {
		return nil, nil // some are placeholders, checked at load
	}
	return keys, nil
}

// sealKeyName names the i-th of n encryption keys in errors.
func sealKeyName(i, n int) string {
	switch {
	case n == 1:
		return "encryption key"
	case i == 0:
		return fmt.Sprintf("key 1 of %d (the key that seals)", n)
	}
	return fmt.Sprintf("key %d of %d (an older key)", i+1, n)
}

// refuse is the module's error for a setting, field, in the Caddyfile's
// spelling: "oauth2_token: " and the formatted text.
func refuse(field, format string, args ...any) error {
	return &moduleError{field: field, msg: "oauth2_token: " + fmt.Sprintf(format, args...)}
}

// settingError words a setting that the middleware (a *ConfigError)
// refuses as this module's own error, "oauth2_token: <subdirective> ...",
// from the fields of theirs, which it wraps, with a close scope of p's
// catalog suggested for an unknown one. Other errors get the module's
// prefix.
func settingError(err error, p middleware.Provider) error {
	var ce *middleware.ConfigError
	if !errors.As(err, &ce) {
		return fmt.Errorf("oauth2_token: %w", err)
	}
	msg := "oauth2_token: " + ce.Describe()
	if ce.Field == "scopes" && ce.Value != "" && p.Scopes != nil {
		msg += didYouMean(ce.Value, slices.Sorted(maps.Keys(p.Scopes)))
	}
	return &moduleError{field: ce.Field, msg: msg, err: err}
}

// moduleError is an error worded by this module, about the setting field
// (in the Caddyfile's spelling), around another package's error if any.
type moduleError struct {
	field string
	msg   string
	err   error
}

func (e *moduleError) Error() string { return e.msg }
func (e *moduleError) Unwrap() error { return e.err }

// errorField is the setting an error of config is about, or "".
func errorField(err error) string {
	var me *moduleError
	if errors.As(err, &me) {
		return me.field
	}
	return ""
}

// didYouMean is `; did you mean "<choice>"?` for the choice closest to
// v, when one is close enough to be a typo (at most a third of its
// letters wrong), else "".
func didYouMean(v string, choices []string) string {
	best, bestDist := "", len(v)/3+1
	for _, c := range choices {
		if d := editDistance(v, c); d < bestDist {
			best, bestDist = c, d
		}
	}
	if best == "" || v == "" {
		return ""
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

// editDistance is the Levenshtein distance of a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// Interface guard
var _ caddy.Validator = (*Handler)(nil)
