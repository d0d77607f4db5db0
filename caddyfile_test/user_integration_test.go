package caddyfile_test

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"golang.org/x/crypto/bcrypt"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// The user context (authorization_code) through a real Caddy: basic_auth
// logs alice and bob in, {http.auth.user.id} is the subject, and
// oauth2_token serves the connect flow and injects each user's own token.

// siteUsers are the site's basic_auth accounts and their passwords.
var siteUsers = map[string]string{"alice": "alice-site-pw", "bob": "bob-site-pw", "carol": "carol-site-pw"}

// The API path the users call: it needs supply::leads.
const leadsPath = "/api/v1/leads"

// Series of the user context on the admin /metrics.
const (
	seriesConnectStarted   = `caddy_oauth2_token_connects_total{outcome="started"}`
	seriesConnectConnected = `caddy_oauth2_token_connects_total{outcome="connected"}`
)

// userSite is a gateway whose site authenticates users and runs
// oauth2_token with the authorization_code grant.
type userSite struct {
	*gateway
	base    string // http://127.0.0.1:<port>
	logFile string // the site's access log
	hashes  map[string]string
}

// userOptions vary the oauth2_token block.
type userOptions struct {
	extra    string // more lines inside the oauth2_token block
	site     string // more lines in the site block
	log      string // a file for Caddy's default log; "": the test's t.Log
	logLevel string // the default log's level; "": INFO
	global   string // more lines in the global options block
	auth     string // how the client authenticates, lines of the block; "": client_secret {env.TN_CLIENT_SECRET}
	user     string // the user placeholder; "": {http.auth.user.id}
	proxy    string // a block for reverse_proxy (" {\n...\t}"); "": none
}

func newUserSite(t *testing.T) *userSite {
	t.Helper()
	g := newGateway(t)
	s := &userSite{
		gateway: g,
		base:    fmt.Sprintf("http://127.0.0.1:%d", g.httpPort),
		logFile: filepath.Join(g.dir, "access.log"),
		hashes:  map[string]string{},
	}
	g.fake.AddRedirectURI(tasknationtest.DefaultClientID, s.callbackURL())
	for name, pw := range siteUsers {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		s.hashes[name] = string(h)
	}
	return s
}

func (s *userSite) callbackURL() string { return s.base + "/oauth2/callback" }
func (s *userSite) connectURL() string  { return s.base + "/oauth2/connect" }

// caddyfile is the site: reverse_proxy written before oauth2_token and
// basic_auth on purpose (the directives order themselves), and the access
// log filtered as examples/user-context/Caddyfile does it.
func (s *userSite) caddyfile(o userOptions) string {
	global := s.global(o.log, o.logLevel)
	global.extra = o.global
	if o.auth == "" {
		o.auth = "\t\tclient_secret {env.TN_CLIENT_SECRET}\n"
	}
	if o.user == "" {
		o.user = "{http.auth.user.id}"
	}
	return testCaddyfile(global, s.httpPort, fmt.Sprintf(`	log {
		output file %s
		format filter {
			wrap json
			request>uri query {
				delete code
				delete state
			}
			request>headers>Referer query {
				delete code
				delete state
			}
			resp_headers>Location query {
				delete code
				delete state
			}
		}
	}
	reverse_proxy %s%s
	oauth2_token {
		token_url %s
		auth_url %s
		client_id {env.TN_CLIENT_ID}
%s		scopes supply::leads
		grant authorization_code
		user %s
		redirect_uri %s
%s	}
	basic_auth {
		alice %s
		bob %s
		carol %s
	}
%s`, s.logFile,
		s.fake.URL, o.proxy, s.fake.TokenURL(), s.fake.AuthURL(), o.auth, o.user, s.callbackURL(), o.extra,
		s.hashes["alice"], s.hashes["bob"], s.hashes["carol"], o.site))
}

func (s *userSite) storageDir() string { return filepath.Join(s.dir, "storage") }

// start loads the site's config in a Caddy that is not running.
func (s *userSite) start(o userOptions) { s.loadCaddyfile(s.caddyfile(o)) }

// tokenFiles returns the contents of the token sets in Caddy's storage.
func (s *userSite) tokenFiles(t *testing.T) [][]byte {
	t.Helper()
	dir := filepath.Join(s.storageDir(), "oauth2_token", "tokens")
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading the token directory of Caddy's storage: %v", err)
	}
	var out [][]byte
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// siteUser is a browser of one logged-in user: HTTP Basic credentials, a
// cookie jar, and redirects not followed, so that each hop is checked.
type siteUser struct {
	name, password string
	site           *userSite
	client         *http.Client
}

func (s *userSite) user(t *testing.T, name string) *siteUser {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &siteUser{
		name: name, password: siteUsers[name], site: s,
		client: &http.Client{
			Jar:           jar,
			Timeout:       waitFor,
			Transport:     &http.Transport{DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
}

// do sends method target (a path on the site, or an absolute URL) with
// the user's credentials when it goes to the site.
func (u *siteUser) do(method, target string, header http.Header) (result, error) {
	if strings.HasPrefix(target, "/") {
		target = u.site.base + target
	}
	req, err := http.NewRequest(method, target, nil)
	if err != nil {
		return result{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if strings.HasPrefix(target, u.site.base+"/") {
		req.SetBasicAuth(u.name, u.password)
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: body}, err
}

func (u *siteUser) mustDo(t *testing.T, method, target string, header http.Header) result {
	t.Helper()
	r, err := u.do(method, target, header)
	if err != nil {
		t.Fatalf("%s %s as %s: %v", method, target, u.name, err)
	}
	return r
}

// connectFlow is what one connect went through.
type connectFlow struct {
	state, code string
}

// connect runs the connect flow of u, approved at the fake TaskNation as
// the TaskNation user tnUser, checking every hop: the authorization
// request Caddy redirects to, the fake's redirect back, the callback.
func (u *siteUser) connect(t *testing.T, tnUser string) connectFlow {
	t.Helper()
	s := u.site
	r := u.mustDo(t, http.MethodGet, "/oauth2/connect", nil)
	if r.status != http.StatusFound {
		t.Fatalf("connect as %s: status %d, want 302; body %s", u.name, r.status, r.body)
	}
	auth, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatalf("connect: Location %q: %v", r.header.Get("Location"), err)
	}
	if got := auth.Scheme + "://" + auth.Host + auth.Path; got != s.fake.AuthURL() {
		t.Fatalf("connect redirects to %s, want the fake's authorization endpoint %s", got, s.fake.AuthURL())
	}
	q := auth.Query()
	for k, want := range map[string]string{
		"client_id":             tasknationtest.DefaultClientID,
		"response_type":         "code",
		"redirect_uri":          s.callbackURL(),
		"code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("the authorization request has %s=%q, want %q", k, got, want)
		}
	}
	if scopes := strings.Fields(q.Get("scope")); !slices.Contains(scopes, "offline_access") || !slices.Contains(scopes, "supply::leads") {
		t.Errorf("the authorization request asks for scope %q, want supply::leads and offline_access", q.Get("scope"))
	}
	state := q.Get("state")
	if len(state) < 32 {
		t.Errorf("state %q has %d characters, want at least 32", state, len(state))
	}
	if ch, err := base64.RawURLEncoding.DecodeString(q.Get("code_challenge")); err != nil || len(ch) != 32 {
		t.Errorf("code_challenge %q is not an S256 challenge", q.Get("code_challenge"))
	}
	if u.client.Jar.Cookies(mustParse(t, s.callbackURL())) == nil {
		t.Errorf("connect set no cookie for the callback")
	}

	// The fake approves as login_hint (the middleware sends none), and
	// redirects back to the callback with the code and the state.
	if q.Get("login_hint") == "" {
		q.Set("login_hint", tnUser)
		auth.RawQuery = q.Encode()
	}
	r = u.mustDo(t, http.MethodGet, auth.String(), nil)
	if r.status != http.StatusFound {
		t.Fatalf("the fake's authorization endpoint: status %d, want 302; body %s", r.status, r.body)
	}
	back, err := url.Parse(r.header.Get("Location"))
	if err != nil || !strings.HasPrefix(back.String(), s.callbackURL()+"?") {
		t.Fatalf("the fake redirects to %q, want the callback", r.header.Get("Location"))
	}
	flow := connectFlow{state: back.Query().Get("state"), code: back.Query().Get("code")}
	if flow.state != state || flow.code == "" {
		t.Fatalf("the fake's redirect has state %q and code %q, want the state sent and a code", flow.state, flow.code)
	}

	// The callback, with the state cookie, and a Referer as a browser
	// sends it (the authorization request, state included).
	r = u.mustDo(t, http.MethodGet, back.String(), http.Header{"Referer": {auth.String()}})
	if r.status != http.StatusOK {
		t.Fatalf("callback as %s: status %d, want 200; body %s", u.name, r.status, r.body)
	}
	var done struct{ Status string }
	if err := json.Unmarshal(r.body, &done); err != nil || done.Status != "connected" {
		t.Fatalf("callback as %s: body %s, want {\"status\":\"connected\"}", u.name, r.body)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("the callback's answer shows a token or the secret in %v", where)
	}
	return flow
}

func mustParse(t *testing.T, raw string) *url.URL {
	t.Helper()
	u, err := url.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// mustCallAPIAs checks that u's call of the API through Caddy reached the
// fake's API with the token of the TaskNation user tnUser.
func (u *siteUser) mustCallAPIAs(t *testing.T, tnUser string) {
	t.Helper()
	r := u.mustDo(t, http.MethodGet, leadsPath, nil)
	api, err := r.apiResponse(leadsPath)
	if err != nil {
		t.Fatalf("API call as %s: %v", u.name, err)
	}
	if api.Subject != tnUser {
		t.Fatalf("API call as %s went out as TaskNation user %q, want %q", u.name, api.Subject, tnUser)
	}
	if !slices.Contains(strings.Fields(api.Scope), "supply::leads") {
		t.Errorf("API call as %s: the token's scope is %q, want supply::leads", u.name, api.Scope)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("API call as %s: the client saw a token or the secret in %v", u.name, where)
	}
}

// jsonError is a JSON error answer of the module.
type jsonError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
	ConnectURL  string `json:"connect_url"`
}

// mustBeRefused checks that u's API call was answered status with error
// code, and not forwarded to the API.
func (u *siteUser) mustBeRefused(t *testing.T, status int, code string) (result, jsonError) {
	t.Helper()
	before := u.site.fake.APIRequests()
	r := u.mustDo(t, http.MethodGet, leadsPath, nil)
	var e jsonError
	if r.status != status || json.Unmarshal(r.body, &e) != nil || e.Error != code {
		t.Fatalf("API call as %s: %d %s, want %d with error %s", u.name, r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("API call as %s: Content-Type %q, want application/json", u.name, ct)
	}
	if n := u.site.fake.APIRequests() - before; n != 0 {
		t.Errorf("API call as %s was forwarded to the API (%d requests) without the user's token", u.name, n)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("API call as %s: the answer shows a token or the secret in %v", u.name, where)
	}
	return r, e
}

// TestUserContext_ConnectCallDisconnect: alice connects through Caddy
// (connect → fake TaskNation → callback), then her API calls carry her
// own token; bob, who has not connected, is answered 401 not_connected
// and never forwarded; alice disconnects and is not connected any more.
// The default store of the grant is Caddy's storage, and the access log
// shows neither the code nor the state.
func TestUserContext_ConnectCallDisconnect(t *testing.T) {
	s := newUserSite(t)
	s.start(userOptions{})
	before := s.metrics()
	alice, bob := s.user(t, "alice"), s.user(t, "bob")

	// Before connecting: not_connected, with where to connect.
	_, e := alice.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
	if e.ConnectURL != s.connectURL() {
		t.Errorf("connect_url %q, want %s", e.ConnectURL, s.connectURL())
	}

	flow := alice.connect(t, "tn-alice")
	if n := s.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1", n)
	}
	for range 3 {
		alice.mustCallAPIAs(t, "tn-alice")
	}
	if n := s.fake.TokenRequests(""); n != 1 {
		t.Errorf("token requests for a connect and 3 calls = %d, want 1 (the code exchange)", n)
	}
	// The grant's default store is Caddy's storage.
	if files := s.tokenFiles(t); len(files) != 1 {
		t.Errorf("Caddy's storage holds %d token sets, want alice's", len(files))
	}

	// Bob is logged in but has not connected: alice's token is not his.
	_, e = bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
	if e.ConnectURL != s.connectURL() {
		t.Errorf("bob's connect_url %q, want %s", e.ConnectURL, s.connectURL())
	}
	// Nor is alice's callback: the state was hers and is spent.
	if r := bob.mustDo(t, http.MethodGet, "/oauth2/callback?"+url.Values{"code": {flow.code}, "state": {flow.state}}.Encode(), nil); r.status != http.StatusBadRequest || !bytes.Contains(r.body, []byte("invalid_state")) {
		t.Errorf("bob replaying alice's callback: %d %s, want 400 invalid_state", r.status, r.body)
	}
	bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")

	// Disconnect is a POST; then alice is not connected.
	if r := alice.mustDo(t, http.MethodGet, "/oauth2/disconnect", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /oauth2/disconnect: status %d, want 405", r.status)
	}
	alice.mustCallAPIAs(t, "tn-alice")
	if r := alice.mustDo(t, http.MethodPost, "/oauth2/disconnect", nil); r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"disconnected"`)) {
		t.Fatalf("POST /oauth2/disconnect: %d %s, want 200 disconnected", r.status, r.body)
	}
	alice.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
	if files := s.tokenFiles(t); len(files) != 0 {
		t.Errorf("Caddy's storage holds %d token sets after the disconnect, want none", len(files))
	}

	after := s.metrics()
	for _, series := range []string{seriesConnectStarted, seriesConnectConnected} {
		if d := delta(t, before, after, series); d != 1 {
			t.Errorf("%s grew by %v, want 1", series, d)
		}
	}

	// The access log: complete once Caddy has stopped. It has the
	// callback, without its code and state, and no token anywhere.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(s.logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, []byte(`"uri":"/oauth2/callback"`)) {
		t.Fatalf("the access log has no callback request with its query removed:\n%s", logs)
	}
	if !bytes.Contains(logs, []byte(`"Location":["`+s.fake.AuthURL()+"?")) {
		t.Fatalf("the access log has no connect redirect:\n%s", logs)
	}
	for what, secret := range map[string]string{
		"the authorization code": flow.code, "the state": flow.state, "a code": tasknationtest.CodePrefix,
		"an access token": tasknationtest.AccessTokenPrefix, "a refresh token": tasknationtest.RefreshTokenPrefix,
		"the client secret": tasknationtest.DefaultClientSecret,
	} {
		if bytes.Contains(logs, []byte(secret)) {
			t.Errorf("the access log shows %s", what)
		}
	}
}

// Two 32-byte encryption keys, base64.
var (
	keyOne = base64.StdEncoding.EncodeToString([]byte("tokengate test key number one 01"))
	keyTwo = base64.StdEncoding.EncodeToString([]byte("tokengate test key number two 02"))
)

// TestUserContext_RestartWithCaddyStorage: with `store caddy` and an
// encryption_key, alice's tokens outlive Caddy: a new Caddy on the same
// storage serves her without a new connect. A Caddy with another key does
// not use them: alice's calls are answered 503 token_unavailable ("the
// token store could not be read", with Retry-After), never forwarded,
// until she connects again, which seals her tokens with the new key.
func TestUserContext_RestartWithCaddyStorage(t *testing.T) {
	s := newUserSite(t)
	t.Setenv("TOKENGATE_KEY", keyOne)
	sealed := userOptions{extra: "\t\tstore caddy\n\t\tencryption_key {env.TOKENGATE_KEY}\n"}
	s.start(sealed)
	alice, bob := s.user(t, "alice"), s.user(t, "bob")
	alice.connect(t, "tn-alice")
	alice.mustCallAPIAs(t, "tn-alice")
	files := s.tokenFiles(t)
	if len(files) != 1 {
		t.Fatalf("Caddy's storage holds %d token sets, want alice's", len(files))
	}
	for _, secret := range []string{tasknationtest.AccessTokenPrefix, tasknationtest.RefreshTokenPrefix} {
		if bytes.Contains(files[0], []byte(secret)) {
			t.Errorf("the token set in Caddy's storage holds a credential in clear (%s...)", secret)
		}
	}

	// A restart: a new Caddy, the same storage and key. The changed
	// request_timeout makes it a token source of its own, so that nothing
	// in memory can serve alice: only the storage.
	s.restartServes(t, sealed, alice)
	bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")

	// Another key: the stored set does not open, and is not used.
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TOKENGATE_KEY", keyTwo)
	s.start(sealed)
	for range 2 { // the same answer each time: no panic, no garbage token
		r, e := alice.mustBeRefused(t, http.StatusServiceUnavailable, "token_unavailable")
		if e.Description != "no valid access token: the token store could not be read" {
			t.Errorf("error_description %q, want that the token store could not be read", e.Description)
		}
		if secs, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || secs < 1 {
			t.Errorf("Retry-After %q, want a number of seconds", r.header.Get("Retry-After"))
		}
		for _, k := range []string{keyOne, keyTwo} {
			if bytes.Contains(r.body, []byte(k)) {
				t.Error("the answer shows an encryption key")
			}
		}
	}
	bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
	// The way out for alice: connect again, sealed with the new key.
	alice.connect(t, "tn-alice")
	alice.mustCallAPIAs(t, "tn-alice")
	if n := s.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 2 {
		t.Errorf("code exchanges = %d, want 2", n)
	}
}

// TestUserContext_ReloadKeepsConnectInProgress: a config reload that
// keeps the client and the grant's settings keeps the token source, so a
// connect started before the reload completes after it, and the tokens
// stored through the new config are served.
// TestUserContext_SubjectHeaderStaysHere: a user named by a header that a
// handler in front sets (here request_header from basic_auth's user, as
// forward_auth's copy_headers would) reaches the API with the request,
// unless reverse_proxy drops it with header_up, as the README says; the
// module has read it by then, so the user's token is still injected.
func TestUserContext_SubjectHeaderStaysHere(t *testing.T) {
	s := newUserSite(t)
	o := userOptions{user: "{http.request.header.Remote-User}", site: "\trequest_header Remote-User {http.auth.user.id}\n"}
	s.start(o)
	alice := s.user(t, "alice")
	alice.connect(t, "tn-alice")
	alice.mustCallAPIAs(t, "tn-alice")
	if got := s.fake.LastAPIHeader().Get("Remote-User"); got != "alice" {
		t.Fatalf("without header_up the API saw Remote-User %q, want alice (the header goes upstream)", got)
	}

	o.proxy = " {\n\t\theader_up -Remote-User\n\t}"
	s.reload("text/caddyfile", s.caddyfile(o))
	eventually(t, "the reloaded config drops Remote-User", func() error {
		before := s.fake.APIRequests()
		alice.mustCallAPIAs(t, "tn-alice")
		if s.fake.APIRequests() != before+1 {
			return fmt.Errorf("the API saw %d requests, want 1", s.fake.APIRequests()-before)
		}
		if h := s.fake.LastAPIHeader(); h.Get("Remote-User") != "" {
			return fmt.Errorf("the API saw Remote-User %q", h.Get("Remote-User"))
		}
		return nil
	})
}

func TestUserContext_ReloadKeepsConnectInProgress(t *testing.T) {
	s := newUserSite(t)
	s.start(userOptions{site: "\theader X-Config first\n"})
	alice, bob := s.user(t, "alice"), s.user(t, "bob")

	// The connect and the fake's approval, up to the redirect back.
	r := alice.mustDo(t, http.MethodGet, "/oauth2/connect", nil)
	auth, err := url.Parse(r.header.Get("Location"))
	if r.status != http.StatusFound || err != nil {
		t.Fatalf("connect: %d %q", r.status, r.header.Get("Location"))
	}
	q := auth.Query()
	q.Set("login_hint", "tn-alice")
	auth.RawQuery = q.Encode()
	r = alice.mustDo(t, http.MethodGet, auth.String(), nil)
	callback := r.header.Get("Location")
	if r.status != http.StatusFound || !strings.HasPrefix(callback, s.callbackURL()+"?") {
		t.Fatalf("the fake's authorization endpoint: %d %q", r.status, callback)
	}

	s.reload("text/caddyfile", s.caddyfile(userOptions{site: "\theader X-Config second\n"}))
	eventually(t, "the reloaded config answers", func() error {
		r, err := bob.do(http.MethodGet, leadsPath, nil)
		if err != nil {
			return err
		}
		if got := r.header.Get("X-Config"); got != "second" {
			return fmt.Errorf("X-Config = %q, want second", got)
		}
		return nil
	})

	r = alice.mustDo(t, http.MethodGet, callback, nil)
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"connected"`)) {
		t.Fatalf("the callback after the reload: %d %s, want 200 connected", r.status, r.body)
	}
	alice.mustCallAPIAs(t, "tn-alice")
	if files := s.tokenFiles(t); len(files) != 1 {
		t.Errorf("Caddy's storage holds %d token sets, want alice's", len(files))
	}
}

// restartServes stops Caddy and starts a new one with o plus a changed
// request_timeout, which makes it a token source of its own so that
// nothing in memory can serve alice, only the store; alice must be served
// without connecting again and without a refresh.
func (s *userSite) restartServes(t *testing.T, o userOptions, alice *siteUser) {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	o.extra += "\t\trequest_timeout 9s\n"
	s.start(o)
	alice.mustCallAPIAs(t, "tn-alice")
	if n := s.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges after the restart = %d, want still 1: alice did not have to connect again", n)
	}
	if n := s.fake.TokenRequests(tasknationtest.GrantRefreshToken); n != 0 {
		t.Errorf("refreshes after the restart = %d, want 0: her access token is still valid", n)
	}
}
