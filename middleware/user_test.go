package middleware_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

func TestUser_ConnectCallDisconnect(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice, bob := f.browser(t, "alice"), f.browser(t, "bob")

	// Before connecting: 401 not_connected with an absolute connect URL.
	a := alice.api(f)
	wantUserError(t, a, http.StatusUnauthorized, "not_connected")
	if a.json["connect_url"] != f.gw.URL+"/oauth2/connect" {
		t.Errorf("connect_url = %v, want %s", a.json["connect_url"], f.gw.URL+"/oauth2/connect")
	}
	// No subject at all: 401 unauthenticated.
	wantUserError(t, f.browser(t, "").api(f), http.StatusUnauthorized, "unauthenticated")

	auth := alice.startConnect(f)
	q := auth.Query()
	for k, want := range map[string]string{
		"client_id":             tasknationtest.DefaultClientID,
		"response_type":         "code",
		"redirect_uri":          f.gw.URL + "/oauth2/callback",
		"scope":                 "supply::businesses supply::leads offline_access",
		"code_challenge_method": "S256",
	} {
		if got := q.Get(k); got != want {
			t.Errorf("authorization URL %s = %q, want %q", k, got, want)
		}
	}
	if auth.Scheme+"://"+auth.Host+auth.Path != f.srv.AuthURL() {
		t.Errorf("authorization URL %s is not the fake's %s", auth, f.srv.AuthURL())
	}
	if len(q.Get("state")) < 32 {
		t.Errorf("state %q has %d characters, want at least 32", q.Get("state"), len(q.Get("state")))
	}
	if len(q.Get("code_challenge")) != 43 {
		t.Errorf("code_challenge %q is not an S256 challenge", q.Get("code_challenge"))
	}
	cb := alice.authorize(auth, "tn-alice")
	a = alice.get(cb.String())
	if a.status != http.StatusOK || a.json["status"] != "connected" {
		t.Fatalf("callback: %d %s", a.status, a.body)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1", n)
	}

	a = alice.api(f)
	if a.status != http.StatusOK || a.json["subject"] != "tn-alice" {
		t.Fatalf("alice's API call: %d %s, want 200 as tn-alice", a.status, a.body)
	}
	// Bob is not connected: he never gets alice's token.
	wantUserError(t, bob.api(f), http.StatusUnauthorized, "not_connected")
	bob.connect(f, "tn-bob")
	if a := bob.api(f); a.json["subject"] != "tn-bob" {
		t.Fatalf("bob's API call went out as %v, want tn-bob (%s)", a.json["subject"], a.body)
	}
	if a := alice.api(f); a.json["subject"] != "tn-alice" {
		t.Fatalf("alice's API call went out as %v after bob connected", a.json["subject"])
	}

	// Disconnect takes POST; GET is refused and changes nothing.
	if a := alice.get(f.gw.URL + "/oauth2/disconnect"); a.status != http.StatusMethodNotAllowed {
		t.Errorf("GET disconnect: %d, want 405", a.status)
	}
	if a := alice.do(http.MethodPost, f.gw.URL+"/oauth2/disconnect", true); a.status != http.StatusOK || a.json["status"] != "disconnected" {
		t.Fatalf("disconnect: %d %s", a.status, a.body)
	}
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "not_connected")
	if a := bob.api(f); a.status != http.StatusOK {
		t.Errorf("bob after alice disconnected: %d, want 200", a.status)
	}
}

func TestUser_ClientAuthorizationNeverReachesAPI(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	// The Basic credentials that named the subject are replaced by the
	// bearer: the fake API accepts only its own tokens.
	if a := alice.api(f); a.status != http.StatusOK {
		t.Fatalf("API: %d %s", a.status, a.body)
	}
	tok, err := f.gate.UserToken(context.Background(), "alice")
	if err != nil || !strings.HasPrefix(tok.AccessToken, tasknationtest.AccessTokenPrefix) {
		t.Fatalf("UserToken = %v, %v", tok, err)
	}
}

// TestUser_BadCallbacks: every way a callback can be wrong is a 400 (or
// 401) with a JSON error, and none stores tokens.
func TestUser_BadCallbacks(t *testing.T) {
	type step struct {
		cb   *url.URL
		b    *browser
		f    *userFixture
		pick func() // extra setup on the fixture before the callback
	}
	cases := []struct {
		name   string
		mangle func(t *testing.T, s *step) string // returns the callback URL to visit
		status int
		code   string
	}{
		{"missing state", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Del("state")
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "invalid_state"},
		{"unknown state", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Set("state", strings.Repeat("x", 43))
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "invalid_state"},
		{"expired state", func(t *testing.T, s *step) string {
			s.f.clock.Advance(10*time.Minute + time.Second)
			return s.cb.String()
		}, 400, "invalid_state"},
		{"reused state", func(t *testing.T, s *step) string {
			if a := s.b.get(s.cb.String()); a.status != 200 {
				t.Fatalf("first callback: %d %s", a.status, a.body)
			}
			// The browser goes through the flow again, but replays the old callback.
			s.b.startConnect(s.f)
			return s.cb.String()
		}, 400, "invalid_state"},
		{"state of another subject", func(t *testing.T, s *step) string {
			// Mallory started this flow; alice's browser is lured to its callback.
			mallory := s.f.browser(t, "mallory")
			cb := mallory.authorize(mallory.startConnect(s.f), "tn-mallory")
			s.b.startConnect(s.f) // alice has a state cookie of her own
			return cb.String()
		}, 400, "invalid_state"},
		{"state without its cookie", func(t *testing.T, s *step) string {
			s.b = s.f.browser(t, "alice") // same user, another browser
			return s.cb.String()
		}, 400, "invalid_state"},
		{"access denied", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Del("code")
			q.Set("error", "access_denied")
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "access_denied"},
		{"odd error code is not echoed", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Del("code")
			q.Set("error", "<script>")
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "authorization_failed"},
		{"wrong code", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Set("code", tasknationtest.CodePrefix+"not-a-real-code")
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "invalid_grant"},
		{"no code", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Del("code")
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "invalid_request"},
		{"oversized parameter", func(t *testing.T, s *step) string {
			q := s.cb.Query()
			q.Set("code", strings.Repeat("c", 4096))
			s.cb.RawQuery = q.Encode()
			return s.cb.String()
		}, 400, "invalid_request"},
		{"repeated parameter", func(t *testing.T, s *step) string {
			s.cb.RawQuery += "&code=second"
			return s.cb.String()
		}, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newUserFixture(t, tasknationtest.Options{}, nil)
			b := f.browser(t, "alice")
			s := &step{b: b, f: f, cb: b.authorize(b.startConnect(f), "tn-alice")}
			target := c.mangle(t, s)
			a := s.b.get(target)
			wantUserError(t, a, c.status, c.code)
			if a.json["connect_url"] != f.gw.URL+"/oauth2/connect" {
				t.Errorf("error without the connect_url: %s", a.body)
			}
			if c.name != "reused state" {
				wantUserError(t, b.api(f), http.StatusUnauthorized, "not_connected")
			}
			for _, k := range []string{"code", "state"} {
				if v := s.cb.Query().Get(k); len(v) > 8 && strings.Contains(a.body, v) {
					t.Errorf("the error body echoes the %s", k)
				}
			}
		})
	}
}

func TestUser_CallbackHTMLPages(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	b := f.browser(t, "alice")
	cb := b.authorize(b.startConnect(f), "tn-alice")
	req, _ := http.NewRequest(http.MethodGet, cb.String(), nil)
	req.SetBasicAuth("alice", "pw")
	req.Header.Set("Accept", "text/html,application/xhtml+xml")
	resp, err := b.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("browser callback: %d %s, want 200 text/html", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if rp := resp.Header.Get("Referrer-Policy"); rp != "no-referrer" {
		t.Errorf("the callback page's Referrer-Policy is %q: a link on it would send the code on", rp)
	}
	// The state cookie was HttpOnly, SameSite=Lax and (on loopback http) not Secure.
	b2 := f.browser(t, "alice")
	req, _ = http.NewRequest(http.MethodGet, f.gw.URL+"/oauth2/connect", nil)
	req.SetBasicAuth("alice", "pw")
	resp, err = b2.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	set := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"tokengate_state=", "HttpOnly", "SameSite=Lax", "Path=/oauth2/callback", "Max-Age=600"} {
		if !strings.Contains(set, want) {
			t.Errorf("Set-Cookie %q lacks %q", set, want)
		}
	}
	if strings.Contains(set, "Secure") {
		t.Errorf("Set-Cookie %q is Secure on a loopback http redirect URI", set)
	}
}

func TestUser_ConnectedRedirect(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.ConnectedRedirect = "/welcome" })
	b := f.browser(t, "alice")
	a := b.get(b.authorize(b.startConnect(f), "tn-alice").String())
	if a.status != http.StatusSeeOther || a.header.Get("Location") != "/welcome" {
		t.Fatalf("callback: %d Location %q, want 303 /welcome", a.status, a.header.Get("Location"))
	}
}

// TestUser_ConcurrentExpiredOneRefresh: 50 requests of one user whose
// access token expired cause exactly one refresh, and every one is served.
func TestUser_ConcurrentExpiredOneRefresh(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	before, _ := f.gate.UserToken(context.Background(), "alice")
	f.clock.Advance(time.Hour + time.Minute) // past the 1h access token
	f.srv.SetLatency(50 * time.Millisecond)  // the refresh is in flight while all 50 arrive

	var wg sync.WaitGroup
	errs := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			if a := alice.api(f); a.status != 200 || a.json["subject"] != "tn-alice" {
				errs <- a.body
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("request failed: %s", e)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 {
		t.Errorf("refresh_token requests = %d, want 1", n)
	}
	after, _ := f.gate.UserToken(context.Background(), "alice")
	if after.AccessToken == before.AccessToken || after.RefreshToken == before.RefreshToken {
		t.Error("token set not rotated")
	}
	// Past the grace period nobody may present the rotated token again.
	f.clock.Advance(2 * time.Minute)
	for range 10 {
		if a := alice.api(f); a.status != 200 {
			t.Fatalf("after the grace period: %d %s", a.status, a.body)
		}
	}
	if n := f.srv.StaleRefreshReuses(); n != 0 {
		t.Errorf("the fake saw %d already-rotated refresh tokens after the grace period", n)
	}
	if n := f.srv.GraceRefreshReuses(); n != 0 {
		t.Errorf("the fake saw %d reuses of a rotated refresh token; one refresh should need none", n)
	}
	if !f.srv.RefreshActive(after.RefreshToken) {
		t.Error("the stored refresh token is not the live one")
	}
	if !after.RefreshExpiry.Equal(before.RefreshExpiry) {
		t.Errorf("rotation moved the refresh expiry from %v to %v; it counts from the grant", before.RefreshExpiry, after.RefreshExpiry)
	}
}

// TestUser_RefreshRetriedInsideGrace: the refresh's answer is lost after
// the server rotated; the retry with the same refresh token, inside the
// grace period, gets a fresh pair and the user stays connected.
func TestUser_RefreshRetriedInsideGrace(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	f.clock.Advance(time.Hour + time.Minute)
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1})

	done := make(chan answer, 1)
	go func() { done <- alice.api(f) }()
	// The first attempt is lost; redeem waits for its backoff timer.
	eventually(t, "the retry's backoff timer", func() bool {
		return f.srv.TokenRequests(tasknationtest.GrantRefreshToken) == 1 && f.clock.Pending() > 0
	})
	f.clock.Advance(time.Second)
	a := <-done
	if a.status != 200 {
		t.Fatalf("API after a lost rotation: %d %s", a.status, a.body)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
		t.Errorf("refresh_token requests = %d, want 2 (lost + retry)", n)
	}
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	if !f.srv.RefreshActive(tok.RefreshToken) {
		t.Error("the stored refresh token is not usable")
	}
}

// TestUser_RefreshGivesUpAfterGrace: with no answer at all, retries stop
// before the grace period ends (a later retry would revoke the family)
// and the client sees 503, not a logout.
func TestUser_RefreshGivesUpAfterGrace(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	f.clock.Advance(time.Hour + time.Minute)
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Grant: tasknationtest.GrantRefreshToken})
	done := make(chan answer, 1)
	go func() { done <- alice.api(f) }()
	var a answer
	for waiting := true; waiting; {
		select {
		case a = <-done:
			waiting = false
		default:
			if f.clock.Pending() > 0 {
				f.clock.Advance(time.Second)
			}
			time.Sleep(time.Millisecond) // polling interval
		}
	}
	wantUserError(t, a, http.StatusServiceUnavailable, "token_unavailable")
	n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken)
	if n < 3 {
		t.Errorf("refresh_token requests = %d, want several retries", n)
	}
	f.srv.ClearFaults()
	// The refresh token is intact: once the backoff passes, service resumes.
	f.clock.Advance(2 * time.Minute)
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("after recovery: %d %s", a.status, a.body)
	}
}

func TestUser_InvalidGrantRequiresReauthorization(t *testing.T) {
	ev := &events{}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Observer = &userEvents{events: ev} })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	// Someone else used (and rotated) the refresh token long ago.
	refreshOnce(t, f.srv, tok.RefreshToken)
	f.clock.Advance(time.Hour + time.Minute)
	a := alice.api(f)
	wantUserError(t, a, http.StatusUnauthorized, "reauthorization_required")
	if a.json["connect_url"] != f.gw.URL+"/oauth2/connect" {
		t.Errorf("connect_url = %v", a.json["connect_url"])
	}
	// The tokens are gone: no further refresh is tried, and the answer
	// stays reauthorization_required (the store's mark) until she connects.
	n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken)
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "reauthorization_required")
	if m := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); m != n {
		t.Errorf("refresh requests went from %d to %d after invalid_grant", n, m)
	}
	if !ev.has("reauthorization") {
		t.Errorf("no Reauthorization event in %v", ev.snapshot())
	}
	alice.connect(f, "tn-alice")
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("after reconnecting: %d", a.status)
	}
}

func TestUser_RefreshTokenLifetime(t *testing.T) {
	ev := &events{}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Observer = &userEvents{events: ev} })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	if want := tok.ObtainedAt.Add(180 * 24 * time.Hour); !tok.RefreshExpiry.Equal(want) {
		t.Fatalf("RefreshExpiry = %v, want the grant + 180 days (%v)", tok.RefreshExpiry, want)
	}
	// 170 days on: inside the 14-day warning.
	f.clock.Advance(170 * 24 * time.Hour)
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("day 170: %d %s", a.status, a.body)
	}
	if f.logs.FilterMessageSnippet("refresh token runs out soon").Len() == 0 {
		t.Error("no warning logged 10 days before the refresh token runs out")
	}
	if !ev.has("refresh_token_expiring") {
		t.Errorf("no RefreshTokenExpiring event in %v", ev.snapshot())
	}
	// Day 181: the refresh token is over; no request is sent for it.
	f.clock.Advance(11 * 24 * time.Hour)
	n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken)
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "reauthorization_required")
	if m := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); m != n {
		t.Errorf("a refresh was tried with a refresh token past its lifetime")
	}
}

// TestUser_FileStoreRestart: tokens survive a new Gate on the same sealed
// file store; a Gate with another key cannot read them and says so.
func TestUser_FileStoreRestart(t *testing.T) {
	dir := t.TempDir()
	key1, key2 := make([]byte, 32), make([]byte, 32)
	key2[0] = 1
	sealed := func(t *testing.T, key []byte) tokenstore.Store {
		fs, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, err := tokenstore.NewSealed(fs, key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	first := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Store = sealed(t, key1) })
	srv := first.srv
	alice := first.browser(t, "alice")
	alice.connect(first, "tn-alice")
	first.gate.Close()

	for _, c := range []struct {
		name   string
		key    []byte
		status int
	}{{"same key", key1, 200}, {"wrong key", key2, 503}} {
		t.Run(c.name, func(t *testing.T) {
			g, err := middleware.New(middleware.Config{
				Grant: middleware.GrantAuthorizationCode, TokenURL: srv.TokenURL(), AuthURL: srv.AuthURL(),
				RedirectURI: first.gw.URL + "/oauth2/callback", ClientID: tasknationtest.DefaultClientID,
				ClientSecret: tasknationtest.DefaultClientSecret, Scopes: userScopes, Store: sealed(t, c.key),
				Clock: first.clock,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer g.Close()
			_, err = g.UserToken(context.Background(), "alice")
			switch c.status {
			case 200:
				if err != nil {
					t.Fatalf("after restart: %v", err)
				}
			default:
				if err == nil || !strings.Contains(err.Error(), "different key") {
					t.Fatalf("wrong key: err = %v, want a different-key error", err)
				}
			}
		})
	}
	if n := srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1 (no reconnect)", n)
	}
}

// TestUser_LogsNoSecrets: across connect, refresh, a lost answer and an
// invalid_grant, no log line at debug level carries a token, the code,
// the state or the client secret.
func TestUser_LogsNoSecrets(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.MinBackoff = time.Millisecond })
	alice := f.browser(t, "alice")
	cb := alice.authorize(alice.startConnect(f), "tn-alice")
	secrets := []string{tasknationtest.DefaultClientSecret, cb.Query().Get("code"), cb.Query().Get("state")}
	if a := alice.get(cb.String()); a.status != 200 {
		t.Fatalf("callback: %d", a.status)
	}
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	secrets = append(secrets, tok.AccessToken, tok.RefreshToken)
	f.clock.Advance(time.Hour + time.Minute)
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1})
	done := make(chan answer, 1)
	go func() { done <- alice.api(f) }()
	eventually(t, "the retry's backoff timer", func() bool { return f.clock.Pending() > 0 })
	f.clock.Advance(time.Second)
	if a := <-done; a.status != 200 {
		t.Fatalf("refresh: %d %s", a.status, a.body)
	}
	tok2, _ := f.gate.UserToken(context.Background(), "alice")
	secrets = append(secrets, tok2.AccessToken, tok2.RefreshToken)
	refreshOnce(t, f.srv, tok2.RefreshToken)
	f.clock.Advance(2 * time.Hour)
	wantUserError(t, alice.api(f), http.StatusUnauthorized, "reauthorization_required")

	if f.logs.Len() < 4 {
		t.Fatalf("only %d log lines: the test would prove nothing", f.logs.Len())
	}
	for _, e := range f.logs.All() {
		line := e.Message
		for _, fld := range e.Context {
			line += " " + fld.Key + "=" + fld.String + " " + fmt.Sprint(fld.Interface)
		}
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("log line %q carries a secret", e.Message)
			}
		}
	}
}

// TestUser_Transport: an outbound client of an authorization_code Gate
// sends the token of the subject in the request's context.
func TestUser_Transport(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	f.browser(t, "alice").connect(f, "tn-alice")
	c := &http.Client{Transport: f.gate.Transport(nil)}
	for _, s := range []struct {
		subject string
		status  int
	}{{"alice", 200}, {"", 0}, {"bob", 0}} {
		req, _ := http.NewRequestWithContext(middleware.WithSubject(context.Background(), s.subject), http.MethodGet, f.srv.APIURL()+"/v1/businesses/me", nil)
		resp, err := c.Do(req)
		if s.status == 0 {
			var ue *middleware.UserError
			if !errors.As(err, &ue) {
				t.Errorf("subject %q: err = %v, want a *UserError", s.subject, err)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != s.status {
			t.Errorf("subject %q: %d, want %d", s.subject, resp.StatusCode, s.status)
		}
	}
}

// flakyStore is a memory store whose writes fail while failing is set.
type flakyStore struct {
	tokenstore.Store
	failing atomic.Bool
}

func (s *flakyStore) Set(ctx context.Context, key string, tok *tokenstore.Token) error {
	if s.failing.Load() {
		return errors.New("disk full")
	}
	return s.Store.Set(ctx, key, tok)
}

// TestUser_StoreWriteFailsAfterRotation: the store refuses the rotated
// set; it is served from memory, and the next refresh redeems the live
// (rotated) refresh token, not the stale one the store still holds.
func TestUser_StoreWriteFailsAfterRotation(t *testing.T) {
	inner, _ := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{}) // real clock: the sets stay usable
	defer inner.Close()
	store := &flakyStore{Store: inner}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Store = store })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")

	store.failing.Store(true)
	f.clock.Advance(time.Hour + time.Minute)
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("with the store refusing writes: %d %s", a.status, a.body)
	}
	if f.logs.FilterMessageSnippet("held in memory only").Len() == 0 {
		t.Error("the failed write after a rotation was not logged")
	}
	live, _ := f.gate.UserToken(context.Background(), "alice")

	store.failing.Store(false)
	f.clock.Advance(time.Hour + time.Minute) // past the grace period of the first rotation, and the new token's expiry
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("next refresh: %d %s", a.status, a.body)
	}
	if n := f.srv.StaleRefreshReuses(); n != 0 {
		t.Fatalf("the stale refresh token from the store was redeemed (%d times)", n)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
		t.Errorf("refreshes = %d, want 2", n)
	}
	// The store was written again: a new Gate on it serves alice.
	g2, err := middleware.New(middleware.Config{
		Grant: middleware.GrantAuthorizationCode, TokenURL: f.srv.TokenURL(), AuthURL: f.srv.AuthURL(),
		RedirectURI: f.gw.URL + "/oauth2/callback", ClientID: tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret, Scopes: userScopes, Store: store, Clock: f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if tok, err := g2.UserToken(context.Background(), "alice"); err != nil || tok.RefreshToken == live.RefreshToken {
		t.Errorf("a new Gate on the store: err=%v, same stale refresh token=%v", err, tok.RefreshToken == live.RefreshToken)
	}
}

// TestUser_RefreshAheadNeverBlocks: inside the refresh window the current
// token is served at once while one background refresh runs.
func TestUser_RefreshAheadNeverBlocks(t *testing.T) {
	ev := &events{}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Observer = &userEvents{events: ev} })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	old, _ := f.gate.UserToken(context.Background(), "alice")
	f.clock.Advance(55 * time.Minute) // inside the last 20% (+ jitter) of the hour
	f.srv.SetLatency(2 * time.Second)
	for range 5 {
		if a := alice.api(f); a.status != 200 {
			t.Fatalf("inside the refresh window: %d %s", a.status, a.body)
		}
	}
	// Answered while the refresh still waits at the token endpoint.
	if cur, _ := f.gate.UserToken(context.Background(), "alice"); cur.AccessToken != old.AccessToken {
		t.Fatal("the refresh finished before the requests were answered: they waited for it")
	}
	eventually(t, "the background refresh", func() bool {
		cur, _ := f.gate.UserToken(context.Background(), "alice")
		return cur.AccessToken != old.AccessToken
	})
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 {
		t.Errorf("refresh_token requests = %d, want 1", n)
	}
	if !ev.has("background") {
		t.Errorf("no BackgroundRefresh event in %v", ev.snapshot())
	}
}

// TestWrap_UserGateNeedsSubject: Wrap of a user-context Gate without
// Config.Subject panics when it is built, naming the field, instead of
// answering every request 401; with a Subject it wraps.
func TestWrap_UserGateNeedsSubject(t *testing.T) {
	cfg := middleware.Config{
		ClientID: "id", ClientSecret: "secret", Scopes: []string{"supply::leads"},
		Grant: middleware.GrantAuthorizationCode, RedirectURI: "https://gw.example.com/oauth2/callback",
	}
	g, err := middleware.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	func() {
		defer func() {
			if msg, _ := recover().(string); !strings.Contains(msg, "Config.Subject") {
				t.Errorf("Wrap without a Subject: panic %q, want one naming Config.Subject", msg)
			}
		}()
		g.Wrap(http.NotFoundHandler())
	}()
	cfg.Subject = func(*http.Request) string { return "" }
	g2, err := middleware.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g2.Close()
	if g2.Wrap(http.NotFoundHandler()) == nil {
		t.Error("Wrap with a Subject returned nil")
	}
}
