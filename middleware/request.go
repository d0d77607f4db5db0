package middleware

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// The request path, one for every way in (Wrap, Serve, Transport,
// Authorize): credential → setBearer → next, and when the API refuses the
// token, reject that version and replay once with the next.

// Wrap returns a handler that sets "Authorization: Bearer <token>" on each
// request, after dropping any Authorization header the client sent, and
// calls next. When no valid token can be had it answers 503
// token_unavailable (JSON, with Retry-After) and next is not called: a
// request is never forwarded without a token. When next answers 401 with
// a Bearer challenge refusing the token, the request is replayed once
// with a new token (see Serve).
//
// With the authorization_code grant, Wrap also serves the connect,
// callback and disconnect paths, and sets the token of the request's
// subject (Config.Subject); a request without a subject, or whose subject
// has no tokens, is answered 401 JSON with the connect URL. Wrap panics
// when the grant is authorization_code and Config.Subject is nil: no
// request could then have a subject (Serve and ServeFlow take it from the
// caller instead).
func (g *Gate) Wrap(next http.Handler) http.Handler {
	if g.users != nil && g.cfg.Subject == nil {
		panic("middleware: Wrap with grant authorization_code needs Config.Subject, the request's subject from a trusted source (your login); without it every request would be answered 401")
	}
	serve := func(w http.ResponseWriter, r *http.Request) error {
		next.ServeHTTP(w, r)
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var subject string
		if g.users != nil {
			subject = g.subject(r)
			if g.ServeFlow(w, r, subject) {
				return
			}
		}
		_ = g.Serve(w, r, subject, serve)
	})
}

// Serve sets the token of subject ("" with client_credentials) on r,
// calls next, and replays r once with a new token when next answers 401
// with a Bearer challenge refusing the token (see Invalidate). Without a
// token it answers with WriteError and does not call next. It is what
// Wrap runs, for servers whose handlers return errors (the Caddy module);
// next's error is returned as is. A subject given to an
// application-context Gate is answered 500 (see WriteError) and returned
// as an error: its request never gets the application's token.
//
// A refused token is replaced only when it is more than a few seconds old
// and has not been replaced already; otherwise, and whenever no replay can
// be made, the client gets the API's 401 as it was.
func (g *Gate) Serve(w http.ResponseWriter, r *http.Request, subject string, next func(http.ResponseWriter, *http.Request) error) error {
	if r.Header == nil { // hand-built requests
		r.Header = make(http.Header, 1)
	}
	if subject != "" && g.users == nil {
		// Not the application's token for a subject's request: 500.
		dropAuthorization(r.Header)
		WriteError(w, errNotUserGate)
		return errNotUserGate
	}
	h, err := g.credential(r.Context(), subject)
	if err != nil {
		dropAuthorization(r.Header)
		WriteError(w, err)
		return nil
	}
	rw := holdPool.Get().(*holdWriter)
	setBearer(r.Header, rw.bearer(h.header))
	kept, replayable := g.prepareReplay(r)
	rw.reset(w, replayable, kept)
	defer rw.put()
	err = next(rw, r)
	if !rw.held {
		if rw.rejected { // not replayable: the 401 went out, but the next request may get a new token
			g.src.reject(h.key, h.tok.Version, g.clock.Now())
		}
		return err
	}
	// The 401 was held back: nothing reached the client yet.
	h2, ok := g.retryToken(r.Context(), subject, h)
	if !ok {
		// No other token to try: the client gets the API's answer, not
		// a 503 of ours.
		return errors.Join(err, rw.release())
	}
	switch {
	case kept != nil:
		body, ok := kept.again()
		if !ok {
			return errors.Join(err, rw.release())
		}
		r.Body = body
	case r.GetBody != nil:
		body, berr := r.GetBody()
		if berr != nil {
			return errors.Join(err, rw.release())
		}
		r.Body = body
	}
	rw.restoreHeader()
	if o, ok := g.cfg.Observer.(ReplayObserver); ok {
		o.Replay()
	}
	g.logger().Info("upstream refused the token (401 invalid_token); replaying the request with a new token",
		zap.Uint64("version", h.tok.Version), zap.Uint64("new_version", h2.tok.Version))
	// The replay's answer goes to the client as it comes; a 401 refusing
	// its token too is noted, so that the next request does not use it.
	rw2 := holdPool.Get().(*holdWriter)
	setBearer(r.Header, rw2.bearer(h2.header))
	rw2.reset(w, false, nil)
	defer rw2.put()
	err = next(rw2, r)
	if rw2.rejected {
		g.replayRefused(h, h2)
	}
	return err
}

// replayRefused notes that the API refused h2, the token a request refused
// with h was replayed with: the version is rejected (when old enough to
// be, see tokenSource.reject) and the Gate warns, since a fresh token
// refused right away means the token did not reach the API (a handler
// after the Gate drops or replaces Authorization: Caddy's `header_up
// -Authorization`), or another party is rotating this key's tokens.
func (g *Gate) replayRefused(h, h2 *held) {
	now := g.clock.Now()
	g.src.reject(h2.key, h2.tok.Version, now)
	g.logger().Warn("upstream refused the replay's token too (401 invalid_token); the client got that answer. "+
		"Does a handler after the gateway drop or replace Authorization (Caddy: header_up -Authorization in reverse_proxy)? "+
		"Else another party is rotating this client's tokens",
		zap.Uint64("version", h.tok.Version), zap.Uint64("new_version", h2.tok.Version),
		zap.Duration("new_age", now.Sub(h2.tok.ObtainedAt)))
}

// retryToken is the token to replay a request with after the API refused
// h, and whether there is one. The refused version is rejected (see
// tokenSource.reject); a version too young to reject was most likely
// refused because a refresh of ours running in the background has just
// rotated it at the server: then the replay waits for that refresh. No
// other case asks the token endpoint for anything.
func (g *Gate) retryToken(ctx context.Context, subject string, h *held) (*held, bool) {
	var h2 *held
	if g.src.reject(h.key, h.tok.Version, g.clock.Now()) {
		h2, _ = g.credential(ctx, subject)
	} else if _, running := g.ahead.Load(h.key); running {
		if w, err := g.await(ctx, h.key, subject); err == nil {
			h2 = &w
		}
	}
	if h2 == nil || h2.tok.Version == h.tok.Version {
		return nil, false
	}
	return h2, true
}

// Authorize sets "Authorization: Bearer <token>" on r, replacing any
// Authorization header it had, for callers that forward r themselves. On
// error r is left without the header the client sent, and the error is
// for WriteError. There is no replay after a 401: use Serve or Wrap.
//
// With the authorization_code grant it is AuthorizeSubject with the
// subject Config.Subject gives.
func (g *Gate) Authorize(r *http.Request) error {
	if g.users != nil && g.cfg.Subject == nil {
		if r.Header != nil {
			dropAuthorization(r.Header)
		}
		return errNoSubjectFunc
	}
	return g.authorize(r, g.subject(r))
}

// AuthorizeSubject is Authorize for the token set of subject, which must
// come from a trusted source (see Config.Subject). The error is a
// *UserError (401) or an *UnavailableError (503), for WriteError.
func (g *Gate) AuthorizeSubject(r *http.Request, subject string) error {
	if g.users == nil {
		if r.Header != nil {
			dropAuthorization(r.Header)
		}
		return errNotUserGate
	}
	return g.authorize(r, subject)
}

func (g *Gate) authorize(r *http.Request, subject string) error {
	if r.Header == nil { // hand-built requests
		r.Header = make(http.Header, 1)
	}
	h, err := g.credential(r.Context(), subject)
	if err != nil {
		dropAuthorization(r.Header)
		return err
	}
	setBearer(r.Header, []string{h.header})
	return nil
}

// Invalidate marks the token of subject ("" for the application token)
// whose Version is version as refused by the API, so that the next
// request gets a new one. A newer token (another version) is left alone,
// and so is a token obtained less than a few seconds ago.
func (g *Gate) Invalidate(subject string, version uint64) {
	key, err := g.src.key(subject)
	if err != nil {
		return
	}
	g.src.reject(key, version, g.clock.Now())
}

// subject is the request's subject by Config.Subject ("" without one).
func (g *Gate) subject(r *http.Request) string {
	if g.cfg.Subject == nil {
		return ""
	}
	return g.cfg.Subject(r)
}

// setBearer makes v (one value) the request's one Authorization header. It drops the
// other spellings of the key a hand-built header map may hold beside the
// canonical one ("authorization", "AUTHORIZATION": both would reach the
// API), and takes Authorization out of the client's Connection header:
// proxies delete the headers Connection names as hop-by-hop, the bearer
// included, so a client could otherwise strip the token and have the
// API's 401 cost the Gate a token request. Three map lookups, no walk
// over the map: a request parsed by a server has canonical keys only, and
// the walk would cost as much as the rest of the hot path. (Transport,
// which copies the map anyway, drops every spelling.)
func setBearer(h http.Header, v []string) {
	// A direct map write: Set would canonicalize the constant key again
	// on every request.
	h["Authorization"] = v
	if len(h) > 1 {
		dropOtherSpellings(h)
	}
}

// dropAuthorization deletes the Authorization header of a request that
// goes nowhere with a token.
func dropAuthorization(h http.Header) {
	delete(h, "Authorization")
	dropOtherSpellings(h)
}

// dropOtherSpellings deletes the usual non-canonical spellings of
// Authorization, and Authorization from the Connection list.
func dropOtherSpellings(h http.Header) {
	if _, ok := h["authorization"]; ok {
		delete(h, "authorization")
	}
	if _, ok := h["AUTHORIZATION"]; ok {
		delete(h, "AUTHORIZATION")
	}
	if c, ok := h["Connection"]; ok {
		unlistAuthorization(h, c)
	}
}

// unlistAuthorization removes Authorization from the Connection header's
// values c.
func unlistAuthorization(h http.Header, c []string) {
	found := false
	for _, v := range c {
		if strings.Contains(strings.ToLower(v), "authorization") {
			found = true
			break
		}
	}
	if !found {
		return
	}
	var keep []string
	for _, v := range c {
		for tok := range strings.SplitSeq(v, ",") {
			if tok = strings.TrimSpace(tok); tok != "" && !strings.EqualFold(tok, "Authorization") {
				keep = append(keep, tok)
			}
		}
	}
	if len(keep) == 0 {
		delete(h, "Connection")
		return
	}
	h["Connection"] = []string{strings.Join(keep, ", ")}
}

// Transport returns a RoundTripper that sends each request through base
// with "Authorization: Bearer <token>" set (replacing any Authorization
// header). The caller's request is not modified. A nil base means
// http.DefaultTransport. With the authorization_code grant the token is
// that of the subject in the request's context (WithSubject); with
// client_credentials a request with a subject in its context fails, and
// is not sent with the application's token.
//
// The bearer goes only to the origin of the request the caller made: when
// an http.Client follows a redirect to another origin (a CDN, another
// host, another scheme or port), that request is sent without it.
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
	if !sameOriginAsFirst(req) {
		return t.base.RoundTrip(req)
	}
	subject := SubjectFrom(req.Context())
	if subject != "" && t.g.users == nil {
		// Not the application's token for a subject's request.
		return nil, closeBody(req, errNotUserGate)
	}
	h, err := t.g.credential(req.Context(), subject)
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
			continue // every spelling: the copy walks the map anyway
		}
		r2.Header[k] = v
	}
	setBearer(r2.Header, []string{h.header})
	resp, err := t.base.RoundTrip(r2)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || !challengeRefusesToken(resp.Header) {
		return resp, err
	}
	// The API refused the token: reject that version and, when the body
	// can be sent again, replay once with a new token.
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		t.g.src.reject(h.key, h.tok.Version, t.g.clock.Now())
		return resp, nil
	}
	h2, ok := t.g.retryToken(req.Context(), subject, h)
	if !ok {
		return resp, nil // the caller gets the API's 401
	}
	r3 := new(http.Request)
	*r3 = *r2
	r3.Header = r2.Header.Clone()
	r3.Header["Authorization"] = []string{h2.header}
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
	resp, err = t.base.RoundTrip(r3)
	if err == nil && resp.StatusCode == http.StatusUnauthorized && challengeRefusesToken(resp.Header) {
		t.g.replayRefused(h, h2)
	}
	return resp, err
}

// sameOriginAsFirst reports whether req goes to the origin (scheme, host
// and port) of the first request of its redirect chain: http.Client sets
// Response on the requests it makes to follow a redirect.
func sameOriginAsFirst(req *http.Request) bool {
	first := req
	for first.Response != nil && first.Response.Request != nil {
		first = first.Response.Request
	}
	if first == req {
		return true
	}
	return requestOrigin(first) == requestOrigin(req)
}

func requestOrigin(r *http.Request) string {
	scheme, port := strings.ToLower(r.URL.Scheme), r.URL.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(r.URL.Hostname()), port)
}

// closeBody closes req's body (RoundTrippers must, even on errors) and
// returns err.
func closeBody(req *http.Request, err error) error {
	if req.Body != nil {
		req.Body.Close()
	}
	return err
}

var _ io.Closer = (*Gate)(nil)
