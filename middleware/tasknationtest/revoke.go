package tasknationtest

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
