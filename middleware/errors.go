package middleware

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// UnavailableError is returned when no valid token could be had: the token
// endpoint failed (or is being backed off) and no cached token is valid.
type UnavailableError struct {
	// RetryAfter is when the next token request may be made (at least 1s).
	RetryAfter time.Duration
	// Err is the failure of the last token request, or the caller's
	// context error.
	Err error
}

func (e *UnavailableError) Error() string {
	return "middleware: no valid token: " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// errorBody is the JSON a client sees. It names the failure, never a token,
// a secret or what the token endpoint answered.
type errorBody struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// WriteError answers a request that cannot be forwarded for lack of a
// token (err from Authorize, Token or a Transport): 503 token_unavailable,
// JSON, with Retry-After. The body names the kind of failure and nothing
// the token endpoint said.
func WriteError(w http.ResponseWriter, err error) {
	status, body := http.StatusServiceUnavailable, errorBody{Error: "token_unavailable"}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		secs := int((ue.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	var ee *EndpointError
	switch {
	case errors.As(err, &ee):
		body.Description = "no valid access token: " + describe(ee)
	case errors.Is(err, errClientGone):
		body.Description = "no valid access token: the request ended while waiting for one"
	default:
		body.Description = "no valid access token: the token endpoint is backing off after failures"
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// describe names an endpoint failure in words safe for any client: no
// server text, no URL.
func describe(e *EndpointError) string {
	switch e.Kind {
	case "timeout":
		return "the token endpoint did not answer in time"
	case "status":
		return "the token endpoint answered HTTP " + strconv.Itoa(e.Status)
	case "rejected":
		return "the token endpoint refused the request (" + e.Code + ")"
	case "invalid_response":
		return "the token endpoint's answer was not a valid token"
	default:
		return "the token endpoint could not be reached"
	}
}
