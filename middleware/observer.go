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
