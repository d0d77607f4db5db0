package tasknationtest

import (
	"net/http"
)

// RevokeAllAccessTokens revokes every access token issued so far, as a
// server that lost its sessions or a security reset would: the API then
// answers them 401 invalid_token, while refresh tokens stay valid. It
// returns how many active tokens it revoked. Tests use it when the token
// is out of their sight (behind a gateway).
func (s *Server) RevokeAllAccessTokens() int {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, a := range s.access {
		if a.activeAt(now) {
			a.revoked = true
			n++
		}
	}
	return n
}

// RevocationURL is the RFC 7009 revocation endpoint, served when
// Options.RevocationEndpoint is set.
func (s *Server) RevocationURL() string { return s.URL + "/oauth2/revoke" }

// RevocationRequests counts the requests to the revocation endpoint,
// whatever their outcome.
func (s *Server) RevocationRequests() int64 { return s.revocations.Load() }

// RevokedRefreshTokens counts the refresh tokens the revocation endpoint
// revoked (each with its whole family: the tokens rotated from the same
// grant and their access tokens).
func (s *Server) RevokedRefreshTokens() int64 { return s.revokedFamily.Load() }

// FailRevocations makes the revocation endpoint answer status (with
// error server_error, or temporarily_unavailable for 503) without
// revoking anything, until called again with 0.
func (s *Server) FailRevocations(status int) { s.revokeFail.Store(int64(status)) }

// handleRevoke serves RFC 7009 token revocation: POST, a form body, client
// authentication as at the token endpoint. Any token the client holds is
// revoked: a refresh token with its family (the access tokens issued from
// the same grant too), an access token alone. An unknown, expired or
// already revoked token is answered 200 all the same (RFC 7009 §2.2); a
// token of another client is refused with invalid_grant (§2.1).
func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) {
	s.revocations.Add(1)
	c, ok := s.clientForm(w, r, "revocation")
	if !ok {
		return
	}
	if st := int(s.revokeFail.Load()); st != 0 {
		code := "server_error"
		if st == http.StatusServiceUnavailable {
			code = "temporarily_unavailable"
		}
		writeOAuthError(w, errf(st, code, "revocation failed"))
		return
	}
	tok := r.PostForm.Get("token")
	if tok == "" {
		writeOAuthError(w, errf(http.StatusBadRequest, "invalid_request", "missing token"))
		return
	}
	// token_type_hint is a hint only (§2.1): both kinds are looked up.
	s.mu.Lock()
	defer s.mu.Unlock()
	if rt := s.refresh[tok]; rt != nil {
		if rt.family.clientID != c.id {
			writeOAuthError(w, errf(http.StatusBadRequest, "invalid_grant", "the token was issued to another client"))
			return
		}
		if !rt.family.revoked {
			rt.family.revoked = true
			s.revokedFamily.Add(1)
		}
	} else if a := s.access[tok]; a != nil {
		if a.clientID != c.id {
			writeOAuthError(w, errf(http.StatusBadRequest, "invalid_grant", "the token was issued to another client"))
			return
		}
		a.revoked = true
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
