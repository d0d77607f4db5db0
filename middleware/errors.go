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
	ConnectURL  string `json:"connect_url,omitempty"`
}

// Codes of a UserError.
const (
	// CodeUnauthenticated: the request has no subject.
	CodeUnauthenticated = "unauthenticated"
	// CodeNotConnected: no tokens are stored for the subject.
	CodeNotConnected = "not_connected"
	// CodeReauthorizationRequired: the subject's refresh token was
	// refused (invalid_grant) or ran out; its tokens were deleted.
	CodeReauthorizationRequired = "reauthorization_required"
)

// UserError is a request of the user context that cannot be served until
// the person behind the subject does something: log in, connect, or
// connect again. WriteError answers it 401 with the connect URL.
type UserError struct {
	// Code is CodeUnauthenticated, CodeNotConnected or
	// CodeReauthorizationRequired.
	Code string
	// Description says why, in words safe for any client.
	Description string
	// ConnectURL is where the person connects the account; empty for
	// CodeUnauthenticated.
	ConnectURL string
}

func (e *UserError) Error() string { return "middleware: " + e.Code + ": " + e.Description }

// WriteError answers a request that cannot be forwarded for lack of a
// token (err from Authorize, Token or a Transport): 503 token_unavailable,
// JSON, with Retry-After. The body names the kind of failure and nothing
// the token endpoint said.
//
// A *UserError is answered 401 with its code and connect_url instead.
func WriteError(w http.ResponseWriter, err error) {
	var usr *UserError
	if errors.As(err, &usr) {
		writeJSONError(w, http.StatusUnauthorized, errorBody{Error: usr.Code, Description: usr.Description, ConnectURL: usr.ConnectURL})
		return
	}
	status, body := http.StatusServiceUnavailable, errorBody{Error: "token_unavailable"}
	var ue *UnavailableError
	if errors.As(err, &ue) {
		secs := int((ue.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	}
	var ee *EndpointError
	var se *storeError
	switch {
	case errors.As(err, &se):
		body.Description = "no valid access token: the token store could not be read"
	case errors.As(err, &ee):
		body.Description = "no valid access token: " + describe(ee)
	case errors.Is(err, errClientGone):
		body.Description = "no valid access token: the request ended while waiting for one"
	default:
		body.Description = "no valid access token: the token endpoint is backing off after failures"
	}
	writeJSONError(w, status, body)
}

func writeJSONError(w http.ResponseWriter, status int, body errorBody) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
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
