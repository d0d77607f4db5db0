package caddyfile_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

const (
	// browserUser logs in to the site with HTTP Basic; Caddy's basic_auth
	// makes it {http.auth.user.id}, the subject of the connect flow.
	browserUser     = "alice"
	browserPassword = "alice-browser-pw"
	// browserDeadline bounds one whole browser run: start, both flows.
	browserDeadline = 60 * time.Second
)

// browserSite is a real Caddy (in this process) with basic_auth and
// oauth2_token (authorization_code) in front of the fake TaskNation API,
// whose authorization endpoint shows a consent page.
type browserSite struct {
	fake   *tasknationtest.Server
	base   string // http://127.0.0.1:<port>, Caddy's site
	prefix string // where the gateway is mounted: "" or /gw (handle_path)
	log    string // Caddy's log file, at DEBUG
}

func (s *browserSite) connectURL() string  { return s.base + s.prefix + "/oauth2/connect" }
func (s *browserSite) callbackURL() string { return s.base + s.prefix + "/oauth2/callback" }

// newBrowserSite starts the fake and loads the Caddyfile. With a prefix
// (/gw), the gateway is mounted under it with handle_path, which strips it
// before oauth2_token sees the request.
func newBrowserSite(t *testing.T, prefix string) *browserSite {
	t.Helper()
	fake := tasknationtest.NewServer(tasknationtest.Options{ConsentPage: true})
	t.Cleanup(fake.Close)
	dir := isolate(t)
	ports := freePorts(t, 3)
	s := &browserSite{
		fake:   fake,
		base:   fmt.Sprintf("http://127.0.0.1:%d", ports[1]),
		prefix: prefix,
		log:    filepath.Join(dir, "caddy.log"),
	}
	fake.AddRedirectURI(tasknationtest.DefaultClientID, s.callbackURL())
	gateway := fmt.Sprintf(`reverse_proxy %s
	oauth2_token {
		token_url %s
		auth_url %s
		client_id {env.TN_CLIENT_ID}
		client_secret {env.TN_CLIENT_SECRET}
		scopes supply::businesses
		grant authorization_code
		user {http.auth.user.id}
		redirect_uri %s
	}`, fake.URL, fake.TokenURL(), fake.AuthURL(), s.callbackURL())
	if prefix != "" {
		gateway = strings.Replace(gateway, "\t}", "\t\tcallback_path /oauth2/callback\n\t}", 1)
		gateway = "handle_path " + prefix + "/* {\n\t" + strings.ReplaceAll(gateway, "\n", "\n\t") + "\n\t}"
		// The partner's web app: the README's front-end example, asking
		// the gateway's status path under the prefix.
		page, err := os.ReadFile(filepath.Join("..", "examples", "front-end", "index.html"))
		if err != nil {
			t.Fatal(err)
		}
		page = bytes.Replace(page, []byte(`data-status="/oauth2/status"`), []byte(`data-status="`+prefix+`/oauth2/status"`), 1)
		www := filepath.Join(dir, "www")
		if err := os.MkdirAll(filepath.Join(www, "app"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(www, "app", "index.html"), page, 0o644); err != nil {
			t.Fatal(err)
		}
		gateway += "\n\thandle /app/* {\n\t\troot * " + www + "\n\t\tfile_server\n\t}"
	}

	hash, err := bcrypt.GenerateFromPassword([]byte(browserPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	global := caddyGlobal{admin: fmt.Sprintf("127.0.0.1:%d", ports[0]), httpPort: ports[1], httpsPort: ports[2],
		storage: filepath.Join(dir, "storage"), logFile: s.log, logLevel: "DEBUG"}
	cfg := testCaddyfile(global, ports[1], fmt.Sprintf(`	basic_auth {
		%s %s
	}
	%s
`, browserUser, hash, gateway))
	out, warnings, err := adapt(cfg)
	if err != nil {
		t.Fatalf("adapting the Caddyfile: %v\n%s", err, cfg)
	}
	for _, w := range warnings {
		t.Logf("adapt warning: %s:%d: %s", w.File, w.Line, w.Message)
	}
	if err := caddy.Load(out, true); err != nil {
		t.Fatalf("loading the config: %v", err)
	}
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return s
}

// TestBrowser_ConnectApproveAndDeny runs the user-context connect flow in
// headless Chromium through Caddy: connect, the fake TaskNation consent
// page, approve, the connected page, an API call as the connected user;
// then a second connect that the user denies, which ends on the error page.
func TestBrowser_ConnectApproveAndDeny(t *testing.T) {
	chromiumPath(t) // skip before starting anything
	site := newBrowserSite(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), browserDeadline)
	defer cancel()
	tab := newBrowser(t, ctx)
	if err := setBasicAuth(tab, browserUser, browserPassword); err != nil {
		t.Fatalf("setting the Basic credentials: %v", err)
	}
	const apiPath = "/api/v1/businesses/me"

	// Logged in, not connected yet: the API answers 401 not_connected.
	p, err := load(tab, chromedp.Navigate(site.base+apiPath))
	if err != nil {
		t.Fatalf("GET %s: %v", apiPath, err)
	}
	if p.status != http.StatusUnauthorized || !strings.Contains(p.text, `"not_connected"`) {
		t.Fatalf("API before connecting: %d %q, want 401 not_connected", p.status, p.text)
	}

	// Connect: Caddy redirects to the fake's consent page.
	p, err = load(tab, chromedp.Navigate(site.connectURL()))
	if err != nil {
		t.Fatalf("opening the connect URL: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("approve"))); err != nil {
		t.Fatalf("waiting for the consent page: %v; the page says %q", err, p.text)
	}
	auth, err := url.Parse(p.location)
	if err != nil || withoutQuery(p.location) != site.fake.AuthURL() {
		t.Fatalf("the consent page is at %s, want the fake's %s", withoutQuery(p.location), site.fake.AuthURL())
	}
	state := auth.Query().Get("state")
	if who, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("subject"))); err != nil || who != tasknationtest.DefaultUser {
		t.Errorf("the consent page asks for %q (%v), want %s", who, err, tasknationtest.DefaultUser)
	}
	// The state cookie: bound to this browser, out of reach of scripts,
	// sent on the authorization server's top-level redirect back.
	c, err := browserCookie(tab, site.callbackURL(), "tokengate_state")
	if err != nil {
		t.Fatalf("reading the cookies: %v", err)
	}
	if c == nil {
		t.Fatal("the browser holds no tokengate_state cookie for the callback after connect")
	}
	if !c.HTTPOnly {
		t.Error("the state cookie is not HttpOnly")
	}
	if c.SameSite != network.CookieSameSiteLax {
		t.Errorf("the state cookie is SameSite=%q, want Lax", c.SameSite)
	}
	if c.Path != "/oauth2/callback" {
		t.Errorf("the state cookie's path is %q, want /oauth2/callback", c.Path)
	}
	if c.Session {
		t.Error("the state cookie is a session cookie, want one that expires with the state")
	}
	if c.Value != state {
		t.Error("the state cookie does not hold the state of the authorization request")
	}

	// Approve: back to Caddy's callback, which shows the connected page.
	p, err = load(tab, chromedp.Click(chromedp.ID("approve")))
	if err != nil {
		t.Fatalf("approving: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("title"))); err != nil {
		t.Fatalf("waiting for the connected page: %v; the page says %q", err, p.text)
	}
	title, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("title")))
	if err != nil {
		t.Fatal(err)
	}
	if p.status != http.StatusOK || title != "TaskNation account connected" {
		t.Fatalf("after approving: %d, title %q, page %q; want 200 TaskNation account connected", p.status, title, p.text)
	}
	if !strings.HasPrefix(p.location, site.callbackURL()+"?") {
		t.Errorf("the connected page is at %s, want Caddy's callback %s", withoutQuery(p.location), site.callbackURL())
	}
	if strings.Contains(p.text, tasknationtest.AccessTokenPrefix) {
		t.Error("the connected page shows an access token")
	}
	if c, err := browserCookie(tab, site.callbackURL(), "tokengate_state"); err != nil || c != nil {
		t.Errorf("the state cookie is still there after the callback (%v)", err)
	}
	if n := site.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges at the fake = %d, want 1", n)
	}

	// The next API call goes out as the TaskNation user who approved.
	p, err = load(tab, chromedp.Navigate(site.base+apiPath))
	if err != nil {
		t.Fatalf("GET %s: %v", apiPath, err)
	}
	var api tasknationtest.APIResponse
	if err := json.Unmarshal([]byte(p.text), &api); err != nil {
		t.Fatalf("the API page is not JSON: %v: %d %q", err, p.status, p.text)
	}
	if p.status != http.StatusOK || !api.OK || api.Subject != tasknationtest.DefaultUser ||
		api.ClientID != tasknationtest.DefaultClientID || api.Path != apiPath {
		t.Fatalf("API after connecting: %d %q, want 200 ok for subject %s", p.status, p.text, tasknationtest.DefaultUser)
	}

	// A second connect, denied: the callback shows the error page.
	if _, err := load(tab, chromedp.Navigate(site.connectURL())); err != nil {
		t.Fatalf("opening the connect URL again: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("deny"))); err != nil {
		t.Fatalf("waiting for the consent page: %v", err)
	}
	p, err = load(tab, chromedp.Click(chromedp.ID("deny")))
	if err != nil {
		t.Fatalf("denying: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("error"))); err != nil {
		t.Fatalf("waiting for the error page: %v; the page says %q", err, p.text)
	}
	code, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("error")))
	if err != nil {
		t.Fatal(err)
	}
	if p.status != http.StatusBadRequest || code != "access_denied" {
		t.Errorf("after denying: %d, error %q, page %q; want 400 access_denied", p.status, code, p.text)
	}
	if !strings.HasPrefix(p.location, site.callbackURL()+"?") {
		t.Errorf("the error page is at %s, want Caddy's callback %s", withoutQuery(p.location), site.callbackURL())
	}
	retry, err := chromedp.Run(tab, chromedp.AttributeValue(chromedp.ID("retry"), "href"))
	if err != nil {
		t.Fatal(err)
	}
	if !retry.Exists || retry.Value != site.connectURL() {
		t.Errorf("the error page's retry link is %+v, want %s", retry, site.connectURL())
	}
	if n := site.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges at the fake after the denial = %d, want still 1", n)
	}

	// Nothing in Caddy's log, at DEBUG, shows a token, the code, the
	// state, the client secret or the user's password. Stop Caddy first so
	// that the log is complete.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(site.log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, []byte(`"user connected"`)) {
		t.Fatalf("Caddy's log %s has no \"user connected\" line; is it the right file?", site.log)
	}
	for what, secret := range map[string]string{
		"an access token":       tasknationtest.AccessTokenPrefix,
		"a refresh token":       tasknationtest.RefreshTokenPrefix,
		"an authorization code": tasknationtest.CodePrefix,
		"the client secret":     tasknationtest.DefaultClientSecret,
		"the user's password":   browserPassword,
		"the Basic credentials": basicCredentials(browserUser, browserPassword),
		"the state":             state,
	} {
		if bytes.Contains(logs, []byte(secret)) {
			t.Errorf("Caddy's log shows %s", what)
		}
	}
}

// withoutQuery is u without its query, which can hold a code or a state
// that a test log must not show.
func withoutQuery(u string) string {
	before, _, _ := strings.Cut(u, "?")
	return before
}

// TestBrowser_ConnectUnderPrefix mounts the gateway under /gw with
// handle_path: the partner's page (the README's front-end example) asks
// the status path, shows a connect link to the public connect URL, and
// the whole connect completes in headless Chromium: the state cookie's
// Path is the public callback path, so the browser sends it back.
func TestBrowser_ConnectUnderPrefix(t *testing.T) {
	chromiumPath(t)
	site := newBrowserSite(t, "/gw")
	ctx, cancel := context.WithTimeout(context.Background(), browserDeadline)
	defer cancel()
	tab := newBrowser(t, ctx)
	if err := setBasicAuth(tab, browserUser, browserPassword); err != nil {
		t.Fatal(err)
	}
	app := site.base + "/app/index.html"

	// Not connected: the page shows a link to the public connect URL.
	if _, err := load(tab, chromedp.Navigate(app)); err != nil {
		t.Fatalf("opening the app: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("connect"))); err != nil {
		text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for the connect link: %v; the page says %q", err, text)
	}
	href, err := chromedp.Run(tab, chromedp.AttributeValue(chromedp.ID("connect"), "href"))
	if err != nil || href.Value != site.connectURL() {
		t.Fatalf("the connect link is %+v (%v), want %s", href, err, site.connectURL())
	}

	// Follow it: the consent page, with the state cookie on the public path.
	p, err := load(tab, chromedp.Click(chromedp.ID("connect")))
	if err != nil {
		t.Fatalf("following the connect link: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("approve"))); err != nil {
		t.Fatalf("waiting for the consent page: %v; the page says %q", err, p.text)
	}
	auth, err := url.Parse(p.location)
	if err != nil || auth.Query().Get("redirect_uri") != site.callbackURL() {
		t.Fatalf("the authorization request's redirect_uri is %q, want %s", auth.Query().Get("redirect_uri"), site.callbackURL())
	}
	c, err := browserCookie(tab, site.callbackURL(), "tokengate_state")
	if err != nil || c == nil || c.Path != "/gw/oauth2/callback" {
		t.Fatalf("state cookie %+v (%v), want one on /gw/oauth2/callback", c, err)
	}

	// Approve: the callback under /gw connects.
	p, err = load(tab, chromedp.Click(chromedp.ID("approve")))
	if err != nil {
		t.Fatalf("approving: %v", err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(chromedp.ID("title"))); err != nil {
		t.Fatalf("waiting for the connected page: %v; the page says %q", err, p.text)
	}
	title, _ := chromedp.Run(tab, chromedp.Text(chromedp.ID("title")))
	if p.status != http.StatusOK || title != "TaskNation account connected" {
		t.Fatalf("after approving: %d %q %q", p.status, title, p.text)
	}
	if !strings.HasPrefix(p.location, site.callbackURL()+"?") {
		t.Errorf("the connected page is at %s, want %s", withoutQuery(p.location), site.callbackURL())
	}

	// The app now says connected, and the API under /gw answers as the user.
	if _, err := load(tab, chromedp.Navigate(app)); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.WaitVisible(`#tasknation[data-state="connected"]`)); err != nil {
		text, _ := chromedp.Run(tab, chromedp.Evaluate[string](`document.body.innerText`))
		t.Fatalf("waiting for the connected state: %v; the page says %q", err, text)
	}
	if text, _ := chromedp.Run(tab, chromedp.Text(chromedp.ID("tasknation"))); !strings.HasPrefix(text, "TaskNation connected until ") {
		t.Errorf("the app says %q", text)
	}
	p, err = load(tab, chromedp.Navigate(site.base+"/gw/api/v1/businesses/me"))
	if err != nil {
		t.Fatal(err)
	}
	var api tasknationtest.APIResponse
	if err := json.Unmarshal([]byte(p.text), &api); err != nil || p.status != http.StatusOK || api.Subject != tasknationtest.DefaultUser {
		t.Fatalf("API under /gw after connecting: %d %q", p.status, p.text)
	}
}
