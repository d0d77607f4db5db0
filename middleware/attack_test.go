package middleware_test

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// The attack matrix: what a client (or a page it visits) can send to a
// gateway, and what it must never achieve. The basic callback checks
// (missing, unknown, expired, reused state; another subject's state; a
// state without its cookie; denied, wrong, missing, oversized and
// repeated codes) are rows of TestUser_BadCallbacks; these are the ones
// it does not have.
func TestAttackMatrix(t *testing.T) {
	t.Run("client Authorization never reaches the API", testAttackClientAuthorization)
	t.Run("callback CSRF and state replay", testAttackCallbackState)
	t.Run("open redirect through parameters", testAttackOpenRedirect)
	t.Run("malformed callback parameters", testAttackMalformedCallback)
	t.Run("subject spoofing through headers", testAttackSubjectSpoofing)
	t.Run("no secret in any log line at debug level", testAttackLogs)
	// Review defect 1b: a client must not make the gateway call the token
	// endpoint by sending requests to an API path that answers 401.
	t.Run("an API path that always answers 401", TestDefect1b_401FloodBounded)
}

// proxyTo is a reverse proxy to base.
func proxyTo(base string) http.Handler {
	u, _ := url.Parse(base)
	return &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(u) }}
}

// testAttackClientAuthorization: whatever Authorization a client sends
// (junk bearer, Basic, two headers, a lower-case key in a hand-built
// header map), the API gets exactly one Authorization value: the
// gateway's bearer, active at the fake.
//
// Over the wire, net/http canonicalizes header names, so a lower-case
// `authorization` line lands under "Authorization". A Go caller that
// builds the header map itself (a request handed to Wrap, or sent through
// Transport) can hold the non-canonical key, which the Gate must drop too.
func testAttackClientAuthorization(t *testing.T) {
	const basic = "Basic bWFsbG9yeTpzM2NyM3Q=" // mallory:s3cr3t
	rows := []struct {
		name   string
		grant  fmGrant
		via    string // "wire": a client of a gateway server; "handler": a hand-built request to Wrap; "transport": Gate.Transport
		set    func(h http.Header)
		defect string
	}{
		{name: "junk bearer", grant: fmApp, via: "wire", set: func(h http.Header) { h.Set("Authorization", "Bearer client-junk") }},
		{name: "Basic credentials", grant: fmApp, via: "wire", set: func(h http.Header) { h.Set("Authorization", basic) }},
		{name: "two Authorization headers", grant: fmApp, via: "wire", set: func(h http.Header) {
			h["Authorization"] = []string{"Bearer client-junk", basic}
		}},
		{name: "lower-case authorization line", grant: fmApp, via: "wire", set: func(h http.Header) {
			h["authorization"] = []string{"Bearer client-junk"} // written as is; the server canonicalizes it
		}},
		{name: "lower-case key, hand-built request to Wrap", grant: fmApp, via: "handler", set: func(h http.Header) {
			h["authorization"] = []string{"Bearer client-junk"}
		}},
		// Review defect 1a: proxies delete the headers a client's
		// Connection names, the injected bearer included, and the API's
		// 401 then cost a token request per client request.
		{name: "Connection: Authorization", grant: fmApp, via: "wire", set: func(h http.Header) { h.Set("Connection", "Authorization") }},
		{name: "Connection: keep-alive, authorization", grant: fmApp, via: "wire", set: func(h http.Header) { h.Set("Connection", "keep-alive, authorization") }},
		{name: "upper-case key, hand-built request to Wrap", grant: fmApp, via: "handler", set: func(h http.Header) {
			h["AUTHORIZATION"] = []string{"Bearer client-junk"}
		}},
		{name: "junk bearer through Transport", grant: fmApp, via: "transport", set: func(h http.Header) { h.Set("Authorization", "Bearer client-junk") }},
		{name: "lower-case key through Transport", grant: fmApp, via: "transport", set: func(h http.Header) {
			h["authorization"] = []string{"Bearer client-junk"}
		}},
		// The user grant: the subject's login is the Basic header (the
		// tests' stand-in for authentication in front), which must not
		// reach the API either.
		{name: "the login's Basic credentials", grant: fmUser, via: "wire"},
		{name: "login, then a second Authorization", grant: fmUser, via: "wire", set: func(h http.Header) {
			h["Authorization"] = append(h["Authorization"], "Bearer client-junk")
		}},
		{name: "login, and Connection: Authorization", grant: fmUser, via: "wire", set: func(h http.Header) { h.Set("Connection", "Authorization") }},
	}
	for _, row := range rows {
		t.Run(row.name+"/"+string(row.grant), func(t *testing.T) {
			v := &verdict{t: t, defect: row.defect}
			var srv *tasknationtest.Server
			var gate *middleware.Gate
			var send func(req *http.Request) (*http.Response, error)
			var spy *testkit.APISpy
			if row.grant == fmUser {
				f := newUserFixture(t, tasknationtest.Options{}, nil)
				f.browser(t, "alice").connect(f, "tn-alice")
				srv, gate = f.srv, f.gate
				spy = testkit.NewAPISpy(t, srv.URL)
				front := httptest.NewServer(gate.Wrap(proxyTo(spy.URL)))
				t.Cleanup(front.Close)
				send = func(req *http.Request) (*http.Response, error) {
					req.URL, _ = url.Parse(front.URL + req.URL.Path)
					req.Host = ""
					return http.DefaultClient.Do(req)
				}
			} else {
				f := newFixture(t, nil)
				srv, gate = f.srv, f.gate
				spy = testkit.NewAPISpy(t, srv.URL)
				h := gate.Wrap(proxyTo(spy.URL))
				switch row.via {
				case "wire":
					front := httptest.NewServer(h)
					t.Cleanup(front.Close)
					send = func(req *http.Request) (*http.Response, error) {
						req.URL, _ = url.Parse(front.URL + req.URL.Path)
						req.Host = ""
						return http.DefaultClient.Do(req)
					}
				case "handler":
					send = func(req *http.Request) (*http.Response, error) {
						r := httptest.NewRequest(req.Method, req.URL.Path, nil)
						r.Header = req.Header
						w := httptest.NewRecorder()
						h.ServeHTTP(w, r)
						return w.Result(), nil
					}
				case "transport":
					c := &http.Client{Transport: gate.Transport(nil)}
					send = func(req *http.Request) (*http.Response, error) {
						req.URL, _ = url.Parse(spy.URL + req.URL.Path)
						req.Host = ""
						return c.Do(req)
					}
				}
			}
			path := "/api/v1/categories"
			if row.grant == fmUser {
				path = "/api/v1/businesses/me"
			}
			req, _ := http.NewRequest(http.MethodGet, "http://gateway.invalid"+path, nil)
			if row.grant == fmUser {
				req.SetBasicAuth("alice", "pw")
			}
			if row.set != nil {
				row.set(req.Header)
			}
			resp, err := send(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			got, n := spy.Last()
			if n != 1 {
				t.Fatalf("the API got %d requests, want 1 (status %d %s)", n, resp.StatusCode, body)
			}
			var want string
			if row.grant == fmUser {
				tok, err := gate.UserToken(context.Background(), "alice")
				if err != nil {
					t.Fatal(err)
				}
				want = "Bearer " + tok.AccessToken
			} else {
				tok, err := gate.Token(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				want = "Bearer " + tok.AccessToken
			}
			if !slices.Equal(got, []string{want}) {
				v.errorf("the API got Authorization %q, want only the gateway's bearer", got)
			}
			if !srv.Active(strings.TrimPrefix(want, "Bearer ")) {
				v.errorf("the gateway's bearer is not active at the fake")
			}
			if resp.StatusCode != http.StatusOK && !v.failed() {
				v.errorf("status %d %s, want 200 from the API", resp.StatusCode, body)
			}
			v.settle()
		})
	}
}

// testAttackCallbackState: a callback must finish only the connect its
// own browser started, for its own subject, once.
func testAttackCallbackState(t *testing.T) {
	exchanges := func(f *userFixture) int64 { return f.srv.TokenRequests(tasknationtest.GrantAuthorizationCode) }

	// Login CSRF by cookie injection: mallory starts a connect, and plants
	// his state cookie (a sibling subdomain can set it) and his callback
	// in alice's browser. State and cookie agree, but the state is bound
	// to mallory: alice's account must not be tied to mallory's
	// TaskNation account. Mallory's state stays usable by mallory.
	t.Run("planted state cookie of another subject", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, nil)
		alice, mallory := f.browser(t, "alice"), f.browser(t, "mallory")
		cb := mallory.authorize(mallory.startConnect(f), "tn-mallory")
		gw, _ := url.Parse(f.base)
		alice.c.Jar.SetCookies(gw, mallory.c.Jar.Cookies(cb))
		a := alice.get(cb.String())
		wantUserError(t, a, http.StatusBadRequest, "invalid_state")
		if !strings.Contains(a.json["error_description"].(string), "another user") {
			t.Errorf("refused for %q, want the subject binding", a.json["error_description"])
		}
		if n := exchanges(f); n != 0 {
			t.Errorf("code exchanges = %d, want 0", n)
		}
		wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
		if a := mallory.get(cb.String()); a.status != http.StatusOK {
			t.Fatalf("mallory finishing his own connect: %d %s", a.status, a.body)
		}
		if a := mallory.api(f); a.json["subject"] != "tn-mallory" {
			t.Errorf("mallory's call went out as %v", a.json["subject"])
		}
		wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
	})

	// The callback URL and the cookie leak (a log, a shared machine)
	// after alice connected: replaying them from another browser does not
	// exchange the code again, nor replace alice's tokens.
	t.Run("replay with a copied cookie after success", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, nil)
		alice := f.browser(t, "alice")
		cb := alice.authorize(alice.startConnect(f), "tn-alice")
		cookies := alice.c.Jar.Cookies(cb)
		if a := alice.get(cb.String()); a.status != http.StatusOK {
			t.Fatalf("callback: %d %s", a.status, a.body)
		}
		tok, _ := f.gate.UserToken(context.Background(), "alice")
		thief := f.browser(t, "alice")
		thief.c.Jar.SetCookies(cb, cookies)
		wantUserError(t, thief.get(cb.String()), http.StatusBadRequest, "invalid_state")
		if n := exchanges(f); n != 1 {
			t.Errorf("code exchanges = %d, want 1", n)
		}
		if now, _ := f.gate.UserToken(context.Background(), "alice"); now.AccessToken != tok.AccessToken {
			t.Error("the replay replaced alice's tokens")
		}
	})

	// A state is spent by its first callback, even one whose exchange
	// failed: the right code cannot follow with the same state.
	t.Run("replay after a failed exchange", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, nil)
		alice := f.browser(t, "alice")
		cb := alice.authorize(alice.startConnect(f), "tn-alice")
		cookies := alice.c.Jar.Cookies(cb)
		bad := *cb
		q := bad.Query()
		q.Set("code", tasknationtest.CodePrefix+"forged")
		bad.RawQuery = q.Encode()
		wantUserError(t, alice.get(bad.String()), http.StatusBadRequest, "invalid_grant")
		alice.c.Jar.SetCookies(cb, cookies) // the failed callback cleared it
		wantUserError(t, alice.get(cb.String()), http.StatusBadRequest, "invalid_state")
		if n := exchanges(f); n != 1 {
			t.Errorf("code exchanges = %d, want 1 (the forged code only)", n)
		}
		wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
	})

	// The same callback submitted several times at once (a double click,
	// a replaying proxy): one wins, the others are refused, one exchange.
	t.Run("concurrent replays of one callback", func(t *testing.T) {
		const n = 8
		f := newUserFixture(t, tasknationtest.Options{}, nil)
		alice := f.browser(t, "alice")
		cb := alice.authorize(alice.startConnect(f), "tn-alice")
		cookie := alice.c.Jar.Cookies(cb)
		var wg sync.WaitGroup
		statuses := make([]int, n)
		for i := range n {
			b := f.browser(t, "alice")
			b.c.Jar.SetCookies(cb, cookie)
			wg.Go(func() { statuses[i] = b.get(cb.String()).status })
		}
		wg.Wait()
		slices.Sort(statuses)
		want := append([]int{http.StatusOK}, slices.Repeat([]int{http.StatusBadRequest}, n-1)...)
		if !slices.Equal(statuses, want) {
			t.Errorf("statuses %v, want one 200 and %d 400", statuses, n-1)
		}
		if m := exchanges(f); m != 1 {
			t.Errorf("code exchanges = %d, want 1", m)
		}
	})
}

// testAttackOpenRedirect: the connect always redirects to the configured
// authorization endpoint with the configured redirect_uri and a fresh
// state, and a callback to ConnectedRedirect (or nowhere); no parameter
// or header of the request moves either.
func testAttackOpenRedirect(t *testing.T) {
	const evil = "https://evil.example/steal"
	params := []string{"redirect", "next", "return_to", "redirect_uri", "redirect_url", "continue", "state", "url"}
	attack := url.Values{}
	for _, p := range params {
		attack.Set(p, evil)
	}
	for _, connected := range []string{"", "/welcome"} {
		t.Run("ConnectedRedirect="+connected, func(t *testing.T) {
			f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.ConnectedRedirect = connected })
			alice := f.browser(t, "alice")
			// The connect, with the attacker's parameters, and once more
			// with a forged Host (a proxy in front passing it on),
			// X-Forwarded-Host and Referer. The first one's state is
			// used for the callback below. (The second is sent without
			// the cookie jar, which files cookies under the Host.)
			var loc *url.URL
			for _, forged := range []bool{false, true} {
				req, _ := http.NewRequest(http.MethodGet, f.base+"/oauth2/connect?"+attack.Encode(), nil)
				req.SetBasicAuth("alice", "pw")
				c := alice.c
				if forged {
					req.Host = "evil.example"
					req.Header.Set("X-Forwarded-Host", "evil.example")
					req.Header.Set("Referer", evil)
					c = &http.Client{CheckRedirect: alice.c.CheckRedirect}
				}
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				l, err := url.Parse(resp.Header.Get("Location"))
				if resp.StatusCode != http.StatusFound || err != nil {
					t.Fatalf("connect (forged Host %v): %d Location %q", forged, resp.StatusCode, resp.Header.Get("Location"))
				}
				if got := l.Scheme + "://" + l.Host + l.Path; got != f.srv.AuthURL() {
					t.Errorf("connect (forged Host %v) redirects to %s, want the configured %s", forged, got, f.srv.AuthURL())
				}
				q := l.Query()
				if q.Get("redirect_uri") != f.gw.URL+"/oauth2/callback" {
					t.Errorf("connect (forged Host %v): redirect_uri %q, want the configured one", forged, q.Get("redirect_uri"))
				}
				if strings.Contains(l.String(), "evil") {
					t.Errorf("connect (forged Host %v): the Location carries the attacker's value: %s", forged, l)
				}
				if len(q.Get("state")) != 43 {
					t.Errorf("connect (forged Host %v): state %q is not a fresh one", forged, q.Get("state"))
				}
				if !forged {
					loc = l
				}
			}
			// The callback, with the attacker's parameters added.
			cb := alice.authorize(loc, "tn-alice")
			cq := cb.Query()
			for k, v := range attack {
				if k != "state" {
					cq[k] = v
				}
			}
			cb.RawQuery = cq.Encode()
			a := alice.get(cb.String())
			if connected == "" {
				if a.status != http.StatusOK || a.header.Get("Location") != "" {
					t.Errorf("callback: %d Location %q, want 200 and no redirect: %s", a.status, a.header.Get("Location"), a.body)
				}
			} else if a.status != http.StatusSeeOther || a.header.Get("Location") != connected {
				t.Errorf("callback: %d Location %q, want 303 to %s", a.status, a.header.Get("Location"), connected)
			}
			// An error answer's connect_url is the configured origin's.
			a = alice.get(f.base + "/oauth2/callback?" + attack.Encode())
			wantUserError(t, a, http.StatusBadRequest, "invalid_state")
			if a.json["connect_url"] != f.gw.URL+"/oauth2/connect" || a.header.Get("Location") != "" || strings.Contains(a.body, "evil") {
				t.Errorf("callback error: connect_url %v, Location %q, body %s", a.json["connect_url"], a.header.Get("Location"), a.body)
			}
			r, _ := http.NewRequest(http.MethodGet, f.base+"/api/v1/businesses/me", nil)
			r.SetBasicAuth("bob", "pw")
			r.Host = "evil.example"
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			var e struct {
				ConnectURL string `json:"connect_url"`
			}
			json.NewDecoder(resp.Body).Decode(&e)
			resp.Body.Close()
			if e.ConnectURL != f.gw.URL+"/oauth2/connect" {
				t.Errorf("not_connected with Host evil.example: connect_url %q, want the configured origin's", e.ConnectURL)
			}
		})
	}
}

// testAttackMalformedCallback: callback parameters that are too big or
// not well-formed are a 400 with a JSON error, never a 5xx; nothing is
// exchanged, nothing stored, nothing echoed. r.URL.Query drops a pair it
// cannot decode (a NUL byte, a bad percent escape), so a malformed state
// reads as no state and a malformed code as no code.
func testAttackMalformedCallback(t *testing.T) {
	pad := func(n int) string {
		var b strings.Builder
		for i := 0; b.Len() < n; i++ {
			fmt.Fprintf(&b, "&p%d=%s", i, strings.Repeat("a", 1000))
		}
		return b.String()
	}
	rows := []struct {
		name   string
		query  string // %[1]s: the state, %[2]s: the code
		code   string
		defect string
	}{
		{name: "query over 8 KiB (each value small)", query: "state=%[1]s&code=%[2]s" + pad(8<<10), code: "invalid_request"},
		{name: "parameter name over 64 bytes", query: "state=%[1]s&code=%[2]s&" + strings.Repeat("k", 65) + "=1", code: "invalid_request"},
		// Not the state the cookie holds.
		{name: "NUL byte in the state", query: "state=%[1]s%%00&code=%[2]s", code: "invalid_state"},
		{name: "NUL byte in the code", query: "state=%[1]s&code=%[2]s%%00", code: "invalid_request"},
		{name: "invalid percent-encoding in the state", query: "state=%[1]s%%zz&code=%[2]s", code: "invalid_state"},
		{name: "invalid percent-encoding in the code", query: "state=%[1]s&code=%%G1%[2]s", code: "invalid_request"},
		{name: "semicolon separator", query: "state=%[1]s;code=%[2]s", code: "invalid_state"},
		{name: "control characters in the error code", query: "state=%[1]s&error=access%%0d%%0adenied", code: "authorization_failed"},
	}
	for _, row := range rows {
		t.Run(row.name, func(t *testing.T) {
			v := &verdict{t: t, defect: row.defect}
			f := newUserFixture(t, tasknationtest.Options{}, nil)
			alice := f.browser(t, "alice")
			cb := alice.authorize(alice.startConnect(f), "tn-alice")
			state, code := cb.Query().Get("state"), cb.Query().Get("code")
			u := *cb
			u.RawQuery = fmt.Sprintf(row.query, state, code)
			a := alice.get(u.String())
			if a.status != http.StatusBadRequest || a.json["error"] != row.code {
				v.errorf("client saw %d %s, want 400 %s", a.status, strings.TrimSpace(a.body), row.code)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				v.errorf("Content-Type %q", ct)
			}
			if strings.Contains(a.body, state) || strings.Contains(a.body, code) {
				v.errorf("the answer echoes the state or the code")
			}
			if n := f.srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 0 {
				v.errorf("%d code exchanges for a malformed callback, want 0", n)
			}
			if a := alice.api(f); a.status != http.StatusUnauthorized || a.json["error"] != "not_connected" {
				v.errorf("after the callback: %d %s, want 401 not_connected", a.status, a.body)
			}
			v.settle()
		})
	}
}

// testAttackSubjectSpoofing: the subject decides whose tokens a request
// gets, so it must come from something the client cannot choose.
//
// Unsafe by design: Subject reading a request header (X-User), a cookie
// or a query parameter the client sets; anyone who can reach the gateway
// then picks the user. Shown below: mallory, with no login at all, calls
// the API as alice.
//
// Safe: Subject from a verified source that runs first and that the
// client cannot forge: a session your login verified, an authentication
// middleware's result in the request context (as here: Basic credentials
// checked against a password table), a mutual-TLS client certificate. In
// Caddy: user {http.auth.user.id} after basic_auth (or any http.authentication
// provider), or {http.request.header.Remote-User} only when forward_auth
// with copy_headers Remote-User runs first, which overwrites the header
// the client sent. The module warns at load about a header, cookie or
// query placeholder (see caddyfile_test).
func testAttackSubjectSpoofing(t *testing.T) {
	t.Run("unsafe: Subject from a client header", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) {
			c.Subject = func(r *http.Request) string { return r.Header.Get("X-User") }
		})
		alice := withHeader(f.browser(t, "alice"), "X-User", "alice")
		alice.connect(f, "tn-alice")
		mallory := withHeader(f.browser(t, ""), "X-User", "alice")
		if a := mallory.api(f); a.status != http.StatusOK || a.json["subject"] != "tn-alice" {
			t.Fatalf("mallory claiming X-User: alice: %d %s; the demonstration expects alice's token", a.status, a.body)
		}
	})

	t.Run("safe: Subject from verified credentials; X-User changes nothing", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Subject = verifiedUser })
		api, _ := url.Parse(f.srv.URL)
		f.gw.Config.Handler = verifyBasic(map[string]string{"alice": "pw", "bob": "pw"},
			f.gate.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }}))
		f.browser(t, "alice").connect(f, "tn-alice")
		for _, c := range []struct {
			name, user, password, xuser string
			status                      int
			code                        string
		}{
			{"bob claims alice", "bob", "pw", "alice", http.StatusUnauthorized, "not_connected"},
			{"no login, claims alice", "", "", "alice", http.StatusUnauthorized, ""},
			{"wrong password, claims alice", "alice", "guess", "alice", http.StatusUnauthorized, ""},
			{"alice, claims bob", "alice", "pw", "bob", http.StatusOK, ""},
		} {
			req, _ := http.NewRequest(http.MethodGet, f.base+"/api/v1/businesses/me", nil)
			if c.user != "" {
				req.SetBasicAuth(c.user, c.password)
			}
			req.Header.Set("X-User", c.xuser)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var got struct{ Error, Subject string }
			_ = json.Unmarshal(body, &got)
			if resp.StatusCode != c.status || got.Error != c.code {
				t.Errorf("%s: %d %s, want %d %s", c.name, resp.StatusCode, body, c.status, c.code)
			}
			if c.user != "alice" || c.password != "pw" {
				if got.Subject == "tn-alice" {
					t.Errorf("%s: the request went out with alice's token", c.name)
				}
			} else if got.Subject != "tn-alice" {
				t.Errorf("%s: went out as %q, want alice's own tn-alice", c.name, got.Subject)
			}
		}
	})
}

// withHeader makes b send header k: v on every request.
func withHeader(b *browser, k, v string) *browser {
	b.c.Transport = headerTransport{k: k, v: v}
	return b
}

type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

type verifiedUserKey struct{}

// verifyBasic is an authentication middleware: it checks the Basic
// credentials against users and puts the verified name in the context.
func verifyBasic(users map[string]string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		want, known := users[u]
		if !ok || !known || subtle.ConstantTimeCompare([]byte(p), []byte(want)) != 1 {
			w.Header().Set("WWW-Authenticate", `Basic realm="gateway"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), verifiedUserKey{}, u)))
	})
}

// verifiedUser is a Subject from verifyBasic's result.
func verifiedUser(r *http.Request) string {
	u, _ := r.Context().Value(verifiedUserKey{}).(string)
	return u
}

// secretSniffer is the token endpoint's transport: it remembers every
// secret that crossed it (the client secret, codes, PKCE verifiers,
// access and refresh tokens, in requests and answers), for the log scan.
type secretSniffer struct {
	mu      sync.Mutex
	secrets map[string]string // value → what it is
}

func (s *secretSniffer) add(what, v string) {
	if v == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.secrets == nil {
		s.secrets = map[string]string{}
	}
	s.secrets[v] = what
}

func (s *secretSniffer) all() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.secrets))
	for k, v := range s.secrets {
		out[k] = v
	}
	return out
}

func (s *secretSniffer) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body.Close()
		r.Body = io.NopCloser(bytes.NewReader(b))
		form, _ := url.ParseQuery(string(b))
		for _, k := range []string{"client_secret", "code", "code_verifier", "refresh_token"} {
			s.add(k, form.Get(k))
		}
	}
	resp, err := http.DefaultTransport.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	var tok struct {
		AccessToken  string `json:"access_token"`
		RefreshToken string `json:"refresh_token"`
	}
	if json.Unmarshal(b, &tok) == nil {
		s.add("access_token", tok.AccessToken)
		s.add("refresh_token", tok.RefreshToken)
	}
	return resp, nil
}

// credentialRun is 43 or more base64url characters in a row: the length
// of a state, a PKCE verifier or challenge, and of the fake's tokens after
// their prefix. No log value has a reason to hold one.
var credentialRun = regexp.MustCompile(`[A-Za-z0-9_-]{43,}`)

// scanLogs fails for each log entry that holds a secret or anything
// that looks like a credential.
func scanLogs(t *testing.T, logs *observer.ObservedLogs, secrets map[string]string) {
	t.Helper()
	for s, what := range secrets {
		if what != "client_secret" && what != "client's Authorization" && !credentialRun.MatchString(s) {
			t.Errorf("the %s %.8s… would escape the credential-like pattern", what, s)
		}
	}
	t.Logf("%d log entries scanned for %d secrets", logs.Len(), len(secrets))
	for _, e := range logs.All() {
		values := []string{e.Message}
		for k, v := range e.ContextMap() {
			values = append(values, k+"="+fmt.Sprint(v))
		}
		for _, v := range values {
			for s, what := range secrets {
				if strings.Contains(v, s) {
					t.Errorf("log entry %q holds the %s", e.Message, what)
				}
			}
			if m := credentialRun.FindString(v); m != "" {
				t.Errorf("log entry %q holds a credential-like value (%d base64url characters): %.12s…", e.Message, len(m), m)
			}
		}
	}
}

// testAttackLogs: across whole sessions at debug level, no log entry
// holds a token, a refresh token, the client secret, a code, a state, a
// PKCE verifier or challenge.
func testAttackLogs(t *testing.T) {
	t.Run(string(fmUser), func(t *testing.T) {
		sniff := &secretSniffer{}
		f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) {
			c.HTTPClient = &http.Client{Transport: sniff}
			c.MinBackoff, c.MaxBackoff = time.Second, 4*time.Second
		})
		alice := f.browser(t, "alice")
		// Connect: the state and the challenge are in the authorization
		// URL, the code in the callback; the verifier crosses the token
		// endpoint (the sniffer has it).
		auth := alice.startConnect(f)
		cb := alice.authorize(auth, "tn-alice")
		sniff.add("state", auth.Query().Get("state"))
		sniff.add("code_challenge", auth.Query().Get("code_challenge"))
		sniff.add("code", cb.Query().Get("code"))
		if a := alice.get(cb.String()); a.status != http.StatusOK {
			t.Fatalf("callback: %d %s", a.status, a.body)
		}
		// A failed callback logs too: another connect refused.
		wantUserError(t, alice.get(f.base+"/oauth2/callback?state="+strings.Repeat("s", 43)+"&code="+tasknationtest.CodePrefix+"x"), http.StatusBadRequest, "invalid_state")
		if a := alice.api(f); a.status != http.StatusOK {
			t.Fatalf("API: %d %s", a.status, a.body)
		}
		// A refresh ahead of expiry, then an expired token.
		first, _ := f.gate.UserToken(context.Background(), "alice")
		f.clock.Advance(55 * time.Minute)
		alice.api(f)
		eventually(t, "the refresh ahead", func() bool {
			tok, _ := f.gate.UserToken(context.Background(), "alice")
			return tok.AccessToken != first.AccessToken
		})
		// Endpoint failures: a 503, an HTML page, a lost answer retried
		// inside the grace period.
		f.clock.Advance(time.Hour)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1})
		wantUserError(t, alice.api(f), http.StatusServiceUnavailable, "token_unavailable")
		f.clock.Advance(5 * time.Second)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultGarbage, Count: 1})
		wantUserError(t, alice.api(f), http.StatusServiceUnavailable, "token_unavailable")
		f.clock.Advance(5 * time.Second)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1})
		done := make(chan answer, 1)
		go func() { done <- alice.api(f) }()
		eventually(t, "the retry's backoff timer", func() bool { return f.clock.Pending() > 0 })
		f.clock.Advance(time.Second)
		if a := <-done; a.status != http.StatusOK {
			t.Fatalf("after a lost answer: %d %s", a.status, a.body)
		}
		// An upstream 401: the token is revoked, the request replayed.
		if fmHasReplay() {
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
			f.srv.RevokeAllAccessTokens()
			if a := alice.api(f); a.status != http.StatusOK {
				t.Fatalf("after a revocation: %d %s", a.status, a.body)
			}
		} else {
			t.Log("upstream-401 replay is not implemented yet: that step is skipped")
		}
		// invalid_grant: the refresh token is spent elsewhere; logout.
		tok, _ := f.gate.UserToken(context.Background(), "alice")
		refreshOnce(t, f.srv, tok.RefreshToken)
		f.clock.Advance(2 * time.Hour)
		wantUserError(t, alice.api(f), http.StatusUnauthorized, "reauthorization_required")
		alice.connect(f, "tn-alice")
		if a := alice.do(http.MethodPost, f.base+"/oauth2/disconnect", true); a.status != http.StatusOK {
			t.Fatalf("disconnect: %d %s", a.status, a.body)
		}

		secrets := sniff.all()
		kinds := map[string]bool{}
		for _, what := range secrets {
			kinds[what] = true
		}
		for _, what := range []string{"client_secret", "code", "code_verifier", "refresh_token", "access_token", "state", "code_challenge"} {
			if !kinds[what] {
				t.Errorf("the session saw no %s: the scan would prove nothing about it", what)
			}
		}
		for _, level := range []string{"info", "warn"} {
			if f.logs.Filter(func(e observer.LoggedEntry) bool { return e.Level.String() == level }).Len() == 0 {
				t.Errorf("no %s entry in the session's log: the scan would prove little", level)
			}
		}
		scanLogs(t, f.logs, secrets)
	})

	t.Run(string(fmApp), func(t *testing.T) {
		sniff := &secretSniffer{}
		f := newFixture(t, func(c *middleware.Config) {
			c.HTTPClient = &http.Client{Transport: sniff}
			c.MaxBackoff = 4 * time.Second
		})
		api, _ := url.Parse(f.srv.URL)
		h := f.gate.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }})
		serve := func() int {
			w := httptest.NewRecorder()
			r := httptest.NewRequest(http.MethodGet, "/api/v1/categories", nil)
			r.Header.Set("Authorization", "Bearer client-junk-"+strings.Repeat("j", 43))
			h.ServeHTTP(w, r)
			return w.Code
		}
		if c := serve(); c != http.StatusOK {
			t.Fatalf("first request: %d", c)
		}
		first := f.token(t)
		f.clock.Advance(55 * time.Minute)
		serve()
		eventually(t, "the refresh ahead", func() bool { return f.token(t) != first })
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1})
		f.clock.Advance(time.Hour)
		if c := serve(); c != http.StatusServiceUnavailable {
			t.Fatalf("with the endpoint failing: %d", c)
		}
		// An answer that parses but is refused, with a token in it.
		f.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"access_token":"%s","token_type":"mac","expires_in":60}`, tasknationtest.AccessTokenPrefix+strings.Repeat("m", 43))
		})
		f.clock.Advance(5 * time.Second)
		serve()
		f.srv.SetTokenResponder(nil)
		f.clock.Advance(5 * time.Second)
		if c := serve(); c != http.StatusOK {
			t.Fatalf("after recovery: %d", c)
		}
		if fmHasReplay() {
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
			f.srv.RevokeAllAccessTokens()
			if c := serve(); c != http.StatusOK {
				t.Fatalf("after a revocation: %d", c)
			}
		}
		secrets := sniff.all()
		secrets[tasknationtest.AccessTokenPrefix+strings.Repeat("m", 43)] = "refused access token"
		secrets["client-junk"] = "client's Authorization"
		if secrets[tasknationtest.DefaultClientSecret] != "client_secret" {
			t.Fatal("the sniffer did not see the client secret: the scan would prove nothing about it")
		}
		if f.logs.Len() < 5 {
			t.Fatalf("only %d log entries: the scan would prove nothing", f.logs.Len())
		}
		scanLogs(t, f.logs, secrets)
	})
}
