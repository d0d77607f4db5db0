package middleware_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

var userScopes = []string{"supply::businesses", "supply::leads"}

// userFixture is a fake TaskNation server and a gateway (a real loopback
// HTTP server) whose Gate runs the authorization_code grant in front of
// the fake's API. The subject is the HTTP Basic user name, as an
// authentication middleware in front would give it.
type userFixture struct {
	srv   *tasknationtest.Server
	gate  *middleware.Gate
	gw    *httptest.Server
	base  string // the gateway's URL
	clock *clock
	logs  *observer.ObservedLogs
}

func newUserFixture(t testing.TB, srvOpts tasknationtest.Options, mod func(*middleware.Config)) *userFixture {
	t.Helper()
	f := &userFixture{clock: newClock()}
	if srvOpts.Now == nil {
		srvOpts.Now = f.clock.Now
	}
	f.srv = tasknationtest.NewServer(srvOpts)
	t.Cleanup(f.srv.Close)
	f.gw = httptest.NewUnstartedServer(nil)
	f.gw.Start()
	t.Cleanup(f.gw.Close)
	f.base = f.gw.URL
	f.srv.AddRedirectURI(tasknationtest.DefaultClientID, f.gw.URL+"/oauth2/callback")
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	cfg := middleware.Config{
		Grant:        middleware.GrantAuthorizationCode,
		TokenURL:     f.srv.TokenURL(),
		AuthURL:      f.srv.AuthURL(),
		RedirectURI:  f.gw.URL + "/oauth2/callback",
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       userScopes,
		Subject:      basicUser,
		Logger:       zap.New(core),
		Clock:        f.clock,
	}
	if mod != nil {
		mod(&cfg)
	}
	f.gate = fleettest.Serve(t, f.gw, f.srv, cfg)
	return f
}

// basicUser is the subject: the HTTP Basic user name (the tests' stand-in
// for an authentication middleware that verified it).
func basicUser(r *http.Request) string {
	u, _, _ := r.BasicAuth()
	return u
}

// browser is one person's user agent: a cookie jar, no redirects followed.
type browser struct {
	t    testing.TB
	user string
	c    *http.Client
}

func (f *userFixture) browser(t testing.TB, user string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, user: user, c: &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

type answer struct {
	status int
	header http.Header
	body   string
	json   map[string]any
}

// do sends a request as b's user (Basic auth, to the gateway only).
func (b *browser) do(method, rawURL string, gateway bool) answer {
	b.t.Helper()
	req, err := http.NewRequest(method, rawURL, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	if gateway && b.user != "" {
		req.SetBasicAuth(b.user, "pw")
	}
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", method, rawURL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, header: resp.Header, body: string(raw)}
	_ = json.Unmarshal(raw, &a.json)
	return a
}

func (b *browser) get(rawURL string) answer { return b.do(http.MethodGet, rawURL, true) }

// startConnect opens the connect path and returns the authorization URL it
// redirects to.
func (b *browser) startConnect(f *userFixture) *url.URL {
	b.t.Helper()
	a := b.get(f.base + "/oauth2/connect")
	if a.status != http.StatusFound {
		b.t.Fatalf("connect: status %d, want 302; body %s", a.status, a.body)
	}
	u, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// authorize visits the authorization URL at the fake (approving as
// login, TaskNation's user) and returns the callback URL it redirects to.
func (b *browser) authorize(auth *url.URL, login string) *url.URL {
	b.t.Helper()
	q := auth.Query()
	q.Set("login_hint", login)
	auth.RawQuery = q.Encode()
	a := b.do(http.MethodGet, auth.String(), false)
	if a.status != http.StatusFound {
		b.t.Fatalf("authorize: status %d, want 302; body %s", a.status, a.body)
	}
	u, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		b.t.Fatal(err)
	}
	return u
}

// connect runs the whole flow for b's user as TaskNation user login.
func (b *browser) connect(f *userFixture, login string) {
	b.t.Helper()
	cb := b.authorize(b.startConnect(f), login)
	a := b.get(cb.String())
	if a.status != http.StatusOK || a.json["status"] != "connected" {
		b.t.Fatalf("callback: status %d body %s, want 200 connected", a.status, a.body)
	}
}

// api calls the fake API through the gateway and returns the answer.
func (b *browser) api(f *userFixture) answer {
	b.t.Helper()
	return b.get(f.base + "/api/v1/businesses/me")
}

func wantUserError(t testing.TB, a answer, status int, code string) {
	t.Helper()
	if a.status != status || a.json["error"] != code {
		t.Fatalf("got %d %s, want %d error=%s", a.status, strings.TrimSpace(a.body), status, code)
	}
}

// userEvents is an Observer with the user-context events.
type userEvents struct{ *events }

func (e *userEvents) Connect(outcome string) { e.add("connect " + outcome) }
func (e *userEvents) RefreshTokenExpiring()  { e.add("refresh_token_expiring") }
func (e *userEvents) Reauthorization()       { e.add("reauthorization") }

func (e *events) has(s string) bool {
	for _, v := range e.snapshot() {
		if v == s {
			return true
		}
	}
	return false
}

// refreshOnce redeems rt at the fake directly, as another party would,
// and fails the test unless the fake answers 200.
func refreshOnce(t testing.TB, srv *tasknationtest.Server, rt string) {
	t.Helper()
	resp, err := http.PostForm(srv.TokenURL(), url.Values{
		"grant_type": {"refresh_token"}, "refresh_token": {rt},
		"client_id": {tasknationtest.DefaultClientID}, "client_secret": {tasknationtest.DefaultClientSecret},
	})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("refresh at the fake: %d", resp.StatusCode)
	}
}
