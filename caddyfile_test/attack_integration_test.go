package caddyfile_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// Attacks through a real Caddy. See middleware/attack_test.go for the
// Go middleware's matrix.

// clientAuthorizations are the Authorization headers a client sends to
// a gateway in the attack tests, as header lines written on the wire.
var clientAuthorizations = []struct {
	name  string
	lines []string // each a whole header line
}{
	{"junk bearer", []string{"Authorization: Bearer client-junk"}},
	{"Basic credentials", []string{"Authorization: Basic bWFsbG9yeTpzM2NyM3Q="}},
	{"two Authorization headers", []string{"Authorization: Bearer client-junk", "Authorization: Basic bWFsbG9yeTpzM2NyM3Q="}},
	{"lower-case authorization", []string{"authorization: Bearer client-junk"}},
	// reverse_proxy deletes the headers Connection names (hop-by-hop),
	// the injected bearer included unless the gateway unlists it: the
	// API's 401 would then cost a token request per client request.
	{"Connection: Authorization", []string{"Connection: Authorization", "Authorization: Bearer client-junk"}},
	{"Connection: keep-alive, authorization", []string{"Connection: keep-alive, authorization"}},
}

// checkOneBearer checks that the spy got exactly one request since the
// last check, carrying exactly one Authorization value: a bearer token
// active at the fake. It returns the token.
func checkOneBearer(t *testing.T, spy *testkit.APISpy, fake *tasknationtest.Server, what string) string {
	t.Helper()
	got := spy.Take()
	if len(got) != 1 {
		t.Errorf("%s: the upstream got %d requests, want 1", what, len(got))
		return ""
	}
	if len(got[0]) != 1 || !strings.HasPrefix(got[0][0], "Bearer "+accessTokenMark) {
		t.Errorf("%s: the upstream got Authorization %q, want only the gateway's bearer", what, got[0])
		return ""
	}
	tok := strings.TrimPrefix(got[0][0], "Bearer ")
	if !fake.Active(tok) {
		t.Errorf("%s: the bearer the upstream got is not an active token of the fake", what)
	}
	return tok
}

// withHeaderLines is h with header lines added as a client writes them
// (a lower-case name stays lower-case on the wire: Go writes the keys of
// the map as they are).
func withHeaderLines(h http.Header, lines []string) http.Header {
	if h == nil {
		h = http.Header{}
	}
	for _, l := range lines {
		k, v, _ := strings.Cut(l, ": ")
		h[k] = append(h[k], v)
	}
	return h
}

// TestCaddyAttack_ClientAuthorizationNeverReachesUpstream: through a real
// Caddy, the upstream gets exactly one Authorization value, the gateway's
// bearer, whatever the client sent: in a client_credentials site, and in a
// basic_auth + authorization_code site, whose login credentials must not
// reach the upstream either (nor an X-User header change whose token it is).
func TestCaddyAttack_ClientAuthorizationNeverReachesUpstream(t *testing.T) {
	t.Run("client_credentials", func(t *testing.T) {
		g := newGateway(t)
		spy := testkit.NewAPISpy(t, g.fake.URL)
		cfg := g.caddyfile(siteOptions{})
		cfg = strings.Replace(cfg, "reverse_proxy "+g.fake.URL, "reverse_proxy "+spy.URL, 1)
		g.loadCaddyfile(cfg)
		var tokens []string
		for _, c := range clientAuthorizations {
			req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/api/v1/categories", g.httpPort), nil)
			req.Header = withHeaderLines(nil, c.lines)
			resp, err := g.client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d, want 200 from the API", c.name, resp.StatusCode)
			}
			tokens = append(tokens, checkOneBearer(t, spy, g.fake, c.name))
		}
		if uniq := slices.Compact(tokens); len(uniq) != 1 {
			t.Errorf("the upstream got %d different tokens, want the one gateway token", len(uniq))
		}
	})

	t.Run("basic_auth and authorization_code", func(t *testing.T) {
		s := newUserSite(t)
		spy := testkit.NewAPISpy(t, s.fake.URL)
		cfg := s.caddyfile(userOptions{})
		cfg = strings.Replace(cfg, "reverse_proxy "+s.fake.URL, "reverse_proxy "+spy.URL, 1)
		s.loadCaddyfile(cfg)
		alice, bob := s.user(t, "alice"), s.user(t, "bob")
		alice.connect(t, "tn-alice")
		spy.Take()
		// alice's login is her Basic header; the client's lines come
		// after it (basic_auth reads the first value), with X-User: bob.
		for _, c := range append([]struct {
			name  string
			lines []string
		}{{"the login only", nil}}, clientAuthorizations[:1]...) {
			req, _ := http.NewRequest(http.MethodGet, s.base+leadsPath, nil)
			req.SetBasicAuth(alice.name, alice.password)
			req.Header = withHeaderLines(req.Header, c.lines)
			req.Header.Set("X-User", "bob")
			resp, err := alice.client.Do(req)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			var api tasknationtest.APIResponse
			err = json.NewDecoder(resp.Body).Decode(&api)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil || api.Subject != "tn-alice" {
				t.Errorf("%s: status %d, the API call went out as %q, want 200 as alice's tn-alice", c.name, resp.StatusCode, api.Subject)
			}
			checkOneBearer(t, spy, s.fake, c.name)
		}
		// bob, not connected, claiming alice: refused, nothing forwarded.
		bob.mustBeRefused(t, http.StatusUnauthorized, "not_connected")
		r := bob.mustDo(t, http.MethodGet, leadsPath, http.Header{"X-User": {"alice"}})
		if r.status != http.StatusUnauthorized {
			t.Errorf("bob with X-User: alice: status %d %s, want 401 not_connected", r.status, r.body)
		}
		if got := spy.Take(); len(got) != 0 {
			t.Errorf("bob's requests reached the upstream: %q", got)
		}
	})
}

// accessLogEntry is what the filtered access log keeps of a request.
type accessLogEntry struct {
	Request struct {
		URI     string              `json:"uri"`
		Headers map[string][]string `json:"headers"`
	} `json:"request"`
	Status      int                 `json:"status"`
	RespHeaders map[string][]string `json:"resp_headers"`
}

// readAccessLog decodes the JSON lines of the access log at path.
func readAccessLog(t *testing.T, path string) ([]accessLogEntry, []byte) {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []accessLogEntry
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var e accessLogEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("an access log line is not JSON: %v: %s", err, sc.Bytes())
		}
		out = append(out, e)
	}
	return out, raw
}

// TestCaddyAttack_AccessLogHoldsNoCodeOrState extends
// TestUserContext_ConnectCallDisconnect's access log check (which finds
// no code or state in the log of one connect) to the callbacks an
// attacker or a failure produces, with the filter block of
// examples/user-context/Caddyfile itself, and checks each of the three
// places it covers, entry by entry: the callback's URI, the callback's
// Referer (present, and without its state), and the connect's Location
// (present, and without its state).
func TestCaddyAttack_AccessLogHoldsNoCodeOrState(t *testing.T) {
	s := newUserSite(t)
	// The site's access log filtered exactly as the example's is.
	example, err := os.ReadFile(filepath.Join("..", "examples", "user-context", "Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.caddyfile(userOptions{})
	ours, theirs := filterBlock(t, cfg), filterBlock(t, string(example))
	s.loadCaddyfile(strings.Replace(cfg, ours, theirs, 1))
	alice, bob := s.user(t, "alice"), s.user(t, "bob")
	var secrets []string
	// A connect that succeeds (with a Referer, as a browser sends it).
	flow := alice.connect(t, "tn-alice")
	secrets = append(secrets, flow.code, flow.state)
	// Its callback replayed, by alice and by bob.
	replay := "/oauth2/callback?" + url.Values{"code": {flow.code}, "state": {flow.state}}.Encode()
	for _, u := range []*siteUser{alice, bob} {
		if r := u.mustDo(t, http.MethodGet, replay, http.Header{"Referer": {s.fake.AuthURL() + "?state=" + flow.state}}); r.status != http.StatusBadRequest {
			t.Errorf("replayed callback as %s: %d, want 400", u.name, r.status)
		}
	}
	// A denied authorization and a forged code, each with a fresh state.
	for _, q := range []url.Values{{"error": {"access_denied"}}, {"code": {tasknationtest.CodePrefix + "forged-code-value"}}} {
		r := bob.mustDo(t, http.MethodGet, "/oauth2/connect", nil)
		loc, err := url.Parse(r.header.Get("Location"))
		if r.status != http.StatusFound || err != nil {
			t.Fatalf("bob's connect: %d %q", r.status, r.header.Get("Location"))
		}
		state := loc.Query().Get("state")
		q.Set("state", state)
		secrets = append(secrets, state, q.Get("code"))
		if r := bob.mustDo(t, http.MethodGet, "/oauth2/callback?"+q.Encode(), http.Header{"Referer": {loc.String()}}); r.status != http.StatusBadRequest {
			t.Errorf("callback %v: %d %s, want 400", q, r.status, r.body)
		}
	}
	if err := caddy.Stop(); err != nil { // the log is complete once Caddy stopped
		t.Fatal(err)
	}
	entries, raw := readAccessLog(t, s.logFile)
	var callbacks, referers, locations int
	for _, e := range entries {
		path, query, _ := strings.Cut(e.Request.URI, "?")
		if path == "/oauth2/callback" {
			callbacks++
			if q, _ := url.ParseQuery(query); q.Has("code") || q.Has("state") {
				t.Errorf("the access log keeps the callback's code or state: %s", e.Request.URI)
			}
			for _, ref := range e.Request.Headers["Referer"] {
				referers++
				if u, err := url.Parse(ref); err != nil || u.Query().Has("state") || u.Query().Has("code") {
					t.Errorf("the access log keeps the Referer's state or code: %s", ref)
				}
			}
		}
		if path == "/oauth2/connect" && e.Status == http.StatusFound {
			for _, l := range e.RespHeaders["Location"] {
				locations++
				u, err := url.Parse(l)
				if err != nil || u.Query().Has("state") {
					t.Errorf("the access log keeps the connect's state in its Location: %s", l)
				}
				if u != nil && u.Query().Get("client_id") != tasknationtest.DefaultClientID {
					t.Errorf("the filter deleted more than code and state from the Location: %s", l)
				}
			}
		}
	}
	// One successful callback, two replays, two failed ones; each with a
	// Referer. Three connects.
	if callbacks != 5 || referers != 5 || locations != 3 {
		t.Errorf("the access log has %d callbacks, %d Referers, %d connect Locations, want 5, 5 and 3:\n%s", callbacks, referers, locations, raw)
	}
	for _, secret := range secrets {
		if secret != "" && bytes.Contains(raw, []byte(secret)) {
			t.Errorf("the access log holds %.12s…", secret)
		}
	}
	for _, mark := range []string{tasknationtest.AccessTokenPrefix, tasknationtest.RefreshTokenPrefix, tasknationtest.DefaultClientSecret} {
		if bytes.Contains(raw, []byte(mark)) {
			t.Errorf("the access log holds %q", mark)
		}
	}
}

// filterBlock is the `format filter { ... }` block of a Caddyfile, up to
// its closing brace.
func filterBlock(t *testing.T, caddyfile string) string {
	t.Helper()
	i := strings.Index(caddyfile, "format filter {")
	if i < 0 {
		t.Fatalf("no `format filter` block in:\n%s", caddyfile)
	}
	depth := 0
	for j := i; j < len(caddyfile); j++ {
		switch caddyfile[j] {
		case '{':
			depth++
		case '}':
			if depth--; depth == 0 {
				return caddyfile[i : j+1]
			}
		}
	}
	t.Fatal("the `format filter` block does not close")
	return ""
}

// TestCaddyAttack_ClientControlledUserWarns: `user` from a request
// header loads (a handler in front may set it) but logs a warning at
// provision naming the placeholder; and the warning is right: without
// such a handler, a logged-in client names whose tokens it gets.
// {http.auth.user.id} logs no such warning.
func TestCaddyAttack_ClientControlledUserWarns(t *testing.T) {
	const warning = "the user placeholder comes from the request"
	for _, c := range []struct {
		name, user string
		warn       bool
	}{
		{"request header", "{http.request.header.X-User}", true},
		{"basic_auth user", "{http.auth.user.id}", false},
	} {
		t.Run(c.name, func(t *testing.T) { // no braces: the name is in the log file's path
			s := newUserSite(t)
			logFile := filepath.Join(s.dir, "caddy.log")
			cfg := s.caddyfile(userOptions{log: logFile, logLevel: "DEBUG"})
			cfg = strings.Replace(cfg, "user {http.auth.user.id}", "user "+c.user, 1)
			s.loadCaddyfile(cfg)
			alice, bob := s.user(t, "alice"), s.user(t, "bob")
			if c.warn {
				// alice connects as X-User alice; bob, logged in as
				// himself, claims to be alice.
				r := alice.mustDo(t, http.MethodGet, "/oauth2/connect", http.Header{"X-User": {"alice"}})
				auth, _ := url.Parse(r.header.Get("Location"))
				q := auth.Query()
				q.Set("login_hint", "tn-alice")
				auth.RawQuery = q.Encode()
				r = alice.mustDo(t, http.MethodGet, auth.String(), nil)
				if r = alice.mustDo(t, http.MethodGet, r.header.Get("Location"), http.Header{"X-User": {"alice"}}); r.status != http.StatusOK {
					t.Fatalf("alice's callback: %d %s", r.status, r.body)
				}
				r = bob.mustDo(t, http.MethodGet, leadsPath, http.Header{"X-User": {"alice"}})
				var api tasknationtest.APIResponse
				if json.Unmarshal(r.body, &api); r.status != http.StatusOK || api.Subject != "tn-alice" {
					t.Errorf("bob claiming X-User: alice got %d %s; the warning's danger is that he gets alice's token", r.status, r.body)
				}
			} else {
				alice.connect(t, "tn-alice")
				r := bob.mustDo(t, http.MethodGet, leadsPath, http.Header{"X-User": {"alice"}})
				if r.status != http.StatusUnauthorized {
					t.Errorf("bob claiming X-User: alice with user {http.auth.user.id}: %d %s, want 401 not_connected", r.status, r.body)
				}
			}
			if err := caddy.Stop(); err != nil {
				t.Fatal(err)
			}
			logs, err := os.ReadFile(logFile)
			if err != nil {
				t.Fatal(err)
			}
			var found bool
			for line := range bytes.Lines(logs) {
				var e struct {
					Level, Logger, Msg, Placeholder string
				}
				if json.Unmarshal(line, &e) == nil && strings.Contains(e.Msg, warning) {
					found = true
					if e.Level != "warn" || e.Placeholder != "{http.request.header.X-User}" || !strings.Contains(e.Logger, "oauth2_token") {
						t.Errorf("the warning is %s", line)
					}
				}
			}
			if found != c.warn {
				t.Errorf("user %s: warning logged = %v, want %v", c.user, found, c.warn)
			}
			if !bytes.Contains(logs, []byte("http.handlers.oauth2_token")) {
				t.Fatalf("the log has no line of the oauth2_token module; is it the right file?\n%s", logs)
			}
		})
	}
}
