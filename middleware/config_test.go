package middleware_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/middleware"
)

// A refused Config is a *ConfigError naming the field in the Caddyfile's
// spelling, from New and Validate alike, with a text that says what is
// wrong and never holds the secret.
func TestNew_ConfigErrors(t *testing.T) {
	valid := func() middleware.Config {
		return middleware.Config{ClientID: "id", ClientSecret: "s3cret", Scopes: []string{"demand::search"}}
	}
	user := func(c *middleware.Config) {
		c.Grant = middleware.GrantAuthorizationCode
		c.RedirectURI = "https://gw.example.com/oauth2/callback"
	}
	tests := []struct {
		name  string
		mod   func(*middleware.Config)
		field string
		value string   // ConfigError.Value
		want  []string // in the text
	}{
		{"no client_id", func(c *middleware.Config) { c.ClientID = "" }, "client_id", "", []string{"middleware: client_id is required"}},
		{"client_id with a space", func(c *middleware.Config) { c.ClientID = " id" }, "client_id", "", []string{"middleware: client_id has white space at an end or a control character"}},
		{"client_secret from a file", func(c *middleware.Config) { c.ClientSecret = "s3cret\n" }, "client_secret", "",
			[]string{"middleware: client_secret has white space at an end or a control character (a newline read from a file?)"}},
		{"client_secret with a tab inside", func(c *middleware.Config) { c.ClientSecret = "s3c\tret" }, "client_secret", "", []string{"client_secret has white space"}},
		{"no client_secret", func(c *middleware.Config) { c.ClientSecret = "" }, "client_secret", "", []string{"middleware: client_secret is required"}},
		{"unknown scope", func(c *middleware.Config) { c.Scopes = []string{"demand::serach"} }, "scopes", "demand::serach",
			[]string{`middleware: scopes "demand::serach": unknown tasknation scope`, "valid scopes: demand::categories, demand::requests, demand::search, offline_access, supply::businesses"}},
		{"http token_url off loopback", func(c *middleware.Config) { c.TokenURL = "http://auth.example.com/token" }, "token_url", "http://auth.example.com/token",
			[]string{`middleware: token_url "http://auth.example.com/token": http:// is only allowed on loopback hosts; use https://`}},
		{"relative token_url", func(c *middleware.Config) { c.TokenURL = "/oauth2/token" }, "token_url", "/oauth2/token", []string{`token_url "/oauth2/token": not an absolute URL`}},
		{"ftp token_url", func(c *middleware.Config) { c.TokenURL = "ftp://127.0.0.1/token" }, "token_url", "ftp://127.0.0.1/token", []string{"token_url", "scheme must be https"}},
		{"token_url not a URL", func(c *middleware.Config) { c.TokenURL = "https://auth.example.com/\x7f" }, "token_url", "", []string{"middleware: token_url is not a URL: ", "invalid control character"}},
		{"token_url with a password", func(c *middleware.Config) { c.TokenURL = "http://user:s3cret@auth.example.com/token" }, "token_url", "http://user:xxxxx@auth.example.com/token",
			[]string{`token_url "http://user:xxxxx@auth.example.com/token": http:// is only allowed`}},
		{"generic without token_url", func(c *middleware.Config) { c.Provider = middleware.Generic }, "token_url", "", []string{"middleware: token_url is required"}},
		{"refresh window too big", func(c *middleware.Config) { c.RefreshWindow = 1.5 }, "refresh_window", "", []string{"refresh_window must be between 0 and 1", "got 1.5"}},
		{"negative timeout", func(c *middleware.Config) { c.RequestTimeout = -time.Second }, "request_timeout", "", []string{"middleware: request_timeout must be positive, got -1s"}},
		{"negative leeway", func(c *middleware.Config) { c.ExpiryLeeway = -time.Second }, "expiry_leeway", "", []string{"expiry_leeway must not be negative"}},
		{"backoff upside down", func(c *middleware.Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, "backoff", "",
			[]string{"middleware: backoff needs 0 < min_backoff (1m0s) <= max_backoff (1s)"}},
		{"unknown grant", func(c *middleware.Config) { c.Grant = "password" }, "grant", "password", []string{`grant "password": unknown grant (want client_credentials or authorization_code)`}},
		{"no redirect_uri", func(c *middleware.Config) { user(c); c.RedirectURI = "" }, "redirect_uri", "", []string{"middleware: redirect_uri is required for the authorization_code grant"}},
		{"relative redirect_uri", func(c *middleware.Config) { user(c); c.RedirectURI = "/oauth2/callback" }, "redirect_uri", "/oauth2/callback",
			[]string{`middleware: redirect_uri "/oauth2/callback": not an absolute http(s) URL`}},
		{"http redirect_uri", func(c *middleware.Config) { user(c); c.RedirectURI = "http://gw.example.com/cb" }, "redirect_uri", "http://gw.example.com/cb", []string{"only allowed on loopback hosts"}},
		{"redirect_uri without a path", func(c *middleware.Config) { user(c); c.RedirectURI = "https://gw.example.com" }, "redirect_uri", "https://gw.example.com",
			[]string{`redirect_uri "https://gw.example.com": has no path: the authorization server sends the browser back to exactly this URL, so it must be the callback's (https://gw.example.com/oauth2/callback)`}},
		{"redirect_uri at the root", func(c *middleware.Config) { user(c); c.RedirectURI = "https://gw.example.com/"; c.CallbackPath = "/cb" }, "redirect_uri", "https://gw.example.com/",
			[]string{"has no path", "(https://gw.example.com/cb)"}},
		{"redirect_uri with fragment", func(c *middleware.Config) { user(c); c.RedirectURI = "https://gw.example.com/cb#x" }, "redirect_uri", "https://gw.example.com/cb#x", []string{"must not have a fragment"}},
		{"http auth_url", func(c *middleware.Config) { user(c); c.AuthURL = "http://auth.example.com/auth" }, "auth_url", "http://auth.example.com/auth", []string{"auth_url", "only allowed on loopback"}},
		{"relative connect_path", func(c *middleware.Config) { user(c); c.ConnectPath = "connect" }, "connect_path", "connect", []string{`connect_path "connect": must start with /`}},
		{"same paths", func(c *middleware.Config) { user(c); c.DisconnectPath = "/oauth2/connect" }, "disconnect_path", "/oauth2/connect",
			[]string{`middleware: disconnect_path "/oauth2/connect": the same path as connect_path`}},
		{"connected_redirect", func(c *middleware.Config) { user(c); c.ConnectedRedirect = "//evil.example.com" }, "connected_redirect", "//evil.example.com", []string{"want an absolute URL or a path"}},
		{"negative state_lifetime", func(c *middleware.Config) { user(c); c.StateLifetime = -time.Minute }, "state_lifetime", "", []string{"middleware: state_lifetime must be positive, got -1m0s"}},
		{"negative cache_size", func(c *middleware.Config) { user(c); c.CacheSizeMB = -1 }, "cache_size", "", []string{"middleware: cache_size must be positive, got -1"}},
		{"negative max_pending_states", func(c *middleware.Config) { user(c); c.MaxPendingStates = -1 }, "max_pending_states", "", []string{"max_pending_states must be positive"}},
		{"negative max_pending_per_subject", func(c *middleware.Config) { user(c); c.MaxPendingPerSubject = -1 }, "max_pending_per_subject", "", []string{"middleware: max_pending_per_subject must be positive, got -1"}},
		{"small max_callback_query", func(c *middleware.Config) { user(c); c.MaxCallbackQuery = 512 }, "max_callback_query", "",
			[]string{"middleware: max_callback_query 512 is too small for a callback (want at least 1024 bytes)"}},
	}
	// A field of the user context without the grant: refused, or every
	// request would get the application's token instead of its user's.
	for _, f := range []struct {
		field string
		mod   func(*middleware.Config)
	}{
		{"auth_url", func(c *middleware.Config) { c.AuthURL = "https://auth.example.com/authorize" }},
		{"redirect_uri", func(c *middleware.Config) { c.RedirectURI = "https://gw.example.com/oauth2/callback" }},
		{"subject", func(c *middleware.Config) { c.Subject = func(*http.Request) string { return "alice" } }},
		{"connect_path", func(c *middleware.Config) { c.ConnectPath = "/connect" }},
		{"callback_path", func(c *middleware.Config) { c.CallbackPath = "/cb" }},
		{"disconnect_path", func(c *middleware.Config) { c.DisconnectPath = "/disconnect" }},
		{"status_path", func(c *middleware.Config) { c.StatusPath = "/status" }},
		{"revocation_url", func(c *middleware.Config) { c.RevocationURL = "https://auth.example.com/revoke" }},
		{"lifecycle", func(c *middleware.Config) { c.Lifecycle = &lifecycle{} }},
		{"pkce", func(c *middleware.Config) { c.DisablePKCE = true }},
		{"connected_redirect", func(c *middleware.Config) { c.ConnectedRedirect = "/done" }},
		{"state_lifetime", func(c *middleware.Config) { c.StateLifetime = time.Minute }},
		{"max_pending_states", func(c *middleware.Config) { c.MaxPendingStates = 10 }},
		{"max_pending_per_subject", func(c *middleware.Config) { c.MaxPendingPerSubject = 2 }},
		{"refresh_token_lifetime", func(c *middleware.Config) { c.RefreshTokenLifetime = time.Hour }},
		{"refresh_token_warning", func(c *middleware.Config) { c.RefreshTokenWarning = time.Hour }},
		{"grace_period", func(c *middleware.Config) { c.GracePeriod = time.Minute }},
		{"max_callback_query", func(c *middleware.Config) { c.MaxCallbackQuery = 4096 }},
		{"cache_size", func(c *middleware.Config) { c.CacheSizeMB = 16 }},
	} {
		for _, grant := range []string{"", middleware.GrantClientCredentials} {
			tests = append(tests, struct {
				name  string
				mod   func(*middleware.Config)
				field string
				value string
				want  []string
			}{fmt.Sprintf("%s with grant %q", f.field, grant), func(c *middleware.Config) { c.Grant = grant; f.mod(c) }, f.field, "",
				[]string{"middleware: " + f.field + " only applies to grant authorization_code (the grant is client_credentials"}})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			verr := c.Validate()
			g, err := middleware.New(c)
			if err == nil {
				g.Close()
				t.Fatal("New accepted a bad config")
			}
			if verr == nil || verr.Error() != err.Error() {
				t.Errorf("Validate = %v, New = %v: want the same error", verr, err)
			}
			var ce *middleware.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("err = %T %v, want a *ConfigError", err, err)
			}
			if ce.Field != tt.field || ce.Value != tt.value {
				t.Errorf("Field %q, Value %q; want %q, %q (%v)", ce.Field, ce.Value, tt.field, tt.value, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "s3cret") {
				t.Errorf("error holds the secret: %v", err)
			}
		})
	}
	for _, ok := range []string{"http://127.0.0.1:8080/t", "http://[::1]/t", "http://localhost/t", "https://auth.example.com/t"} {
		c := valid()
		c.TokenURL = ok
		g, err := middleware.New(c)
		if err != nil {
			t.Errorf("token_url %s refused: %v", ok, err)
			continue
		}
		g.Close()
	}
}

// ConfigError's text has two shapes: the reason continues the field's
// name, or follows the quoted value after a colon; a cause comes last.
func TestConfigError_Text(t *testing.T) {
	cause := errors.New("cause")
	for _, tt := range []struct {
		err  middleware.ConfigError
		want string
	}{
		{middleware.ConfigError{Field: "client_id", Reason: "is required"}, "middleware: client_id is required"},
		{middleware.ConfigError{Field: "grant", Value: "x", Reason: "unknown grant"}, `middleware: grant "x": unknown grant`},
		{middleware.ConfigError{Field: "token_url", Reason: "is not a URL", Err: cause}, "middleware: token_url is not a URL: cause"},
		{middleware.ConfigError{Field: "token_url", Value: "x", Reason: "bad", Err: cause}, `middleware: token_url "x": bad: cause`},
		{middleware.ConfigError{Field: "token_url", Value: "x", Err: cause}, `middleware: token_url "x": cause`},
		{middleware.ConfigError{Field: "token_url", Err: cause}, "middleware: token_url: cause"},
		{middleware.ConfigError{Field: "token_url", Value: "x"}, `middleware: token_url "x"`},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if (tt.err.Err != nil) != errors.Is(&tt.err, cause) {
			t.Errorf("%q: errors.Is(cause) = %v", tt.want, !(tt.err.Err != nil))
		}
	}
}

func TestNew_MixedPartnerScopesWarn(t *testing.T) {
	core, logs := observer.New(zapcore.WarnLevel)
	g, err := middleware.New(middleware.Config{
		ClientID: "id", ClientSecret: "s", Logger: zap.New(core),
		Scopes: []string{"supply::leads", "demand::search", "offline_access"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if logs.FilterMessageSnippet("mix Supply and Demand").Len() != 1 {
		t.Fatalf("no warning for mixed scopes; logs: %v", logs.All())
	}
	core2, logs2 := observer.New(zapcore.WarnLevel)
	g2, _ := middleware.New(middleware.Config{ClientID: "id", ClientSecret: "s", Logger: zap.New(core2), Scopes: []string{"supply::leads", "offline_access"}})
	defer g2.Close()
	if logs2.Len() != 0 {
		t.Fatalf("warning for one partner type: %v", logs2.All())
	}
}
