// Package caddymodule is tokengate as a Caddy v2 HTTP handler,
// http.handlers.oauth2_token: it gets OAuth 2.0 access tokens, keeps them
// fresh and sets "Authorization: Bearer <token>" on requests before the
// next handler (usually reverse_proxy) sees them.
//
// Build a Caddy with it:
//
//	xcaddy build --with github.com/tasknation/tokengate/caddymodule
package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/tasknation/tokengate/middleware"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// gates holds the token sources across config reloads: a reload with the
// same effective client configuration keeps the token it has.
var gates = caddy.NewUsagePool()

// Handler injects OAuth 2.0 access tokens into requests. It obtains an
// application token (client_credentials grant) for the configured client,
// refreshes it in the background before it expires, and replaces any
// Authorization header the client sent with "Bearer <token>". When no
// valid token can be had it answers 503 with a JSON body
// {"error":"token_unavailable"} and a Retry-After header; the request is
// never passed on without a token.
//
// Secrets may be given as placeholders ({env.NAME}, {file./path}); they are
// resolved when the config is loaded and never appear in the JSON config.
type Handler struct {
	// The authorization server preset: "tasknation" (TaskNation's
	// endpoints, client credentials in the form body, scope catalog
	// checked) or "generic" (any RFC 6749 server; token_url required,
	// client credentials in an HTTP Basic header). Default: tasknation
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
	// must be in TaskNation's catalog. Default: none
	Scopes []string `json:"scopes,omitempty"`

	// The grant type. Only client_credentials (application context) is
	// supported so far. Default: client_credentials
	Grant string `json:"grant,omitempty"`

	// The token store. Only "memory" is supported so far. Default: memory
	Store string `json:"store,omitempty"`

	// How long one token request may take. Default: 10s
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`

	// The fraction of a token's lifetime left when a background refresh
	// starts (with jitter). Default: 0.2
	RefreshWindow float64 `json:"refresh_window,omitempty"`

	// The first wait after a failed token request; waits double, with
	// jitter, for all requests together. Default: 1s
	MinBackoff caddy.Duration `json:"min_backoff,omitempty"`

	// The longest wait between failed token requests. Default: 1m
	MaxBackoff caddy.Duration `json:"max_backoff,omitempty"`

	gate    *middleware.Gate
	poolKey string
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.oauth2_token",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision resolves placeholders and takes the token source for this
// configuration from the pool, creating it on first use. It makes no
// network request: the first token is fetched by the first request.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	cfg, err := h.config(caddy.NewReplacer())
	if err != nil {
		return err
	}
	cfg.Logger = h.logger
	cfg.Observer = registerMetrics(ctx)
	if err := validate(cfg); err != nil {
		return err
	}
	h.poolKey = poolKey(cfg)
	v, loaded, err := gates.LoadOrNew(h.poolKey, func() (caddy.Destructor, error) {
		g, err := middleware.New(cfg)
		if err != nil {
			return nil, err
		}
		return pooledGate{g}, nil
	})
	if err != nil {
		return fmt.Errorf("oauth2_token: %w", err)
	}
	h.gate = v.(pooledGate).Gate
	h.gate.SetLogger(h.logger) // the newest config's logger, whose outputs are open
	h.logger.Debug("token source ready", zap.Bool("reused", loaded),
		zap.String("client_id", cfg.ClientID), zap.Strings("scopes", cfg.Scopes))
	return nil
}

// config is the middleware configuration of h, with placeholders resolved
// by repl (nil: left as they are, for checks at adapt time).
func (h *Handler) config(repl *caddy.Replacer) (middleware.Config, error) {
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
	var err error
	switch h.Provider {
	case "", "tasknation":
		c.Provider = middleware.TaskNation
	case "generic":
		c.Provider = middleware.Generic
	default:
		return c, fmt.Errorf("oauth2_token: provider: unknown provider %q (want tasknation or generic)", h.Provider)
	}
	switch h.Grant {
	case "", "client_credentials":
	case "authorization_code":
		return c, fmt.Errorf("oauth2_token: grant: authorization_code is not supported yet; use client_credentials")
	default:
		return c, fmt.Errorf("oauth2_token: grant: unknown grant %q (want client_credentials)", h.Grant)
	}
	switch h.Store {
	case "", "memory":
	default:
		return c, fmt.Errorf("oauth2_token: store: %q is not supported yet; use memory", h.Store)
	}
	if c.TokenURL, err = resolve("token_url", h.TokenURL); err != nil {
		return c, err
	}
	if c.ClientID, err = resolve("client_id", h.ClientID); err != nil {
		return c, err
	}
	if c.ClientSecret, err = resolve("client_secret", h.ClientSecret); err != nil {
		return c, err
	}
	c.Scopes = h.Scopes
	c.RequestTimeout = time.Duration(h.RequestTimeout)
	c.RefreshWindow = h.RefreshWindow
	c.MinBackoff = time.Duration(h.MinBackoff)
	c.MaxBackoff = time.Duration(h.MaxBackoff)
	return c, nil
}

// isPlaceholder reports whether v is exactly one {env.*} or {file.*}
// placeholder, which is safe to quote in an error.
func isPlaceholder(v string) bool {
	return strings.HasPrefix(v, "{") && strings.HasSuffix(v, "}") && strings.Count(v, "{") == 1 &&
		(strings.HasPrefix(v, "{env.") || strings.HasPrefix(v, "{file."))
}

// poolKey identifies a token source: the same endpoint, client, secret,
// scopes and tuning share one. The secret enters only hashed.
func poolKey(c middleware.Config) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00%s\x00%s\x00%v\x00%v\x00%v\x00%v",
		c.Provider.Name, c.TokenURL, c.ClientID, c.ClientSecret, strings.Join(c.Scopes, " "),
		c.RequestTimeout, c.RefreshWindow, c.MinBackoff, c.MaxBackoff)
	return "oauth2_token:" + hex.EncodeToString(h.Sum(nil))
}

// Validate checks the configuration once placeholders are resolved.
func (h *Handler) Validate() error {
	if h.gate == nil {
		return fmt.Errorf("oauth2_token: not provisioned")
	}
	return nil
}

// ServeHTTP sets the token on r and calls next, or answers 503 JSON.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	if err := h.gate.Authorize(r); err != nil {
		middleware.WriteError(w, err)
		return nil
	}
	return next.ServeHTTP(w, r)
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

// pooledGate lets the usage pool close a Gate.
type pooledGate struct{ *middleware.Gate }

func (p pooledGate) Destruct() error { return p.Gate.Close() }

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
