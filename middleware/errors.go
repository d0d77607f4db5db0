package middleware

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrorKind classifies a failed token request. Its values are the outcome
// labels an Observer (and the Caddy module's metrics) receives.
type ErrorKind string

// Kinds of EndpointError.
const (
	// KindNetwork: no HTTP answer (refused, reset or dropped connection,
	// TLS failure). The server may or may not have processed the request.
	KindNetwork ErrorKind = "network"
	// KindTimeout: no answer within Config.RequestTimeout. The server may
	// or may not have processed the request.
	KindTimeout ErrorKind = "timeout"
	// KindStatus: an HTTP error status without an RFC 6749 verdict on the
	// request: a 5xx, a 429, or a 4xx without an error code.
	KindStatus ErrorKind = "status"
	// KindRejected: an RFC 6749 error answer (Code says which:
	// invalid_client, invalid_grant, invalid_scope, ...).
	KindRejected ErrorKind = "rejected"
	// KindInvalidResponse: an answer that is not a usable token (HTML, not
	// JSON, over 1 MiB, no access_token, not Bearer, a bad expires_in).
	KindInvalidResponse ErrorKind = "invalid_response"
	// KindRedirect: a 3xx answer. The token request never follows a
	// redirect: it would send the client secret, the code or the refresh
	// token again to wherever the answer points.
	KindRedirect ErrorKind = "redirect"
)

// EndpointError is a failed token-endpoint exchange. Its text names the
// problem; it never holds a token, a secret or the raw response body.
type EndpointError struct {
	// Grant is the grant type of the request.
	Grant string
	// Kind says how the request failed.
	Kind ErrorKind
	// Status is the HTTP status, when an answer arrived.
	Status int
	// Code is the RFC 6749 error code, when given (at most 64 bytes).
	Code string
	// Description is the server's error_description made safe to log:
	// printable ASCII, at most about 100 bytes, with whatever looks like a
	// token and any credential of the request replaced by "…".
	Description string
	// RetryAfter is the wait the server asked for with Retry-After on a
	// 429 or 5xx answer (at most 1h); 0 when it asked for none.
	RetryAfter time.Duration
	// Err is the cause, when there is one.
	Err error

	location string // the origin a redirect pointed to, for the text
}

func (e *EndpointError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "middleware: %s token request failed: ", e.Grant)
	switch e.Kind {
	case KindRejected:
		fmt.Fprintf(&b, "token endpoint answered HTTP %d with error %q", e.Status, e.Code)
		if e.Description != "" {
			fmt.Fprintf(&b, " (%s)", e.Description)
		}
	case KindStatus:
		fmt.Fprintf(&b, "token endpoint answered HTTP %d", e.Status)
	case KindTimeout:
		b.WriteString("token endpoint did not answer in time")
	case KindRedirect:
		fmt.Fprintf(&b, "token endpoint answered HTTP %d, a redirect", e.Status)
		if e.location != "" {
			fmt.Fprintf(&b, " to %s", e.location)
		}
		b.WriteString("; redirects are not followed")
	default:
		b.WriteString(string(e.Kind))
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (Retry-After %v)", e.RetryAfter)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

func (e *EndpointError) Unwrap() error { return e.Err }

// noAnswer reports whether the request got no HTTP answer (the network
// failed or the timeout ran out): the server may or may not have
// processed it.
func (e *EndpointError) noAnswer() bool { return e.Kind == KindNetwork || e.Kind == KindTimeout }

// ConfigError is a Config that Validate and New refuse. Field names the
// setting at fault in the Caddyfile's spelling, so that a front end can
// word the error its own way.
type ConfigError struct {
	// Field is the setting at fault, in the Caddyfile's spelling
	// ("token_url", "scopes", "redirect_uri", "backoff").
	Field string
	// Value is the value at fault, when showing it helps (a URL without
	// its password, a path, a scope); "" for none. Never a secret.
	Value string
	// Reason says what is wrong. With a Value the text reads
	// `<field> "<value>": <reason>` (`redirect_uri "/cb": not an absolute
	// http(s) URL`); without one, the reason continues the field's name
	// (`client_id is required`, `request_timeout must be positive, got -1s`).
	Reason string
	// Err is the cause, when there is one.
	Err error
}

func (e *ConfigError) Error() string { return "middleware: " + e.Describe() }

// Describe is the error's text without the package's prefix, as in
// `redirect_uri "/cb": not an absolute http(s) URL`: a front end (the
// Caddy module) prefixes it with its own name.
func (e *ConfigError) Describe() string {
	detail := e.Reason
	if e.Err != nil {
		if detail != "" {
			detail += ": "
		}
		detail += e.Err.Error()
	}
	switch {
	case e.Value != "" && detail == "":
		return fmt.Sprintf("%s %q", e.Field, e.Value)
	case e.Value != "":
		return fmt.Sprintf("%s %q: %s", e.Field, e.Value, detail)
	case e.Reason != "":
		return e.Field + " " + detail
	default:
		return e.Field + ": " + detail
	}
}

func (e *ConfigError) Unwrap() error { return e.Err }

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
// A *UserError is answered 401 with its code and connect_url instead, and
// a Gate used against its configuration (a subject given to an
// application-context Gate, Authorize without Config.Subject) 500
// server_error: that is the program's fault, and no retry will help.
func WriteError(w http.ResponseWriter, err error) {
	var usr *UserError
	if errors.As(err, &usr) {
		writeJSONError(w, http.StatusUnauthorized, errorBody{Error: usr.Code, Description: usr.Description, ConnectURL: usr.ConnectURL})
		return
	}
	if errors.Is(err, errNotUserGate) || errors.Is(err, errNoSubjectFunc) {
		writeJSONError(w, http.StatusInternalServerError, errorBody{Error: "server_error", Description: "the gateway is misconfigured"})
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
	case KindTimeout:
		return "the token endpoint did not answer in time"
	case KindStatus:
		return "the token endpoint answered HTTP " + strconv.Itoa(e.Status)
	case KindRejected:
		return "the token endpoint refused the request (" + e.Code + ")"
	case KindInvalidResponse:
		return "the token endpoint's answer was not a valid token"
	case KindRedirect:
		return "the token endpoint answered with a redirect (HTTP " + strconv.Itoa(e.Status) + "), which is not followed"
	default:
		return "the token endpoint could not be reached"
	}
}

// storeError is a durable store that could not be read or locked: a
// client sees 503, the log the cause.
type storeError struct{ err error }

func (e *storeError) Error() string { return "middleware: token store: " + e.err.Error() }
func (e *storeError) Unwrap() error { return e.err }

// errGateClosed is the error of a request that needs a token after Close.
var errGateClosed = errors.New("middleware: the Gate is closed")

// errClientGone marks a caller whose context ended while it waited.
var errClientGone = errors.New("middleware: caller's context ended while waiting for a token")

var errNotUserGate = errors.New("middleware: the Gate's grant is client_credentials; subjects need authorization_code")

// errNoSubjectFunc is Authorize's error on a user-context Gate without
// Config.Subject: no request could have a subject.
var errNoSubjectFunc = errors.New("middleware: Authorize with grant authorization_code needs Config.Subject (or use AuthorizeSubject)")
