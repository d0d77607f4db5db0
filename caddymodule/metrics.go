package caddymodule

import (
	"errors"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/tasknation/tokengate/middleware"
)

// The collectors are built once and registered on every metrics registry
// Caddy hands out (a config reload brings a new one); registering on a
// registry that has them already is not an error. No label carries a user.
var metrics = struct {
	tokenRequests *prometheus.CounterVec
	tokenDuration *prometheus.HistogramVec
	cacheLookups  *prometheus.CounterVec
	refreshes     prometheus.Counter
	refused       prometheus.Counter
	connects      *prometheus.CounterVec
	expiring      prometheus.Counter
	reauths       prometheus.Counter
	replays       prometheus.Counter
}{
	tokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "token_requests_total",
		Help: "Token-endpoint requests by grant and outcome (success, network, timeout, status, rejected, invalid_response, redirect).",
	}, []string{"grant", "outcome"}),
	tokenDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "token_request_duration_seconds",
		Help:    "Duration of token-endpoint requests.",
		Buckets: prometheus.ExponentialBuckets(0.005, 2, 12),
	}, []string{"grant"}),
	cacheLookups: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "cache_lookups_total",
		Help: "Requests served from the token cache (hit) or made to wait for a token (miss).",
	}, []string{"result"}),
	refreshes: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "background_refreshes_total",
		Help: "Refreshes started ahead of expiry, while the current token was still served.",
	}),
	refused: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "requests_refused_total",
		Help: "Requests answered 503 token_unavailable for lack of a valid token.",
	}),
	connects: prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "connects_total",
		Help: "Steps of the user connect flow: started, connected, or the error a callback answered with (invalid_state, access_denied, invalid_grant, ...; other for codes outside the known set).",
	}, []string{"outcome"}),
	expiring: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "refresh_tokens_expiring_total",
		Help: "Refreshes of a user whose refresh token runs out within refresh_token_warning: that user must connect again soon.",
	}),
	reauths: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "reauthorizations_total",
		Help: "Users whose tokens were deleted because their refresh token was refused or ran out (answered reauthorization_required).",
	}),
	replays: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "oauth2_token", Name: "replays_total",
		Help: "Requests replayed with a new token after the upstream answered 401 invalid_token.",
	}),
}

// registerMetrics registers the collectors on ctx's registry and returns
// the observer that feeds them.
func registerMetrics(ctx caddy.Context) observer {
	reg := ctx.GetMetricsRegistry()
	if reg == nil {
		return observer{}
	}
	for _, c := range []prometheus.Collector{metrics.tokenRequests, metrics.tokenDuration, metrics.cacheLookups, metrics.refreshes, metrics.refused,
		metrics.connects, metrics.expiring, metrics.reauths, metrics.replays} {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			ctx.Logger().Warn("registering metrics failed", zap.Error(err))
		}
	}
	return observer{}
}

// observer feeds the collectors from a Gate's events.
type observer struct{}

func (observer) TokenRequest(grant, outcome string, took time.Duration) {
	metrics.tokenRequests.WithLabelValues(grant, outcome).Inc()
	metrics.tokenDuration.WithLabelValues(grant).Observe(took.Seconds())
}

func (observer) CacheLookup(hit bool) {
	if hit {
		hits.Inc()
	} else {
		misses.Inc()
	}
}

func (observer) BackgroundRefresh() { metrics.refreshes.Inc() }
func (observer) Refused()           { metrics.refused.Inc() }

// connectOutcomes are the outcome label values of connects_total. The
// error code of a failed callback comes, in part, from the query of a
// request: any other value counts as "other", so that no client can grow
// the series without bound.
var connectOutcomes = map[string]bool{
	"started": true, "connected": true,
	// What the middleware answers a callback with.
	"invalid_state": true, "invalid_request": true, "invalid_grant": true, "unauthenticated": true,
	"exchange_failed": true, "store_failed": true, "store_unavailable": true, "authorization_failed": true,
	// RFC 6749 section 4.1.2.1: what the authorization server redirects with.
	"access_denied": true, "unauthorized_client": true, "unsupported_response_type": true,
	"invalid_scope": true, "server_error": true, "temporarily_unavailable": true,
}

func (observer) Connect(outcome string) {
	if !connectOutcomes[outcome] {
		outcome = "other"
	}
	metrics.connects.WithLabelValues(outcome).Inc()
}

func (observer) RefreshTokenExpiring() { metrics.expiring.Inc() }
func (observer) Reauthorization()      { metrics.reauths.Inc() }
func (observer) Replay()               { metrics.replays.Inc() }

// Interface guards
var (
	_ middleware.Observer     = observer{}
	_ middleware.UserObserver = observer{}
)

// The two cache counters, resolved once: WithLabelValues per request
// would hash the label on the hot path.
var (
	hits   = metrics.cacheLookups.WithLabelValues("hit")
	misses = metrics.cacheLookups.WithLabelValues("miss")
)
