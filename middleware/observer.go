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
