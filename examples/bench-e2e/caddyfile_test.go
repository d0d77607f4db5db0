package main

import (
	"slices"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/tasknation/tokengate/caddymodule"
	"github.com/tasknation/tokengate/internal/testkit"
)

// TestCaddyfileSites: the four sites adapt, and each runs the handlers it
// says it measures, in that order: (c) and (d) set the subject's header
// before the module (or the static header) without a route.
func TestCaddyfileSites(t *testing.T) {
	cfg := caddyfile(t.TempDir(), "http://127.0.0.1:1/token", "http://127.0.0.1:1/authorize", "127.0.0.1:2",
		"10001", "10002", "10003", "10004")
	out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(cfg), nil)
	if err != nil {
		t.Fatalf("adapting: %v\n%s", err, cfg)
	}
	servers, err := testkit.Servers(out)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"127.0.0.1:10001": {"oauth2_token", "reverse_proxy"},
		"127.0.0.1:10002": {"reverse_proxy"},
		"127.0.0.1:10003": {"headers", "oauth2_token", "reverse_proxy"},
		"127.0.0.1:10004": {"headers", "reverse_proxy"},
	}
	for _, srv := range servers {
		if len(srv.Listen) != 1 {
			t.Fatalf("a server listens on %q, want one port", srv.Listen)
		}
		w, ok := want[srv.Listen[0]]
		if !ok {
			t.Fatalf("unexpected server on %q", srv.Listen[0])
		}
		if !slices.Equal(srv.Handlers, w) {
			t.Errorf("%s runs %q, want %q", srv.Listen[0], srv.Handlers, w)
		}
	}
	if len(servers) != len(want) {
		t.Errorf("%d servers, want %d", len(servers), len(want))
	}
}
