package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// Discovery against the fake, then a Gate built from what it found:
// the token endpoint for client_credentials, and the authorization and
// revocation endpoints too for a user (connect, refresh, revoke).
func TestDiscover_EndToEnd(t *testing.T) {
	for _, openIDOnly := range []bool{false, true} {
		t.Run(fmt.Sprintf("OpenID only %v", openIDOnly), func(t *testing.T) {
			a := newAuthSetup(t, tasknationtest.Options{OpenIDDiscoveryOnly: openIDOnly}, tasknationtest.Client{
				Secret: tasknationtest.DefaultClientSecret, AuthMethods: []string{tasknationtest.AuthSecretBasic},
			})
			discover := func(grant string) middleware.Config {
				cfg := middleware.Config{Provider: middleware.Generic, Issuer: a.srv.URL, Grant: grant}
				if err := cfg.Discover(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
				return cfg
			}
			cc := discover("")
			if cc.TokenURL != a.srv.TokenURL() || cc.AuthURL != "" || cc.RevocationURL != "" {
				t.Fatalf("client_credentials: token %q, auth %q, revocation %q", cc.TokenURL, cc.AuthURL, cc.RevocationURL)
			}
			user := discover(middleware.GrantAuthorizationCode)
			if user.TokenURL != a.srv.TokenURL() || user.AuthURL != a.srv.AuthURL() || user.RevocationURL != a.srv.RevocationURL() {
				t.Fatalf("authorization_code: token %q, auth %q, revocation %q", user.TokenURL, user.AuthURL, user.RevocationURL)
			}
			fromIssuer := func(c *middleware.Config) {
				c.TokenURL, c.AuthURL, c.RevocationURL = "", "", ""
				c.Issuer = a.srv.URL
				c.ClientSecret = tasknationtest.DefaultClientSecret
				if err := c.Discover(context.Background(), nil); err != nil {
					t.Fatal(err)
				}
			}
			a.app(t, fromIssuer)
			a.user(t, fromIssuer)
			if n := a.srv.ClientAuthentications(tasknationtest.AuthSecretBasic); n != 4 {
				t.Errorf("basic authentications = %d, want 4 (token, code, refresh, revocation)", n)
			}
		})
	}
}

// An explicit URL wins over the discovered one.
func TestDiscover_ExplicitURLsWin(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{RevocationEndpoint: true})
	defer srv.Close()
	cfg := middleware.Config{
		Provider: middleware.Generic, Issuer: srv.URL, Grant: middleware.GrantAuthorizationCode,
		TokenURL: "https://token.example.com/t", RevocationURL: "https://token.example.com/r",
	}
	if err := cfg.Discover(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if cfg.TokenURL != "https://token.example.com/t" || cfg.RevocationURL != "https://token.example.com/r" || cfg.AuthURL != srv.AuthURL() {
		t.Fatalf("token %q, revocation %q, auth %q", cfg.TokenURL, cfg.RevocationURL, cfg.AuthURL)
	}
}

// metadataServer serves doc (with its {{base}} replaced by the server's
// URL) at path, counts requests, and answers 404 elsewhere.
func metadataServer(t *testing.T, handlers map[string]http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	mux := http.NewServeMux()
	for p, h := range handlers {
		mux.HandleFunc(p, func(w http.ResponseWriter, r *http.Request) { n.Add(1); h(w, r) })
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { n.Add(1); http.NotFound(w, r) })
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return hs, &n
}

func jsonDoc(body func(base string) string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body("http://"+r.Host))
	}
}

// RFC 8414 §3.1: for an issuer with a path, the well-known part goes
// between the host and the path; OpenID appends it.
func TestDiscover_IssuerWithPath(t *testing.T) {
	doc := jsonDoc(func(base string) string {
		return `{"issuer":"` + base + `/tenant/1","token_endpoint":"` + base + `/tenant/1/token"}`
	})
	for name, path := range map[string]string{
		"RFC 8414": "/.well-known/oauth-authorization-server/tenant/1",
		"OpenID":   "/tenant/1/.well-known/openid-configuration",
	} {
		t.Run(name, func(t *testing.T) {
			hs, _ := metadataServer(t, map[string]http.HandlerFunc{path: doc})
			m, err := middleware.Discover(context.Background(), hs.URL+"/tenant/1", nil)
			if err != nil {
				t.Fatal(err)
			}
			if m.TokenURL != hs.URL+"/tenant/1/token" {
				t.Fatalf("token endpoint %q", m.TokenURL)
			}
		})
	}
}

func TestDiscover_Refused(t *testing.T) {
	const well = "/.well-known/oauth-authorization-server"
	good := func(base string) string { return `{"issuer":"` + base + `","token_endpoint":"` + base + `/token"}` }
	for _, tc := range []struct {
		name string
		h    http.HandlerFunc
		want string
	}{
		{"issuer mismatch", jsonDoc(func(base string) string {
			return `{"issuer":"https://evil.example","token_endpoint":"` + base + `/token"}`
		}), `its issuer "https://evil.example" is not the configured one`},
		{"redirect", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere"+well, http.StatusFound)
		}, "HTTP 302, a redirect, which discovery does not follow"},
		{"HTML", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<html>maintenance</html>")
		}, "not a JSON object"},
		{"truncated JSON", jsonDoc(func(base string) string { return good(base)[:30] }), "not valid JSON"},
		{"wrong types", jsonDoc(func(string) string { return `{"issuer":5}` }), "issuer is not a string"},
		{"array", jsonDoc(func(string) string { return `[1,2]` }), "not a JSON object"},
		{"no token endpoint", jsonDoc(func(base string) string { return `{"issuer":"` + base + `"}` }), "token_endpoint is required"},
		{"http token endpoint elsewhere", jsonDoc(func(base string) string {
			return `{"issuer":"` + base + `","token_endpoint":"http://auth.example.com/token"}`
		}), `token_endpoint "http://auth.example.com/token": http:// is only allowed on loopback hosts`},
		{"relative endpoint", jsonDoc(func(base string) string {
			return `{"issuer":"` + base + `","token_endpoint":"/token"}`
		}), "token_endpoint"},
		{"over 1 MiB", jsonDoc(func(base string) string {
			return `{"issuer":"` + base + `","token_endpoint":"` + base + `/token","x":"` + strings.Repeat("a", 1<<20) + `"}`
		}), "over 1 MiB"},
		{"both documents missing", http.NotFound, "HTTP 404"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var followed atomic.Int64
			hs, _ := metadataServer(t, map[string]http.HandlerFunc{
				well:                                tc.h,
				"/elsewhere" + well:                 func(w http.ResponseWriter, r *http.Request) { followed.Add(1); jsonDoc(good)(w, r) },
				"/.well-known/openid-configuration": func(w http.ResponseWriter, r *http.Request) { http.NotFound(w, r) },
			})
			cfg := middleware.Config{Provider: middleware.Generic, Issuer: hs.URL, ClientID: "id", ClientSecret: "secret"}
			err := cfg.Discover(context.Background(), nil)
			var ce *middleware.ConfigError
			if !errors.As(err, &ce) || ce.Field != "issuer" || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a ConfigError of issuer saying %q", err, tc.want)
			}
			if cfg.TokenURL != "" || followed.Load() != 0 {
				t.Fatalf("token URL %q, redirect followed %d times", cfg.TokenURL, followed.Load())
			}
			if _, err := middleware.New(cfg); err == nil {
				t.Fatal("New without discovered endpoints: no error")
			}
		})
	}
}

func TestDiscover_BadIssuer(t *testing.T) {
	for issuer, want := range map[string]string{
		"http://auth.example.com":            "http:// is only allowed on loopback hosts",
		"https://auth.example.com/?tenant=1": "must have no query",
		"https://auth.example.com/#x":        "must have no query",
		"auth.example.com":                   "not an absolute URL",
	} {
		_, err := middleware.Discover(context.Background(), issuer, nil)
		var ce *middleware.ConfigError
		if !errors.As(err, &ce) || ce.Field != "issuer" || !strings.Contains(err.Error(), want) {
			t.Errorf("issuer %q: %v, want %q", issuer, err, want)
		}
	}
}

// Discovery is bounded by RequestTimeout.
func TestDiscover_Timeout(t *testing.T) {
	release := make(chan struct{})
	hs, _ := metadataServer(t, map[string]http.HandlerFunc{
		"/.well-known/oauth-authorization-server": func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		},
	})
	defer close(release)
	cfg := middleware.Config{Provider: middleware.Generic, Issuer: hs.URL, RequestTimeout: 50 * time.Millisecond}
	err := cfg.Discover(context.Background(), nil)
	if err == nil || !strings.Contains(err.Error(), "did not answer in time") {
		t.Fatalf("error %v, want a timeout", err)
	}
}

// A DiscoveryCache asks once per issuer and TTL, and keeps no failure.
func TestDiscoveryCache(t *testing.T) {
	var fail atomic.Bool
	hs, n := metadataServer(t, map[string]http.HandlerFunc{
		"/.well-known/oauth-authorization-server": func(w http.ResponseWriter, r *http.Request) {
			if fail.Load() {
				http.Error(w, "down", http.StatusServiceUnavailable)
				return
			}
			jsonDoc(func(base string) string { return `{"issuer":"` + base + `","token_endpoint":"` + base + `/token"}` })(w, r)
		},
	})
	now := time.Now()
	cache := &middleware.DiscoveryCache{TTL: time.Minute, Now: func() time.Time { return now }}
	fail.Store(true)
	if _, err := cache.Discover(context.Background(), hs.URL, nil); err == nil {
		t.Fatal("no error from a failing server")
	}
	fail.Store(false)
	for range 3 {
		cfg := middleware.Config{Provider: middleware.Generic, Issuer: hs.URL}
		if err := cfg.Discover(context.Background(), cache); err != nil || cfg.TokenURL != hs.URL+"/token" {
			t.Fatalf("token URL %q, %v", cfg.TokenURL, err)
		}
	}
	// The failure (two documents) and one fetch for the three successes.
	if got := n.Load(); got != 3 {
		t.Fatalf("%d requests, want 3", got)
	}
	now = now.Add(2 * time.Minute)
	if _, err := cache.Discover(context.Background(), hs.URL, nil); err != nil || n.Load() != 4 {
		t.Fatalf("after the TTL: %v, %d requests, want 4", err, n.Load())
	}
}

// A configured client authentication method the metadata does not list
// (RFC 8414's default, client_secret_basic, when it lists none) is a
// warning at discovery, naming the method and what the server lists; the
// discovery itself succeeds (metadata is often incomplete).
func TestDiscover_WarnsOnUnlistedAuthMethod(t *testing.T) {
	for _, c := range []struct {
		name, methods string // methods: the JSON list, "" to leave it out
		style         oauth2.AuthStyle
		warn          string // the method warned about, "" for none
	}{
		{"post, server lists only private_key_jwt", `["private_key_jwt"]`, oauth2.AuthStyleInParams, "client_secret_post"},
		{"post, server lists none", "", oauth2.AuthStyleInParams, "client_secret_post"},
		{"basic (the generic default), server lists none", "", oauth2.AuthStyleAutoDetect, ""},
		{"post, server lists it", `["client_secret_basic","client_secret_post"]`, oauth2.AuthStyleInParams, ""},
		{"basic, server lists only post", `["client_secret_post"]`, oauth2.AuthStyleInHeader, "client_secret_basic"},
	} {
		t.Run(c.name, func(t *testing.T) {
			hs, _ := metadataServer(t, map[string]http.HandlerFunc{
				"/.well-known/oauth-authorization-server": jsonDoc(func(base string) string {
					doc := `{"issuer":"` + base + `","token_endpoint":"` + base + `/token"`
					if c.methods != "" {
						doc += `,"token_endpoint_auth_methods_supported":` + c.methods
					}
					return doc + "}"
				}),
			})
			core, logs := observer.New(zapcore.DebugLevel)
			cfg := middleware.Config{Provider: middleware.Generic, Issuer: hs.URL, AuthStyle: c.style, Logger: zap.New(core)}
			if err := cfg.Discover(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
			if cfg.TokenURL != hs.URL+"/token" {
				t.Fatalf("token endpoint %q", cfg.TokenURL)
			}
			warned := logs.FilterMessageSnippet("does not list the configured client authentication method").All()
			switch {
			case c.warn == "" && len(warned) > 0:
				t.Fatalf("warned about %v", warned[0].ContextMap())
			case c.warn != "" && len(warned) != 1:
				t.Fatalf("%d warnings, want 1 about %s", len(warned), c.warn)
			case c.warn != "":
				if got := warned[0].ContextMap()["method"]; got != c.warn {
					t.Fatalf("warned about method %v, want %s", got, c.warn)
				}
			}
		})
	}
}
