package middleware

import (
	"errors"
	"io"
	"net/http"
	"strings"
)

// errClientGone marks a caller whose context ended while it waited.
var errClientGone = errors.New("middleware: caller's context ended while waiting for a token")

// Wrap returns a handler that sets "Authorization: Bearer <token>" on each
// request, after dropping any Authorization header the client sent, and
// calls next. When no valid token can be had it answers 503
// token_unavailable (JSON, with Retry-After) and next is not called: a
// request is never forwarded without a token. When next answers 401
// invalid_token, the request is replayed once with a new token (see
// Serve).
//
// With the authorization_code grant, Wrap also serves the connect,
// callback and disconnect paths, and sets the token of the request's
// subject (Config.Subject); a request without a subject, or whose subject
// has no tokens, is answered 401 JSON with the connect URL.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	serve := func(w http.ResponseWriter, r *http.Request) error {
		next.ServeHTTP(w, r)
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var subject string
		if g.u != nil {
			subject = g.subject(r)
			if g.ServeFlow(w, r, subject) {
				return
			}
		}
		_ = g.Serve(w, r, subject, serve)
	})
}

// Authorize sets "Authorization: Bearer <token>" on r, replacing any
// Authorization header it had, for servers whose handlers are not
// http.Handlers (the Caddy module). On error r is left without the header
// the client sent, and the error is for WriteError.
//
// With the authorization_code grant it is AuthorizeSubject with the
// subject Config.Subject gives.
func (g *Gate) Authorize(r *http.Request) error {
	if g.u != nil {
		return g.AuthorizeSubject(r, g.subject(r))
	}
	e, err := g.current(r.Context(), g.app)
	if r.Header == nil { // hand-built requests
		r.Header = make(http.Header, 1)
	}
	if err != nil {
		delete(r.Header, "Authorization")
		if o := g.cfg.Observer; o != nil {
			o.Refused()
		}
		return err
	}
	// A direct map write replaces whatever the client sent under the
	// canonical key (servers canonicalize incoming names); Set would
	// canonicalize the constant key again on every request.
	r.Header["Authorization"] = []string{e.header}
	return nil
}

// Transport returns a RoundTripper that sends each request through base
// with "Authorization: Bearer <token>" set (replacing any Authorization
// header). The caller's request is not modified. A nil base means
// http.DefaultTransport. With the authorization_code grant the token is
// that of the subject in the request's context (WithSubject).
func (g *Gate) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{g: g, base: base}
}

type transport struct {
	g    *Gate
	base http.RoundTripper
}

func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	subject := ""
	if t.g.u != nil {
		subject = SubjectFrom(req.Context())
	}
	header, version, err := t.g.credential(req.Context(), subject)
	if err != nil {
		return nil, closeBody(req, err)
	}
	// A shallow copy with a fresh header map is enough: only the
	// Authorization entry differs, and no header value slice is written.
	r2 := new(http.Request)
	*r2 = *req
	r2.Header = make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		if len(k) == len("Authorization") && strings.EqualFold(k, "Authorization") {
			continue // also a hand-built map's non-canonical key
		}
		r2.Header[k] = v
	}
	r2.Header["Authorization"] = []string{header}
	resp, err := t.base.RoundTrip(r2)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !tokenRejected(resp.Header) {
		return resp, err
	}
	// The API rejected the token: invalidate that version and, when the
	// body can be sent again, replay once with a new token.
	t.g.Invalidate(subject, version)
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return resp, nil
	}
	header2, _, err := t.g.credential(req.Context(), subject)
	if err != nil {
		return resp, nil // the caller gets the API's 401
	}
	r3 := new(http.Request)
	*r3 = *r2
	r3.Header = r2.Header.Clone()
	r3.Header["Authorization"] = []string{header2}
	if req.GetBody != nil {
		if r3.Body, err = req.GetBody(); err != nil {
			return resp, nil
		}
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10)) // lets the connection be reused
	resp.Body.Close()
	if o, ok := t.g.cfg.Observer.(ReplayObserver); ok {
		o.Replay()
	}
	return t.base.RoundTrip(r3)
}

// closeBody closes req's body (RoundTrippers must, even on errors) and
// returns err.
func closeBody(req *http.Request, err error) error {
	if req.Body != nil {
		req.Body.Close()
	}
	return err
}

// subject is the request's subject by Config.Subject ("" without one).
func (g *Gate) subject(r *http.Request) string {
	if g.cfg.Subject == nil {
		return ""
	}
	return g.cfg.Subject(r)
}

var _ io.Closer = (*Gate)(nil)
