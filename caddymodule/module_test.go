package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func provision(t *testing.T, h *Handler) (caddy.Context, context.CancelFunc) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	if err := h.Provision(ctx); err != nil {
		cancel()
		t.Fatalf("Provision: %v", err)
	}
	if err := h.Validate(); err != nil {
		cancel()
		t.Fatalf("Validate: %v", err)
	}
	return ctx, cancel
}

func handlerFor(srv *tasknationtest.Server) *Handler {
	return &Handler{
		TokenURL:     srv.TokenURL(),
		ClientID:     "{env.TG_TEST_CLIENT_ID}",
		ClientSecret: "{env.TG_TEST_CLIENT_SECRET}",
		Scopes:       []string{"demand::search"},
	}
}

// Two configs with the same client share one token source (a reload keeps
// the token); the last Cleanup closes it.
func TestProvision_SharesGateAcrossReloads(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	t.Setenv("TG_TEST_CLIENT_ID", tasknationtest.DefaultClientID)
	t.Setenv("TG_TEST_CLIENT_SECRET", tasknationtest.DefaultClientSecret)

	a, b := handlerFor(srv), handlerFor(srv)
	_, cancelA := provision(t, a)
	_, cancelB := provision(t, b)
	if a.gate != b.gate {
		t.Fatal("same configuration, different token sources")
	}
	if strings.Contains(a.poolKey, tasknationtest.DefaultClientSecret) {
		t.Fatal("pool key holds the secret")
	}
	serve := func(h *Handler) int {
		w := httptest.NewRecorder()
		next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
			if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer "+tasknationtest.AccessTokenPrefix) {
				t.Errorf("next saw Authorization %q", r.Header.Get("Authorization"))
			}
			w.WriteHeader(http.StatusNoContent)
			return nil
		})
		if err := h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), next); err != nil {
			t.Fatal(err)
		}
		return w.Code
	}
	if serve(a) != http.StatusNoContent {
		t.Fatal("first config did not serve")
	}
	cancelA() // the old config goes away, as on a reload
	a.Cleanup()
	if serve(b) != http.StatusNoContent {
		t.Fatal("second config did not serve after the first was cleaned up")
	}
	if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != 1 {
		t.Fatalf("token requests across a reload = %d, want 1", n)
	}
	cancelB()
	b.Cleanup()
	if _, ok := gates.References(b.poolKey); ok {
		t.Fatal("token source still pooled after every config let go")
	}

	c := handlerFor(srv)
	c.Scopes = []string{"demand::categories"}
	_, cancelC := provision(t, c)
	defer cancelC()
	if c.poolKey == b.poolKey {
		t.Fatal("different scopes share a token source")
	}
}

func TestProvision_Errors(t *testing.T) {
	t.Setenv("TG_TEST_SECRET", "s3cret-value")
	tests := []struct {
		name string
		h    Handler
		want string
	}{
		{"unset env secret", Handler{ClientID: "id", ClientSecret: "{env.TG_TEST_UNSET}"}, "client_secret"},
		{"missing file secret", Handler{ClientID: "id", ClientSecret: "{file./nonexistent/tokengate-secret}"}, "client_secret"},
		{"unknown provider", Handler{Provider: "acme", ClientID: "id", ClientSecret: "x"}, "provider"},
		{"bad scope", Handler{ClientID: "id", ClientSecret: "{env.TG_TEST_SECRET}", Scopes: []string{"nope"}}, "unknown tasknation scope"},
		{"plain http", Handler{ClientID: "id", ClientSecret: "{env.TG_TEST_SECRET}", TokenURL: "http://auth.example.com/t"}, "token_url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := tt.h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one naming %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "s3cret-value") {
				t.Fatalf("error holds the secret: %v", err)
			}
		})
	}
}

func TestUnmarshalCaddyfile(t *testing.T) {
	d := caddyfile.NewTestDispenser(`oauth2_token {
		provider generic
		token_url https://auth.example.com/token
		client_id {env.ID}
		client_secret {env.SECRET}
		scopes a b
		request_timeout 5s
		refresh_window 0.3
		backoff 2s 30s
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	if h.Provider != "generic" || h.ClientSecret != "{env.SECRET}" || len(h.Scopes) != 2 ||
		h.RequestTimeout != caddy.Duration(5e9) || h.RefreshWindow != 0.3 || h.MaxBackoff != caddy.Duration(30e9) {
		t.Fatalf("parsed %+v", h)
	}
}
