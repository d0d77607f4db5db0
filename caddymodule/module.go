// Package caddymodule is tokengate as a Caddy v2 HTTP handler,
// http.handlers.oauth2_token: it gets OAuth 2.0 access tokens, keeps them
// fresh and sets "Authorization: Bearer <token>" on requests before the
// next handler (usually reverse_proxy) sees them.
//
// Build a Caddy with it. Until the module is published, mark its path
// private and point it at a checkout (here ./tokengate), or the module
// proxy's refusal stops the build:
//
//	GOPRIVATE=github.com/tasknation/tokengate GONOSUMDB=github.com/tasknation/tokengate \
//	GOVCS=github.com/tasknation/tokengate:off \
//	xcaddy build v2.11.9 \
//		--with github.com/tasknation/tokengate/caddymodule \
//		--replace github.com/tasknation/tokengate=./tokengate
//
// Once it is published:
//
//	xcaddy build --with github.com/tasknation/tokengate/caddymodule
//
// See also: middleware (the same Gate as net/http middleware), tokenstore
// (token stores) and middleware/tasknationtest (a fake TaskNation server).
package caddymodule

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/certmagic"
	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/tokenstore"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// gates holds the token sources across config reloads: a reload with the
// same effective client configuration keeps the tokens it has.
var gates = caddy.NewUsagePool()

// Token stores (Handler.Store).
const (
	storeMemory = "memory"
	storeFile   = "file"
	storeCaddy  = "caddy"
	storeRedis  = "redis"
)

// Handler injects OAuth 2.0 access tokens into requests, and replaces any
// Authorization header the client sent with "Bearer <token>". When no
// valid token can be had it answers with a JSON error and never passes the
// request on without a token.
//
// With the client_credentials grant (application context) it obtains one
// token for the client, shared by every request, refreshed in the
// background before it expires; without one it answers 503
// {"error":"token_unavailable"} with a Retry-After header.
//
// With the authorization_code grant (user context) each request acts for
// a user, the subject, taken from a trusted placeholder (`user`, set by an
// authentication handler such as basic_auth or forward_auth that runs
// first). The handler serves the connect, callback and disconnect
// endpoints through which a user connects a TaskNation account, keeps
// each user's tokens in the store (Caddy's storage by default) and renews
// them with the refresh token. A request without a subject gets 401
// unauthenticated; a subject without tokens gets 401 not_connected with
// the connect_url; one whose refresh token was refused or ran out gets
// 401 reauthorization_required.
//
// Secrets may be given as placeholders ({env.NAME}, {file./path}); they are
// resolved when the config is loaded and never appear in the JSON config.
type Handler struct {
	// The authorization server preset: "tasknation" (TaskNation's
	// endpoints, client credentials in the form body, scope catalog
	// checked) or "generic" (any RFC 6749 server; token_url required,
	// and auth_url with the authorization_code grant; client credentials
	// in an HTTP Basic header). Default: tasknation
	Provider string `json:"provider,omitempty"`

	// The token endpoint. Overrides the provider's. Must be https://
	// unless the host is loopback. Placeholders are resolved at load.
	// Default: the provider's (https://auth.tasknation.com/oauth2/token)
	TokenURL string `json:"token_url,omitempty"`

	// The OAuth 2.0 client ID. Placeholders are resolved at load. Required.
	ClientID string `json:"client_id,omitempty"`

	// The client secret. Use a placeholder ({env.NAME} or {file./path})
	// so that the secret stays out of the config. Required.
	ClientSecret string `json:"client_secret,omitempty"`

	// Scopes requested with every token. With the tasknation provider each
	// must be in TaskNation's catalog. With the authorization_code grant
	// offline_access is always requested. Default: none
	Scopes []string `json:"scopes,omitempty"`

	// The grant type: "client_credentials" (application context: one
	// token for the client) or "authorization_code" (user context: a
	// token set per user, obtained through the connect and callback
	// endpoints). Default: client_credentials
	Grant string `json:"grant,omitempty"`

	// The authorization endpoint the connect endpoint redirects to
	// (authorization_code only). Must be https:// unless the host is
	// loopback. Placeholders are resolved at load.
	// Default: the provider's (https://auth.tasknation.com/oauth2/auth)
	AuthURL string `json:"auth_url,omitempty"`

	// The subject of a request (authorization_code only): a placeholder,
	// resolved per request, that an authentication handler running first
	// sets, such as {http.auth.user.id} (basic_auth, or forward_auth's
	// copy_headers as {http.request.header.Remote-User}). It must come
	// from a trusted source: whoever controls it chooses whose tokens a
	// request gets. A placeholder that is unknown or empty makes the
	// request unauthenticated (401). Required with authorization_code.
	User string `json:"user,omitempty"`

	// The absolute URL of the callback endpoint as registered with the
	// authorization server (authorization_code only). Must be https://
	// unless the host is loopback. Its path is the default callback_path;
	// its origin makes connect_url absolute. Placeholders are resolved at
	// load. Required with authorization_code.
	RedirectURI string `json:"redirect_uri,omitempty"`

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

	// Where tokens are kept: "memory" (this process only; lost on
	// restart), "file" (the directory store_dir, on this host), "caddy"
	// (Caddy's storage, as set by the `storage` global option: shared by
	// the instances that share it) or "redis" (the Redis server at
	// redis_addr: shared by the instances that use it). Default: memory
	// for client_credentials, caddy for authorization_code
	Store string `json:"store,omitempty"`

	// The directory of the file store. Placeholders are resolved at load.
	// Required with store file.
	StoreDir string `json:"store_dir,omitempty"`

	// The Redis server of store redis, as host:port. Placeholders are
	// resolved at load. Required with store redis.
	RedisAddr string `json:"redis_addr,omitempty"`

	// The Redis database number of store redis. Default: 0
	RedisDB int `json:"redis_db,omitempty"`

	// The password of store redis (AUTH). Use a placeholder ({env.NAME}
	// or {file./path}) so that the password stays out of the config.
	// Default: none
	RedisPassword string `json:"redis_password,omitempty"`

	// The ACL user of store redis, with redis_password. Placeholders are
	// resolved at load. Default: none (the default user)
	RedisUsername string `json:"redis_username,omitempty"`

	// Connects to Redis over TLS, verified with the system's roots for
	// the host of each address (redis_addr, the sentinels, the nodes the
	// sentinels or the cluster name). Without it the password and the
	// tokens (unless encryption_key seals them) cross the network in
	// clear: a warning at load says so when an address is not loopback.
	// Default: false
	RedisTLS bool `json:"redis_tls,omitempty"`

	// The prefix of every Redis key of store redis, so that several
	// gateways, or other applications, can share one database.
	// Default: tokengate
	RedisNamespace string `json:"redis_namespace,omitempty"`

	// The master name the sentinels of store redis monitor, for a Redis
	// under Sentinel (with redis_sentinel_addrs, instead of redis_addr):
	// the store follows the primary the sentinels name. Placeholders are
	// resolved at load.
	RedisSentinelMaster string `json:"redis_sentinel_master,omitempty"`

	// The sentinels of store redis, host:port each, with
	// redis_sentinel_master. Placeholders are resolved at load.
	RedisSentinelAddrs []string `json:"redis_sentinel_addrs,omitempty"`

	// The password of the sentinels (their requirepass), when they have
	// one; redis_password is the data nodes'. Use a placeholder.
	// Default: none
	RedisSentinelPassword string `json:"redis_sentinel_password,omitempty"`

	// Nodes of the Redis Cluster of store redis, host:port each, instead
	// of redis_addr: a few are enough, the others are discovered. A
	// cluster has database 0 only. Placeholders are resolved at load.
	RedisClusterAddrs []string `json:"redis_cluster_addrs,omitempty"`

	// How many replicas must acknowledge the write of a rotated refresh
	// token (WAIT) before it counts as stored; a write fewer acknowledged
	// is logged, and the new token set is kept in memory and written
	// again at the next refresh. 0: one replica when the primary has any
	// connected, none otherwise; -1: never wait. Default: 0
	RedisMinReplicas int `json:"redis_min_replicas,omitempty"`

	// How long the write of a rotated refresh token waits for
	// redis_min_replicas. Default: 1s
	RedisWaitTimeout caddy.Duration `json:"redis_wait_timeout,omitempty"`

	// The key that seals access and refresh tokens (AES-256-GCM) in a
	// durable store (file, caddy or redis): 32 bytes in base64, for
	// example from `openssl rand -base64 32`. Use a placeholder
	// ({env.NAME} or {file./path}) so that the key stays out of the
	// config. Tokens sealed with a key that is neither this one nor one
	// of older_encryption_keys are not used. Default: none (tokens in
	// clear, with a warning)
	EncryptionKey string `json:"encryption_key,omitempty"`

	// Keys that still open tokens sealed with them but seal nothing:
	// during a key rotation, the key encryption_key replaces. A set
	// opened with an older key is sealed with encryption_key when it is
	// next written (a refresh, a connect). Placeholders as for
	// encryption_key; at most 3, none repeated, and only with
	// encryption_key. Default: none
	OlderEncryptionKeys []string `json:"older_encryption_keys,omitempty"`

	// How long one token request may take. Default: 10s
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`

	// The largest request body buffered in memory so that a request can
	// be replayed with a new token after the API answered 401
	// invalid_token; a larger body is sent once. -1: buffer none (only
	// requests without a body are replayed). Default: 65536 (64 KiB)
	MaxReplayBody int64 `json:"max_replay_body,omitempty"`

	// The fraction of a token's lifetime left when a background refresh
	// starts (with jitter). Default: 0.2
	RefreshWindow float64 `json:"refresh_window,omitempty"`

	// The first wait after a failed token request; waits double, with
	// jitter, for all requests together. Default: 1s
	MinBackoff caddy.Duration `json:"min_backoff,omitempty"`

	// The longest wait between failed token requests. Default: 1m
	MaxBackoff caddy.Duration `json:"max_backoff,omitempty"`

	gate      *middleware.Gate
	userGrant bool
	userVar   string // the variable of a user that is one placeholder and nothing else
	poolKey   string
	logger    *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// storeSpec is where a Gate keeps its tokens.
type storeSpec struct {
	kind  string    // storeMemory, storeFile, storeCaddy or storeRedis
	dir   string    // storeFile
	redis redisSpec // storeRedis
	keys  [][]byte  // nil: no sealing; else keys[0] seals and all open
}

func (s storeSpec) durable() bool { return s.kind != storeMemory }

// Provision resolves placeholders and takes the token source for this
// configuration from the pool, creating it (and opening its store) on
// first use. It makes no network request: the first token is fetched by
// the first request that needs it.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	cfg, spec, err := h.config(caddy.NewReplacer())
	if err != nil {
		return err
	}
	cfg.Logger = h.logger
	cfg.Observer = registerMetrics(ctx)
	if err := validate(cfg); err != nil {
		return err
	}
	var sink *eventSink
	if cfg.Grant == middleware.GrantAuthorizationCode {
		app, err := eventsApp(ctx)
		if err != nil {
			return fmt.Errorf("oauth2_token: getting the events app: %w", err)
		}
		sink = &eventSink{ctx: ctx, app: app, includeSubject: h.EventsIncludeSubject, logger: h.logger}
	}
	h.userGrant = cfg.Grant == middleware.GrantAuthorizationCode
	h.userVar = soleVariable(h.User)
	var storage certmagic.Storage
	if spec.kind == storeCaddy {
		storage = ctx.Storage()
		if storage == nil {
			return fmt.Errorf("oauth2_token: store: caddy: the config has no storage")
		}
	}
	h.poolKey = poolKey(cfg, spec, storage)
	v, loaded, err := gates.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		st, err := openStore(spec, storage, h.logger)
		if err != nil {
			return nil, err
		}
		cfg.Store = st.store
		p := &pooledGate{storage: st.storage, redis: st.redis}
		if sink != nil {
			p.events = newEventRelay()
			cfg.Lifecycle = p.events
		}
		if p.Gate, err = middleware.New(cfg); err != nil {
			if p.events != nil {
				p.events.close()
			}
			st.close()
			return nil, err
		}
		return p, nil
	})
	if err != nil {
		return fmt.Errorf("oauth2_token: %w", err)
	}
	p := v.(*pooledGate)
	if p.storage != nil {
		// This config's storage from now on: the one that provisioned
		// the Gate may be cleaned up with its config.
		p.storage.use(storage, h.logger)
	}
	if p.events != nil {
		// This config's events app from now on, like its logger.
		p.events.use(sink)
	}
	h.gate = p.Gate
	h.gate.SetLogger(h.logger) // the newest config's logger, whose outputs are open
	h.warn(spec)
	h.logger.Debug("token source ready", zap.Bool("reused", loaded), zap.String("grant", cfg.Grant),
		zap.String("store", spec.kind), zap.String("client_id", cfg.ClientID), zap.Strings("scopes", cfg.Scopes))
	return nil
}

// warn logs what in a config that loads is nevertheless unsafe: tokens in
// clear at rest or on the network, secrets written in the config, a
// subject a client may choose.
func (h *Handler) warn(spec storeSpec) {
	if spec.durable() && spec.keys == nil {
		h.logger.Warn("the token store is durable and has no encryption_key: tokens (refresh tokens with authorization_code) are kept in clear at rest",
			zap.String("store", spec.kind))
	}
	if spec.kind == storeRedis && !spec.redis.tls {
		for _, a := range spec.redis.addrs() {
			if !loopback(a) {
				h.logger.Warn("redis_tls is off and a Redis address is not loopback: the Redis password, and the tokens unless encryption_key seals them, cross the network in clear",
					zap.String("redis_addr", a), zap.Bool("encryption_key", spec.keys != nil))
				break
			}
		}
	}
	secrets := []struct{ name, v string }{
		{"client_secret", h.ClientSecret}, {"encryption_key", h.EncryptionKey}, {"redis_password", h.RedisPassword},
		{"redis_sentinel_password", h.RedisSentinelPassword},
	}
	for _, k := range h.OlderEncryptionKeys {
		secrets = append(secrets, struct{ name, v string }{"older_encryption_keys", k})
	}
	for _, f := range secrets {
		if f.v != "" && !hasPlaceholder(f.v) {
			h.logger.Warn("a secret is written in the config in clear: use a placeholder ({env.NAME} or {file./path}) to keep it out of the JSON config",
				zap.String("field", f.name))
		}
	}
	if h.userGrant {
		if p := clientControlled(h.User); p != "" {
			h.logger.Warn("the user placeholder comes from the request: make sure a handler that runs first sets it, or a client chooses whose tokens it gets",
				zap.String("placeholder", p))
		}
	}
}

// openedStore is the durable store of a Gate, and what the pooled Gate
// keeps of it.
type openedStore struct {
	store   tokenstore.Store      // nil for memory: the Gate keeps its own memory store
	storage *Storage              // store caddy: the adapter each new config points at its storage
	redis   redis.UniversalClient // store redis: closed after the Gate
}

// close releases what openStore took, for a Gate that was not made.
func (s openedStore) close() {
	if s.redis != nil {
		s.redis.Close()
	}
}

// openStore opens the durable store of spec, sealed when spec has a key.
// It makes no network request: a Redis client dials on first use.
func openStore(spec storeSpec, storage certmagic.Storage, logger *zap.Logger) (openedStore, error) {
	var out openedStore
	var err error
	switch spec.kind {
	case storeMemory:
		return out, nil
	case storeFile:
		if out.store, err = tokenstore.NewFileStore(spec.dir, tokenstore.FileOptions{}); err != nil {
			return openedStore{}, fmt.Errorf("store: file: %w", err)
		}
	case storeCaddy:
		if out.storage, err = NewStorage(storage, StorageOptions{Logger: logger}); err != nil {
			return openedStore{}, err
		}
		out.store = out.storage
	case storeRedis:
		out.redis = spec.redis.client()
		if out.store, err = tokenstore.NewRedisStore(out.redis, tokenstore.RedisOptions{Namespace: spec.redis.namespace,
			MinReplicas: spec.redis.minReplicas, WaitTimeout: spec.redis.waitTimeout}); err != nil {
			out.close()
			return openedStore{}, fmt.Errorf("store: redis: %w", err)
		}
	default:
		return openedStore{}, fmt.Errorf("store: unknown store %q", spec.kind)
	}
	if spec.keys != nil {
		if out.store, err = tokenstore.NewSealed(out.store, spec.keys[0], spec.keys[1:]...); err != nil {
			out.close()
			return openedStore{}, fmt.Errorf("encryption_key: %w", err)
		}
	}
	return out, nil
}

// config is the middleware configuration of h and where it keeps its
// tokens, with placeholders resolved by repl (nil: left as they are, for
// checks at adapt time).
func (h *Handler) config(repl *caddy.Replacer) (middleware.Config, storeSpec, error) {
	resolve := func(field, v string) (string, error) {
		if repl == nil || v == "" {
			return v, nil
		}
		out, err := repl.ReplaceOrErr(v, true, true)
		if err != nil {
			// The replacer's error quotes the text it could not resolve,
			// which for a literal secret with braces is part of the
			// secret: name the placeholder only when the whole value is one.
			if isPlaceholder(v) {
				return "", fmt.Errorf("oauth2_token: %s: placeholder %s is unset or empty", field, v)
			}
			return "", fmt.Errorf("oauth2_token: %s: has an unknown or empty placeholder (write literal braces as \\{ and \\})", field)
		}
		return out, nil
	}
	var c middleware.Config
	var spec storeSpec
	var err error
	switch h.Provider {
	case "", "tasknation":
		c.Provider = middleware.TaskNation
	case "generic":
		c.Provider = middleware.Generic
	default:
		return c, spec, fmt.Errorf("oauth2_token: provider: unknown provider %q (want tasknation or generic)", h.Provider)
	}
	switch h.Grant {
	case "", middleware.GrantClientCredentials:
		c.Grant = middleware.GrantClientCredentials
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"user", h.User != ""}, {"redirect_uri", h.RedirectURI != ""}, {"auth_url", h.AuthURL != ""},
			{"connect_path", h.ConnectPath != ""}, {"callback_path", h.CallbackPath != ""},
			{"disconnect_path", h.DisconnectPath != ""}, {"status_path", h.StatusPath != ""},
			{"revocation_url", h.RevocationURL != ""}, {"events_include_subject", h.EventsIncludeSubject},
			{"pkce", h.DisablePKCE},
			{"connected_redirect", h.ConnectedRedirect != ""}, {"state_lifetime", h.StateLifetime != 0},
			{"max_pending_states", h.MaxPendingStates != 0}, {"max_pending_per_subject", h.MaxPendingPerSubject != 0},
			{"max_callback_query", h.MaxCallbackQuery != 0},
			{"cache_size", h.CacheSizeMB != 0},
			{"grace_period", h.GracePeriod != 0}, {"refresh_token_warning", h.RefreshTokenWarning != 0},
		} {
			if f.set {
				return c, spec, userOnly(f.name)
			}
		}
	case middleware.GrantAuthorizationCode:
		c.Grant = middleware.GrantAuthorizationCode
		if err := checkUser(h.User); err != nil {
			return c, spec, err
		}
	default:
		return c, spec, fmt.Errorf("oauth2_token: grant: unknown grant %q (want client_credentials or authorization_code)", h.Grant)
	}

	spec.kind = h.Store
	if spec.kind == "" {
		spec.kind = storeMemory
		if c.Grant == middleware.GrantAuthorizationCode {
			spec.kind = storeCaddy
		}
	}
	switch spec.kind {
	case storeMemory, storeCaddy, storeFile, storeRedis:
	default:
		return c, spec, fmt.Errorf("oauth2_token: store: unknown store %q (want %s)", h.Store, storeChoices)
	}
	if spec.kind != storeFile && h.StoreDir != "" {
		return c, spec, fmt.Errorf("oauth2_token: store_dir: only applies to store file (the store is %s)", spec.kind)
	}
	if spec.kind != storeRedis {
		if f := h.redisFieldSet(); f != "" {
			return c, spec, fmt.Errorf("oauth2_token: %s: only applies to store redis (the store is %s)", f, spec.kind)
		}
	}
	switch spec.kind {
	case storeFile:
		if h.StoreDir == "" {
			return c, spec, fmt.Errorf("oauth2_token: store: file needs a directory: store file <dir> (store_dir in JSON)")
		}
		if spec.dir, err = resolve("store_dir", h.StoreDir); err != nil {
			return c, spec, err
		}
	case storeRedis:
		if spec.redis, err = h.redisSpec(resolve); err != nil {
			return c, spec, err
		}
	}
	if h.EncryptionKey == "" && len(h.OlderEncryptionKeys) > 0 {
		return c, spec, fmt.Errorf("oauth2_token: older_encryption_keys: only applies with encryption_key (the key that seals)")
	}
	if h.EncryptionKey != "" {
		if !spec.durable() {
			return c, spec, fmt.Errorf("oauth2_token: encryption_key: only applies to a durable store (file, caddy or redis); the store is memory")
		}
		var rs func(field, v string) (string, error)
		if repl != nil {
			rs = resolve
		}
		if spec.keys, err = sealKeys(append([]string{h.EncryptionKey}, h.OlderEncryptionKeys...), rs); err != nil {
			return c, spec, err
		}
	}

	for _, f := range []struct {
		name string
		dst  *string
		v    string
	}{
		{"token_url", &c.TokenURL, h.TokenURL},
		{"client_id", &c.ClientID, h.ClientID},
		{"client_secret", &c.ClientSecret, h.ClientSecret},
		{"auth_url", &c.AuthURL, h.AuthURL},
		{"redirect_uri", &c.RedirectURI, h.RedirectURI},
		{"revocation_url", &c.RevocationURL, h.RevocationURL},
	} {
		if *f.dst, err = resolve(f.name, f.v); err != nil {
			return c, spec, err
		}
	}
	c.Scopes = h.Scopes
	c.ConnectPath = h.ConnectPath
	c.CallbackPath = h.CallbackPath
	c.DisconnectPath = h.DisconnectPath
	c.StatusPath = h.StatusPath
	c.DisablePKCE = h.DisablePKCE
	c.ConnectedRedirect = h.ConnectedRedirect
	c.StateLifetime = time.Duration(h.StateLifetime)
	c.MaxPendingStates = h.MaxPendingStates
	c.MaxPendingPerSubject = h.MaxPendingPerSubject
	c.MaxCallbackQuery = h.MaxCallbackQuery
	c.CacheSizeMB = h.CacheSizeMB
	c.GracePeriod = time.Duration(h.GracePeriod)
	c.RefreshTokenWarning = time.Duration(h.RefreshTokenWarning)
	c.RequestTimeout = time.Duration(h.RequestTimeout)
	c.MaxReplayBody = h.MaxReplayBody
	c.RefreshWindow = h.RefreshWindow
	c.MinBackoff = time.Duration(h.MinBackoff)
	c.MaxBackoff = time.Duration(h.MaxBackoff)
	return c, spec, nil
}

// storeChoices are the arguments of the store subdirective, for errors.
const storeChoices = "memory, file <dir>, caddy or redis [<host:port> [<db>]]"

// userOnlySubdirectives are the subdirectives of the authorization_code
// grant only.
var userOnlySubdirectives = []string{
	"user", "redirect_uri", "auth_url", "connect_path", "callback_path", "disconnect_path",
	"status_path", "revocation_url", "events_include_subject", "pkce", "connected_redirect", "state_lifetime", "grace_period", "refresh_token_warning",
}

// userOnly is the error for a field of the authorization_code grant set
// with client_credentials.
func userOnly(field string) error {
	return fmt.Errorf("oauth2_token: %s: only applies to grant authorization_code (the grant is client_credentials)", field)
}

// sealKeys checks the values of encryption_key, the key that seals
// first, and returns the keys decoded. resolve resolves placeholders; nil
// (at adapt time) leaves a value with a placeholder to be checked at load,
// and then sealKeys returns no keys, only the checks it could make: how
// many keys there are, none repeated, each literal one a valid key.
// Errors name a key by its place, never by its value.
func sealKeys(values []string, resolve func(field, v string) (string, error)) ([][]byte, error) {
	n := len(values)
	if n > tokenstore.MaxSealKeys {
		return nil, fmt.Errorf("oauth2_token: encryption_key: %d keys, want at most %d (the key that seals and %d older keys that still open)",
			n, tokenstore.MaxSealKeys, tokenstore.MaxSealKeys-1)
	}
	keys := make([][]byte, 0, n)
	for i, v := range values {
		if j := slices.Index(values[:i], v); j >= 0 {
			return nil, fmt.Errorf("oauth2_token: encryption_key: %s repeats %s", sealKeyName(i, n), sealKeyName(j, n))
		}
		if resolve == nil && hasPlaceholder(v) {
			continue
		}
		if resolve != nil {
			var err error
			if v, err = resolve("encryption_key", v); err != nil {
				return nil, err
			}
		}
		key, err := tokenstore.ParseKey(v)
		var ke *tokenstore.KeyError
		switch {
		case err != nil && n > 1 && errors.As(err, &ke):
			return nil, &moduleError{msg: "oauth2_token: encryption_key: " + sealKeyName(i, n) + " " + ke.Reason, err: err}
		case err != nil:
			return nil, settingError(err)
		}
		for j, k := range keys {
			if bytes.Equal(k, key) {
				return nil, fmt.Errorf("oauth2_token: encryption_key: %s repeats %s", sealKeyName(i, n), sealKeyName(j, n))
			}
		}
		keys = append(keys, key)
	}
	if len(keys) < n {
		return nil, nil // some are placeholders, checked at load
	}
	return keys, nil
}

// sealKeyName names the i-th of n values of encryption_key in errors.
func sealKeyName(i, n int) string {
	switch {
	case n == 1:
		return "the key"
	case i == 0:
		return fmt.Sprintf("key 1 of %d (the key that seals)", n)
	}
	return fmt.Sprintf("key %d of %d (an older key)", i+1, n)
}

// isPlaceholder reports whether v is exactly one {env.*} or {file.*}
// placeholder, which is safe to quote in an error.
func isPlaceholder(v string) bool {
	return strings.HasPrefix(v, "{") && strings.HasSuffix(v, "}") && strings.Count(v, "{") == 1 &&
		(strings.HasPrefix(v, "{env.") || strings.HasPrefix(v, "{file."))
}

// placeholderKeys returns the keys of the placeholders in s ("a{b}c" →
// "b"), skipping braces escaped with a backslash, as caddy.Replacer reads
// them.
func placeholderKeys(s string) []string {
	var keys []string
	for i := 0; i < len(s); i++ {
		if s[i] != '{' || (i > 0 && s[i-1] == '\\') {
			continue
		}
		end := strings.IndexByte(s[i:], '}')
		if end < 0 {
			break
		}
		keys = append(keys, s[i+1:i+end])
		i += end
	}
	return keys
}

func hasPlaceholder(s string) bool { return len(placeholderKeys(s)) > 0 }

// globalPlaceholder reports whether key is a placeholder of Caddy's global
// replacer, whose value is the same for every request.
func globalPlaceholder(key string) bool {
	for _, p := range []string{"env.", "file.", "system.", "time."} {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// checkUser checks the user subdirective: a literal, or placeholders that
// are the same for every request, would give every request one subject,
// and so one user's tokens.
func checkUser(v string) error {
	if v == "" {
		return fmt.Errorf("oauth2_token: user is required for grant authorization_code: a placeholder giving the authenticated user, such as {http.auth.user.id}")
	}
	keys := placeholderKeys(v)
	if len(keys) == 0 {
		return fmt.Errorf("oauth2_token: user %q has no placeholder: every request would act for the same user; use one set per request by authentication, such as {http.auth.user.id}", v)
	}
	for _, k := range keys {
		if !globalPlaceholder(k) {
			return nil
		}
	}
	return fmt.Errorf("oauth2_token: user %q: {%s} is the same for every request; use a placeholder set per request by authentication, such as {http.auth.user.id}", v, keys[0])
}

// clientControlled returns the first placeholder of v that a client sets
// itself unless a handler that runs first overwrites it (a request header,
// cookie or query parameter), or "".
func clientControlled(v string) string {
	for _, k := range placeholderKeys(v) {
		for _, p := range []string{"http.request.header.", "http.request.cookie.", "http.request.uri.query"} {
			if strings.HasPrefix(k, p) {
				return "{" + k + "}"
			}
		}
	}
	return ""
}

// poolKey identifies a token source: every field that changes what the
// Gate does (endpoints, client, secret, scopes, tuning, grant, connect
// endpoints, where tokens are kept, with the Redis server (or sentinels,
// or cluster nodes), database, credentials, TLS, namespace and the wait
// for replicas) takes part; the same values share one. Secrets (the
// client secret, the encryption key, the Redis passwords) enter only
// hashed.
func poolKey(c middleware.Config, spec storeSpec, storage certmagic.Storage) string {
	var where string
	if storage != nil {
		where = storageIdentity(storage)
	}
	h := sha256.New()
	for _, v := range []string{
		c.Provider.Name, c.TokenURL, c.ClientID, c.ClientSecret, strings.Join(c.Scopes, " "),
		c.RequestTimeout.String(), strconv.FormatFloat(c.RefreshWindow, 'g', -1, 64),
		c.MinBackoff.String(), c.MaxBackoff.String(), strconv.FormatInt(c.MaxReplayBody, 10),
		c.Grant, c.AuthURL, c.RedirectURI, c.ConnectPath, c.CallbackPath, c.DisconnectPath,
		c.StatusPath, c.RevocationURL,
		strconv.FormatBool(c.DisablePKCE), c.ConnectedRedirect,
		c.StateLifetime.String(), c.GracePeriod.String(), c.RefreshTokenWarning.String(),
		strconv.Itoa(c.MaxPendingStates), strconv.Itoa(c.MaxPendingPerSubject), strconv.Itoa(c.MaxCallbackQuery), strconv.Itoa(c.CacheSizeMB),
		spec.kind, spec.dir, where, string(bytes.Join(spec.keys, nil)),
		spec.redis.addr, strconv.Itoa(spec.redis.db), spec.redis.username, spec.redis.password,
		strconv.FormatBool(spec.redis.tls), spec.redis.namespace,
		spec.redis.sentinelMaster, strings.Join(spec.redis.sentinelAddrs, " "), spec.redis.sentinelPassword,
		strings.Join(spec.redis.clusterAddrs, " "), strconv.Itoa(spec.redis.minReplicas), spec.redis.waitTimeout.String(),
	} {
		fmt.Fprintf(h, "%d:%s\x00", len(v), v)
	}
	return "oauth2_token:" + hex.EncodeToString(h.Sum(nil))
}

// Validate checks the configuration once placeholders are resolved.
func (h *Handler) Validate() error {
	if h.gate == nil {
		return fmt.Errorf("oauth2_token: not provisioned")
	}
	return nil
}

// ServeHTTP sets the token on r and calls next, or answers with a JSON
// error. With the authorization_code grant it serves the connect,
// callback, disconnect and status endpoints itself.
//
// The next handler (reverse_proxy) runs through Gate.Serve: when the API
// answers 401 invalid_token, that answer is held back before anything
// reaches the client, the token version is invalidated, and the request
// is replayed once with a new token (when its body can be replayed: none,
// or at most max_replay_body bytes, buffered).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	var subject string
	if h.userGrant {
		subject = h.subject(r)
		if h.gate.ServeFlow(w, r, subject) {
			return nil
		}
	}
	return h.gate.Serve(w, r, subject, next.ServeHTTP)
}

// subject resolves the user placeholder for r; "" (unauthenticated) when
// any placeholder in it is unknown or empty, so that "tenant-{x}" with
// {x} unset is no one rather than a subject shared by every such request.
func (h *Handler) subject(r *http.Request) string {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	if h.userVar != "" {
		// The usual user, one placeholder: read it, without parsing the
		// template and building a string on every request.
		s, _ := repl.GetString(h.userVar)
		return s
	}
	s, err := repl.ReplaceOrErr(h.User, true, true)
	if err != nil {
		return ""
	}
	return s
}

// soleVariable is the variable of a template that is exactly one
// placeholder, "{http.auth.user.id}" → "http.auth.user.id", else "".
// Anything else (text around it, several placeholders, escapes, a colon)
// is left to the Replacer's parser.
func soleVariable(tmpl string) string {
	if len(tmpl) < 3 || tmpl[0] != '{' || tmpl[len(tmpl)-1] != '}' {
		return ""
	}
	name := tmpl[1 : len(tmpl)-1]
	if strings.ContainsAny(name, "{}\\: ") {
		return ""
	}
	return name
}

// Cleanup releases this config's hold on the token source; the last
// config to let go of it closes it.
func (h *Handler) Cleanup() error {
	if h.poolKey == "" {
		return nil
	}
	_, err := gates.Delete(h.poolKey)
	return err
}

// pooledGate is a Gate in the usage pool, with the Caddy storage adapter
// it reads and writes through (nil for other stores), which each new
// config points at its own storage, and the Redis client of store redis.
type pooledGate struct {
	*middleware.Gate
	storage *Storage
	redis   redis.UniversalClient
	events  *eventRelay // authorization_code only
}

// Destruct closes the Gate, then the Redis client it used (once the Gate
// has stopped its background refreshes, nothing uses it any more). The
// other stores need no closing: the file store holds no open files
// between calls, and Caddy's storage belongs to the config.
func (p *pooledGate) Destruct() error {
	err := p.Gate.Close()
	if p.events != nil {
		p.events.close()
	}
	if p.redis != nil {
		err = errors.Join(err, p.redis.Close())
	}
	return err
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
