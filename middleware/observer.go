package middleware

import "time"

// Observer receives a Gate's events, for metrics. Its methods are called
// on the request path: they must be cheap, must not block and must be safe
// for concurrent use. They never receive a token, a secret or a subject.
type Observer interface {
	// TokenRequest reports one token-endpoint request: its grant, how it
	// ended ("success", or an EndpointError Kind) and how long it took.
	TokenRequest(grant, outcome string, took time.Duration)
	// CacheLookup reports a request served from the cache (hit) or one
	// that had to wait for a token (miss).
	CacheLookup(hit bool)
	// BackgroundRefresh reports the start of a refresh ahead of expiry.
	BackgroundRefresh()
	// Refused reports a request answered 503 for lack of a token.
	Refused()
}

// UserObserver is the optional part of an Observer for the user context
// (authorization_code). Its methods follow the same rules as Observer's
// and never receive a subject.
type UserObserver interface {
	// Connect reports a step of the connect flow: "started" (a connect
	// redirected to the authorization server), "connected" (a callback
	// stored tokens) or the error code a callback answered with
	// ("invalid_state", "access_denied", "invalid_grant", ...). The code
	// of a denied authorization comes from the authorization server by
	// way of the browser: any [a-z_]{1,64}. A metric should map codes it
	// does not know to one label value.
	Connect(outcome string)
	// RefreshTokenExpiring reports a refresh of a subject whose refresh
	// token runs out within Config.RefreshTokenWarning.
	RefreshTokenExpiring()
	// Reauthorization reports a subject whose tokens were deleted because
	// its refresh token was refused (invalid_grant) or had run out.
	Reauthorization()
}

// LifecycleKind names a lifecycle event of a subject.
type LifecycleKind string

// Lifecycle events (Config.Lifecycle).
const (
	// EventConnected: a callback stored the subject's new token set.
	EventConnected LifecycleKind = "connected"
	// EventDisconnected: a disconnect deleted the subject's token set.
	EventDisconnected LifecycleKind = "disconnected"
	// EventReauthorizationRequired: the subject's tokens were deleted
	// because the refresh token was refused (invalid_grant) or ran out;
	// the user must connect again.
	EventReauthorizationRequired LifecycleKind = "reauthorization_required"
	// EventRefreshTokenExpiring: a refresh of the subject found its
	// refresh token running out within Config.RefreshTokenWarning.
	EventRefreshTokenExpiring LifecycleKind = "refresh_token_expiring"
)

// LifecycleEvent is something that happened to a subject's connection.
// It never holds a token, a code or a secret.
type LifecycleEvent struct {
	Kind LifecycleKind
	// SubjectKey is the subject's hashed key, as the logs and the stores
	// name it.
	SubjectKey string
	// Subject is the subject (the partner's own user id) when the Gate
	// knows it, which is always the case today; "" otherwise.
	Subject string
	// At is when it happened (the Gate's clock).
	At time.Time
	// RefreshTokenExpiresAt is when the refresh token runs out, for
	// connected and refresh_token_expiring; zero when unknown.
	RefreshTokenExpiresAt time.Time
}

// LifecycleObserver receives the lifecycle events of subjects, for
// operators (the Caddy module turns them into Caddy events). An event is
// reported once per occurrence, by the Gate that did the thing (in a fleet
// sharing a store, the instance that stored, deleted or refreshed); a
// refresh_token_expiring event comes with every refresh inside the
// warning window. UserEvent is called on the path where the thing happens
// (a callback, a disconnect, a refresh): it must not block, and must be
// safe for concurrent use.
type LifecycleObserver interface {
	UserEvent(LifecycleEvent)
}
