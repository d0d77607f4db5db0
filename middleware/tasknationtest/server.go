package tasknationtest

import (
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"html/template"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Default credentials and subject of a server built with zero Options.
const (
	// DefaultClientID is the client ID of the client registered when
	// Options.Clients is nil.
	DefaultClientID = "tn-test-client"
	// DefaultClientSecret is the secret of the default client.
	DefaultClientSecret = "tn-test-secret"
	// DefaultUser is the subject approved by /oauth2/auth when the request
	// carries no login_hint.
	DefaultUser = "user-1"
)

// Grant types served by the token endpoint.
const (
	// GrantAuthorizationCode is the authorization_code grant (user context).
	GrantAuthorizationCode = "authorization_code"
	// GrantClientCredentials is the client_credentials grant (application context).
	GrantClientCredentials = "client_credentials"
	// GrantRefreshToken is the refresh_token grant.
	GrantRefreshToken = "refresh_token"
)

// ScopeOfflineAccess is the scope that yields refresh tokens.
const ScopeOfflineAccess = "offline_access"

// Token prefixes. Tokens are the prefix followed by 32 random bytes in
// unpadded base64url.
const (
	// AccessTokenPrefix starts every access token.
	AccessTokenPrefix = "tn_at_"
	// RefreshTokenPrefix starts every refresh token.
	RefreshTokenPrefix = "tn_rt_"
	// CodePrefix starts every authorization code.
	CodePrefix = "tn_code_"
)

// Scopes maps every scope of the TaskNation catalog to its partner type
// ("supply", "demand" or "both"). Treat it as read-only.
var Scopes = map[string]string{
	"supply::businesses": "supply",
	"supply::leads":      "supply",
	"supply::messages":   "supply",
	"supply::reviews":    "supply",
	"demand::requests":   "demand",
	"demand::categories": "demand",
	"demand::search":     "demand",
	ScopeOfflineAccess:   "both",
}

// scopeDescriptions are shown on the consent page.
var scopeDescriptions = map[string]string{
	"supply::businesses": "Read/write business profiles",
	"supply::leads":      "Access and manage leads/negotiations",
	"supply::messages":   "Send and receive messages",
	"supply::reviews":    "Read business reviews",
	"demand::requests":   "Create and manage service requests",
	"demand::categories": "Browse service categories",
	"demand::search":     "Search for businesses",
	ScopeOfflineAccess:   "Receive refresh tokens (180-day validity)",
}

var allGrants = []string{GrantAuthorizationCode, GrantClientCredentials, GrantRefreshToken}

// Client is an OAuth client registered with the fake server.
type Client struct {
	// ID and Secret are the client credentials, sent as client_id and
	// client_secret in the token request body.
	ID, Secret string
	// RedirectURIs are the registered redirect URIs, matched exactly.
	RedirectURIs []string
	// Grants lists the grant types the client may use; nil allows all three.
	Grants []string
	// Scopes lists the scopes the client may request; nil allows the whole catalog.
	Scopes []string
	// AuthMethods lists how the client may authenticate (AuthSecretPost,
	// AuthSecretBasic, AuthPrivateKeyJWT, AuthTLSClient), at the token,
	// introspection and revocation endpoints alike; another method is
	// 401 invalid_client. Default: AuthSecretPost, plus AuthSecretBasic
	// when Options.AcceptBasicAuth is set.
	AuthMethods []string
	// PublicKey verifies the client's assertions (AuthPrivateKeyJWT): an
	// *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey.
	PublicKey crypto.PublicKey
	// KeyID, when set, is the kid an assertion must name.
	KeyID string
	// AssertionAlgorithm, when set, is the only JWS algorithm accepted
	// for assertions (RS256, PS256, ES256, EdDSA, ...). Default: any that
	// fits PublicKey.
	AssertionAlgorithm string
	// Certificate is the client's TLS certificate (AuthTLSClient): a
	// request authenticates when the certificate it presented has the
	// same SHA-256 over its DER encoding. (RFC 8705 §2.1 also allows
	// binding by subject DN under a trusted CA; the fake binds the
	// certificate itself, which needs no CA.)
	Certificate *x509.Certificate
	// Resources, when non-nil, are the resource indicators (RFC 8707) the
	// client may ask for: every token request must carry at least one
	// resource parameter, each in the list, or gets 400 invalid_target.
	Resources []string
}

// Options configure a Server. The zero value is a working server with one
// client (DefaultClientID / DefaultClientSecret) and no redirect URIs.
type Options struct {
	// Clients registered at start; nil registers one client with
	// DefaultClientID and DefaultClientSecret and no redirect URIs.
	Clients []Client
	// TokenLifetime is the access token lifetime; default 1h.
	TokenLifetime time.Duration
	// RefreshLifetime is the refresh token lifetime, counted from the
	// original authorization_code grant; default 180 days.
	RefreshLifetime time.Duration
	// GracePeriod is the window after a rotation during which the old refresh
	// token may be reused; default 60s, a negative value disables it.
	GracePeriod time.Duration
	// CodeLifetime is the authorization code (and consent form) lifetime;
	// default 10 minutes.
	CodeLifetime time.Duration
	// Now is the clock; default time.Now. Tests inject one to drive grace
	// windows and expiry without sleeping. It must be safe for concurrent use.
	Now func() time.Time
	// AcceptBasicAuth lets clients authenticate with HTTP Basic. By default,
	// like TaskNation, only client_id and client_secret in the form body are
	// accepted and Basic gets 401 invalid_client.
	AcceptBasicAuth bool
	// ConsentPage makes /oauth2/auth show an HTML consent page (title
	// "Authorize <client>", the scopes listed, buttons id="approve" and
	// id="deny") instead of approving at once. Each button's form POSTs
	// form_token (single use, valid for CodeLifetime) and decision
	// ("approve" or "deny") back to /oauth2/auth.
	ConsentPage bool
	// RevocationEndpoint serves POST /oauth2/revoke (RFC 7009), as a
	// generic authorization server would. TaskNation documents none, so
	// it is off by default.
	RevocationEndpoint bool
	// TLS serves https (a certificate of httptest's, see Certificate and
	// Client) and asks clients for a TLS certificate without requiring
	// one, for AuthTLSClient.
	TLS bool
	// OpenIDDiscoveryOnly serves the metadata at
	// /.well-known/openid-configuration only: the RFC 8414 document
	// answers 404, as at an OpenID provider that has none.
	OpenIDDiscoveryOnly bool
	// Listener, if set, is the listener the server serves on (for example a
	// fixed loopback port for a demo); the Server takes ownership of it.
	// Default: a new listener on 127.0.0.1:0.
	Listener net.Listener
}

// Server is a running fake TaskNation authorization server and API.
type Server struct {
	// URL is the base URL, "http://127.0.0.1:port", with no trailing slash.
	URL string

	opts      Options
	hs        *httptest.Server
	done      chan struct{}
	closeOnce sync.Once

	mu      sync.Mutex // guards everything below up to the counters
	clients map[string]*clientState
	codes   map[string]*authCode
	pending map[string]*pendingConsent
	access  map[string]*accessToken
	refresh map[string]*refreshToken

	tokenTotal  atomic.Int64
	apiTotal    atomic.Int64
	grantMu     sync.Mutex
	grantCount  map[string]int64
	staleReuses atomic.Int64 // rotated refresh tokens presented after the grace period
	graceReuses atomic.Int64 // rotated refresh tokens accepted within the grace period

	faultMu   sync.Mutex
	faults    []*activeFault
	latency   atomic.Int64 // time.Duration
	responder atomic.Pointer[http.HandlerFunc]

	revocations   atomic.Int64 // requests to the revocation endpoint
	revokedFamily atomic.Int64 // refresh tokens (families) it revoked
	revokeFail    atomic.Int64 // HTTP status the revocation endpoint fails with; 0: none

	authMu     sync.Mutex
	authCount  map[string]int64     // successful client authentications per method
	jtis       map[string]time.Time // client ID + jti of assertions seen → their exp; guarded by mu
	jtiReplays atomic.Int64
	formMu     sync.Mutex
	lastForm   url.Values
	lastHeader http.Header // of the last API request, without Authorization

	testHook   atomic.Pointer[func(event string)]
	answerHook atomic.Pointer[func(TokenEvent)]
}

type clientState struct {
	id, secret   string
	redirectURIs []string
	grants       []string
	scopes       []string // nil = catalog
	authMethods  []string
	publicKey    crypto.PublicKey
	keyID        string
	assertionAlg string
	certSHA256   []byte
	resources    []string // nil: no resource required
}

// checkResources applies Client.Resources to the resource parameters of
// a token request.
func (c *clientState) checkResources(got []string) *oauthError {
	if c.resources == nil {
		return nil
	}
	if len(got) == 0 {
		return errf(http.StatusBadRequest, "invalid_target", "a resource parameter is required")
	}
	for _, r := range got {
		if !slices.Contains(c.resources, r) {
			return errf(http.StatusBadRequest, "invalid_target", "resource %q is not allowed for this client", r)
		}
	}
	return nil
}

func (c *clientState) allowsGrant(g string) bool { return slices.Contains(c.grants, g) }

func (c *clientState) allowsScope(sc string) bool {
	if _, ok := Scopes[sc]; !ok {
		return false
	}
	return c.scopes == nil || slices.Contains(c.scopes, sc)
}

// family groups every token descended from one authorization_code exchange.
type family struct {
	clientID, subject string
	scopes            []string // granted by the original exchange
	refreshExpiry     time.Time
	revoked           bool
}

type accessToken struct {
	clientID, subject string
	scopes            []string
	issuedAt          time.Time
	expiresAt         time.Time
	revoked           bool
	family            *family // nil for client_credentials
}

func (a *accessToken) activeAt(now time.Time) bool {
	return !a.revoked && now.Before(a.expiresAt) && (a.family == nil || !a.family.revoked)
}

type refreshToken struct {
	family    *family
	access    string // the access token issued alongside
	issuedAt  time.Time
	rotatedAt time.Time // zero until first used
}

type authCode struct {
	req       authRequest
	expiresAt time.Time
	used      bool
	family    *family // set by the first successful exchange
}

// NewServer starts a server. The caller must call Close.
// It panics on an invalid Options.Clients entry (empty or duplicate ID,
// unknown grant or scope, redirect URI that is not an absolute URL).
func NewServer(opts Options) *Server {
	if opts.TokenLifetime <= 0 {
		opts.TokenLifetime = time.Hour
	}
	if opts.RefreshLifetime <= 0 {
		opts.RefreshLifetime = 180 * 24 * time.Hour
	}
	switch {
	case opts.GracePeriod == 0:
		opts.GracePeriod = 60 * time.Second
	case opts.GracePeriod < 0:
		opts.GracePeriod = 0
	}
	if opts.CodeLifetime <= 0 {
		opts.CodeLifetime = 10 * time.Minute
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Server{
		opts:       opts,
		done:       make(chan struct{}),
		clients:    map[string]*clientState{},
		codes:      map[string]*authCode{},
		pending:    map[string]*pendingConsent{},
		access:     map[string]*accessToken{},
		refresh:    map[string]*refreshToken{},
		grantCount: map[string]int64{},
		authCount:  map[string]int64{},
		jtis:       map[string]time.Time{},
	}
	clients := opts.Clients
	if clients == nil {
		clients = []Client{{ID: DefaultClientID, Secret: DefaultClientSecret}}
	}
	for _, c := range clients {
		s.AddClient(c)
	}
	s.opts.Clients = nil // the registry in s.clients is authoritative

	mux := http.NewServeMux()
	mux.HandleFunc("/oauth2/token", s.handleToken)
	mux.HandleFunc("/oauth2/auth", s.handleAuth)
	mux.HandleFunc("/oauth2/introspect", s.handleIntrospect)
	if !opts.OpenIDDiscoveryOnly {
		mux.HandleFunc("/.well-known/oauth-authorization-server", s.handleMetadata)
	}
	mux.HandleFunc("/.well-known/openid-configuration", s.handleMetadata)
	if opts.RevocationEndpoint {
		mux.HandleFunc("/oauth2/revoke", s.handleRevoke)
	}
	mux.HandleFunc("/api/", s.handleAPI)

	s.hs = httptest.NewUnstartedServer(mux)
	if opts.Listener != nil {
		s.hs.Listener.Close()
		s.hs.Listener = opts.Listener
	}
	if opts.TLS {
		s.hs.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
		s.hs.StartTLS()
	} else {
		s.hs.Start()
	}
	s.URL = strings.TrimSuffix(s.hs.URL, "/")
	return s
}

// Close stops the server, aborts requests waiting in SetLatency, and blocks
// until all outstanding requests have completed.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.hs.Close()
	})
}

// Certificate returns the server's TLS certificate with Options.TLS,
// nil otherwise.
func (s *Server) Certificate() *x509.Certificate { return s.hs.Certificate() }

// Client returns an HTTP client that trusts the server's certificate
// (Options.TLS), and a plain client otherwise.
func (s *Server) Client() *http.Client { return s.hs.Client() }

// LastTokenRequest returns the form of the last token request that was
// authenticated and allowed its grant, without its credentials
// (client_secret, client_assertion, code, code_verifier, refresh_token):
// what a test checks extra parameters (audience, resource) with. nil
// before any.
func (s *Server) LastTokenRequest() url.Values {
	s.formMu.Lock()
	defer s.formMu.Unlock()
	return maps.Clone(s.lastForm)
}

// LastAPIHeader returns the header of the last request the API received,
// without Authorization: what a test checks that a proxy dropped or added
// a header with. nil before any.
func (s *Server) LastAPIHeader() http.Header {
	s.formMu.Lock()
	defer s.formMu.Unlock()
	return s.lastHeader.Clone()
}

func (s *Server) recordAPIHeader(h http.Header) {
	c := h.Clone()
	delete(c, "Authorization")
	s.formMu.Lock()
	s.lastHeader = c
	s.formMu.Unlock()
}

func (s *Server) recordForm(form url.Values) {
	f := maps.Clone(form)
	for _, k := range []string{"client_secret", "client_assertion", "code", "code_verifier", "refresh_token"} {
		delete(f, k)
	}
	s.formMu.Lock()
	s.lastForm = f
	s.formMu.Unlock()
}

// TokenURL returns the token endpoint, URL+"/oauth2/token".
func (s *Server) TokenURL() string { return s.URL + "/oauth2/token" }

// AuthURL returns the authorization endpoint, URL+"/oauth2/auth".
func (s *Server) AuthURL() string { return s.URL + "/oauth2/auth" }

// APIURL returns the base of the fake API, URL+"/api".
func (s *Server) APIURL() string { return s.URL + "/api" }

// IntrospectURL returns the RFC 7662 introspection endpoint, URL+"/oauth2/introspect".
func (s *Server) IntrospectURL() string { return s.URL + "/oauth2/introspect" }

// AddClient registers a client after start. It panics if the ID is empty or
// already registered, or if a grant, scope or redirect URI is invalid.
func (s *Server) AddClient(c Client) {
	if c.ID == "" {
		panic("tasknationtest: client with empty ID")
	}
	cs := &clientState{id: c.ID, secret: c.Secret, grants: slices.Clone(c.Grants), resources: slices.Clone(c.Resources)}
	cs.registerAuth(s, c)
	if c.Grants == nil {
		cs.grants = slices.Clone(allGrants)
	}
	for _, g := range cs.grants {
		if !slices.Contains(allGrants, g) {
			panic(fmt.Sprintf("tasknationtest: client %q: unknown grant %q", c.ID, g))
		}
	}
	if c.Scopes != nil {
		cs.scopes = slices.Clone(c.Scopes)
		for _, sc := range cs.scopes {
			if _, ok := Scopes[sc]; !ok {
				panic(fmt.Sprintf("tasknationtest: client %q: unknown scope %q", c.ID, sc))
			}
		}
	}
	for _, u := range c.RedirectURIs {
		mustRedirectURI(u)
	}
	cs.redirectURIs = slices.Clone(c.RedirectURIs)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.clients[c.ID]; dup {
		panic(fmt.Sprintf("tasknationtest: duplicate client %q", c.ID))
	}
	s.clients[c.ID] = cs
}

// AddRedirectURI registers uri (matched exactly) for clientID, for example
// once a gateway's port is known. It panics if the client is unknown or uri
// is not an absolute URL without a fragment.
func (s *Server) AddRedirectURI(clientID, uri string) {
	mustRedirectURI(uri)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[clientID]
	if c == nil {
		panic(fmt.Sprintf("tasknationtest: AddRedirectURI: unknown client %q", clientID))
	}
	if !slices.Contains(c.redirectURIs, uri) {
		c.redirectURIs = append(c.redirectURIs, uri)
	}
}

func mustRedirectURI(uri string) {
	u, err := url.Parse(uri)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		panic(fmt.Sprintf("tasknationtest: invalid redirect URI %q: want an absolute URL without fragment", uri))
	}
}

// TokenRequests returns how many token-endpoint requests arrived with the
// given grant_type, counted on arrival (before latency, responder and
// faults). grant "" returns the total of all requests, including those with
// an unknown or missing grant type or a wrong method.
func (s *Server) TokenRequests(grant string) int64 {
	if grant == "" {
		return s.tokenTotal.Load()
	}
	s.grantMu.Lock()
	defer s.grantMu.Unlock()
	return s.grantCount[grant]
}

// APIRequests returns how many requests reached /api/, whatever their outcome.
func (s *Server) APIRequests() int64 { return s.apiTotal.Load() }

// StaleRefreshReuses returns how many refresh_token grant requests presented
// a refresh token that had been rotated more than GracePeriod before: the
// reuse that is answered invalid_grant and revokes the token family. It is
// the oracle for "no already-rotated refresh token was sent after the grace
// window". Such a request counts whatever else is wrong with it (the family
// may already be revoked or past its lifetime), as long as the grant was
// processed: requests answered before that (a fault other than
// FaultLostAfterRotation, SetTokenResponder, a failed client
// authentication, a refresh token of another client) are not examined.
func (s *Server) StaleRefreshReuses() int64 { return s.staleReuses.Load() }

// GraceRefreshReuses returns how many refresh_token grant requests presented
// an already-rotated refresh token within the grace period and were
// accepted with a fresh pair (a retry after a lost answer, or two refreshes
// racing).
func (s *Server) GraceRefreshReuses() int64 { return s.graceReuses.Load() }

// ResetCounters sets all request counters to zero, including
// StaleRefreshReuses and GraceRefreshReuses.
func (s *Server) ResetCounters() {
	s.grantMu.Lock()
	clear(s.grantCount)
	s.tokenTotal.Store(0)
	s.grantMu.Unlock()
	s.apiTotal.Store(0)
	s.staleReuses.Store(0)
	s.graceReuses.Store(0)
}

func (s *Server) countToken(grant string) {
	s.grantMu.Lock()
	s.tokenTotal.Add(1)
	if grant != "" {
		s.grantCount[grant]++
	}
	s.grantMu.Unlock()
}

// Active reports whether accessToken was issued by this server, has not
// expired and has not been revoked (directly, by rotation or with its family).
func (s *Server) Active(accessToken string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	a := s.access[accessToken]
	return a != nil && a.activeAt(now)
}

// RefreshActive reports whether refreshToken would be accepted by the
// refresh_token grant now: issued here, family not revoked, not past its
// lifetime, and either not yet used or used within the grace period.
func (s *Server) RefreshActive(refreshToken string) bool {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refresh[refreshToken]
	return rt != nil && s.refreshUsableLocked(rt, now)
}

func (s *Server) refreshUsableLocked(rt *refreshToken, now time.Time) bool {
	f := rt.family
	if f.revoked || !now.Before(f.refreshExpiry) {
		return false
	}
	return rt.rotatedAt.IsZero() || now.Sub(rt.rotatedAt) <= s.opts.GracePeriod
}

// Revoke revokes one access token; the API then answers it with 401
// invalid_token. Unknown tokens are ignored.
func (s *Server) Revoke(accessToken string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.access[accessToken]; a != nil {
		a.revoked = true
	}
}

func (s *Server) now() time.Time { return s.opts.Now() }

func (s *Server) hook(event string) {
	if f := s.testHook.Load(); f != nil {
		(*f)(event)
	}
}

// randomToken returns prefix + 32 random bytes in unpadded base64url.
func randomToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // never fails (crypto/rand panics instead)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// parseScopes splits a space-delimited scope parameter, dropping empty
// entries and duplicates while keeping order.
func parseScopes(param string) []string {
	var out []string
	for sc := range strings.SplitSeq(param, " ") {
		if sc != "" && !slices.Contains(out, sc) {
			out = append(out, sc)
		}
	}
	return out
}

// oauthError is an RFC 6749 error answer.
type oauthError struct {
	status      int
	code        string
	description string
}

type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

func errf(status int, code, format string, args ...any) *oauthError {
	return &oauthError{status: status, code: code, description: fmt.Sprintf(format, args...)}
}

// writeJSON writes v as a JSON answer that must not be cached. The answer
// carries a Content-Length, so that once flushed the client has all of it
// even while the handler is still running (see OnTokenAnswer).
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		// Only the package's own types are written; this is a bug.
		panic(fmt.Sprintf("tasknationtest: encoding a JSON answer: %v", err))
	}
	b = append(b, '\n') // as json.Encoder writes it
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	h.Set("Cache-Control", "no-store")
	h.Set("Pragma", "no-cache")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeOAuthError writes e as an RFC 6749 JSON error body.
func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	switch e.status {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Basic realm="tasknation"`)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", http.MethodPost)
	}
	writeJSON(w, e.status, errorBody{Error: e.code, ErrorDescription: e.description})
}

var errorPageTmpl = template.Must(template.New("error").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{.Title}} - TaskNation</title></head>
<body><h1>{{.Title}}</h1><p id="error">{{.Message}}</p></body></html>
`))

// writeErrorPage answers with a small HTML error page (used where RFC 6749
// forbids redirecting back to the client).
func writeErrorPage(w http.ResponseWriter, status int, title, message string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(status)
	_ = errorPageTmpl.Execute(w, struct{ Title, Message string }{title, message})
}

// handleMetadata serves RFC 8414 authorization server metadata.
func (s *Server) handleMetadata(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{Error: "invalid_request", ErrorDescription: "method not allowed"})
		return
	}
	authMethods := []string{AuthSecretPost, AuthSecretBasic, AuthPrivateKeyJWT}
	if s.opts.TLS {
		authMethods = append(authMethods, AuthTLSClient)
	}
	scopes := make([]string, 0, len(Scopes))
	for sc := range Scopes {
		scopes = append(scopes, sc)
	}
	slices.Sort(scopes)
	meta := map[string]any{
		"issuer":                                           s.URL,
		"authorization_endpoint":                           s.AuthURL(),
		"token_endpoint":                                   s.TokenURL(),
		"introspection_endpoint":                           s.IntrospectURL(),
		"scopes_supported":                                 scopes,
		"response_types_supported":                         []string{"code"},
		"grant_types_supported":                            allGrants,
		"token_endpoint_auth_methods_supported":            authMethods,
		"token_endpoint_auth_signing_alg_values_supported": []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"},
		"code_challenge_methods_supported":                 []string{"S256"},
	}
	if s.opts.RevocationEndpoint {
		meta["revocation_endpoint"] = s.RevocationURL()
	}
	writeJSON(w, http.StatusOK, meta)
}
