package middleware

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/tokenstore"
)

// The connect flow of the user context:
//
//	GET  ConnectPath     → 302 to the authorization endpoint with a fresh state
//	                       (single use, bound to the subject and to this
//	                       browser by a cookie) and a PKCE S256 challenge
//	GET  CallbackPath    → checks state, subject and cookie, exchanges the
//	                       code, stores the tokens, ends on a page or a redirect
//	POST DisconnectPath  → deletes the subject's tokens
//	GET  StatusPath      → the subject's ConnectionStatus, as JSON
//
// Paths are matched as the Gate sees them; the URLs it gives out (the
// cookie's Path, connect_url, links) carry the public prefix (see
// Config.RedirectURI).
//
// stateCookie binds a connect's state to the browser that started it.
const stateCookie = "tokengate_state"

// pendingState is a connect waiting for its callback.
type pendingState struct {
	subjectKey string
	verifier   string // PKCE; "" when disabled
	expires    time.Time
}

// pendingConnects is where connects wait for their callback: in this
// process (stateStore), or in the shared store when it keeps them
// (sharedPending), so that a callback may land on any instance of a fleet.
type pendingConnects interface {
	// put files p under state.
	put(ctx context.Context, state string, p *pendingState) error
	// take consumes state if it is pending, unexpired and bound to
	// subjectKey. It returns the connect, or why the state is refused
	// (p == nil, err == nil), or err when the store failed (the state is
	// then not consumed, unless the store could not tell).
	take(ctx context.Context, state, subjectKey string, now time.Time) (p *pendingState, why string, err error)
}

// Why a state is refused.
const (
	stateUnknown      = "the state is unknown or was already used: connect again"
	stateExpired      = "the state has expired: connect again"
	stateOtherSubject = "the state was issued to another user"
)

// stateStore holds the connects in progress in memory, at most max of
// them and perSubject of one subject (the oldest is dropped first: of all,
// or of that subject).
type stateStore struct {
	mu         sync.Mutex
	m          map[string]*pendingState
	order      []string            // insertion order; may hold states already taken
	bySubject  map[string][]string // a subject's live states, oldest first
	max        int
	perSubject int
}

func newStateStore(max, perSubject int) *stateStore {
	return &stateStore{m: map[string]*pendingState{}, bySubject: map[string][]string{}, max: max, perSubject: perSubject}
}

func (s *stateStore) put(_ context.Context, state string, p *pendingState) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[state] = p
	s.order = append(s.order, state)
	mine := append(s.bySubject[p.subjectKey], state)
	s.bySubject[p.subjectKey] = mine
	for len(mine) > s.perSubject {
		s.drop(mine[0])
		mine = s.bySubject[p.subjectKey]
	}
	for len(s.m) > s.max && len(s.order) > 0 {
		s.drop(s.order[0])
		s.order = s.order[1:]
	}
	if len(s.order) > 2*len(s.m)+64 { // drop taken states from the queue
		live := s.order[:0]
		for _, st := range s.order {
			if _, ok := s.m[st]; ok {
				live = append(live, st)
			}
		}
		s.order = live
	}
	return nil
}

// drop forgets state, if it is pending. s.mu is held.
func (s *stateStore) drop(state string) {
	p := s.m[state]
	if p == nil {
		return
	}
	delete(s.m, state)
	mine := s.bySubject[p.subjectKey]
	if i := slices.Index(mine, state); i >= 0 {
		mine = slices.Delete(mine, i, i+1)
	}
	if len(mine) == 0 {
		delete(s.bySubject, p.subjectKey)
	} else {
		s.bySubject[p.subjectKey] = mine
	}
}

// take consumes state if it is pending, unexpired and bound to subjectKey.
// A state of another subject is left in place (its owner may still use
// it); an expired one is dropped.
func (s *stateStore) take(_ context.Context, state, subjectKey string, now time.Time) (*pendingState, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.m[state]
	switch {
	case p == nil:
		return nil, stateUnknown, nil
	case !now.Before(p.expires):
		s.drop(state)
		return nil, stateExpired, nil
	case subtle.ConstantTimeCompare([]byte(p.subjectKey), []byte(subjectKey)) != 1:
		return nil, stateOtherSubject, nil
	}
	s.drop(state)
	return p, "", nil
}

// sharedPending keeps the connects in progress in a store shared by the
// fleet, filed under their subject key and a hash of their state: a state
// of another subject is simply not found there (and so left to its
// owner), which is reported as unknown.
type sharedPending struct {
	ps         tokenstore.PendingStore
	ttl        time.Duration
	perSubject int
}

// pendingRecordV1 is the version byte of an encoded pendingState:
//
//	1 | expires, Unix ns, big endian [8] | uvarint(len(subject key)) | subject key | verifier
const pendingRecordV1 = 1

func (s *sharedPending) put(ctx context.Context, state string, p *pendingState) error {
	return s.ps.PutPending(ctx, p.subjectKey, pendingID(state), encodePending(p), s.ttl, s.perSubject)
}

func (s *sharedPending) take(ctx context.Context, state, subjectKey string, now time.Time) (*pendingState, string, error) {
	rec, err := s.ps.TakePending(ctx, subjectKey, pendingID(state))
	switch {
	case errors.Is(err, tokenstore.ErrNotFound):
		return nil, stateUnknown, nil
	case errors.Is(err, tokenstore.ErrTampered), errors.Is(err, tokenstore.ErrWrongKey):
		// Consumed, and not to be trusted.
		return nil, stateUnknown, nil
	case err != nil:
		return nil, "", err
	}
	p, ok := decodePending(rec)
	switch {
	case !ok || subtle.ConstantTimeCompare([]byte(p.subjectKey), []byte(subjectKey)) != 1:
		return nil, stateUnknown, nil
	case !now.Before(p.expires):
		return nil, stateExpired, nil
	}
	return p, "", nil
}

// pendingID is the name of a state in a shared store: a hash, so that
// whoever reads the store cannot replay a state (the cookie holds it).
func pendingID(state string) string {
	sum := sha256.Sum256([]byte("tokengate pending state\x00" + state))
	return hex.EncodeToString(sum[:])
}

func encodePending(p *pendingState) []byte {
	b := make([]byte, 9, 9+binary.MaxVarintLen64+len(p.subjectKey)+len(p.verifier))
	b[0] = pendingRecordV1
	binary.BigEndian.PutUint64(b[1:], uint64(p.expires.UnixNano()))
	b = binary.AppendUvarint(b, uint64(len(p.subjectKey)))
	b = append(b, p.subjectKey...)
	return append(b, p.verifier...)
}

func decodePending(b []byte) (*pendingState, bool) {
	if len(b) < 9 || b[0] != pendingRecordV1 {
		return nil, false
	}
	p := &pendingState{expires: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:])))}
	n, w := binary.Uvarint(b[9:])
	if w <= 0 || n > uint64(len(b)-9-w) {
		return nil, false
	}
	rest := b[9+w:]
	p.subjectKey, p.verifier = string(rest[:n]), string(rest[n:])
	return p, true
}

// randomState is 32 random bytes in unpadded base64url: 43 characters.
func randomState() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails
	return base64.RawURLEncoding.EncodeToString(b)
}

// ServeFlow serves the connect, callback, disconnect and status paths of an
// authorization_code Gate for subject (which must come from a trusted
// source, see Config.Subject), and reports whether r was one of them.
// Wrap calls it; a server that is not built on http.Handler (the Caddy
// module) calls it itself before AuthorizeSubject.
func (g *Gate) ServeFlow(w http.ResponseWriter, r *http.Request, subject string) bool {
	if g.users == nil {
		return false
	}
	switch r.URL.Path {
	case g.cfg.ConnectPath:
		g.connect(w, r, subject)
	case g.cfg.CallbackPath:
		g.callback(w, r, subject)
	case g.cfg.DisconnectPath:
		g.disconnect(w, r, subject)
	case g.cfg.StatusPath:
		g.serveStatus(w, r, subject)
	default:
		return false
	}
	return true
}

func (g *Gate) connectEvent(outcome string) {
	if o, ok := g.cfg.Observer.(UserObserver); ok {
		o.Connect(outcome)
	}
}

func (g *Gate) connect(w http.ResponseWriter, r *http.Request, subject string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		g.flowError(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "use GET to connect")
		return
	}
	if subject == "" {
		g.flowError(w, r, http.StatusUnauthorized, CodeUnauthenticated, "log in before connecting a TaskNation account")
		return
	}
	state := randomState()
	p := &pendingState{subjectKey: g.users.subjectKey(subject), expires: g.clock.Now().Add(g.cfg.StateLifetime)}
	var opts []oauth2.AuthCodeOption
	if !g.cfg.DisablePKCE {
		p.verifier = oauth2.GenerateVerifier()
		opts = append(opts, oauth2.S256ChallengeOption(p.verifier))
	}
	if err := g.users.states.put(r.Context(), state, p); err != nil {
		g.logger().Error("storing the connect state failed", zap.Error(err))
		g.connectEvent("store_unavailable")
		g.flowError(w, r, http.StatusServiceUnavailable, "store_unavailable", "the connect could not be started: try again")
		return
	}
	http.SetCookie(w, &http.Cookie{
		Name:     stateCookie,
		Value:    state,
		Path:     g.publicPath(g.cfg.CallbackPath),
		MaxAge:   int(g.cfg.StateLifetime / time.Second),
		HttpOnly: true,
		Secure:   g.users.secure,
		SameSite: http.SameSiteLaxMode, // sent on the authorization server's top-level redirect back
	})
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Referrer-Policy", "no-referrer")
	g.connectEvent("started")
	http.Redirect(w, r, g.endpoint.oc.AuthCodeURL(state, opts...), http.StatusFound)
}

func (g *Gate) callback(w http.ResponseWriter, r *http.Request, subject string) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET")
		g.flowError(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "the callback takes GET")
		return
	}
	fail := func(status int, code, desc string) {
		g.connectEvent(code)
		g.logger().Info("connect callback refused", zap.String("error", code), zap.String("reason", desc))
		g.flowError(w, r, status, code, desc)
	}
	if len(r.URL.RawQuery) > g.cfg.MaxCallbackQuery {
		fail(http.StatusBadRequest, "invalid_request", "the callback's query is too long")
		return
	}
	q := r.URL.Query()
	for k, vs := range q {
		if len(vs) > 1 {
			fail(http.StatusBadRequest, "invalid_request", "the callback repeats a parameter")
			return
		}
		if len(k) > 64 || len(vs[0]) > g.cfg.MaxCallbackQuery/4 {
			fail(http.StatusBadRequest, "invalid_request", "a callback parameter is too long")
			return
		}
	}
	if subject == "" {
		fail(http.StatusUnauthorized, CodeUnauthenticated, "log in before connecting a TaskNation account")
		return
	}
	state := q.Get("state")
	if state == "" {
		fail(http.StatusBadRequest, "invalid_state", "the callback has no state: connect again")
		return
	}
	c, err := r.Cookie(stateCookie)
	if err != nil || subtle.ConstantTimeCompare([]byte(c.Value), []byte(state)) != 1 {
		fail(http.StatusBadRequest, "invalid_state", "the state was not issued to this browser: connect again (cookies must be enabled)")
		return
	}
	p, why, err := g.users.states.take(r.Context(), state, g.users.subjectKey(subject), g.clock.Now())
	if err != nil {
		g.logger().Error("reading the connect state failed", zap.Error(err))
		fail(http.StatusServiceUnavailable, "store_unavailable", "the connect state could not be read: try again")
		return
	}
	if p == nil {
		fail(http.StatusBadRequest, "invalid_state", why)
		return
	}
	// The state is spent: clear its cookie whatever happens next.
	http.SetCookie(w, &http.Cookie{Name: stateCookie, Value: "", Path: g.publicPath(g.cfg.CallbackPath), MaxAge: -1,
		HttpOnly: true, Secure: g.users.secure, SameSite: http.SameSiteLaxMode})
	if e := q.Get("error"); e != "" {
		code := "authorization_failed"
		if isErrorCode(e) {
			code = e
		}
		fail(http.StatusBadRequest, code, "TaskNation did not authorize the connection ("+code+")")
		return
	}
	code := q.Get("code")
	if code == "" {
		fail(http.StatusBadRequest, "invalid_request", "the callback has neither a code nor an error")
		return
	}
	if strings.ContainsFunc(code, func(c rune) bool { return c < 0x21 || c == 0x7f }) {
		// RFC 6749 codes are visible ASCII: this is not one of TaskNation's.
		fail(http.StatusBadRequest, "invalid_request", "the code has characters no authorization code has")
		return
	}
	// The code is single use: finish the exchange even if the browser
	// goes away.
	ctx := context.WithoutCancel(r.Context())
	tok, err := g.endpoint.exchange(ctx, code, p.verifier)
	if err != nil {
		var ee *EndpointError
		if errors.As(err, &ee) && ee.Kind == KindRejected && ee.Code == "invalid_grant" {
			fail(http.StatusBadRequest, "invalid_grant", "TaskNation refused the authorization code (expired or already used): connect again")
			return
		}
		g.logger().Warn("authorization code exchange failed", zap.Error(err))
		fail(http.StatusBadGateway, "exchange_failed", "the token request failed: "+describeErr(err)+"; connect again")
		return
	}
	if tok.RefreshToken == "" {
		g.logger().Warn("the authorization server issued no refresh token (was offline_access granted?); the user must connect again when the access token expires")
	} else {
		tok.RefreshExpiry = tok.ObtainedAt.Add(g.cfg.RefreshTokenLifetime)
	}
	tok.ConnectedAt = tok.ObtainedAt
	key := p.subjectKey
	tok.Version = newLineage()
	if err = g.users.store(ctx, key, tok); err != nil {
		g.logger().Error("storing the new user tokens failed", zap.Error(err))
		fail(http.StatusServiceUnavailable, "store_failed", "the tokens could not be stored: connect again")
		return
	}
	g.connectEvent("connected")
	g.lifecycle(EventConnected, key, subject, tok.RefreshExpiry)
	g.logger().Info("user connected", zap.String("subject_key", key), zap.Strings("scopes", tok.Scopes))
	if g.cfg.ConnectedRedirect != "" {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Referrer-Policy", "no-referrer")
		http.Redirect(w, r, g.cfg.ConnectedRedirect, http.StatusSeeOther)
		return
	}
	g.flowPage(w, r, http.StatusOK, flowPage{Connected: true, Title: "TaskNation account connected",
		Message: "Your TaskNation account is connected. You can close this page."}, map[string]any{"status": "connected"})
}

func (g *Gate) disconnect(w http.ResponseWriter, r *http.Request, subject string) {
	if r.Method != http.MethodPost && r.Method != http.MethodDelete {
		w.Header().Set("Allow", "POST, DELETE")
		g.flowError(w, r, http.StatusMethodNotAllowed, "method_not_allowed", "use POST to disconnect")
		return
	}
	// A cross-site form must not disconnect the user behind the browser's
	// stored credentials.
	if err := http.NewCrossOriginProtection().Check(r); err != nil {
		g.flowError(w, r, http.StatusForbidden, "cross_origin", "cross-origin disconnect refused")
		return
	}
	if subject == "" {
		g.flowError(w, r, http.StatusUnauthorized, CodeUnauthenticated, "log in before disconnecting")
		return
	}
	if err := g.Disconnect(r.Context(), subject); errors.Is(err, tokenstore.ErrNotReplicated) {
		g.logger().Error("disconnect not confirmed by the store's replicas", zap.Error(err))
		g.flowError(w, r, http.StatusServiceUnavailable, "store_failed", "the disconnect could not be confirmed; try again")
		return
	} else if err != nil {
		g.logger().Error("disconnect failed", zap.Error(err))
		g.flowError(w, r, http.StatusServiceUnavailable, "store_failed", "the tokens could not be deleted")
		return
	}
	g.logger().Info("user disconnected", zap.String("subject_key", g.users.subjectKey(subject)))
	g.flowPage(w, r, http.StatusOK, flowPage{Title: "TaskNation account disconnected",
		Message: "Your TaskNation account is disconnected."}, map[string]any{"status": "disconnected"})
}

// publicPath is path as the browser sees it: behind the public prefix
// that a router in front strips (see Config.RedirectURI).
func (g *Gate) publicPath(path string) string { return g.cfg.publicPrefix + path }

// isErrorCode reports whether e is an RFC 6749 error code (%x20-21 /
// %x23-5B / %x5D-7E), restricted here to what codes really look like, so
// that nothing odd is echoed.
func isErrorCode(e string) bool {
	if len(e) > 64 {
		return false
	}
	for _, c := range e {
		if (c < 'a' || c > 'z') && c != '_' {
			return false
		}
	}
	return true
}

// describeErr names a token-request failure for a person, without server
// text.
func describeErr(err error) string {
	var ee *EndpointError
	if errors.As(err, &ee) {
		return describe(ee)
	}
	return "the token endpoint could not be reached"
}

// flowPage is what a person sees at the end of a connect.
type flowPage struct {
	Connected      bool
	Title, Message string
	Code           string
	ConnectURL     string
}

var flowTmpl = template.Must(template.New("flow").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{.Title}}</title></head>
<body>
<h1 id="title">{{.Title}}</h1>
<p id="message">{{.Message}}</p>
{{- if .Code}}
<p>Error: <code id="error">{{.Code}}</code></p>
{{- end}}
{{- if .ConnectURL}}
<p><a id="retry" href="{{.ConnectURL}}">Try again</a></p>
{{- end}}
</body></html>
`))

// wantsHTML reports whether the client is a browser rather than an API
// client: it asks for text/html.
func wantsHTML(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), "text/html")
}

func (g *Gate) flowError(w http.ResponseWriter, r *http.Request, status int, code, desc string) {
	// The callback's URL holds the code and state: a link followed from
	// its page must not send them on as Referer.
	w.Header().Set("Referrer-Policy", "no-referrer")
	connect := g.users.connectURL
	if !wantsHTML(r) {
		writeJSONError(w, status, errorBody{Error: code, Description: desc, ConnectURL: connect})
		return
	}
	g.flowPage(w, r, status, flowPage{Title: "TaskNation account: the request did not go through", Message: desc, Code: code, ConnectURL: connect}, nil)
}

// flowPage answers HTML to browsers, else the JSON of js.
func (g *Gate) flowPage(w http.ResponseWriter, r *http.Request, status int, p flowPage, js map[string]any) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if js != nil && !wantsHTML(r) {
		h.Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(js)
		return
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'none'")
	w.WriteHeader(status)
	_ = flowTmpl.Execute(w, p)
}
