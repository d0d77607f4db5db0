package middleware_test

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/middleware"
)

func TestNew_ConfigErrors(t *testing.T) {
	valid := func() middleware.Config {
		return middleware.Config{ClientID: "id", ClientSecret: "s3cret", Scopes: []string{"demand::search"}}
	}
	tests := []struct {
		name string
		mod  func(*middleware.Config)
		want []string
	}{
		{"no client_id", func(c *middleware.Config) { c.ClientID = "" }, []string{"client_id is required"}},
		{"no client_secret", func(c *middleware.Config) { c.ClientSecret = "" }, []string{"client_secret is required"}},
		{"unknown scope", func(c *middleware.Config) { c.Scopes = []string{"demand::serach"} },
			[]string{`unknown tasknation scope "demand::serach"`, "valid scopes: demand::categories, demand::requests, demand::search, offline_access, supply::businesses"}},
		{"http token_url off loopback", func(c *middleware.Config) { c.TokenURL = "http://auth.example.com/token" },
			[]string{"token_url", "only allowed on loopback"}},
		{"relative token_url", func(c *middleware.Config) { c.TokenURL = "/oauth2/token" }, []string{"token_url", "not an absolute URL"}},
		{"ftp token_url", func(c *middleware.Config) { c.TokenURL = "ftp://127.0.0.1/token" }, []string{"token_url", "scheme must be https"}},
		{"generic without token_url", func(c *middleware.Config) { c.Provider = middleware.Generic }, []string{"token_url is required"}},
		{"refresh window too big", func(c *middleware.Config) { c.RefreshWindow = 1.5 }, []string{"refresh_window"}},
		{"negative timeout", func(c *middleware.Config) { c.RequestTimeout = -time.Second }, []string{"request_timeout"}},
		{"backoff upside down", func(c *middleware.Config) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second }, []string{"min_backoff"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.mod(&c)
			g, err := middleware.New(c)
			if err == nil {
				g.Close()
				t.Fatal("New accepted a bad config")
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
