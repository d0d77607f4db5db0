package caddyfile_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/tasknation/tokengate/internal/testkit"
)

// TestDirectiveOrder: written in reverse, the directives run as the
// module registers itself: after the authentication directives and
// request_header (which set what a user grant reads), before encode,
// handle and reverse_proxy.
func TestDirectiveOrder(t *testing.T) {
	cfg := `:8080 {
	reverse_proxy 127.0.0.1:9
	handle /x/* {
		respond 204
	}
	encode gzip
	oauth2_token {
		token_url http://127.0.0.1:9/token
		client_id a
		client_secret b
	}
	request_header X-A b
	basic_auth {
		alice $2a$14$kM48etcZdsFX97mlmDKNleWo7TRg0eNeVgn5VN5RhpUzGuSl8pWfm
	}
}
`
	out, _, err := adapt(cfg)
	if err != nil {
		t.Fatal(err)
	}
	servers, err := testkit.Servers(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 1 {
		t.Fatalf("%d servers, want 1\n%s", len(servers), out)
	}
	got := servers[0].Handlers
	want := []string{"authentication", "headers", "oauth2_token", "encode", "subroute", "reverse_proxy"}
	if !slices.Equal(got, want) {
		t.Fatalf("handlers in the order they run = %q, want %q\n%s", got, want, out)
	}
}

// TestRequestHeaderCannotDropToken: a site-level request_header that
// deletes Authorization (to strip what the client sent) runs before the
// module, so the API still gets the token.
func TestRequestHeaderCannotDropToken(t *testing.T) {
	g := newGateway(t)
	g.loadCaddyfile(g.caddyfile(siteOptions{site: "\trequest_header -Authorization\n\theader X-Config first"}))
	api, r := g.mustGetAPI("/api/v1/categories")
	if r.status != http.StatusOK || api.ClientID == "" {
		t.Fatalf("status %d, API saw client %q: want 200 with the gateway's token", r.status, api.ClientID)
	}
	if n := g.tokenRequests(); n != 1 {
		t.Fatalf("token requests = %d, want 1", n)
	}
}
