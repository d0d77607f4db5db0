package tasknationtest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func TestRevokeAllAccessTokens(t *testing.T) {
	s := tasknationtest.NewServer(tasknationtest.Options{})
	defer s.Close()
	var tokens []string
	for range 2 {
		resp, err := http.PostForm(s.TokenURL(), url.Values{"grant_type": {"client_credentials"},
			"client_id": {tasknationtest.DefaultClientID}, "client_secret": {tasknationtest.DefaultClientSecret}})
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			AccessToken string `json:"access_token"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || body.AccessToken == "" {
			t.Fatalf("token answer: %v", err)
		}
		tokens = append(tokens, body.AccessToken)
	}
	if n := s.RevokeAllAccessTokens(); n != 2 {
		t.Fatalf("revoked %d, want 2", n)
	}
	for _, tok := range tokens {
		if s.Active(tok) {
			t.Error("a token is still active")
		}
	}
	if n := s.RevokeAllAccessTokens(); n != 0 {
		t.Errorf("second call revoked %d, want 0", n)
	}
}

func revokeCall(t *testing.T, s *tasknationtest.Server, form url.Values) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.RevocationURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func TestRevocationEndpoint(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{RevocationEndpoint: true})
	first := mustOK(t, login(t, s, "supply::leads offline_access"))
	rt := first.str("refresh_token")
	// A rotation: the family now holds a second pair.
	second := mustOK(t, tokenCall(t, s, refreshForm(rt)))

	// No client authentication: 401 invalid_client, nothing revoked.
	r := revokeCall(t, s, url.Values{"token": {second.str("refresh_token")}})
	wantError(t, r, http.StatusUnauthorized, "invalid_client")
	if !s.RefreshActive(second.str("refresh_token")) {
		t.Fatal("an unauthenticated revocation revoked the refresh token")
	}
	// The endpoint failing: nothing revoked.
	s.FailRevocations(http.StatusServiceUnavailable)
	r = revokeCall(t, s, withClient(url.Values{"token": {second.str("refresh_token")}, "token_type_hint": {"refresh_token"}}))
	wantError(t, r, http.StatusServiceUnavailable, "temporarily_unavailable")
	s.FailRevocations(0)
	if !s.RefreshActive(second.str("refresh_token")) || s.RevokedRefreshTokens() != 0 {
		t.Fatal("a failed revocation revoked the refresh token")
	}

	r = revokeCall(t, s, withClient(url.Values{"token": {second.str("refresh_token")}, "token_type_hint": {"refresh_token"}}))
	if r.status != http.StatusOK {
		t.Fatalf("revocation: %d %s", r.status, r.body)
	}
	if s.RefreshActive(second.str("refresh_token")) || s.Active(second.str("access_token")) {
		t.Error("the refresh token or its access token is still active after revocation")
	}
	wantError(t, tokenCall(t, s, refreshForm(second.str("refresh_token"))), http.StatusBadRequest, "invalid_grant")
	// Again, and an unknown token: 200 (RFC 7009 §2.2), counted once.
	for _, tok := range []string{second.str("refresh_token"), "no-such-token"} {
		if r := revokeCall(t, s, withClient(url.Values{"token": {tok}})); r.status != http.StatusOK {
			t.Errorf("revoking %s: %d, want 200", tok[:5], r.status)
		}
	}
	if n := s.RevokedRefreshTokens(); n != 1 {
		t.Errorf("RevokedRefreshTokens = %d, want 1", n)
	}
	if n := s.RevocationRequests(); n != 5 {
		t.Errorf("RevocationRequests = %d, want 5", n)
	}
}

func TestRevocationEndpoint_OffByDefault(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	r := revokeCall(t, s, withClient(url.Values{"token": {"x"}}))
	if r.status != http.StatusNotFound {
		t.Fatalf("status = %d, want 404: TaskNation documents no revocation endpoint", r.status)
	}
}
