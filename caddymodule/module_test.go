package caddymodule

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	zapobserver "go.uber.org/zap/zaptest/observer"

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

func TestUnmarshalCaddyfile_UserContext(t *testing.T) {
	d := caddyfile.NewTestDispenser(`oauth2_token {
		client_id {env.ID}
		client_secret {env.SECRET}
		grant authorization_code
		auth_url https://auth.example.com/authorize
		user {http.auth.user.id}
		redirect_uri https://gw.example.com/cb
		connect_path /c
		callback_path /cb
		disconnect_path /d
		store file /var/lib/tokengate
		encryption_key {env.KEY}
		pkce off
		connected_redirect /done
		state_lifetime 5m
		grace_period 30s
		refresh_token_warning 7d
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Handler{
		ClientID: "{env.ID}", ClientSecret: "{env.SECRET}",
		Store: &StoreConfig{Kind: "file", Dir: "/var/lib/tokengate", EncryptionKeys: []string{"{env.KEY}"}},
		AuthorizationCode: &AuthorizationCode{
			AuthURL: "https://auth.example.com/authorize", User: "{http.auth.user.id}",
			RedirectURI: "https://gw.example.com/cb", ConnectPath: "/c", CallbackPath: "/cb", DisconnectPath: "/d",
			DisablePKCE: true, ConnectedRedirect: "/done", StateLifetime: caddy.Duration(5 * time.Minute),
			GracePeriod: caddy.Duration(30 * time.Second), RefreshTokenWarning: caddy.Duration(7 * 24 * time.Hour),
		},
	}
	if !reflect.DeepEqual(h, want) {
		t.Fatalf("parsed\n%+v\nwant\n%+v", h, want)
	}
}

func TestCheckUser(t *testing.T) {
	tests := []struct {
		user string
		ok   bool
	}{
		{"{http.auth.user.id}", true},
		{"tenant-{http.auth.user.id}", true},
		{"{http.request.header.Remote-User}", true},
		{"{env.HOST}-{http.auth.user.id}", true},
		{"", false},
		{"alice", false},
		{`\{http.auth.user.id\}`, false}, // escaped: a literal
		{"{env.TN_USER}", false},
		{"{file./etc/user}", false},
		{"{system.hostname}", false},
		{"{env.A}{time.now.year}", false},
		{"{unclosed", false},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			err := checkUser(tt.user)
			if (err == nil) != tt.ok {
				t.Fatalf("checkUser(%q) = %v, want ok %v", tt.user, err, tt.ok)
			}
			if err != nil && !strings.Contains(err.Error(), "user") {
				t.Fatalf("the error does not name the field: %v", err)
			}
		})
	}
}

// userHandler is an authorization_code handler against srv with its
// tokens in a sealed file store.
func userHandler(t *testing.T, srv *tasknationtest.Server) *Handler {
	t.Helper()
	t.Setenv("TG_TEST_CLIENT_ID", tasknationtest.DefaultClientID)
	t.Setenv("TG_TEST_CLIENT_SECRET", tasknationtest.DefaultClientSecret)
	t.Setenv("TG_TEST_KEY", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	srv.AddRedirectURI(tasknationtest.DefaultClientID, "http://127.0.0.1:9/oauth2/callback")
	return &Handler{
		TokenURL:     srv.TokenURL(),
		ClientID:     "{env.TG_TEST_CLIENT_ID}",
		ClientSecret: "{env.TG_TEST_CLIENT_SECRET}",
		Scopes:       []string{"supply::leads"},
		AuthorizationCode: &AuthorizationCode{
			AuthURL:     srv.AuthURL(),
			User:        "{http.auth.user.id}",
			RedirectURI: "http://127.0.0.1:9/oauth2/callback",
		},
		Store: &StoreConfig{
			Kind:           "file",
			Dir:            filepath.Join(t.TempDir(), "tokens"),
			EncryptionKeys: []string{"{env.TG_TEST_KEY}"},
		},
	}
}

// clone is a deep copy of h's configuration, to change without changing h.
func clone(t *testing.T, h *Handler) *Handler {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	out := new(Handler)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// serveAs runs r through h with the replacer Caddy's server would give
// it, where basic_auth has set {http.auth.user.id} to user ("": not set).
func serveAs(t *testing.T, h *Handler, r *http.Request, user string) (*httptest.ResponseRecorder, bool) {
	t.Helper()
	repl := caddy.NewReplacer()
	if user != "" {
		repl.Set("http.auth.user.id", user)
	}
	r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
	w := httptest.NewRecorder()
	called := false
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		called = true
		return nil
	})
	if err := h.ServeHTTP(w, r, next); err != nil {
		t.Fatal(err)
	}
	return w, called
}

func TestServeHTTP_UserGrant(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	h := userHandler(t, srv)
	_, cancel := provision(t, h)
	defer func() { cancel(); h.Cleanup() }()

	type answer struct {
		Error      string `json:"error"`
		ConnectURL string `json:"connect_url"`
	}
	tests := []struct {
		name       string
		method     string
		path       string
		user       string
		wantStatus int
		wantError  string
	}{
		{"API call without a user", "GET", "/api/v1/leads", "", http.StatusUnauthorized, "unauthenticated"},
		{"API call of a user not connected", "GET", "/api/v1/leads", "alice", http.StatusUnauthorized, "not_connected"},
		{"connect without a user", "GET", "/oauth2/connect", "", http.StatusUnauthorized, "unauthenticated"},
		{"connect", "GET", "/oauth2/connect", "alice", http.StatusFound, ""},
		{"callback without state", "GET", "/oauth2/callback?code=x", "alice", http.StatusBadRequest, "invalid_state"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(tt.method, tt.path, nil)
			r.Header.Set("Authorization", "Bearer client-junk")
			w, called := serveAs(t, h, r, tt.user)
			if called {
				t.Fatal("the next handler was called")
			}
			if w.Code != tt.wantStatus {
				t.Fatalf("status %d, want %d; body %s", w.Code, tt.wantStatus, w.Body)
			}
			if tt.wantError == "" {
				loc := w.Header().Get("Location")
				if !strings.HasPrefix(loc, srv.AuthURL()+"?") {
					t.Fatalf("Location %q, want the authorization endpoint", loc)
				}
				return
			}
			var a answer
			if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if a.Error != tt.wantError {
				t.Fatalf("error %q, want %q", a.Error, tt.wantError)
			}
			if a.Error == "not_connected" && a.ConnectURL != "http://127.0.0.1:9/oauth2/connect" {
				t.Fatalf("connect_url %q", a.ConnectURL)
			}
		})
	}
}

// A subject built around a placeholder that is not set is no one, not a
// subject shared by every request without it; the same for a user that is
// one placeholder (read without the template parser) and one with text
// around it.
func TestSubject_UnsetPlaceholderIsNoOne(t *testing.T) {
	for _, c := range []struct {
		user, want string
		sole       bool
	}{
		{"tenant-{http.auth.user.id}", "tenant-alice", false},
		{"{http.auth.user.id}", "alice", true},
		{"{http.auth.user.id}{http.auth.user.id}", "alicealice", false},
		{`{http.auth.user.id}\}`, "alice}", false},
	} {
		t.Run(c.user, func(t *testing.T) {
			h := &Handler{user: c.user, userVar: soleVariable(c.user)}
			if (h.userVar != "") != c.sole {
				t.Fatalf("soleVariable(%q) = %q", c.user, h.userVar)
			}
			repl := caddy.NewReplacer()
			r := httptest.NewRequest("GET", "/", nil)
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
			if s := h.subject(r); s != "" {
				t.Fatalf("subject without the placeholder set = %q, want empty", s)
			}
			repl.Set("http.auth.user.id", "")
			if s := h.subject(r); s != "" {
				t.Fatalf("subject with the placeholder empty = %q, want empty", s)
			}
			repl.Set("http.auth.user.id", "alice")
			if s := h.subject(r); s != c.want {
				t.Fatalf("subject = %q, want %s", s, c.want)
			}
			if s := h.subject(httptest.NewRequest("GET", "/", nil)); s != "" {
				t.Fatalf("subject of a request without a replacer = %q, want empty", s)
			}
		})
	}
}

func TestProvision_UserErrors(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	t.Setenv("TG_TEST_SHORT_KEY", base64.StdEncoding.EncodeToString([]byte("k3y-too-short")))
	t.Setenv("TG_TEST_OLD_KEY", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("o", 32))))
	// userHandler's key, written another way (URL alphabet, no padding).
	t.Setenv("TG_TEST_SAME_KEY", base64.RawURLEncoding.EncodeToString([]byte(strings.Repeat("k", 32))))
	tests := []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"unset key placeholder", func(h *Handler) { h.Store.EncryptionKeys[0] = "{env.TG_TEST_UNSET_KEY}" }, "encryption_key: placeholder {env.TG_TEST_UNSET_KEY} is unset"},
		{"short key", func(h *Handler) { h.Store.EncryptionKeys[0] = "{env.TG_TEST_SHORT_KEY}" }, "encryption_key: encryption key decodes to 13 bytes"},
		{"unset older key placeholder", func(h *Handler) { h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_UNSET_KEY}") },
			"encryption_key: placeholder {env.TG_TEST_UNSET_KEY} is unset"},
		{"short older key", func(h *Handler) {
			h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_OLD_KEY}", "{env.TG_TEST_SHORT_KEY}")
		}, "oauth2_token: encryption_key: key 3 of 3 (an older key) decodes to 13 bytes, want 32"},
		{"older key repeats the key", func(h *Handler) { h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_SAME_KEY}") },
			"oauth2_token: encryption_key: key 2 of 2 (an older key) repeats key 1 of 2 (the key that seals)"},
		{"older key repeated", func(h *Handler) {
			h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_OLD_KEY}", "{env.TG_TEST_OLD_KEY}")
		}, "oauth2_token: encryption_key: key 3 of 3 (an older key) repeats key 2 of 3 (an older key)"},
		{"five keys", func(h *Handler) {
			h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_OLD_KEY}", "{env.A}", "{env.B}", "{env.C}")
		}, "oauth2_token: encryption_key: 5 keys, want at most 4 (the key that seals and 3 older keys that still open)"},
		{"store dir unset", func(h *Handler) { h.Store.Dir = "{env.TG_TEST_UNSET_DIR}" }, "store: placeholder {env.TG_TEST_UNSET_DIR} is unset"},
		{"literal user", func(h *Handler) { h.AuthorizationCode.User = "alice" }, `user "alice" has no placeholder`},
		{"no user", func(h *Handler) { h.AuthorizationCode.User = "" }, "user is required for grant authorization_code"},
		{"no redirect", func(h *Handler) { h.AuthorizationCode.RedirectURI = "" }, "redirect_uri is required"},
		{"key with memory store", func(h *Handler) { h.Store.Kind, h.Store.Dir = "memory", "" }, "encryption_key: only applies to a durable store"},
		{"key with the default store", func(h *Handler) { h.AuthorizationCode, h.Store.Kind, h.Store.Dir = nil, "", "" },
			"encryption_key: only applies to a durable store (file, caddy or redis); the store is memory"},
		{"store dir with caddy store", func(h *Handler) { h.Store.Kind = "caddy" }, "store: a directory only applies to store file (the store is caddy)"},
		{"redis object with file store", func(h *Handler) { h.Store.Redis = &RedisConfig{Addr: "127.0.0.1:6379"} },
			"store: a redis object only applies to store redis (the store is file)"},
		{"unknown store", func(h *Handler) { h.Store.Kind, h.Store.Dir = "dynamodb", "" }, `store: unknown store "dynamodb"`},
		{"misspelt store", func(h *Handler) { h.Store.Kind, h.Store.Dir = "reddis", "" }, `store: unknown store "reddis" (want memory, file <dir>, caddy or redis [<host:port> [<db>]]); did you mean "redis"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := userHandler(t, srv)
			tt.change(h)
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			for _, secret := range []string{tasknationtest.DefaultClientSecret, "k3y-too-short", os.Getenv("TG_TEST_KEY"), os.Getenv("TG_TEST_SHORT_KEY"),
				os.Getenv("TG_TEST_OLD_KEY"), os.Getenv("TG_TEST_SAME_KEY")} {
				if strings.Contains(err.Error(), secret) {
					t.Fatalf("the error shows a secret: %v", err)
				}
			}
		})
	}
}

// poolKeyOf is the pool key of h's config at load.
func poolKeyOf(t *testing.T, h *Handler) string {
	t.Helper()
	g, err := h.config(resolver{caddy.NewReplacer()})
	if err != nil {
		t.Fatal(err)
	}
	return poolKey(g, nil)
}

// Every field that changes what a Gate does changes its pool key; the
// secrets are not in it.
func TestPoolKey(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	base := userHandler(t, srv)
	base.AuthorizationCode.RedirectURI = "http://127.0.0.1:9/gw/oauth2/callback" // callback_path: its default, the whole path
	key := func(h *Handler) string { return poolKeyOf(t, h) }
	k0 := key(base)
	if key(userHandler(t, srv)) == k0 {
		// userHandler picks a new temp dir: the store differs.
		t.Fatal("two store directories share a pool key")
	}
	if key(clone(t, base)) != k0 {
		t.Fatal("the same configuration has two pool keys")
	}
	for _, s := range []string{tasknationtest.DefaultClientSecret, os.Getenv("TG_TEST_KEY")} {
		if strings.Contains(k0, s) {
			t.Fatal("the pool key holds a secret")
		}
	}
	t.Setenv("TG_TEST_KEY2", base64.StdEncoding.EncodeToString([]byte(strings.Repeat("K", 32))))
	changes := map[string]func(h *Handler){
		"auth_url":              func(h *Handler) { h.AuthorizationCode.AuthURL += "2" },
		"redirect_uri":          func(h *Handler) { h.AuthorizationCode.RedirectURI = "http://127.0.0.1:10/gw/oauth2/callback" },
		"connect_path":          func(h *Handler) { h.AuthorizationCode.ConnectPath = "/c" },
		"callback_path":         func(h *Handler) { h.AuthorizationCode.CallbackPath = "/oauth2/callback" }, // under the prefix /gw
		"disconnect_path":       func(h *Handler) { h.AuthorizationCode.DisconnectPath = "/d" },
		"pkce":                  func(h *Handler) { h.AuthorizationCode.DisablePKCE = true },
		"connected_redirect":    func(h *Handler) { h.AuthorizationCode.ConnectedRedirect = "/done" },
		"state_lifetime":        func(h *Handler) { h.AuthorizationCode.StateLifetime = caddy.Duration(time.Minute) },
		"grace_period":          func(h *Handler) { h.AuthorizationCode.GracePeriod = caddy.Duration(time.Second) },
		"refresh_token_warning": func(h *Handler) { h.AuthorizationCode.RefreshTokenWarning = caddy.Duration(time.Hour) },
		"store dir":             func(h *Handler) { h.Store.Dir += "2" },
		"store kind":            func(h *Handler) { h.Store.Kind, h.Store.Dir = "caddy", "" },
		"encryption key":        func(h *Handler) { h.Store.EncryptionKeys = []string{"{env.TG_TEST_KEY2}"} },
		"no encryption key":     func(h *Handler) { h.Store.EncryptionKeys = nil },
		"an older key":          func(h *Handler) { h.Store.EncryptionKeys = append(h.Store.EncryptionKeys, "{env.TG_TEST_KEY2}") },
		"keys swapped": func(h *Handler) {
			h.Store.EncryptionKeys = []string{"{env.TG_TEST_KEY2}", h.Store.EncryptionKeys[0]}
		},
		"scopes": func(h *Handler) { h.Scopes = []string{"supply::businesses"} },
		"grant":  func(h *Handler) { h.AuthorizationCode = nil },
	}
	for name, change := range changes {
		h := clone(t, base)
		change(h)
		if key(h) == k0 {
			t.Errorf("changing %s keeps the pool key", name)
		}
	}
	// The user placeholder is the handler's, not the Gate's.
	h := clone(t, base)
	h.AuthorizationCode.User = "{http.request.header.X-User}"
	if key(h) != k0 {
		t.Error("changing user changes the pool key")
	}
}

// seriesOf counts the series c has.
func seriesOf(c prometheus.Collector) int {
	ch := make(chan prometheus.Metric, 1024)
	c.Collect(ch)
	close(ch)
	return len(ch)
}

func TestObserver_ConnectOutcomesBounded(t *testing.T) {
	var o observer
	before := seriesOf(metrics.connects)
	for i := range 50 {
		o.Connect(fmt.Sprintf("made_up_code_%c", 'a'+i%26))
	}
	o.Connect("connected")
	if n := seriesOf(metrics.connects); n > before+2 {
		t.Fatalf("connects_total has %d series after 27 distinct outcomes, want at most %d (other, connected)", n, before+2)
	}
	var m dto.Metric
	if err := metrics.connects.WithLabelValues("other").Write(&m); err != nil {
		t.Fatal(err)
	}
	if v := m.GetCounter().GetValue(); v < 50 {
		t.Fatalf(`connects_total{outcome="other"} = %v, want >= 50`, v)
	}
}

// BenchmarkSubject: the user placeholder resolved per request, a template
// through the Replacer's parser (impl=template, the baseline) against a
// user that is one placeholder, read directly (impl=sole).
func BenchmarkSubject(b *testing.B) {
	for _, c := range []struct{ impl, user string }{
		{"template", "{http.auth.user.id}-"}, {"sole", "{http.auth.user.id}"},
		{"header-replacer", "{http.request.header.X-Auth-User}"}, {"header", "{http.request.header.X-Auth-User}"},
	} {
		b.Run("impl="+c.impl, func(b *testing.B) {
			h := &Handler{user: c.user, userVar: soleVariable(c.user)}
			if c.impl == "header" {
				h.userHeader = requestHeaderField(h.userVar)
			}
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("X-Auth-User", "alice@example.com")
			repl := caddyhttp.NewTestReplacer(r)
			repl.Set("http.auth.user.id", "alice@example.com")
			b.ReportAllocs()
			for b.Loop() {
				if h.subject(r) == "" {
					b.Fatal("no subject")
				}
			}
		})
	}
}

// A user that is {http.request.header.<field>} is read from the request
// without the Replacer, and must read exactly what the placeholder gives:
// any spelling of the field, values joined with commas, absent and empty
// alike no one.
func TestSubject_RequestHeaderAsPlaceholder(t *testing.T) {
	for _, c := range []struct {
		name, user string
		values     []string // of X-Auth-User
	}{
		{"one value", "{http.request.header.X-Auth-User}", []string{"alice"}},
		{"lowercase field", "{http.request.header.x-auth-user}", []string{"alice"}},
		{"two values", "{http.request.header.X-Auth-User}", []string{"alice", "bob"}},
		{"empty value", "{http.request.header.X-Auth-User}", []string{""}},
		{"absent", "{http.request.header.X-Auth-User}", nil},
		{"other field", "{http.request.header.X-Other}", []string{"alice"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := &Handler{user: c.user, userVar: soleVariable(c.user)}
			h.userHeader = requestHeaderField(h.userVar)
			if h.userHeader == "" {
				t.Fatalf("requestHeaderField(%q) = \"\": the header path is not taken", h.userVar)
			}
			r := httptest.NewRequest("GET", "/", nil)
			for _, v := range c.values {
				r.Header.Add("X-Auth-User", v)
			}
			repl := caddyhttp.NewTestReplacer(r)
			want, _ := repl.GetString(h.userVar)
			if got := h.subject(r); got != want {
				t.Fatalf("subject = %q, the placeholder gives %q", got, want)
			}
			// The slow path, the same user through the Replacer.
			slow := &Handler{user: c.user, userVar: h.userVar}
			if got := slow.subject(r); got != want {
				t.Fatalf("Replacer path: subject = %q, want %q", got, want)
			}
		})
	}
	for _, v := range []string{"http.request.header.", "http.request.headers.X", "http.auth.user.id", ""} {
		if f := requestHeaderField(v); f != "" {
			t.Errorf("requestHeaderField(%q) = %q, want \"\"", v, f)
		}
	}
}

// TestConfig_PlaceholdersInUserURLs: connected_redirect resolves {env.*}
// at load as redirect_uri does (at adapt a stand-in is checked), and a
// placeholder in scopes, which are never resolved, is refused with that
// reason rather than sent to the token endpoint as a scope.
func TestConfig_PlaceholdersInUserURLs(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	t.Setenv("TG_TEST_PUBLIC", "https://app.example.com")
	h := userHandler(t, srv)
	h.AuthorizationCode.ConnectedRedirect = "{env.TG_TEST_PUBLIC}/settings"
	if _, err := h.config(resolver{}); err != nil {
		t.Fatalf("at adapt: %v", err)
	}
	g, err := h.config(resolver{caddy.NewReplacer()})
	if err != nil {
		t.Fatalf("at load: %v", err)
	}
	if g.ConnectedRedirect != "https://app.example.com/settings" {
		t.Errorf("connected_redirect at load = %q, want the resolved URL", g.ConnectedRedirect)
	}

	h = userHandler(t, srv)
	h.Scopes = []string{"{env.TG_TEST_SCOPES}"}
	for _, r := range []resolver{{}, {caddy.NewReplacer()}} {
		if _, err := h.config(r); err == nil || !strings.Contains(err.Error(), "placeholders are not resolved in scopes") {
			t.Errorf("scopes with a placeholder: err = %v, want the reason", err)
		}
	}
}

// TestSubject_UnknownPlaceholderWarnsOnce: a user placeholder unknown on a
// request (misspelt, or never set by the login in front) gives no subject,
// so the request is answered 401; the handler warns of it once, naming
// the placeholder, however many requests follow, and a request that has
// it is served.
func TestSubject_UnknownPlaceholderWarnsOnce(t *testing.T) {
	for _, user := range []string{"{http.auth.user}", "{http.auth.user}@{http.vars.tenant}"} {
		t.Run(user, func(t *testing.T) {
			core, logs := zapobserver.New(zap.WarnLevel)
			h := &Handler{user: user, userVar: soleVariable(user), userUnknown: new(atomic.Bool), logger: zap.New(core)}
			repl := caddy.NewReplacer()
			r := httptest.NewRequest(http.MethodGet, "/api/v1/leads", nil)
			r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
			for range 3 {
				if s := h.subject(r); s != "" {
					t.Fatalf("subject %q, want none", s)
				}
			}
			if n := logs.FilterMessageSnippet("is unknown on a request").Len(); n != 1 {
				t.Fatalf("%d warnings, want 1: %v", n, logs.All())
			}
			if msg := logs.All()[0].Message; !strings.Contains(msg, user) {
				t.Errorf("the warning %q does not name %s", msg, user)
			}
			repl.Set("http.auth.user", "alice")
			repl.Set("http.vars.tenant", "acme")
			if s := h.subject(r); s == "" || !strings.HasPrefix(s, "alice") {
				t.Errorf("subject %q once the placeholder is set, want alice's", s)
			}
			if logs.Len() != 1 {
				t.Errorf("%d log entries, want the one warning", logs.Len())
			}
		})
	}
}
