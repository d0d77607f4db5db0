package tasknationtest

import (
	"cmp"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"mime"
	"net/http"
	"slices"
	"strings"
	"time"
)

// maxFormBytes caps token and introspection request bodies.
const maxFormBytes = 64 << 10

// tokenBody is a successful token answer; ExpiresIn is filled in when written.
type tokenBody struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token,omitempty"`
	Scope        string `json:"scope,omitempty"`
}

// tokenResult is the outcome of a token request, computed before it is
// written (or dropped by FaultLostAfterRotation).
type tokenResult struct {
	err       *oauthError
	body      tokenBody
	expiresAt time.Time
}

// handleToken serves POST /oauth2/token. Order: count, latency, responder,
// faults, grant processing, answer, OnTokenAnswer hook.
func (s *Server) handleToken(w http.ResponseWriter, r *http.Request) {
	var grant string
	var formErr error
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
		formErr = r.ParseForm()
		grant = r.PostForm.Get("grant_type")
	}
	s.countToken(grant)
	ev := TokenEvent{Grant: grant}

	if !s.delay(r) {
		s.answered(nil, ev) // abandoned: nothing written
		return
	}
	if h := s.responder.Load(); h != nil {
		rec := &statusRecorder{ResponseWriter: w}
		(*h)(rec, r)
		if rec.hijacked {
			s.answered(nil, ev)
			return
		}
		ev.Status = cmp.Or(rec.status, http.StatusOK) // net/http's implicit 200
		s.answered(w, ev)
		return
	}
	f := s.takeFault(grant)
	if f.RetryAfter != "" && (f.Kind == FaultStatus || f.Kind == FaultReject) {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	switch f.Kind {
	case FaultStatus:
		writeOAuthError(w, errf(f.Status, "server_error", "the authorization server is temporarily unavailable"))
		ev.Status = f.Status
		s.answered(w, ev)
		return
	case FaultRedirect:
		writeRedirect(w, f)
		ev.Status = f.Status
		s.answered(w, ev)
		return
	case FaultReject:
		writeOAuthError(w, rejection(r, f))
		ev.Status = f.Status
		s.answered(w, ev)
		return
	case FaultGarbage:
		writeGarbage(w)
		ev.Status = http.StatusOK
		s.answered(w, ev)
		return
	case FaultDrop:
		ev.Lost = true
		s.dropConnection(w, ev)
		return
	}
	res := s.token(r, formErr)
	ev.Issued = res.err == nil
	if f.Kind == FaultLostAfterRotation {
		ev.Lost = true
		s.dropConnection(w, ev)
		return
	}
	if res.err != nil {
		writeOAuthError(w, res.err)
		ev.Status = res.err.status
		s.answered(w, ev)
		return
	}
	body := res.body
	body.ExpiresIn = max(int64(res.expiresAt.Sub(s.now())/time.Second), 0)
	writeJSON(w, http.StatusOK, body)
	ev.Status = http.StatusOK
	s.answered(w, ev)
}

// token validates the request and runs its grant.
func (s *Server) token(r *http.Request, formErr error) tokenResult {
	if r.Method != http.MethodPost {
		return tokenResult{err: errf(http.StatusMethodNotAllowed, "invalid_request", "the token endpoint accepts POST only")}
	}
	if e := checkForm(r, formErr); e != nil {
		return tokenResult{err: e}
	}
	grant := r.PostForm.Get("grant_type")
	if grant == "" {
		return tokenResult{err: errf(http.StatusBadRequest, "invalid_request", "missing grant_type")}
	}
	client, e := s.authenticateClient(r)
	if e != nil {
		return tokenResult{err: e}
	}
	if !slices.Contains(allGrants, grant) {
		return tokenResult{err: errf(http.StatusBadRequest, "unsupported_grant_type", "grant type %q is not supported", grant)}
	}
	if !client.allowsGrant(grant) {
		return tokenResult{err: errf(http.StatusBadRequest, "unauthorized_client", "the client may not use grant type %q", grant)}
	}
	s.recordForm(r.PostForm)
	if e := client.checkResources(r.PostForm["resource"]); e != nil {
		return tokenResult{err: e}
	}
	switch grant {
	case GrantClientCredentials:
		return s.clientCredentials(r, client)
	case GrantAuthorizationCode:
		return s.authorizationCode(r, client)
	default:
		return s.refreshGrant(r, client)
	}
}

// checkForm requires a parsed form body with no repeated parameter.
func checkForm(r *http.Request, formErr error) *oauthError {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return errf(http.StatusBadRequest, "invalid_request", "the body must be application/x-www-form-urlencoded")
	}
	if formErr != nil {
		return errf(http.StatusBadRequest, "invalid_request", "malformed form body")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 && k != "resource" && k != "audience" { // RFC 8707 §2, RFC 8693 §2.1
			return errf(http.StatusBadRequest, "invalid_request", "parameter %q is repeated", k)
		}
	}
	return nil
}

func (s *Server) clientCredentials(r *http.Request, c *clientState) tokenResult {
	scopes := parseScopes(r.PostForm.Get("scope"))
	for _, sc := range scopes {
		if !c.allowsScope(sc) {
			return tokenResult{err: errf(http.StatusBadRequest, "invalid_scope", "scope %q is unknown or not allowed for this client", sc)}
		}
	}
	// offline_access is never granted without a user.
	scopes = slices.DeleteFunc(scopes, func(sc string) bool { return sc == ScopeOfflineAccess })
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	at, a := s.newAccessLocked(c.id, "", scopes, nil, now)
	return tokenResult{body: tokenBody{AccessToken: at, TokenType: "bearer", Scope: strings.Join(scopes, " ")}, expiresAt: a.expiresAt}
}

func (s *Server) authorizationCode(r *http.Request, c *clientState) tokenResult {
	code := r.PostForm.Get("code")
	if code == "" {
		return tokenResult{err: errf(http.StatusBadRequest, "invalid_request", "missing code")}
	}
	invalid := func(desc string) tokenResult {
		return tokenResult{err: errf(http.StatusBadRequest, "invalid_grant", "%s", desc)}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	ac := s.codes[code]
	if ac == nil {
		return invalid("unknown authorization code")
	}
	if ac.used {
		if ac.family != nil {
			ac.family.revoked = true
		}
		return invalid("authorization code already used; tokens issued from it are revoked")
	}
	ac.used = true // single use, even when the exchange fails below
	if !now.Before(ac.expiresAt) {
		return invalid("authorization code expired")
	}
	if ac.req.clientID != c.id {
		return invalid("authorization code was issued to another client")
	}
	if r.PostForm.Get("redirect_uri") != ac.req.redirectURI {
		return invalid("redirect_uri does not match the authorization request")
	}
	verifier := r.PostForm.Get("code_verifier")
	switch {
	case ac.req.challenge != "" && verifier == "":
		return invalid("missing code_verifier")
	case ac.req.challenge != "":
		sum := sha256.Sum256([]byte(verifier))
		if subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(ac.req.challenge)) != 1 {
			return invalid("code_verifier does not match the code_challenge")
		}
	case verifier != "":
		return invalid("code_verifier sent but the authorization request had no code_challenge")
	}

	fam := &family{
		clientID:      c.id,
		subject:       ac.req.subject,
		scopes:        slices.Clone(ac.req.scopes),
		refreshExpiry: now.Add(s.opts.RefreshLifetime),
	}
	ac.family = fam
	at, a := s.newAccessLocked(c.id, fam.subject, fam.scopes, fam, now)
	body := tokenBody{AccessToken: at, TokenType: "bearer", Scope: strings.Join(fam.scopes, " ")}
	if slices.Contains(fam.scopes, ScopeOfflineAccess) {
		body.RefreshToken = s.newRefreshLocked(fam, at, now)
	}
	return tokenResult{body: body, expiresAt: a.expiresAt}
}

func (s *Server) refreshGrant(r *http.Request, c *clientState) tokenResult {
	rtValue := r.PostForm.Get("refresh_token")
	if rtValue == "" {
		return tokenResult{err: errf(http.StatusBadRequest, "invalid_request", "missing refresh_token")}
	}
	invalid := func(desc string) tokenResult {
		return tokenResult{err: errf(http.StatusBadRequest, "invalid_grant", "%s", desc)}
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	rt := s.refresh[rtValue]
	if rt == nil {
		return invalid("unknown refresh token")
	}
	fam := rt.family
	if fam.clientID != c.id {
		return invalid("refresh token was issued to another client")
	}
	reused := !rt.rotatedAt.IsZero()
	stale := reused && now.Sub(rt.rotatedAt) > s.opts.GracePeriod
	if stale {
		s.staleReuses.Add(1)
	}
	if fam.revoked {
		return invalid("refresh token revoked")
	}
	if !now.Before(fam.refreshExpiry) {
		return invalid("refresh token expired")
	}
	if stale {
		fam.revoked = true
		return invalid("refresh token reused after rotation; the token family is revoked")
	}
	scopes := fam.scopes
	if sp := r.PostForm.Get("scope"); sp != "" {
		scopes = parseScopes(sp)
		for _, sc := range scopes {
			if !slices.Contains(fam.scopes, sc) {
				return tokenResult{err: errf(http.StatusBadRequest, "invalid_scope", "scope %q exceeds the scope originally granted", sc)}
			}
		}
	}
	if reused {
		s.graceReuses.Add(1)
	} else {
		rt.rotatedAt = now
		if old := s.access[rt.access]; old != nil {
			old.revoked = true
		}
	}
	// Within the grace window a reuse gets a fresh pair; earlier successors stay valid.
	at, a := s.newAccessLocked(c.id, fam.subject, scopes, fam, now)
	return tokenResult{
		body: tokenBody{
			AccessToken:  at,
			TokenType:    "bearer",
			RefreshToken: s.newRefreshLocked(fam, at, now),
			Scope:        strings.Join(scopes, " "),
		},
		expiresAt: a.expiresAt,
	}
}

func (s *Server) newAccessLocked(clientID, subject string, scopes []string, fam *family, now time.Time) (string, *accessToken) {
	v := randomToken(AccessTokenPrefix)
	a := &accessToken{
		clientID:  clientID,
		subject:   subject,
		scopes:    slices.Clone(scopes),
		issuedAt:  now,
		expiresAt: now.Add(s.opts.TokenLifetime),
		family:    fam,
	}
	s.access[v] = a
	return v, a
}

func (s *Server) newRefreshLocked(fam *family, accessValue string, now time.Time) string {
	v := randomToken(RefreshTokenPrefix)
	s.refresh[v] = &refreshToken{family: fam, access: accessValue, issuedAt: now}
	return v
}

// clientForm reads the form of a POST to endpoint (a form no larger than
// maxFormBytes) and authenticates its client as the token endpoint does;
// on failure it has answered with the RFC 6749 error.
func (s *Server) clientForm(w http.ResponseWriter, r *http.Request, endpoint string) (*clientState, bool) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeOAuthError(w, errf(http.StatusMethodNotAllowed, "invalid_request", "the %s endpoint accepts POST only", endpoint))
		return nil, false
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if e := checkForm(r, r.ParseForm()); e != nil {
		writeOAuthError(w, e)
		return nil, false
	}
	c, e := s.authenticateClient(r)
	if e != nil {
		writeOAuthError(w, e)
		return nil, false
	}
	return c, true
}

// handleIntrospect serves RFC 7662 token introspection for access and
// refresh tokens of the authenticated client.
func (s *Server) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	c, ok := s.clientForm(w, r, "introspection")
	if !ok {
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "missing token"))
		return
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if a := s.access[tok]; a != nil && a.clientID == c.id && a.activeAt(now) {
		writeJSON(w, http.StatusOK, map[string]any{
			"active":     true,
			"client_id":  a.clientID,
			"sub":        a.subject,
			"scope":      strings.Join(a.scopes, " "),
			"token_type": "bearer",
			"exp":        a.expiresAt.Unix(),
			"iat":        a.issuedAt.Unix(),
		})
		return
	}
	if rt := s.refresh[tok]; rt != nil && rt.family.clientID == c.id && s.refreshUsableLocked(rt, now) {
		writeJSON(w, http.StatusOK, map[string]any{
			"active":     true,
			"client_id":  rt.family.clientID,
			"sub":        rt.family.subject,
			"scope":      strings.Join(rt.family.scopes, " "),
			"token_type": "refresh_token",
			"exp":        rt.family.refreshExpiry.Unix(),
			"iat":        rt.issuedAt.Unix(),
		})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"active": false})
}
