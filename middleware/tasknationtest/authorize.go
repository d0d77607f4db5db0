package tasknationtest

import (
	"encoding/base64"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"time"
)

// authRequest is a validated authorization request.
type authRequest struct {
	clientID    string
	redirectURI string
	state       string
	scopes      []string
	challenge   string // S256 code_challenge, "" without PKCE
	subject     string
}

// pendingConsent is an authorization request shown on the consent page,
// waiting for the Approve/Deny form POST.
type pendingConsent struct {
	req       authRequest
	expiresAt time.Time
}

// handleAuth serves GET /oauth2/auth (the authorization request) and
// POST /oauth2/auth (the consent page's decision).
func (s *Server) handleAuth(w http.ResponseWriter, r *http.Request) {
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		s.authorize(w, r)
	case http.MethodPost:
		s.consentDecision(w, r)
	default:
		w.Header().Set("Allow", "GET, HEAD, POST")
		writeErrorPage(w, http.StatusMethodNotAllowed, "Method not allowed", "Use GET for authorization requests.")
	}
}

func (s *Server) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	clientID, redirectURI := q.Get("client_id"), q.Get("redirect_uri")
	s.mu.Lock()
	c := s.clients[clientID]
	registered := c != nil && redirectURI != "" && slices.Contains(c.redirectURIs, redirectURI)
	s.mu.Unlock()
	// Without a known client and an exactly registered redirect URI there is
	// nowhere safe to send an error: show it to the user instead.
	if c == nil {
		writeErrorPage(w, http.StatusBadRequest, "Unknown client", "The client_id is missing or not registered with TaskNation.")
		return
	}
	if !registered {
		writeErrorPage(w, http.StatusBadRequest, "Invalid redirect URI", "The redirect_uri is missing or not registered for this client.")
		return
	}
	state := q.Get("state")
	fail := func(code, desc string) {
		redirectTo(w, r, redirectURI, url.Values{"error": {code}, "error_description": {desc}}, state)
	}
	switch rt := q.Get("response_type"); {
	case rt == "":
		fail("invalid_request", "missing response_type")
		return
	case rt != "code":
		fail("unsupported_response_type", "only response_type=code is supported")
		return
	}
	if !c.allowsGrant(GrantAuthorizationCode) {
		fail("unauthorized_client", "the client may not use the authorization_code grant")
		return
	}
	if len(state) < 8 {
		fail("invalid_request", "state must be at least 8 characters")
		return
	}
	scopes := parseScopes(q.Get("scope"))
	for _, sc := range scopes {
		if !c.allowsScope(sc) {
			fail("invalid_scope", "scope "+sc+" is unknown or not allowed for this client")
			return
		}
	}
	challenge, method := q.Get("code_challenge"), q.Get("code_challenge_method")
	switch {
	case challenge != "" && method != "S256":
		fail("invalid_request", "code_challenge_method must be S256")
		return
	case challenge != "" && !validChallenge(challenge):
		fail("invalid_request", "code_challenge must be the base64url SHA-256 of the code_verifier")
		return
	case challenge == "" && method != "":
		fail("invalid_request", "code_challenge_method without code_challenge")
		return
	}
	subject := q.Get("login_hint")
	if subject == "" {
		subject = DefaultUser
	}
	req := authRequest{
		clientID:    clientID,
		redirectURI: redirectURI,
		state:       state,
		scopes:      scopes,
		challenge:   challenge,
		subject:     subject,
	}
	if !s.opts.ConsentPage {
		s.approve(w, r, req)
		return
	}
	s.showConsent(w, req)
}

// validChallenge reports whether c looks like an S256 challenge: the
// unpadded base64url encoding of 32 bytes.
func validChallenge(c string) bool {
	b, err := base64.RawURLEncoding.DecodeString(c)
	return err == nil && len(b) == 32
}

// approve issues an authorization code for req and redirects to the client.
func (s *Server) approve(w http.ResponseWriter, r *http.Request, req authRequest) {
	code := randomToken(CodePrefix)
	now := s.now()
	s.mu.Lock()
	s.codes[code] = &authCode{req: req, expiresAt: now.Add(s.opts.CodeLifetime)}
	s.mu.Unlock()
	redirectTo(w, r, req.redirectURI, url.Values{"code": {code}}, req.state)
}

// redirectTo answers 302 to base with params (and state, if any) added to
// its query.
func redirectTo(w http.ResponseWriter, r *http.Request, base string, params url.Values, state string) {
	u, err := url.Parse(base) // registered URIs were validated
	if err != nil {
		writeErrorPage(w, http.StatusInternalServerError, "Server error", "Invalid registered redirect URI.")
		return
	}
	q := u.Query()
	for k, v := range params {
		q[k] = v
	}
	if state != "" {
		q.Set("state", state)
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

type consentScope struct{ Name, Description string }

var consentTmpl = template.Must(template.New("consent").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Authorize {{.Client}}</title></head>
<body>
<h1>Authorize {{.Client}}</h1>
<p><strong>{{.Client}}</strong> asks to access TaskNation as <strong id="subject">{{.Subject}}</strong> with:</p>
<ul id="scopes">
{{- range .Scopes}}
<li data-scope="{{.Name}}"><code>{{.Name}}</code>: {{.Description}}</li>
{{- else}}
<li>no scopes</li>
{{- end}}
</ul>
<form method="post" action="/oauth2/auth">
<input type="hidden" name="form_token" value="{{.Token}}">
<input type="hidden" name="decision" value="approve">
<button type="submit" id="approve">Approve</button>
</form>
<form method="post" action="/oauth2/auth">
<input type="hidden" name="form_token" value="{{.Token}}">
<input type="hidden" name="decision" value="deny">
<button type="submit" id="deny">Deny</button>
</form>
</body></html>
`))

// showConsent stores req under a single-use form token and renders the
// consent page.
func (s *Server) showConsent(w http.ResponseWriter, req authRequest) {
	token := randomToken("")
	now := s.now()
	s.mu.Lock()
	s.pending[token] = &pendingConsent{req: req, expiresAt: now.Add(s.opts.CodeLifetime)}
	s.mu.Unlock()
	data := struct {
		Client, Subject, Token string
		Scopes                 []consentScope
	}{Client: req.clientID, Subject: req.subject, Token: token}
	for _, sc := range req.scopes {
		data.Scopes = append(data.Scopes, consentScope{sc, scopeDescriptions[sc]})
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Frame-Options", "DENY")
	w.WriteHeader(http.StatusOK)
	_ = consentTmpl.Execute(w, data)
}

// consentDecision handles the Approve/Deny form POST.
func (s *Server) consentDecision(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeErrorPage(w, http.StatusBadRequest, "Bad request", "Malformed form.")
		return
	}
	decision := r.PostForm.Get("decision")
	if decision != "approve" && decision != "deny" {
		writeErrorPage(w, http.StatusBadRequest, "Bad request", "Unknown decision.")
		return
	}
	token := r.PostForm.Get("form_token")
	now := s.now()
	s.mu.Lock()
	p := s.pending[token]
	delete(s.pending, token) // single use
	s.mu.Unlock()
	if p == nil || !now.Before(p.expiresAt) {
		writeErrorPage(w, http.StatusBadRequest, "Request expired", "This authorization request is no longer valid. Start again from the application.")
		return
	}
	if decision == "deny" {
		redirectTo(w, r, p.req.redirectURI, url.Values{
			"error":             {"access_denied"},
			"error_description": {"the user denied the request"},
		}, p.req.state)
		return
	}
	s.approve(w, r, p.req)
}
