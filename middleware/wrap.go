package middleware

import (
	"errors"
	"io"
	"net/http"
)

// errClientGone marks a caller whose context ended while it waited.
var errClientGone = errors.New("middleware: caller's context ended while waiting for a token")

// Wrap returns a handler that sets "Authorization: Bearer <token>" on each
// request, after dropping any Authorization header the client sent, and
// calls next. When no valid token can be had it answers 503
// token_unavailable (JSON, with Retry-After) and next is not called: a
// request is never forwarded without a token.
func (g *Gate) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := g.Authorize(r); err != nil {
			WriteError(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Authorize sets "Authorization: Bearer <token>" on r, replacing any
// Authorization header it had, for servers whose handlers are not
// http.Handlers (the Caddy module). On error r is left without the header
// the client sent, and the error is for WriteError.
func (g *Gate) Authorize(r *http.Request) error {
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
// http.DefaultTransport.
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
	e, err := t.g.current(req.Context(), t.g.app)
	if err != nil {
		if req.Body != nil {
			req.Body.Close() // RoundTrippers must close the body, even on errors
		}
		return nil, err
	}
	// A shallow copy with a fresh header map is enough: only the
	// Authorization entry differs, and no header value slice is written.
	r2 := new(http.Request)
	*r2 = *req
	r2.Header = make(http.Header, len(req.Header)+1)
	for k, v := range req.Header {
		r2.Header[k] = v
	}
	r2.Header["Authorization"] = []string{e.header}
	return t.base.RoundTrip(r2)
}

var _ io.Closer = (*Gate)(nil)
