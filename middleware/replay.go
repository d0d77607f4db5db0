package middleware

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// An access token can die before its expiry (revoked, the user's password
// changed, a server restart lost its sessions): the API then answers 401
// with `WWW-Authenticate: Bearer error="invalid_token"`. Serve holds such
// an answer back, invalidates that token version (not a newer one another
// request fetched meanwhile), gets a new token through the same
// singleflight, and replays the request once, when its body can be
// replayed: no body, a GetBody, or a body of at most MaxReplayBody bytes,
// which is then buffered in memory. `insufficient_scope` is passed on: a
// new token would not have more scope.

// DefaultMaxReplayBody is the default of Config.MaxReplayBody.
const DefaultMaxReplayBody = 64 << 10

// ReplayObserver is the optional part of an Observer that counts replays
// after an upstream 401.
type ReplayObserver interface {
	// Replay reports a request replayed with a new token after the
	// upstream answered 401 invalid_token.
	Replay()
}

// Invalidate marks the token of subject ("" for the application token)
// whose Version is version as unusable, so that the next request gets a
// new one. A newer token (another version) is left alone.
func (g *Gate) Invalidate(subject string, version uint64) {
	if g.u == nil {
		if e := g.app.cur.Load(); e != nil && e.tok.Version == version {
			e.phase.Store(phaseExpired)
		}
		return
	}
	if subject == "" {
		return
	}
	g.u.revoke(g.u.userKey(subject), version)
}

// credential is the Authorization value for a request of subject and the
// version of the token in it.
func (g *Gate) credential(ctx context.Context, subject string) (string, uint64, error) {
	if g.u != nil {
		tok, err := g.UserToken(ctx, subject)
		if err != nil {
			return "", 0, err
		}
		return "Bearer " + tok.AccessToken, tok.Version, nil
	}
	e, err := g.current(ctx, g.app)
	if err != nil {
		if o := g.cfg.Observer; o != nil {
			o.Refused()
		}
		return "", 0, err
	}
	return e.header, e.tok.Version, nil
}

// Serve sets the token of subject ("" with client_credentials) on r,
// calls next, and replays r once with a new token when next answers 401
// invalid_token (see Invalidate). Without a token it answers with
// WriteError and does not call next. It is what Wrap runs, for servers
// whose handlers return errors (the Caddy module); next's error is
// returned as is.
func (g *Gate) Serve(w http.ResponseWriter, r *http.Request, subject string, next func(http.ResponseWriter, *http.Request) error) error {
	if r.Header == nil { // hand-built requests
		r.Header = make(http.Header, 1)
	}
	header, version, err := g.credential(r.Context(), subject)
	if err != nil {
		delete(r.Header, "Authorization")
		WriteError(w, err)
		return nil
	}
	dropOddAuthorization(r.Header) // a hand-built map's keys may be in any case
	replayable := g.prepareReplay(r)
	rw := holdPool.Get().(*holdWriter)
	rw.reset(w, replayable)
	defer holdPool.Put(rw)
	// A direct map write replaces whatever the client sent under the
	// canonical key; Set would canonicalize the constant key each time.
	r.Header["Authorization"] = []string{header}
	err = next(rw, r)
	if !rw.held {
		if rw.rejected { // not replayable: the 401 went out, but the next request gets a new token
			g.Invalidate(subject, version)
		}
		return err
	}
	// The 401 was held back: nothing reached the client.
	g.Invalidate(subject, version)
	rw.restoreHeader()
	if o, ok := g.cfg.Observer.(ReplayObserver); ok {
		o.Replay()
	}
	g.logger().Info("upstream answered 401 invalid_token; replaying the request with a new token", zap.Uint64("version", version))
	header2, _, err := g.credential(r.Context(), subject)
	if err != nil {
		delete(r.Header, "Authorization")
		WriteError(w, err)
		return nil
	}
	if r.GetBody != nil {
		body, err := r.GetBody()
		if err != nil {
			WriteError(w, &UnavailableError{RetryAfter: time.Second, Err: err})
			return nil
		}
		r.Body = body
	}
	r.Header["Authorization"] = []string{header2}
	return next(w, r)
}

// prepareReplay makes r's body readable twice when it is small enough and
// reports whether r can be replayed.
func (g *Gate) prepareReplay(r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody || r.GetBody != nil {
		return true
	}
	max := g.cfg.MaxReplayBody
	if max <= 0 || r.ContentLength > max {
		return false
	}
	buf, err := io.ReadAll(io.LimitReader(r.Body, max+1))
	if err != nil || int64(len(buf)) > max {
		// Too big (or unreadable): send what was read, then the rest, once.
		r.Body = readCloser{io.MultiReader(bytes.NewReader(buf), r.Body), r.Body}
		return false
	}
	r.Body.Close()
	r.Body = io.NopCloser(bytes.NewReader(buf))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(buf)), nil }
	return true
}

type readCloser struct {
	io.Reader
	io.Closer
}

// holdWriter passes a response through, except a first 401
// invalid_token answer of a replayable request, which it holds back
// (headers and body) so that the request can be replayed.
type holdWriter struct {
	w        http.ResponseWriter
	saved    http.Header // w's header before next ran, when it had any
	wrote    bool
	held     bool // a 401 invalid_token was held back
	rejected bool // a 401 invalid_token went out (not replayable)
	canHold  bool
}

var holdPool = sync.Pool{New: func() any { return new(holdWriter) }}

func (h *holdWriter) reset(w http.ResponseWriter, canHold bool) {
	*h = holdWriter{w: w, canHold: canHold}
	if hdr := w.Header(); len(hdr) > 0 && canHold {
		h.saved = hdr.Clone() // what to go back to if the answer is held
	}
}

func (h *holdWriter) Header() http.Header { return h.w.Header() }

func (h *holdWriter) WriteHeader(code int) {
	if h.wrote {
		return
	}
	if code < 200 { // informational: pass on, the real answer follows
		h.w.WriteHeader(code)
		return
	}
	h.wrote = true
	if code == http.StatusUnauthorized && tokenRejected(h.w.Header()) {
		if h.canHold {
			h.held = true
			return
		}
		h.rejected = true
	}
	h.w.WriteHeader(code)
}

func (h *holdWriter) Write(b []byte) (int, error) {
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	if h.held {
		return len(b), nil
	}
	return h.w.Write(b)
}

// Flush lets streaming answers (and a ReverseProxy's FlushInterval) work.
func (h *holdWriter) Flush() {
	if h.held {
		return
	}
	if !h.wrote {
		h.WriteHeader(http.StatusOK)
	}
	_ = http.NewResponseController(h.w).Flush()
}

// Unwrap lets http.ResponseController reach the real writer.
func (h *holdWriter) Unwrap() http.ResponseWriter { return h.w }

// restoreHeader takes the header map back to what it was before the held
// answer wrote to it.
func (h *holdWriter) restoreHeader() {
	hdr := h.w.Header()
	for k := range hdr {
		delete(hdr, k)
	}
	for k, v := range h.saved {
		hdr[k] = v
	}
}

// tokenRejected reports whether a 401's WWW-Authenticate says the token
// itself is bad: error="invalid_token", or no error at all (a bare 401).
// insufficient_scope and other errors are not a token problem.
func tokenRejected(h http.Header) bool {
	for _, v := range h.Values("WWW-Authenticate") {
		l := strings.ToLower(v)
		if i := strings.Index(l, "error="); i >= 0 {
			rest := strings.TrimLeft(l[i+len("error="):], `"`)
			return strings.HasPrefix(rest, "invalid_token")
		}
	}
	return true
}

// dropOddAuthorization deletes the lower-case spelling of Authorization a
// hand-built header map may hold: the canonical key is replaced by the
// caller. A client cannot plant one (a server canonicalizes every incoming
// name), so only the application's own code can build such a map, and
// "authorization" is how it writes it. One lookup: ranging over the map
// cost a third of the hot path.
func dropOddAuthorization(h http.Header) {
	if _, ok := h["authorization"]; ok {
		delete(h, "authorization")
	}
}
