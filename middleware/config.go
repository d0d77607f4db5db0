package middleware

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
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
)

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
	// AuthStyle overrides the provider's client authentication style.
	// Default (AuthStyleAutoDetect, the zero value): the provider's.
	AuthStyle oauth2.AuthStyle

	// HTTPClient calls the token endpoint. Its Transport is wrapped to cap
	// response bodies at 1 MiB. Default: a client on http.DefaultTransport.
	HTTPClient *http.Client
	// RequestTimeout bounds one token request. Default: 10s.
	RequestTimeout time.Duration
	// RefreshWindow is the fraction of a token's lifetime left when a
	// background refresh starts (minus up to a quarter more, at random, so
	// that a fleet does not refresh in step). Default: 0.2.
	RefreshWindow float64
	// ExpiryLeeway treats a token as expired this long before its expiry,
	// capped at a tenth of its lifetime, so that a token does not run out
	// on its way to the API. It is short on purpose: refreshes start long
	// before (RefreshWindow), and a token with seconds left is still served
	// while one runs, where x/oauth2's 10s delta blocks every caller.
	// Default: 2s.
	ExpiryLeeway time.Duration
	// MinBackoff and MaxBackoff bound the exponential backoff (with
	// jitter) between failed token requests. Defaults: 1s and 1m.
	MinBackoff, MaxBackoff time.Duration

	// Store keeps tokens. Default: a new in-memory (bigcache) store, closed
	// with the Gate. A Store given here is not closed by the Gate.
	Store tokenstore.Store
	// Logger receives events; never a token or secret. Default: no logging.
	Logger *zap.Logger
	// Clock is the time source. Default: SystemClock.
	Clock Clock
	// Observer receives events for metrics. Default: none, and then the
	// hot path counts nothing.
	Observer Observer
}

// Validate reports the first problem New would find in c. Errors name the
// field at fault, in the Caddyfile's spelling.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults validates c and returns it with defaults applied. Errors
// name the field at fault, in the Caddyfile's spelling.
func (c Config) withDefaults() (Config, error) {
	if c.Provider.Name == "" {
		c.Provider = TaskNation
	}
	if c.TokenURL == "" {
		c.TokenURL = c.Provider.TokenURL
	}
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		c.AuthStyle = c.Provider.AuthStyle
	}
	if c.AuthStyle == oauth2.AuthStyleAutoDetect {
		c.AuthStyle = oauth2.AuthStyleInHeader
	}
	if c.ClientID == "" {
		return c, errors.New("middleware: client_id is required")
	}
	if c.ClientSecret == "" {
		return c, errors.New("middleware: client_secret is required")
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
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.RequestTimeout < 0 {
		return c, fmt.Errorf("middleware: request_timeout must be positive, got %v", c.RequestTimeout)
	}
	if c.RefreshWindow == 0 {
		c.RefreshWindow = DefaultRefreshWindow
	}
	if c.RefreshWindow <= 0 || c.RefreshWindow >= 1 {
		return c, fmt.Errorf("middleware: refresh_window must be between 0 and 1 (a fraction of the lifetime), got %v", c.RefreshWindow)
	}
	if c.ExpiryLeeway == 0 {
		c.ExpiryLeeway = DefaultExpiryLeeway
	}
	if c.ExpiryLeeway < 0 {
		return c, fmt.Errorf("middleware: expiry_leeway must not be negative, got %v", c.ExpiryLeeway)
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MinBackoff < 0 || c.MaxBackoff < c.MinBackoff {
		return c, fmt.Errorf("middleware: backoff: need 0 < min_backoff (%v) <= max_backoff (%v)", c.MinBackoff, c.MaxBackoff)
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Clock == nil {
		c.Clock = SystemClock{}
	}
	return c, nil
}

// checkEndpoint accepts https URLs, and http URLs only on loopback hosts
// (tests, a local sidecar): a secret must not cross a network in clear.
func checkEndpoint(field, raw string) error {
	if raw == "" {
		return fmt.Errorf("middleware: %s is required", field)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("middleware: %s: %w", field, err)
	}
	if u.Host == "" {
		return fmt.Errorf("middleware: %s %q: not an absolute URL", field, raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("middleware: %s %q: http:// is only allowed on loopback hosts; use https://", field, raw)
	default:
		return fmt.Errorf("middleware: %s %q: scheme must be https", field, raw)
	}
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
