package tasknationtest_test

import (
	"encoding/json"
	"net/http"
	"net/url"
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
