package middleware_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// replayEvents counts replays.
type replayEvents struct{ *events }

func (e *replayEvents) Replay() { e.add("replay") }

// appGateway is the application-context Gate of f in front of the fake's
// API, on a real loopback server.
func appGateway(t *testing.T, f *fixture) string {
	t.Helper()
	api, _ := url.Parse(f.srv.URL)
	hs := httptest.NewServer(f.gate.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }}))
	t.Cleanup(hs.Close)
	return hs.URL
}

func call(t *testing.T, method, u, body string) (int, tasknationtest.APIResponse, string) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		// A reader without GetBody: the Gate must buffer it to replay.
		rd = io.MultiReader(strings.NewReader(body))
	}
	req, _ := http.NewRequest(method, u, rd)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a tasknationtest.APIResponse
	_ = json.Unmarshal(raw, &a)
	return resp.StatusCode, a, string(raw)
}

// TestReplay_TokenRevokedMidLife: the API revokes the application token
// mid-life; the next request gets a 200 after exactly one replay, and the
// fake counts exactly one extra token request. The client never sees the
// 401.
func TestReplay_TokenRevokedMidLife(t *testing.T) {
	ev := &events{}
	f := newFixture(t, func(c *middleware.Config) { c.Observer = &replayEvents{events: ev} })
	gw := appGateway(t, f)
	for _, c := range []struct{ name, method, body string }{
		{"GET", http.MethodGet, ""},
		{"POST with a body", http.MethodPost, strings.Repeat("b", 10<<10)},
	} {
		t.Run(c.name, func(t *testing.T) {
			if st, _, body := call(t, c.method, gw+"/api/v1/search", c.body); st != 200 {
				t.Fatalf("before revocation: %d %s", st, body)
			}
			before, apiBefore := f.ccRequests(), f.srv.APIRequests()
			old := f.token(t)
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
			f.srv.Revoke(old)
			st, a, body := call(t, c.method, gw+"/api/v1/search", c.body)
			if st != 200 {
				t.Fatalf("after revocation: %d %s, want 200 after a replay", st, body)
			}
			if a.BodyBytes != int64(len(c.body)) {
				t.Errorf("the replay carried %d body bytes, want %d", a.BodyBytes, len(c.body))
			}
			if n := f.ccRequests() - before; n != 1 {
				t.Errorf("extra token requests = %d, want exactly 1", n)
			}
			if n := f.srv.APIRequests() - apiBefore; n != 2 {
				t.Errorf("API requests = %d, want 2 (the rejected one and the replay)", n)
			}
			if f.token(t) == old {
				t.Error("the revoked token is still held")
			}
		})
	}
	replays := 0
	for _, e := range ev.snapshot() {
		if e == "replay" {
			replays++
		}
	}
	if replays != 2 {
		t.Errorf("Replay events = %d, want 2", replays)
	}
}

// TestReplay_UserTokenRevoked: the same for a user's token; the refresh
// token renews it, and the fake never sees a rotated refresh token again.
func TestReplay_UserTokenRevoked(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	old, _ := f.gate.UserToken(context.Background(), "alice")
	f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
	f.srv.Revoke(old.AccessToken)
	a := alice.api(f)
	if a.status != 200 || a.json["subject"] != "tn-alice" {
		t.Fatalf("after revocation: %d %s", a.status, a.body)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 {
		t.Errorf("refreshes = %d, want exactly 1", n)
	}
	if cur, _ := f.gate.UserToken(context.Background(), "alice"); cur.AccessToken == old.AccessToken {
		t.Error("the revoked token is still served")
	}
	if f.srv.StaleRefreshReuses()+f.srv.GraceRefreshReuses() != 0 {
		t.Error("a rotated refresh token was presented again")
	}
}

// TestReplay_NotReplayed: what is passed on as the API answered it.
func TestReplay_NotReplayed(t *testing.T) {
	cases := []struct {
		name     string
		www      string // WWW-Authenticate of the upstream's 401
		body     int    // request body size
		maxBody  int64
		want     int // what the client sees
		requests int // upstream requests
		newToken bool
	}{
		{"insufficient_scope is not a token problem", `Bearer error="insufficient_scope", scope="x"`, 0, 0, 401, 1, false},
		{"a body over MaxReplayBody goes once", `Bearer error="invalid_token"`, 70 << 10, 0, 401, 1, true},
		{"buffering disabled", `Bearer error="invalid_token"`, 10, -1, 401, 1, true},
		{"a bare 401 is the API's business", ``, 0, 0, 401, 1, false},
		{"another scheme's challenge is the API's business", `Basic realm="api"`, 0, 0, 401, 1, false},
		{"a Bearer challenge among others, with another error", `Basic realm="api", Bearer error="insufficient_scope"`, 0, 0, 401, 1, false},
		{"invalid_token is replayed", `Bearer realm="x", error="invalid_token"`, 100, 0, 200, 2, true},
		{"invalid_token after another scheme is replayed", `Basic realm="a, b", Bearer error=invalid_token`, 0, 0, 200, 2, true},
		{"a Bearer challenge without an error is replayed", `Bearer realm="x"`, 0, 0, 200, 2, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, func(cfg *middleware.Config) { cfg.MaxReplayBody = c.maxBody })
			first := f.token(t)
			f.clock.Advance(10 * time.Minute) // mid-life: a token seconds old is not replaced
			var calls int
			var gotBody []int
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls++
				b, _ := io.ReadAll(r.Body)
				gotBody = append(gotBody, len(b))
				if r.Header.Get("Authorization") == "Bearer "+first {
					if c.www != "" {
						w.Header().Set("WWW-Authenticate", c.www)
					}
					w.Header().Set("X-Upstream", "rejected")
					w.WriteHeader(401)
					io.WriteString(w, `{"error":"from upstream"}`)
					return
				}
				w.WriteHeader(200)
			})
			var body io.Reader
			if c.body > 0 {
				body = io.MultiReader(strings.NewReader(strings.Repeat("x", c.body)))
			}
			req := httptest.NewRequest(http.MethodPost, "/api/v1/search", body)
			rec := httptest.NewRecorder()
			f.gate.Wrap(upstream).ServeHTTP(rec, req)
			if rec.Code != c.want || calls != c.requests {
				t.Fatalf("client saw %d after %d upstream requests, want %d after %d", rec.Code, calls, c.want, c.requests)
			}
			if c.want == 200 && rec.Header().Get("X-Upstream") != "" {
				t.Error("a header of the held 401 leaked into the replay's answer")
			}
			if c.want == 401 && (rec.Header().Get("X-Upstream") != "rejected" || !strings.Contains(rec.Body.String(), "from upstream")) {
				t.Errorf("the client did not get the API's own 401: headers %v, body %q", rec.Header(), rec.Body.String())
			}
			for i, n := range gotBody {
				if n != c.body {
					t.Errorf("upstream request %d carried %d body bytes, want %d", i, n, c.body)
				}
			}
			if got := f.token(t) != first; got != c.newToken {
				t.Errorf("token replaced = %v, want %v", got, c.newToken)
			}
		})
	}
}

// TestInvalidate_OnlyThatVersion: invalidating a version that is no
// longer current leaves the newer token alone.
func TestInvalidate_OnlyThatVersion(t *testing.T) {
	f := newFixture(t, nil)
	tok1, _ := f.gate.Token(context.Background())
	f.clock.Advance(10 * time.Minute)
	f.gate.Invalidate("", tok1.Version)
	tok2, _ := f.gate.Token(context.Background())
	if tok2.Version == tok1.Version || f.ccRequests() != 2 {
		t.Fatalf("after Invalidate: version %d → %d, %d token requests; want a new token", tok1.Version, tok2.Version, f.ccRequests())
	}
	f.gate.Invalidate("", tok1.Version) // a late 401 for the old token
	tok3, _ := f.gate.Token(context.Background())
	if tok3.Version != tok2.Version || f.ccRequests() != 2 {
		t.Errorf("a stale Invalidate replaced the newer token (%d token requests)", f.ccRequests())
	}
}

// TestTransport_ReplaysWithGetBody: the RoundTripper replays a request
// whose body it can get again.
func TestTransport_ReplaysWithGetBody(t *testing.T) {
	f := newFixture(t, nil)
	old := f.token(t)
	f.clock.Advance(10 * time.Minute)
	f.srv.Revoke(old)
	c := &http.Client{Transport: f.gate.Transport(nil)}
	resp, err := c.Post(f.srv.APIURL()+"/v1/search", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var a tasknationtest.APIResponse
	_ = json.NewDecoder(resp.Body).Decode(&a)
	if resp.StatusCode != 200 || a.BodyBytes != 5 {
		t.Fatalf("through the Transport after revocation: %d, %d body bytes", resp.StatusCode, a.BodyBytes)
	}
	if f.ccRequests() != 2 {
		t.Errorf("token requests = %d, want 2", f.ccRequests())
	}
}

// TestReplay_ServerHeadersRestored: the response writer already holds
// headers (a server's, like Caddy's Server) when the API's 401 adds its
// own: the replay's answer has the server's headers as they were, and
// nothing of the held 401. The writer holds only the common server
// headers (looked up), or others too (the map walked).
func TestReplay_ServerHeadersRestored(t *testing.T) {
	for _, before := range []http.Header{
		{"Server": {"Caddy"}},
		{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}},
		{"Server": {"Caddy"}, "X-Before": {"kept"}},
		{"X-Before": {"kept"}},
		{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}, "X-Before": {"kept"}, "Strict-Transport-Security": {"max-age=31536000"}},
	} {
		t.Run(strings.Join(slices.Sorted(maps.Keys(before)), "+"), func(t *testing.T) {
			f := newFixture(t, nil)
			first := f.token(t)
			f.clock.Advance(10 * time.Minute)
			upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") == "Bearer "+first {
					w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
					w.Header().Add("Server", "the-api")
					w.Header().Add("Alt-Svc", "clear")
					w.Header().Set("X-Held", "yes")
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				w.Header().Set("X-Replayed", "yes")
				w.WriteHeader(http.StatusOK)
			})
			rec := httptest.NewRecorder()
			for k, v := range before {
				rec.Header()[k] = slices.Clone(v)
			}
			f.gate.Wrap(upstream).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/search", nil))
			h := rec.Result().Header
			if rec.Code != http.StatusOK || h.Get("X-Replayed") != "yes" {
				t.Fatalf("client saw %d %v, want the replay's 200", rec.Code, h)
			}
			delete(h, "X-Replayed")
			if !maps.EqualFunc(h, before, slices.Equal) {
				t.Errorf("headers after the replay: %v, want the server's own %v and the replay's", h, before)
			}
		})
	}
}

// TestReplay_NewTokenRefusedToo: the API refuses the replay's token as
// well: the client gets that 401, the Gate says so in a warning naming
// both versions, and no request after it makes the Gate ask for another
// token (the new one is too young to be rejected).
func TestReplay_NewTokenRefusedToo(t *testing.T) {
	f := newFixture(t, nil)
	first := f.token(t)
	f.clock.Advance(10 * time.Minute)
	var upstreamCalls atomic.Int32
	upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamCalls.Add(1)
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		w.WriteHeader(http.StatusUnauthorized)
	})
	h := f.gate.Wrap(upstream)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/search", nil))
	if rec.Code != http.StatusUnauthorized || upstreamCalls.Load() != 2 {
		t.Fatalf("client saw %d after %d upstream calls, want 401 after the request and its replay", rec.Code, upstreamCalls.Load())
	}
	warn := f.logs.FilterMessageSnippet("refused the replay's token too")
	if warn.Len() != 1 {
		t.Fatalf("%d warnings about the refused replay, want 1", warn.Len())
	}
	if msg := warn.All()[0].Message; !strings.Contains(msg, "header_up -Authorization") {
		t.Errorf("the warning %q does not name the usual cause", msg)
	}
	fields := warn.All()[0].ContextMap()
	if fields["version"] == fields["new_version"] || fields["new_version"] == nil {
		t.Errorf("the warning's versions: %v", fields)
	}
	for _, e := range f.logs.All() {
		if strings.Contains(fmt.Sprint(e.ContextMap()), first) {
			t.Fatalf("a token in the logs: %s %v", e.Message, e.ContextMap())
		}
	}
	tokens := f.ccRequests()
	for range 3 {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/api/v1/search", nil))
		if rec.Code != http.StatusUnauthorized {
			t.Fatalf("client saw %d, want the API's 401", rec.Code)
		}
	}
	if n := f.ccRequests(); n != tokens {
		t.Errorf("token requests went from %d to %d: a refused young token made the Gate ask again", tokens, n)
	}
}
