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
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"

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

// discoveries keeps the metadata of the issuers that configs name, across
// config reloads: a reload asks an issuer again once an hour at most.
var discoveries middleware.DiscoveryCache

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
	// and authorization_code's auth_url; client credentials in an HTTP
	// Basic header). Default: tasknation
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

	// How the client authenticates at the token and revocation
	// endpoints: where the secret goes, or a signed assertion or a TLS
	// client certificate instead of it. Default: the provider's (the
	// secret in the form body for tasknation, in an HTTP Basic header
	// for generic)
	ClientAuth *ClientAuth `json:"client_auth,omitempty"`

	// Parameters sent with every token request (client_credentials, code
	// exchange, refresh), by name: audience, resource (RFC 8707; may have
	// several values), or what the server asks for. A parameter of the
	// protocol (grant_type, client_id, scope, ...) is refused. Provider
	// generic only. Placeholders in values are resolved at load.
	// Default: none
	TokenParams map[string][]string `json:"token_params,omitempty"`

	// The authorization server's issuer identifier: at load, the
	// endpoints not given (token_url, and with authorization_code
	// auth_url and revocation_url) are read from its metadata (RFC 8414,
	// or else OpenID Connect discovery), within request_timeout; the
	// document is kept for an hour, across reloads. Provider generic
	// only. Placeholders are resolved at load. Default: none
	Issuer string `json:"issuer,omitempty"`

	// A PEM file of the CA certificates that verify the authorization
	// server's endpoints (token, revocation, discovery) instead of the
	// system's roots: a private CA. Placeholders are resolved at load.
	// Default: the system's roots
	TrustedCA string `json:"trusted_ca,omitempty"`

	// Scopes requested with every token. With the tasknation provider each
	// must be in TaskNation's catalog. With authorization_code
	// offline_access is always requested. Default: none
	Scopes []string `json:"scopes,omitempty"`

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

	// Where tokens are kept, and the keys that seal them.
	// Default: memory, or caddy with authorization_code; no keys
	Store *StoreConfig `json:"store,omitempty"`

	// The user context: with it the handler runs the authorization_code
	// grant, a token set per user; without it the client_credentials
	// grant, one token for the client. Default: none (client_credentials)
	AuthorizationCode *AuthorizationCode `json:"authorization_code,omitempty"`

	gate      *middleware.Gate
	userGrant bool
	user      string // AuthorizationCode.User
	userVar   string // the variable of a user that is one placeholder and nothing else
	// userHeader is the canonical request header field of a user that is
	// {http.request.header.<field>} and nothing else ("" otherwise).
	userHeader string
	// userUnknown is set once a request found the user's placeholder
	// unknown, and warned of it (a pointer: Handler is copied by value).
	userUnknown *atomic.Bool
	poolKey     string
	logger      *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves placeholders, reads the key, certificate and CA
// files, and takes the token source for this configuration from the
// pool, creating it (and opening its store) on first use. Its one
// network request is the discovery of issuer, when the config has one
// and the document is not cached: the first token is fetched by the
// first request that needs it.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	g, err := h.config(resolver{caddy.NewReplacer()})
	if err != nil {
		return err
	}
	g.Logger = h.logger // discovery warns through it
	if err := g.Discover(ctx, &discoveries); err != nil {
		return settingError(err, g.Provider)
	}
	cfg, spec := g.Config, g.store
	cfg.Observer = registerMetrics(ctx)
	var sink *eventSink
	if cfg.Grant == middleware.GrantAuthorizationCode {
		app, err := eventsApp(ctx)
		if err != nil {
			return fmt.Errorf("oauth2_token: getting the events app: %w", err)
		}
		sink = &eventSink{ctx: ctx, app: app, includeSubject: h.AuthorizationCode.EventsIncludeSubject, logger: h.logger}
		h.user = h.AuthorizationCode.User
		h.userVar = soleVariable(h.user)
		h.userHeader = requestHeaderField(h.userVar)
		h.userUnknown = new(atomic.Bool)
	}
	h.userGrant = cfg.Grant == middleware.GrantAuthorizationCode
	var storage certmagic.Storage
	if spec.kind == storeCaddy {
		storage = ctx.Storage()
		if storage == nil {
			return fmt.Errorf("oauth2_token: store: caddy: the config has no storage")
		}
	}
	h.poolKey = poolKey(g, storage)
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
	secrets := []struct{ name, v string }{{"client_secret", h.ClientSecret}}
	if st := h.Store; st != nil {
		for _, k := range st.EncryptionKeys {
			secrets = append(secrets, struct{ name, v string }{"encryption_key", k})
		}
		if rc := st.Redis; rc != nil {
			secrets = append(secrets, struct{ name, v string }{"redis_password", rc.Password})
			if rc.Sentinel != nil {
				secrets = append(secrets, struct{ name, v string }{"redis_sentinel_password", rc.Sentinel.Password})
			}
		}
	}
	for _, f := range secrets {
		if f.v != "" && !hasPlaceholder(f.v) {
			h.logger.Warn("a secret is written in the config in clear: use a placeholder ({env.NAME} or {file./path}) to keep it out of the JSON config",
				zap.String("field", f.name))
		}
	}
	if h.userGrant {
		if p := clientControlled(h.user); p != "" {
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
		return refuse("user", "user is required for grant authorization_code (authorization_code.user in JSON): a placeholder giving the authenticated user, such as {http.auth.user.id}")
	}
	keys := placeholderKeys(v)
	if len(keys) == 0 {
		return refuse("user", "user %q has no placeholder: every request would act for the same user; use one set per request by authentication, such as {http.auth.user.id}", v)
	}
	for _, k := range keys {
		if !globalPlaceholder(k) {
			return nil
		}
	}
	return refuse("user", "user %q: {%s} is the same for every request; use a placeholder set per request by authentication, such as {http.auth.user.id}", v, keys[0])
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
// Gate does (endpoints, client, secret, how the client authenticates,
// scopes, token parameters, tuning, grant, connect endpoints, where
// tokens are kept, with the Redis server (or sentinels, or cluster
// nodes), database, credentials, TLS, namespace and the wait for
// replicas) takes part; the same values share one. Secrets (the client
// secret, the encryption key, the Redis passwords) enter only hashed;
// the key of private_key_jwt by its public key, the client certificate
// by itself and trusted_ca by its file's SHA-256, so that a key,
// certificate or CA replaced in its file takes effect on reload.
func poolKey(g gateConfig, storage certmagic.Storage) string {
	c, spec := g.Config, g.store
	var where string
	if storage != nil {
		where = storageIdentity(storage)
	}
	var jwtKey, jwtAlg, jwtKeyID, jwtAudience, jwtLifetime string
	if p := c.PrivateKeyJWT; p != nil {
		// The module's keys come from ParsePrivateKey: RSA, ECDSA or
		// Ed25519, which always marshal.
		der, _ := x509.MarshalPKIXPublicKey(p.Key.Public())
		jwtKey = string(der)
		jwtAlg, jwtKeyID, jwtAudience, jwtLifetime = p.Algorithm, p.KeyID, p.Audience, p.Lifetime.String()
	}
	var cert string
	if cc := c.ClientCertificate; cc != nil && len(cc.Certificate) > 0 {
		cert = string(bytes.Join(cc.Certificate, nil))
	}
	var params string
	if len(c.TokenParams) > 0 {
		params = c.TokenParams.Encode() // sorted by name
	}
	h := sha256.New()
	for _, v := range []string{
		c.Provider.Name, c.TokenURL, c.ClientID, c.ClientSecret, strings.Join(c.Scopes, " "),
		strconv.Itoa(int(c.AuthStyle)), jwtKey, jwtAlg, jwtKeyID, jwtAudience, jwtLifetime, cert, string(g.trustedCA),
		params, c.Issuer,
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
	if h.userHeader != "" {
		// The usual user: a trusted header set by the login in front.
		// Read as Caddy's http.request.header placeholder reads it
		// (values joined with commas), without the Replacer's walk of
		// its providers and key prefixes.
		switch v := r.Header[h.userHeader]; len(v) {
		case 0:
			return ""
		case 1:
			return v[0]
		default:
			return strings.Join(v, ",")
		}
	}
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return ""
	}
	if h.userVar != "" {
		// The usual user, one placeholder: read it, without parsing the
		// template and building a string on every request.
		s, found := repl.GetString(h.userVar)
		if !found {
			h.warnUserUnknown()
		}
		return s
	}
	s, err := repl.ReplaceOrErr(h.user, true, true)
	if err != nil {
		h.warnUserUnknown()
		return ""
	}
	return s
}

// warnUserUnknown warns, once per handler, that a request found the user's
// placeholder unknown and was answered 401 unauthenticated: a misspelt
// placeholder ({http.auth.user} for {http.auth.user.id}), or one that the
// login in front never sets (http.auth.user.id behind forward_auth), would
// otherwise refuse everyone without a word. Once: a client cannot make the
// log grow. After that a load, not a compare-and-swap: the requests it
// refuses do not all write one shared cache line.
func (h *Handler) warnUserUnknown() {
	if h.userUnknown == nil || h.userUnknown.Load() || !h.userUnknown.CompareAndSwap(false, true) {
		return
	}
	h.logger.Warn("oauth2_token: user: a placeholder of "+h.user+" is unknown on a request, which was answered 401 unauthenticated; "+
		"if every request is, check its name and that the handler setting it (basic_auth for {http.auth.user.id}, forward_auth's copy_headers for a header) runs first",
		zap.String("user", h.user))
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

// requestHeaderField is the canonical header field of the variable
// http.request.header.<field>, "" for any other variable.
func requestHeaderField(variable string) string {
	field, ok := strings.CutPrefix(variable, "http.request.header.")
	if !ok || field == "" {
		return ""
	}
	return textproto.CanonicalMIMEHeaderKey(field)
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
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
