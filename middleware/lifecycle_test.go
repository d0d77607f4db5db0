package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// lifecycle records LifecycleEvents.
type lifecycle struct {
	mu  sync.Mutex
	evs []middleware.LifecycleEvent
}

func (l *lifecycle) UserEvent(ev middleware.LifecycleEvent) {
	l.mu.Lock()
	l.evs = append(l.evs, ev)
	l.mu.Unlock()
}

// take returns the events so far and forgets them.
func (l *lifecycle) take() []middleware.LifecycleEvent {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.evs
	l.evs = nil
	return out
}

// wantEvents checks the kinds of evs, and that each names subject.
func wantEvents(t *testing.T, evs []middleware.LifecycleEvent, subject string, kinds ...middleware.LifecycleKind) {
	t.Helper()
	if len(evs) != len(kinds) {
		t.Fatalf("events %+v, want kinds %v", evs, kinds)
	}
	for i, ev := range evs {
		if ev.Kind != kinds[i] || ev.Subject != subject || !strings.HasPrefix(ev.SubjectKey, "user:") ||
			strings.Contains(ev.SubjectKey, subject) || ev.At.IsZero() {
			t.Errorf("event %d = %+v, want %s of %s with a hashed key", i, ev, kinds[i], subject)
		}
	}
}

// status reads the status path as b's user.
func (b *browser) status(base string) (answer, map[string]any) {
	b.t.Helper()
	a := b.get(base + "/oauth2/status")
	return a, a.json
}

func TestUser_MountedUnderPrefix(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) {
		c.RedirectURI = strings.Replace(c.RedirectURI, "/oauth2/callback", "/gw/oauth2/callback", 1)
		c.CallbackPath = "/oauth2/callback"
	})
	f.srv.AddRedirectURI(tasknationtest.DefaultClientID, f.gw.URL+"/gw/oauth2/callback")
	// A router in front mounts the gateway under /gw and strips it.
	f.gw.Config.Handler = http.StripPrefix("/gw", f.gw.Config.Handler)
	f.base = f.gw.URL + "/gw"
	alice := f.browser(t, "alice")

	a := alice.api(f)
	wantUserError(t, a, http.StatusUnauthorized, "not_connected")
	if want := f.gw.URL + "/gw/oauth2/connect"; a.json["connect_url"] != want || f.gate.ConnectURL() != want {
		t.Errorf("connect_url = %v, ConnectURL() = %s, want %s", a.json["connect_url"], f.gate.ConnectURL(), want)
	}
	start := alice.get(f.base + "/oauth2/connect")
	auth, err := url.Parse(start.header.Get("Location"))
	if start.status != http.StatusFound || err != nil {
		t.Fatalf("connect: %d %s", start.status, start.body)
	}
	var cookie *http.Cookie
	for _, c := range (&http.Response{Header: start.header}).Cookies() {
		if c.Name == "tokengate_state" {
			cookie = c
		}
	}
	if cookie == nil || cookie.Path != "/gw/oauth2/callback" {
		t.Fatalf("state cookie %+v, want Path /gw/oauth2/callback", cookie)
	}
	cb := alice.authorize(auth, "tn-alice")
	if cb.Path != "/gw/oauth2/callback" {
		t.Fatalf("callback at %s", cb.Path)
	}
	// The browser sends the cookie only because its Path is the public one.
	if a := alice.get(cb.String()); a.status != http.StatusOK || a.json["status"] != "connected" {
		t.Fatalf("callback: %d %s", a.status, a.body)
	}
	if a := alice.api(f); a.status != http.StatusOK {
		t.Fatalf("API after connecting under /gw: %d %s", a.status, a.body)
	}
	if _, st := alice.status(f.base); st["connect_url"] != f.gw.URL+"/gw/oauth2/connect" || st["connected"] != true {
		t.Errorf("status %v", st)
	}
	// A browser error page links to the public connect URL.
	req, _ := http.NewRequest(http.MethodGet, f.base+"/oauth2/callback?state=x&code=y", nil)
	req.Header.Set("Accept", "text/html")
	req.SetBasicAuth("alice", "pw")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var page strings.Builder
	readBody(&page, resp)
	if !strings.Contains(page.String(), `href="`+f.gw.URL+`/gw/oauth2/connect"`) {
		t.Errorf("error page does not link to the public connect URL:\n%s", page.String())
	}
}

func TestConfig_PublicPrefix(t *testing.T) {
	base := middleware.Config{
		Grant: middleware.GrantAuthorizationCode, ClientID: "id", ClientSecret: "secret",
		RedirectURI: "https://gw.example.com/gw/oauth2/callback",
	}
	tests := []struct {
		name     string
		mod      func(*middleware.Config)
		field    string // "" = valid
		contains string
	}{
		{"callback path is the suffix", func(c *middleware.Config) { c.CallbackPath = "/oauth2/callback" }, "", ""},
		{"callback path defaults to the whole path", func(c *middleware.Config) {}, "", ""},
		{"callback path not a suffix", func(c *middleware.Config) { c.CallbackPath = "/cb" }, "callback_path",
			`callback_path "/cb": redirect_uri's path "/gw/oauth2/callback" must be the callback path, or end with it`},
		{"status path taken", func(c *middleware.Config) { c.StatusPath = "/oauth2/connect" }, "status_path", "the same path as connect_path"},
		{"revocation with tasknation", func(c *middleware.Config) { c.RevocationURL = "https://auth.example.com/revoke" }, "revocation_url",
			"revocation_url does not apply to provider tasknation"},
		{"revocation over http", func(c *middleware.Config) {
			c.Provider, c.TokenURL, c.AuthURL = middleware.Generic, "https://a.example.com/t", "https://a.example.com/a"
			c.RevocationURL = "http://a.example.com/revoke"
		}, "revocation_url", "http:// is only allowed on loopback hosts"},
		{"revocation with generic", func(c *middleware.Config) {
			c.Provider, c.TokenURL, c.AuthURL = middleware.Generic, "https://a.example.com/t", "https://a.example.com/a"
			c.RevocationURL = "https://a.example.com/revoke"
		}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := base
			tt.mod(&c)
			err := c.Validate()
			var ce *middleware.ConfigError
			switch {
			case tt.field == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tt.field != "" && (!errors.As(err, &ce) || ce.Field != tt.field || !strings.Contains(err.Error(), tt.contains)):
				t.Fatalf("err = %v, want field %s containing %q", err, tt.field, tt.contains)
			}
		})
	}
}

func TestUser_ConnectionStatus(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	connectURL := f.gw.URL + "/oauth2/connect"

	check := func(a answer, st map[string]any, state string) {
		t.Helper()
		if a.status != http.StatusOK || a.header.Get("Cache-Control") != "no-store" ||
			a.header.Get("Content-Type") != "application/json" {
			t.Fatalf("status answer %d %v %s", a.status, a.header, a.body)
		}
		if st["state"] != state || st["connected"] != (state == "connected") || st["connect_url"] != connectURL {
			t.Fatalf("status %s, want state %s", a.body, state)
		}
		for _, k := range []string{"connected", "state", "scopes", "connected_at", "refresh_token_expires_at", "connect_url"} {
			if _, ok := st[k]; !ok {
				t.Errorf("status has no %q: %s", k, a.body)
			}
		}
	}
	a, st := alice.status(f.base)
	check(a, st, "not_connected")
	if st["connected_at"] != nil || st["refresh_token_expires_at"] != nil || len(st["scopes"].([]any)) != 0 {
		t.Errorf("not connected, yet %s", a.body)
	}

	connectedAt := f.clock.Now()
	alice.connect(f, "tn-alice")
	a, st = alice.status(f.base)
	check(a, st, "connected")
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	if strings.Contains(a.body, tok.AccessToken) || strings.Contains(a.body, tok.RefreshToken) {
		t.Fatal("the status holds a token")
	}
	wantTime := func(k string, want time.Time) {
		t.Helper()
		got, err := time.Parse(time.RFC3339Nano, st[k].(string))
		if err != nil || !got.Equal(want) {
			t.Errorf("%s = %v, want %v", k, st[k], want)
		}
	}
	wantTime("connected_at", connectedAt)
	wantTime("refresh_token_expires_at", connectedAt.Add(180*24*time.Hour))
	if got := st["scopes"].([]any); len(got) != 3 {
		t.Errorf("scopes = %v, want the three granted", got)
	}
	// A browser asking for HTML still gets JSON: the path is for scripts.
	req, _ := http.NewRequest(http.MethodGet, f.base+"/oauth2/status", nil)
	req.Header.Set("Accept", "text/html")
	req.SetBasicAuth("alice", "pw")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status for a browser: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// A rotation keeps the connect time.
	f.clock.Advance(2 * time.Hour)
	if a := alice.api(f); a.status != http.StatusOK {
		t.Fatal(a.status)
	}
	if tok2, _ := f.gate.UserToken(context.Background(), "alice"); tok2.Version == tok.Version {
		t.Fatal("no rotation happened")
	}
	st2, err := f.gate.ConnectionStatus(context.Background(), "alice")
	if err != nil || !st2.ConnectedAt.Equal(connectedAt) || !st2.Connected {
		t.Fatalf("after a rotation: %+v, %v; want connected at %v", st2, err, connectedAt)
	}

	// Refused refresh token: reauthorization_required, until connected again.
	tok, _ = f.gate.UserToken(context.Background(), "alice")
	refreshOnce(t, f.srv, tok.RefreshToken)
	f.clock.Advance(2 * time.Hour)
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "reauthorization_required")
	a, st = alice.status(f.base)
	check(a, st, "reauthorization_required")
	alice.connect(f, "tn-alice")
	a, st = alice.status(f.base)
	check(a, st, "connected")
	if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
		t.Fatalf("disconnect: %d", a.status)
	}
	a, st = alice.status(f.base)
	check(a, st, "not_connected")

	// Methods and subjects.
	if a := alice.do(http.MethodPost, f.base+"/oauth2/status", true); a.status != http.StatusMethodNotAllowed || a.header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST status: %d Allow %q", a.status, a.header.Get("Allow"))
	}
	if a := alice.do(http.MethodHead, f.base+"/oauth2/status", true); a.status != http.StatusOK {
		t.Errorf("HEAD status: %d", a.status)
	}
	wantUserError(t, f.browser(t, "").get(f.base+"/oauth2/status"), http.StatusUnauthorized, "unauthenticated")
	if _, err := f.gate.ConnectionStatus(context.Background(), ""); err == nil {
		t.Error("ConnectionStatus of no subject: no error")
	}
}

// TestUser_StatusFindsRunOutSet: the status is the first to see a set
// that ran out: it reports reauthorization_required and the event, once.
func TestUser_StatusFindsRunOutSet(t *testing.T) {
	lc := &lifecycle{}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Lifecycle = lc })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	lc.take()
	f.clock.Advance(181 * 24 * time.Hour)
	for range 2 {
		if _, st := alice.status(f.base); st["state"] != "reauthorization_required" {
			t.Fatalf("status after 181 days: %v", st)
		}
	}
	wantEvents(t, lc.take(), "alice", middleware.EventReauthorizationRequired)
}

func TestUser_LifecycleEvents(t *testing.T) {
	lc := &lifecycle{}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Lifecycle = lc })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	evs := lc.take()
	wantEvents(t, evs, "alice", middleware.EventConnected)
	key := evs[0].SubjectKey
	if want := f.clock.Now().Add(180 * 24 * time.Hour); !evs[0].RefreshTokenExpiresAt.Equal(want) {
		t.Errorf("connected: refresh token expires at %v, want %v", evs[0].RefreshTokenExpiresAt, want)
	}

	// Inside the warning window: one event per refresh.
	f.clock.Advance(170 * 24 * time.Hour)
	if a := alice.api(f); a.status != http.StatusOK {
		t.Fatal(a.status)
	}
	evs = lc.take()
	wantEvents(t, evs, "alice", middleware.EventRefreshTokenExpiring)
	if evs[0].SubjectKey != key || evs[0].RefreshTokenExpiresAt.IsZero() {
		t.Errorf("expiring: %+v", evs[0])
	}

	// A refused refresh token: one event for many concurrent requests.
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	refreshOnce(t, f.srv, tok.RefreshToken)
	f.clock.Advance(2 * time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { alice.api(f) })
	}
	wg.Wait()
	alice.api(f)
	// (The refresh that was refused was inside the warning window too.)
	wantEvents(t, lc.take(), "alice", middleware.EventRefreshTokenExpiring, middleware.EventReauthorizationRequired)

	// Disconnect: one event; a second disconnect deletes nothing and says nothing.
	alice.connect(f, "tn-alice")
	for range 2 {
		if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
			t.Fatalf("disconnect: %d", a.status)
		}
	}
	wantEvents(t, lc.take(), "alice", middleware.EventConnected, middleware.EventDisconnected)
	// Gate.Disconnect too.
	alice.connect(f, "tn-alice")
	if err := f.gate.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	wantEvents(t, lc.take(), "alice", middleware.EventConnected, middleware.EventDisconnected)
}

// TestUser_LifecycleFleet: two gateways sharing a store; each event comes
// from the gateway that did the thing, and the other agrees on the state.
func TestUser_LifecycleFleet(t *testing.T) {
	clk := newClock()
	srv := tasknationtest.NewServer(tasknationtest.Options{Now: clk.Now})
	t.Cleanup(srv.Close)
	store, err := tokenstore.NewFileStore(t.TempDir(), tokenstore.FileOptions{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	type gw struct {
		f  *userFixture
		lc *lifecycle
	}
	var gws [2]gw
	for i := range gws {
		lc := &lifecycle{}
		gws[i] = gw{f: lifecycleGateway(t, srv, clk, func(c *middleware.Config) { c.Store, c.Lifecycle = store, lc }), lc: lc}
	}
	a, b := gws[0], gws[1]
	alice := a.f.browser(t, "alice")
	alice.connect(a.f, "tn-alice")
	if _, st := alice.status(b.f.base); st["state"] != "connected" {
		t.Fatalf("B's status after A's connect: %v", st)
	}
	wantEvents(t, a.lc.take(), "alice", middleware.EventConnected)
	wantEvents(t, b.lc.take(), "alice")

	tok, _ := a.f.gate.UserToken(context.Background(), "alice")
	refreshOnce(t, srv, tok.RefreshToken)
	clk.Advance(2 * time.Hour)
	wantUserError(t, alice.api(a.f), http.StatusUnauthorized, "reauthorization_required")
	// B agrees, from the store's mark, and reports nothing: A did it.
	wantUserError(t, alice.api(b.f), http.StatusUnauthorized, "reauthorization_required")
	if _, st := alice.status(b.f.base); st["state"] != "reauthorization_required" {
		t.Errorf("B's status: %v", st)
	}
	wantEvents(t, a.lc.take(), "alice", middleware.EventReauthorizationRequired)
	wantEvents(t, b.lc.take(), "alice")

	alice.connect(b.f, "tn-alice")
	if a := alice.do(http.MethodPost, a.f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
		t.Fatal(a.status)
	}
	if _, st := alice.status(b.f.base); st["state"] != "not_connected" {
		t.Errorf("B's status after A's disconnect: %v", st)
	}
	wantEvents(t, a.lc.take(), "alice", middleware.EventDisconnected)
	wantEvents(t, b.lc.take(), "alice", middleware.EventConnected)
}

// lifecycleGateway is a gateway on srv with a Gate of its own.
func lifecycleGateway(t *testing.T, srv *tasknationtest.Server, clk *clock, mod func(*middleware.Config)) *userFixture {
	t.Helper()
	hs := httptest.NewServer(nil)
	t.Cleanup(hs.Close)
	srv.AddRedirectURI(tasknationtest.DefaultClientID, hs.URL+"/oauth2/callback")
	core, logs := observer.New(zapcore.DebugLevel)
	cfg := middleware.Config{
		Grant: middleware.GrantAuthorizationCode, TokenURL: srv.TokenURL(), AuthURL: srv.AuthURL(),
		RedirectURI: hs.URL + "/oauth2/callback", ClientID: tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret, Scopes: userScopes, Subject: basicUser,
		Logger: zap.New(core), Clock: clk,
	}
	mod(&cfg)
	g := fleettest.Serve(t, hs, srv, cfg)
	return &userFixture{srv: srv, gate: g, gw: hs, base: hs.URL, clock: clk, logs: logs}
}

func TestUser_DisconnectRevokes(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{RevocationEndpoint: true, AcceptBasicAuth: true}, func(c *middleware.Config) {
		c.Provider = middleware.Generic
		c.RevocationURL = strings.TrimSuffix(c.TokenURL, "/token") + "/revoke"
	})
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
		t.Fatalf("disconnect: %d %s", a.status, a.body)
	}
	if f.srv.RefreshActive(tok.RefreshToken) || f.srv.Active(tok.AccessToken) || f.srv.RevokedRefreshTokens() != 1 {
		t.Fatalf("after disconnect: refresh active %v, access active %v, revoked %d",
			f.srv.RefreshActive(tok.RefreshToken), f.srv.Active(tok.AccessToken), f.srv.RevokedRefreshTokens())
	}
	// Nothing to revoke on a second disconnect.
	if err := f.gate.Disconnect(context.Background(), "alice"); err != nil || f.srv.RevocationRequests() != 1 {
		t.Fatalf("second disconnect: %v, %d revocation requests", err, f.srv.RevocationRequests())
	}

	// The endpoint failing: the disconnect stands, the failure is logged
	// without the token.
	alice.connect(f, "tn-alice")
	tok, _ = f.gate.UserToken(context.Background(), "alice")
	f.srv.FailRevocations(http.StatusInternalServerError)
	if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
		t.Fatalf("disconnect with a failing revocation endpoint: %d", a.status)
	}
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
	if !f.srv.RefreshActive(tok.RefreshToken) {
		t.Fatal("the failing endpoint revoked the token")
	}
	logged := f.logs.FilterMessageSnippet("revoking the refresh token failed").All()
	if len(logged) != 1 || !strings.Contains(logged[0].ContextMap()["error"].(string), "HTTP 500") {
		t.Fatalf("revocation failure logs: %+v", logged)
	}
	for _, e := range f.logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		if strings.Contains(e.Message+string(line), tok.RefreshToken) || strings.Contains(string(line), tasknationtest.DefaultClientSecret) {
			t.Fatalf("a log line holds a secret: %s %s", e.Message, line)
		}
	}
}

// unreplicatedStore deletes, then says that no replica confirmed it, as a
// RedisStore does when its WAIT falls short, while fail is set.
type unreplicatedStore struct {
	tokenstore.Store
	fail atomic.Bool
}

func (s *unreplicatedStore) Delete(ctx context.Context, key string) error {
	if err := s.Store.Delete(ctx, key); err != nil {
		return err
	}
	if s.fail.Load() {
		return fmt.Errorf("%w: 0 of 1 replicas acknowledged", tokenstore.ErrNotReplicated)
	}
	return nil
}

// TestUser_DisconnectNotReplicated: a disconnect whose delete the store's
// replicas did not confirm (a failover could bring the set back) still
// revokes the refresh token and forgets the user here, but tells the
// browser to try again; the retry, confirmed, answers 200.
func TestUser_DisconnectNotReplicated(t *testing.T) {
	mem, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	store := &unreplicatedStore{Store: mem}
	f := newUserFixture(t, tasknationtest.Options{RevocationEndpoint: true, AcceptBasicAuth: true}, func(c *middleware.Config) {
		c.Provider = middleware.Generic
		c.RevocationURL = strings.TrimSuffix(c.TokenURL, "/token") + "/revoke"
		c.Store = store
	})
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	tok, err := f.gate.UserToken(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	store.fail.Store(true)
	a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true)
	if a.status != http.StatusServiceUnavailable || !strings.Contains(a.body, "try again") {
		t.Fatalf("unconfirmed disconnect: %d %s, want 503 saying to try again", a.status, a.body)
	}
	if f.srv.RefreshActive(tok.RefreshToken) || f.srv.RevokedRefreshTokens() != 1 {
		t.Fatalf("unconfirmed disconnect: refresh token active %v, revoked %d; want it revoked",
			f.srv.RefreshActive(tok.RefreshToken), f.srv.RevokedRefreshTokens())
	}
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
	if err := f.gate.Disconnect(context.Background(), "alice"); !errors.Is(err, tokenstore.ErrNotReplicated) {
		t.Fatalf("Disconnect while unconfirmed = %v, want ErrNotReplicated", err)
	}
	store.fail.Store(false)
	if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
		t.Fatalf("disconnect again, confirmed: %d %s", a.status, a.body)
	}
	if n := f.srv.RevocationRequests(); n != 1 {
		t.Fatalf("%d revocation requests, want 1 (nothing left to revoke on the retries)", n)
	}
}

// TestUser_RevocationClientAuthInBody: with client credentials in the
// form body (TaskNation style), the revocation request sends them there.
func TestUser_RevocationClientAuthInBody(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{RevocationEndpoint: true}, func(c *middleware.Config) {
		c.Provider = middleware.Generic
		c.AuthStyle = oauth2.AuthStyleInParams
		c.RevocationURL = strings.TrimSuffix(c.TokenURL, "/token") + "/revoke"
	})
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	if err := f.gate.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if n := f.srv.RevokedRefreshTokens(); n != 1 {
		t.Fatalf("revoked %d, want 1 (the fake refuses Basic: credentials must be in the body)", n)
	}
}

// readBody copies resp's body to dst and closes it.
func readBody(dst *strings.Builder, resp *http.Response) {
	defer resp.Body.Close()
	_, _ = io.Copy(dst, resp.Body)
}
