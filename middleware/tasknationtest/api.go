package tasknationtest

import (
	"io"
	"net/http"
	"slices"
	"strings"
)

// apiRoutes maps API path prefixes to the scope they require. Other /api/
// paths need only a valid token.
var apiRoutes = []struct{ prefix, scope string }{
	{"/api/v1/businesses", "supply::businesses"},
	{"/api/v1/leads", "supply::leads"},
	{"/api/v1/messages", "supply::messages"},
	{"/api/v1/reviews", "supply::reviews"},
	{"/api/v1/requests", "demand::requests"},
	{"/api/v1/categories", "demand::categories"},
	{"/api/v1/search", "demand::search"},
}

// RequiredScope returns the scope the fake API requires for path, or "" if
// any valid token will do.
func RequiredScope(path string) string {
	for _, rt := range apiRoutes {
		if path == rt.prefix || strings.HasPrefix(path, rt.prefix+"/") {
			return rt.scope
		}
	}
	return ""
}

// APIResponse is the JSON body of a successful fake API call.
type APIResponse struct {
	OK       bool   `json:"ok"`
	Path     string `json:"path"`
	Method   string `json:"method"`
	ClientID string `json:"client_id"`
	Subject  string `json:"subject"` // empty for client_credentials tokens
	Scope    string `json:"scope"`
	// BodyBytes is the length of the request body received, so tests can
	// check that a replayed request carried its body.
	BodyBytes int64 `json:"body_bytes"`
}

// handleAPI serves the fake resource server under /api/.
func (s *Server) handleAPI(w http.ResponseWriter, r *http.Request) {
	s.apiTotal.Add(1)
	s.recordAPIHeader(r.Header)
	scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	token = strings.TrimSpace(token)
	if !strings.EqualFold(scheme, "Bearer") || token == "" {
		apiUnauthorized(w, "missing bearer token")
		return
	}
	now := s.now()
	s.mu.Lock()
	a := s.access[token]
	active := a != nil && a.activeAt(now)
	var clientID, subject string
	var scopes []string
	if active {
		clientID, subject, scopes = a.clientID, a.subject, slices.Clone(a.scopes)
	}
	s.mu.Unlock()
	if !active {
		apiUnauthorized(w, "the access token is invalid, expired or revoked")
		return
	}
	if need := RequiredScope(r.URL.Path); need != "" && !slices.Contains(scopes, need) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="tasknation", error="insufficient_scope", scope="`+need+`"`)
		writeJSON(w, http.StatusForbidden, map[string]string{
			"error":             "insufficient_scope",
			"error_description": "the access token lacks the required scope",
			"scope":             need,
		})
		return
	}
	n, _ := io.Copy(io.Discard, io.LimitReader(r.Body, 10<<20))
	writeJSON(w, http.StatusOK, APIResponse{
		OK:        true,
		Path:      r.URL.Path,
		Method:    r.Method,
		ClientID:  clientID,
		Subject:   subject,
		Scope:     strings.Join(scopes, " "),
		BodyBytes: n,
	})
}

func apiUnauthorized(w http.ResponseWriter, desc string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="tasknation", error="invalid_token", error_description="`+desc+`"`)
	writeJSON(w, http.StatusUnauthorized, errorBody{Error: "invalid_token", ErrorDescription: desc})
}
