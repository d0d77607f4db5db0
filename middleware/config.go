package middleware

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/tokenstore"
)

// Defaults applied by New to zero Config fields.
const (
	DefaultRequestTimeout = 10 * time.Second
	DefaultRefreshWindow  = 0.2
	DefaultMinBackoff     = time.Second
	DefaultMaxBackoff     = time.Minute
	DefaultExpiryLeeway   = 2 * time.Second

	// User context (authorization_code).
	DefaultConnectPath          = "/oauth2/connect"
	DefaultCallbackPath         = "/oauth2/callback"
	DefaultDisconnectPath       = "/oauth2/disconnect"
	DefaultStatusPath           = "/oauth2/status"
	DefaultStateLifetime        = 10 * time.Minute
	DefaultRefreshTokenLifetime = 180 * 24 * time.Hour // TaskNation: 180 days from the grant
	DefaultRefreshTokenWarning  = 14 * 24 * time.Hour
	DefaultGracePeriod          = 60 * time.Second // TaskNation's refresh-token grace period
	DefaultMaxPendingStates     = 10000
	DefaultMaxPendingPerSubject = 5
	DefaultCacheSizeMB          = 64
	DefaultMaxCallbackQuery     = 8 << 10
)

// Grant types a Gate runs.
const (
	// GrantClientCredentials is the application context: one token per
	// client and scopes, shared by every request.
	GrantClientCredentials = "client_credentials"
	// GrantAuthorizationCode is the user context: a token set per subject,
	// obtained through the connect/callback endpoints and renewed with its
	// (rotating) refresh token.
	GrantAuthorizationCode = "authorization_code"
)

// ScopeOfflineAccess is the scope that yields refresh tokens. A Gate with
// the authorization_code grant always requests it.
const ScopeOfflineAccess = "offline_access"

// Config configures a Gate. Only ClientID and ClientSecret are required for
// TaskNation; everything else has a default, applied by New.
type Config struct {
	// Provider is the authorization server preset. Default: TaskNation.
	Provider Provider
	// TokenURL overrides the provider's token endpoint. http:// is refused
	// unless the host is loopback.
	TokenURL string
	// ClientID and ClientSecret are the client's credentials.
	ClientID, ClientSecret string
	// Scopes are requested on every token request (always sent: a server
	// may answer an unscoped request with a token that has no scope).
	Scopes []string
	// AuthStyle overrides the provider's client authentication style
	// (client_auth basic or post): AuthStyleInHeader sends the client ID
	// and secret in an HTTP Basic header, AuthStyleInParams in the form
	// body, at the token and the revocation endpoints alike.
	// Default (AuthStyleAutoDetect, the zero value): the provider's.
	// Generic provider only.
	AuthStyle oauth2.AuthStyle
	// PrivateKeyJWT authenticates the client with a signed assertion
	// (private_key_jwt, RFC 7523) instead of a secret: ClientSecret must
	// be empty. Generic provider only. Default: none.
	PrivateKeyJWT *PrivateKeyJWT
	// ClientCertificate authenticates the client with mutual TLS
	// (tls_client_auth, RFC 8705 §2): the token and revocation requests
	// present it, and carry the client ID in the form body and no secret
	// (ClientSecret must be empty). LoadClientCertificate reads one from
	// files. It needs HTTPClient.Transport to be nil or an
	// *http.Transport. Generic provider only. Default: none.
	ClientCertificate *tls.Certificate
	// RootCAs verifies the certificates of the token, revocation and
	// discovery endpoints (a private CA; LoadCertPool reads one). It needs
	// HTTPClient.Transport to be nil or an *http.Transport.
	// Default: the system's roots.
	RootCAs *x509.CertPool
	// TokenParams are sent on every token request (client_credentials,
	// code exchange, refresh): audience, resource (RFC 8707; may repeat),
	// or whatever the server asks for. A parameter of the protocol
	// (grant_type, client_id, scope, code, ...) is refused. Generic
	// provider only. Default: none.
	TokenParams url.Values
	// Issuer is the authorization server's issuer identifier, for
	// discovery: Config.Discover fills TokenURL, AuthURL and RevocationURL
	// (those left empty) from its RFC 8414 or OpenID Connect metadata.
	// New does no network I/O: a Config with an Issuer and no TokenURL
	// fails New until Discover has run (Validate checks the rest without
	// it). Generic provider only. Default: none.
	Issuer string

	// HTTPClient calls the token endpoint. Its Transport is wrapped to cap
	// response bodies at 1 MiB. Default: a client on http.DefaultTransport.
	HTTPClient *http.Client
	// RequestTimeout bounds one token request. Default: 10s.
	RequestTimeout time.Duration
	// RefreshWindow is the fraction of a token's lifetime left when a
	// background refresh starts, plus up to a quarter more drawn from the
	// token's version: spread across keys, and the same on every instance
	// of a fleet for one token, so that the store's lock lets one of them
	// refresh while the others re-read what it stored. Default: 0.2.
	RefreshWindow float64
	// ExpiryLeeway treats a token as expired this long before its expiry,
	// capped at a tenth of its lifetime, so that a token does not run out
	// on its way to the API. It is short on purpose: refreshes start long
	// before (RefreshWindow), and a token with seconds left is still served
	// while one runs, where x/oauth2's 10s delta blocks every caller.
	// Default: 2s.
	ExpiryLeeway time.Duration
	// MinBackoff and MaxBackoff shape the wait after a failed token
	// request, per key. While a valid token is still held, it grows
	// exponentially from MinBackoff to MaxBackoff, with jitter; while none
	// is held (requests are refused), it stays between 2 and 2.5 times
	// MinBackoff, so that service resumes soon after the endpoint does. A
	// Retry-After of the endpoint lengthens it, up to MaxBackoff.
	// Defaults: 1s and 1m.
	MinBackoff, MaxBackoff time.Duration

	// Store keeps tokens. Default: a new in-memory (bigcache) store, closed
	// with the Gate. A Store given here is not closed by the Gate.
	//
	// With the authorization_code grant, Store is the source of truth
	// (a FileStore, a Sealed store, Caddy's storage) and the Gate keeps
	// its own bigcache layer of CacheSizeMB in front of it; when Store
	// implements tokenstore.Locker, each refresh of a subject holds its
	// lock, so that processes sharing the store never refresh one subject
	// twice. Default for this grant: memory only (tokens are lost when the
	// process stops).
	Store tokenstore.Store
	// Logger receives events; never a token or secret. Default: no logging.
	Logger *zap.Logger
	// Clock is the time source. Default: SystemClock.
	Clock Clock
	// Observer receives events for metrics. Default: none, and then the
	// hot path counts nothing. An Observer that also implements
	// UserObserver receives the user-context events.
	Observer Observer

	// MaxReplayBody is the largest request body buffered in memory so that
	// a request can be replayed after the API answered 401 invalid_token
	// (bodies with GetBody, and requests without a body, are always
	// replayable). Negative: buffer none. Default: 64 KiB.
	MaxReplayBody int64

	// Grant is GrantClientCredentials or GrantAuthorizationCode.
	// Default: GrantClientCredentials.
	Grant string

	// The fields below apply to GrantAuthorizationCode only: New refuses
	// a Config that sets one of them with GrantClientCredentials.

	// AuthURL overrides the provider's authorization endpoint; http:// is
	// refused unless the host is loopback.
	AuthURL string
	// RedirectURI is the absolute URL of the callback as registered with
	// the authorization server; its path is CallbackPath's default and its
	// origin makes the connect_url of 401 answers absolute. Never taken
	// from a request. Required.
	//
	// A Gate mounted under a path prefix (a router or Caddy's handle_path
	// strips /gw before the Gate sees the request) sets CallbackPath to
	// the path it sees (/oauth2/callback) and RedirectURI to the public
	// one (https://example.com/gw/oauth2/callback): the part of
	// RedirectURI's path before CallbackPath is the public prefix, and
	// every URL the Gate gives out (the state cookie's Path, connect_url,
	// the links of its pages) carries it, while the paths it serves are
	// matched without it. RedirectURI's path must end with CallbackPath.
	RedirectURI string
	// Subject returns the subject (the partner's own user id) of a request
	// handled by Wrap. It must come from a trusted source (an
	// authentication middleware in front, a verified session), never from
	// a header the client can set. "" means unauthenticated (401).
	// Required for Wrap (which panics without it); Caddy passes the
	// subject to ServeFlow and AuthorizeSubject itself.
	Subject func(*http.Request) string
	// ConnectPath, CallbackPath, DisconnectPath and StatusPath are served
	// by Wrap and ServeFlow, matched against the request's path as the
	// Gate sees it. Defaults: /oauth2/connect, RedirectURI's path (or
	// /oauth2/callback), /oauth2/disconnect, /oauth2/status.
	ConnectPath, CallbackPath, DisconnectPath, StatusPath string
	// RevocationURL is the authorization server's RFC 7009 revocation
	// endpoint: a disconnect, after deleting the subject's tokens, revokes
	// the refresh token there (best effort, within RequestTimeout; a
	// failure is logged, the disconnect stands). Only for the generic
	// provider: TaskNation documents no revocation endpoint. http:// is
	// refused unless the host is loopback. Default: none (no revocation).
	RevocationURL string
	// Lifecycle receives the lifecycle events of subjects (connected,
	// disconnected, reauthorization required, refresh token expiring),
	// with the subject. Default: none.
	Lifecycle LifecycleObserver
	// DisablePKCE turns PKCE (S256) off, for servers that reject it.
	// Default: PKCE on.
	DisablePKCE bool
	// ConnectedRedirect is where the callback sends the browser after a
	// successful connect (an absolute URL or a path). Default: a minimal
	// HTML page saying the account is connected.
	ConnectedRedirect string
	// StateLifetime is how long a connect's state stays valid. Default: 10m.
	StateLifetime time.Duration
	// MaxPendingStates caps the connects in progress held in memory (when
	// Store keeps no pending connects, see tokenstore.PendingStore); past
	// it the oldest is dropped. Default: 10000.
	MaxPendingStates int
	// MaxPendingPerSubject caps the connects in progress of one subject,
	// in memory or in a shared store alike; past it the subject's oldest
	// is dropped, and no other subject's. Default: 5.
	MaxPendingPerSubject int
	// RefreshTokenLifetime is how long a refresh token lasts from the
	// authorization_code grant (rotation does not extend it).
	// Default: 180 days (TaskNation).
	RefreshTokenLifetime time.Duration
	// RefreshTokenWarning: from this long before a refresh token runs out,
	// each refresh logs a warning and reports it to the UserObserver.
	// Default: 14 days.
	RefreshTokenWarning time.Duration
	// GracePeriod is how long after its first attempt a refresh that got
	// no answer (a network error) is retried with the same refresh token.
	// Default: 60s (TaskNation's grace period).
	GracePeriod time.Duration
	// MaxCallbackQuery caps the callback's query string, in bytes; a
	// longer one is refused (400 invalid_request) before it is parsed.
	// Each value is also capped at a quarter of it. Default: 8 KiB.
	MaxCallbackQuery int
	// CacheSizeMB caps the in-memory (bigcache) layer of user tokens;
	// past it the oldest entries are evicted and read again from Store.
	// Default: 64.
	CacheSizeMB int

	// publicPrefix is the part of RedirectURI's path before CallbackPath:
	// what a router in front stripped (see RedirectURI).
	publicPrefix string
	// assertion makes the client assertions of PrivateKeyJWT.
	assertion *assertionSigner
	// ownTransport is the transport withDefaults made for
	// ClientCertificate or RootCAs, closed with the Gate.
	ownTransport *http.Transport
}

// Validate reports the first problem New would find in c: a *ConfigError
// naming the field at fault, in the Caddyfile's spelling.
//
// A Config with an Issuer whose endpoints are not discovered yet (no
// Discover has run: Validate does no network I/O) has the rest checked,
// the issuer standing in for the endpoints it will give.
func (c Config) Validate() error {
	if c.Issuer != "" && (c.TokenURL == "" || c.AuthURL == "") && c.checkProviderOptions() == nil {
		if _, err := issuerURL(c.Issuer); err != nil {
			return err
		}
		if c.TokenURL == "" {
			c.TokenURL = c.Issuer
		}
		if c.AuthURL == "" && c.Grant == GrantAuthorizationCode {
			c.AuthURL = c.Issuer
		}
	}
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and returns it with defaults applied. Errors
// are *ConfigError.
func (c Config) withDefaults() (Config, error) {
	if c.Provider.Name == "" {
		c.Provider = TaskNation
	}
	if err := c.checkProviderOptions(); err != nil {
		return c, err
	}
	if c.TokenURL == "" {
		c.TokenURL = c.Provider.TokenURL
	}
	if c.TokenURL == "" && c.Issuer != "" {
		return c, &ConfigError{Field: "issuer", Value: c.Issuer, Reason: "the endpoints are not discovered yet: run Config.Discover before New (or set token_url)"}
	}
	if c.ClientID == "" {
		return c, &ConfigError{Field: "client_id", Reason: "is required"}
	}
	// Read from a file or an environment with a trailing newline, a
	// credential fails every token request with invalid_client.
	for _, f := range []struct{ name, v string }{{"client_id", c.ClientID}, {"client_secret", c.ClientSecret}} {
		if strings.IndexFunc(f.v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 || strings.TrimSpace(f.v) != f.v {
			return c, &ConfigError{Field: f.name, Reason: "has white space at an end or a control character (a newline read from a file?)"}
		}
	}
	if err := c.clientAuthDefaults(); err != nil {
		return c, err
	}
	if err := checkEndpoint("token_url", c.TokenURL); err != nil {
		return c, err
	}
	if _, err := c.Provider.checkScopes(c.Scopes); err != nil {
		return c, err
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.ClientCertificate != nil || c.RootCAs != nil {
		t, err := tlsTransport(c.HTTPClient.Transport, c.ClientCertificate, c.RootCAs)
		if err != nil {
			return c, err
		}
		hc := *c.HTTPClient
		hc.Transport = t
		c.HTTPClient, c.ownTransport = &hc, t
	}
	if err := checkTokenParams(c.TokenParams); err != nil {
		return c, err
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.RequestTimeout < 0 {
		return c, &ConfigError{Field: "request_timeout", Reason: fmt.Sprintf("must be positive, got %v", c.RequestTimeout)}
	}
	if c.RefreshWindow == 0 {
		c.RefreshWindow = DefaultRefreshWindow
	}
	if c.RefreshWindow <= 0 || c.RefreshWindow >= 1 {
		return c, &ConfigError{Field: "refresh_window", Reason: fmt.Sprintf("must be between 0 and 1 (a fraction of the lifetime), got %v", c.RefreshWindow)}
	}
	if c.ExpiryLeeway == 0 {
		c.ExpiryLeeway = DefaultExpiryLeeway
	}
	if c.ExpiryLeeway < 0 {
		return c, &ConfigError{Field: "expiry_leeway", Reason: fmt.Sprintf("must not be negative, got %v", c.ExpiryLeeway)}
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff {
		return c, &ConfigError{Field: "backoff", Reason: fmt.Sprintf("needs 0 < min_backoff (%v) <= max_backoff (%v)", c.MinBackoff, c.MaxBackoff)}
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.MaxReplayBody == 0 {
		c.MaxReplayBody = DefaultMaxReplayBody
	}
	switch c.Grant {
	case "", GrantClientCredentials:
		c.Grant = GrantClientCredentials
		if f := c.userField(); f != "" {
			return c, &ConfigError{Field: f, Reason: "only applies to grant authorization_code (the grant is client_credentials, the default when Grant is empty)"}
		}
	case GrantAuthorizationCode:
		if err := c.userDefaults(); err != nil {
			return c, err
		}
	default:
		return c, &ConfigError{Field: "grant", Value: c.Grant, Reason: fmt.Sprintf("unknown grant (want %s or %s)", GrantClientCredentials, GrantAuthorizationCode)}
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	if c.PrivateKeyJWT != nil {
		a, err := newAssertionSigner(c.PrivateKeyJWT, c.ClientID, c.TokenURL, c.Clock.Now)
		if err != nil {
			return c, err
		}
		c.assertion = a
	}
	return c, nil
}

// userField is the first field of the user context (those that apply to
// GrantAuthorizationCode only) that c sets, in the Caddyfile's spelling
// where there is one, or "". A Config that sets them without the grant
// would otherwise run the application context: every request would get
// the application's token, not its user's.
func (c *Config) userField() string {
	for _, f := range []struct {
		name string
		set  bool
	}{
		{"auth_url", c.AuthURL != ""},
		{"redirect_uri", c.RedirectURI != ""},
		{"subject", c.Subject != nil},
		{"connect_path", c.ConnectPath != ""},
		{"callback_path", c.CallbackPath != ""},
		{"disconnect_path", c.DisconnectPath != ""},
		{"status_path", c.StatusPath != ""},
		{"revocation_url", c.RevocationURL != ""},
		{"lifecycle", c.Lifecycle != nil},
		{"pkce", c.DisablePKCE},
		{"connected_redirect", c.ConnectedRedirect != ""},
		{"state_lifetime", c.StateLifetime != 0},
		{"max_pending_states", c.MaxPendingStates != 0},
		{"max_pending_per_subject", c.MaxPendingPerSubject != 0},
		{"refresh_token_lifetime", c.RefreshTokenLifetime != 0},
		{"refresh_token_warning", c.RefreshTokenWarning != 0},
		{"grace_period", c.GracePeriod != 0},
		{"max_callback_query", c.MaxCallbackQuery != 0},
		{"cache_size", c.CacheSizeMB != 0},
	} {
		if f.set {
			return f.name
		}
	}
	return ""
}

// checkProviderOptions refuses the options of the generic provider with
// a preset that fixes them (TaskNation: client_id and client_secret in
// the form body, its own endpoints).
func (c *Config) checkProviderOptions() error {
	if c.Provider.Name != "" && c.Provider.Name != TaskNation.Name { // "": the default, TaskNation
		return nil
	}
	for _, o := range []struct {
		field string
		set   bool
	}{
		{"client_auth", c.AuthStyle != oauth2.AuthStyleAutoDetect && c.AuthStyle != TaskNation.AuthStyle},
		{"private_key_jwt", c.PrivateKeyJWT != nil},
		{"tls_client_auth", c.ClientCertificate != nil},
		{"token_params", len(c.TokenParams) > 0},
		{"issuer", c.Issuer != ""},
	} {
		if o.set {
			return &ConfigError{Field: o.field, Reason: "does not apply to provider tasknation, which takes client_id and client_secret in the form body at its documented endpoints (use provider generic)"}
		}
	}
	return nil
}

// clientAuthDefaults settles how the client authenticates: a secret
// (Basic or in the form body), a client assertion, or a TLS certificate,
// exactly one of them.
func (c *Config) clientAuthDefaults() error {
	keyed := c.PrivateKeyJWT != nil || c.ClientCertificate != nil
	if c.PrivateKeyJWT != nil && c.ClientCertificate != nil {
		return &ConfigError{Field: "private_key_jwt", Reason: "and tls_client_auth are two client authentication methods: choose one"}
	}
	if keyed {
		field := "private_key_jwt"
		if c.ClientCertificate != nil {
			field = "tls_client_auth"
		}
		if c.ClientSecret != "" {
			return &ConfigError{Field: "client_secret", Reason: "must be empty with " + field + " (no secret is sent)"}
		}
		if c.AuthStyle == oauth2.AuthStyleInHeader {
			return &ConfigError{Field: "client_auth", Reason: "basic does not apply with " + field + ", which sends client_id in the form body"}
		}
		// client_id in the form body, and no secret: x/oauth2 leaves
		// client_secret out when it is empty.
		c.AuthStyle = oauth2.AuthStyleInParams
		return nil
	}
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		c.AuthStyle = c.Provider.AuthStyle
	}
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		c.AuthStyle = oauth2.AuthStyleInHeader
	}
	if c.ClientSecret == "" {
		return &ConfigError{Field: "client_secret", Reason: "is required"}
	}
	return nil
}

// userDefaults validates and completes the authorization_code fields.
func (c *Config) userDefaults() error {
	if c.AuthURL == "" {
		c.AuthURL = c.Provider.AuthURL
	}
	if err := checkEndpoint("auth_url", c.AuthURL); err != nil {
		return err
	}
	if c.RedirectURI == "" {
		return &ConfigError{Field: "redirect_uri", Reason: "is required for the authorization_code grant"}
	}
	ru, err := url.Parse(c.RedirectURI)
	bad := func(reason string) error {
		return &ConfigError{Field: "redirect_uri", Value: shownURL(c.RedirectURI, ru), Reason: reason}
	}
	if err != nil || ru.Host == "" || (ru.Scheme != "https" && ru.Scheme != "http") {
		return bad("not an absolute http(s) URL")
	}
	if ru.Scheme == "http" && !isLoopback(ru.Hostname()) {
		return bad("http:// is only allowed on loopback hosts; use https://")
	}
	if ru.Fragment != "" {
		return bad("must not have a fragment")
	}
	if ru.Path == "" || ru.Path == "/" {
		// The authorization server sends the browser back to exactly this
		// URL: at the root it would never reach the callback.
		return bad(fmt.Sprintf("has no path: the authorization server sends the browser back to exactly this URL, so it must be the callback's (%s://%s%s)",
			ru.Scheme, ru.Host, cmp.Or(c.CallbackPath, DefaultCallbackPath)))
	}
	if c.CallbackPath == "" {
		c.CallbackPath = ru.Path
	}
	switch {
	case ru.Path == c.CallbackPath:
		c.publicPrefix = ""
	case strings.HasPrefix(c.CallbackPath, "/") && strings.HasSuffix(ru.Path, c.CallbackPath):
		c.publicPrefix = strings.TrimSuffix(ru.Path, c.CallbackPath)
	default:
		return &ConfigError{Field: "callback_path", Value: c.CallbackPath, Reason: fmt.Sprintf(
			"redirect_uri's path %q must be the callback path, or end with it when the gateway is mounted under a prefix (redirect_uri https://host/gw/oauth2/callback with callback_path /oauth2/callback)", ru.Path)}
	}
	if c.ConnectPath == "" {
		c.ConnectPath = DefaultConnectPath
	}
	if c.DisconnectPath == "" {
		c.DisconnectPath = DefaultDisconnectPath
	}
	if c.StatusPath == "" {
		c.StatusPath = DefaultStatusPath
	}
	if c.RevocationURL != "" {
		if c.Provider.Name == TaskNation.Name {
			return &ConfigError{Field: "revocation_url", Reason: "does not apply to provider tasknation, which documents no revocation endpoint (use provider generic)"}
		}
		if err := checkEndpoint("revocation_url", c.RevocationURL); err != nil {
			return err
		}
	}
	paths := map[string]string{}
	for _, p := range []struct{ field, v string }{
		{"connect_path", c.ConnectPath}, {"callback_path", c.CallbackPath}, {"disconnect_path", c.DisconnectPath},
		{"status_path", c.StatusPath},
	} {
		if !strings.HasPrefix(p.v, "/") {
			return &ConfigError{Field: p.field, Value: p.v, Reason: "must start with /"}
		}
		if other, dup := paths[p.v]; dup {
			return &ConfigError{Field: p.field, Value: p.v, Reason: "the same path as " + other}
		}
		paths[p.v] = p.field
	}
	if c.ConnectedRedirect != "" {
		u, err := url.Parse(c.ConnectedRedirect)
		if err != nil || (u.Host == "" && !strings.HasPrefix(c.ConnectedRedirect, "/")) || strings.HasPrefix(c.ConnectedRedirect, "//") {
			return &ConfigError{Field: "connected_redirect", Value: shownURL(c.ConnectedRedirect, u), Reason: "want an absolute URL or a path starting with /"}
		}
	}
	if !slices.Contains(c.Scopes, ScopeOfflineAccess) {
		c.Scopes = append(slices.Clip(c.Scopes), ScopeOfflineAccess)
	}
	for _, d := range []struct {
		field string
		v     *time.Duration
		def   time.Duration
	}{
		{"state_lifetime", &c.StateLifetime, DefaultStateLifetime},
		{"refresh_token_lifetime", &c.RefreshTokenLifetime, DefaultRefreshTokenLifetime},
		{"refresh_token_warning", &c.RefreshTokenWarning, DefaultRefreshTokenWarning},
		{"grace_period", &c.GracePeriod, DefaultGracePeriod},
	} {
		if *d.v == 0 {
			*d.v = d.def
		}
		if *d.v < 0 {
			return &ConfigError{Field: d.field, Reason: fmt.Sprintf("must be positive, got %v", *d.v)}
		}
	}
	if c.MaxPendingStates == 0 {
		c.MaxPendingStates = DefaultMaxPendingStates
	}
	if c.MaxPendingPerSubject == 0 {
		c.MaxPendingPerSubject = DefaultMaxPendingPerSubject
	}
	if c.CacheSizeMB == 0 {
		c.CacheSizeMB = DefaultCacheSizeMB
	}
	if c.MaxCallbackQuery == 0 {
		c.MaxCallbackQuery = DefaultMaxCallbackQuery
	}
	for _, n := range []struct {
		field string
		v     int
	}{
		{"max_pending_states", c.MaxPendingStates}, {"max_pending_per_subject", c.MaxPendingPerSubject},
		{"cache_size", c.CacheSizeMB}, {"max_callback_query", c.MaxCallbackQuery},
	} {
		if n.v < 0 {
			return &ConfigError{Field: n.field, Reason: fmt.Sprintf("must be positive, got %d", n.v)}
		}
	}
	if c.MaxCallbackQuery < 1024 {
		return &ConfigError{Field: "max_callback_query", Reason: fmt.Sprintf("%d is too small for a callback (want at least 1024 bytes)", c.MaxCallbackQuery)}
	}
	return nil
}

// checkEndpoint accepts https URLs, and http URLs only on loopback hosts
// (tests, a local sidecar): a secret must not cross a network in clear.
func checkEndpoint(field, raw string) error {
	if raw == "" {
		return &ConfigError{Field: field, Reason: "is required"}
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the rest repeats the URL
		}
		return &ConfigError{Field: field, Reason: "is not a URL", Err: err}
	}
	bad := func(reason string) error {
		return &ConfigError{Field: field, Value: shownURL(raw, u), Reason: reason}
	}
	if u.Host == "" {
		return bad("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return bad("http:// is only allowed on loopback hosts; use https://")
	default:
		return bad("scheme must be https")
	}
}

// shownURL is raw as an error may show it: without the password of its
// user info, when it parsed.
func shownURL(raw string, u *url.URL) string {
	if u == nil || u.User == nil {
		return raw
	}
	if _, has := u.User.Password(); !has {
		return raw
	}
	return u.Redacted()
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
