package caddymodule

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// A setting the middleware or the token store refuses is worded as this
// module's own error, from the fields of theirs, which it wraps: the
// field is the subdirective's name.
func TestSettingErrors(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	t.Setenv("TG_TEST_SECRET", "s3cret-value")
	t.Setenv("TG_TEST_SHORT_KEY", "c2hvcnQta2V5") // "short-key", 9 bytes
	app := func(change func(h *Handler)) func(*testing.T) *Handler {
		return func(*testing.T) *Handler {
			h := &Handler{ClientID: "id", ClientSecret: "{env.TG_TEST_SECRET}", Scopes: []string{"demand::search"}}
			change(h)
			return h
		}
	}
	user := func(change func(h *Handler)) func(*testing.T) *Handler {
		return func(t *testing.T) *Handler {
			h := userHandler(t, srv)
			change(h)
			return h
		}
	}
	tests := []struct {
		name    string
		handler func(*testing.T) *Handler
		field   string // of the *middleware.ConfigError; "" for a *tokenstore.KeyError
		want    string // the whole text
	}{
		{"unknown scope", app(func(h *Handler) { h.Scopes = []string{"nope"} }), "scopes",
			`oauth2_token: scopes "nope": unknown tasknation scope; valid scopes: demand::categories, demand::requests, demand::search, offline_access, supply::businesses, supply::leads, supply::messages, supply::reviews`},
		{"plain http token_url", app(func(h *Handler) { h.TokenURL = "http://auth.example.com/t" }), "token_url",
			`oauth2_token: token_url "http://auth.example.com/t": http:// is only allowed on loopback hosts; use https://`},
		{"token_url not a URL", app(func(h *Handler) { h.TokenURL = "https://auth.example.com/\x7f" }), "token_url",
			"oauth2_token: token_url is not a URL: net/url: invalid control character in URL"},
		{"backoff upside down", app(func(h *Handler) {
			h.MinBackoff, h.MaxBackoff = caddy.Duration(time.Minute), caddy.Duration(time.Second)
		}), "backoff",
			"oauth2_token: backoff needs 0 < min_backoff (1m0s) <= max_backoff (1s)"},
		{"no redirect_uri", user(func(h *Handler) { h.AuthorizationCode.RedirectURI = "" }), "redirect_uri",
			"oauth2_token: redirect_uri is required for the authorization_code grant"},
		{"same paths", user(func(h *Handler) { h.AuthorizationCode.ConnectPath = "/oauth2/callback" }), "callback_path",
			`oauth2_token: callback_path "/oauth2/callback": the same path as connect_path`},
		{"short key", user(func(h *Handler) { h.Store.EncryptionKeys = []string{"{env.TG_TEST_SHORT_KEY}"} }), "",
			"oauth2_token: encryption_key: encryption key decodes to 9 bytes, want 32 (generate one with: openssl rand -base64 32)"},
		{"short older key", user(func(h *Handler) { h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_SHORT_KEY}") }), "",
			"oauth2_token: encryption_key: key 2 of 2 (an older key) decodes to 9 bytes, want 32 (generate one with: openssl rand -base64 32)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := tt.handler(t).Provision(ctx)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("err = %v\nwant   %s", err, tt.want)
			}
			var ce *middleware.ConfigError
			var ke *tokenstore.KeyError
			switch {
			case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field):
				t.Errorf("err = %T %v: want it to wrap a *middleware.ConfigError of field %s", err, err, tt.field)
			case tt.field == "" && !errors.As(err, &ke):
				t.Errorf("err = %T %v: want it to wrap a *tokenstore.KeyError", err, err)
			}
			if strings.Contains(err.Error(), "middleware:") || strings.Contains(err.Error(), "tokenstore:") || strings.Contains(err.Error(), "s3cret-value") {
				t.Errorf("err = %v: another package's prefix, or the secret", err)
			}
		})
	}
}

// The Caddyfile's errors carry the same values, with the position.
func TestSettingErrors_Caddyfile(t *testing.T) {
	for _, tt := range []struct {
		name, body string
		field      string
		want       string
	}{
		{"bad key", "encryption_key c2hvcnQta2V5\n\t\tstore file /tmp/x", "", "oauth2_token: encryption_key: encryption key decodes to 9 bytes, want 32"},
		{"bad older key", "encryption_key {env.KEY} c2hvcnQta2V5\n\t\tstore file /tmp/x", "", "oauth2_token: encryption_key: key 2 of 2 (an older key) decodes to 9 bytes, want 32"},
		{"http token_url", "token_url http://auth.example.com/t", "token_url", `oauth2_token: token_url "http://auth.example.com/t": http:// is only allowed`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := caddyfile.NewTestDispenser("oauth2_token {\n\t\tclient_id id\n\t\tclient_secret {env.SECRET}\n\t\t" + tt.body + "\n\t}")
			err := new(Handler).UnmarshalCaddyfile(d)
			if err == nil || !strings.HasPrefix(err.Error(), tt.want) || !strings.Contains(err.Error(), ", at Testfile:") {
				t.Fatalf("err = %v, want %q with the position", err, tt.want)
			}
			var ce *middleware.ConfigError
			var ke *tokenstore.KeyError
			if tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field) || tt.field == "" && !errors.As(err, &ke) {
				t.Errorf("err = %T %v does not wrap the refusal", err, err)
			}
		})
	}
}
