package caddyfile_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const seriesReplays = `caddy_oauth2_token_replays_total`

// tokenAgePasses lets the real clock pass the age under which the gateway
// does not replace a token the API refuses (a refusal of a token seconds
// old is the API's business, not a reason to ask for another): the test
// revokes a token "mid-life". Time itself is what is waited for.
func tokenAgePasses() {
	until := time.Now().Add(5*time.Second + 100*time.Millisecond)
	for time.Now().Before(until) {
		time.Sleep(50 * time.Millisecond)
	}
}

// TestReplay_RevokedTokenThroughCaddy: the API revokes the gateway's token
// mid-life; through a real Caddy the next request (a GET, then a POST
// with a body) gets a 200 after exactly one replay, the fake counts
// exactly one extra token request, and replays_total counts it.
func TestReplay_RevokedTokenThroughCaddy(t *testing.T) {
	g := newGateway(t)
	g.loadCaddyfile(g.caddyfile(siteOptions{}))
	g.mustGetAPI("/api/v1/categories")
	before, beforeM := g.tokenRequests(), g.metrics()

	tokenAgePasses()
	if n := g.fake.RevokeAllAccessTokens(); n != 1 {
		t.Fatalf("revoked %d tokens, want the gateway's one", n)
	}
	api, _ := g.mustGetAPI("/api/v1/categories")
	if api.ClientID == "" {
		t.Fatal("no client id in the API's answer")
	}
	if n := g.tokenRequests() - before; n != 1 {
		t.Errorf("extra token requests = %d, want exactly 1", n)
	}

	tokenAgePasses()
	g.fake.RevokeAllAccessTokens()
	body := strings.Repeat("p", 20<<10)
	req, _ := http.NewRequest(http.MethodPost, fmt.Sprintf("http://127.0.0.1:%d/api/v1/categories", g.httpPort), io.MultiReader(bytes.NewReader([]byte(body))))
	resp, err := g.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(raw), fmt.Sprintf(`"body_bytes":%d`, len(body))) {
		t.Fatalf("POST after revocation: %d %s, want 200 with the whole body replayed", resp.StatusCode, raw)
	}
	if n := g.tokenRequests() - before; n != 2 {
		t.Errorf("token requests after two revocations = %d, want 2", n)
	}
	if d := delta(t, beforeM, g.metrics(), seriesReplays); d != 2 {
		t.Errorf("%s grew by %v, want 2", seriesReplays, d)
	}
}
