package middleware_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// Regression tests for the defects of the 2026-12 hostile review, one
// per defect, named after it. Defects 2, 3 and 11 are the fleet scenarios
// of internal/fleettest (TestFleetContract here, and on Caddy storage in
// caddymodule); 5 and 6 are TestToken_RedirectNotFollowed and
// TestLogs_ServerQuotesCredentials; the file store's lock files of 7 are
// TestFileStore_LockFilesRemoved in tokenstore.

// TestDefect1b_401FloodBounded: an API path that answers every request
// 401 (a bare 401, another scheme's challenge, or even a Bearer
// invalid_token) must not let clients drive the token endpoint: 60
// requests (30 at once, then 30 in a row) to such a path cost at most 2
// token requests (or refreshes), and every client gets the API's 401,
// never a 503.
func TestDefect1b_401FloodBounded(t *testing.T) {
	challenges := []struct{ name, www string }{
		{"bare 401", ""},
		{"Basic challenge", `Basic realm="partner-api"`},
		{"Bearer invalid_token", `Bearer realm="api", error="invalid_token"`},
	}
	for _, grant := range fmBoth {
		for _, c := range challenges {
			t.Run(string(grant)+"/"+c.name, func(t *testing.T) {
				upstream := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if c.www != "" {
						w.Header().Set("WWW-Authenticate", c.www)
					}
					w.WriteHeader(http.StatusUnauthorized)
					io.WriteString(w, `{"error":"from the api"}`)
				})
				var front *httptest.Server
				var clk *clock
				var tokenRequests func() int64
				var user string
				if grant == fmUser {
					f := newUserFixture(t, tasknationtest.Options{}, nil)
					f.browser(t, "alice").connect(f, "tn-alice")
					front = httptest.NewServer(f.gate.Wrap(upstream))
					clk, user = f.clock, "alice"
					tokenRequests = func() int64 { return f.srv.TokenRequests(tasknationtest.GrantRefreshToken) }
				} else {
					f := newFixture(t, nil)
					f.token(t)
					front = httptest.NewServer(f.gate.Wrap(upstream))
					clk = f.clock
					tokenRequests = func() int64 { return f.ccRequests() - 1 }
				}
				t.Cleanup(front.Close)
				clk.Advance(10 * time.Minute) // the token is mid-life: old enough to be replaced once
				send := func() (int, string) {
					req, _ := http.NewRequest(http.MethodGet, front.URL+"/api/v1/protected", nil)
					if user != "" {
						req.SetBasicAuth(user, "pw")
					}
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						return 0, err.Error()
					}
					defer resp.Body.Close()
					b, _ := io.ReadAll(resp.Body)
					return resp.StatusCode, string(b)
				}
				var wrong atomic.Int64
				var example atomic.Value
				check := func(status int, body string) {
					if status != http.StatusUnauthorized || !strings.Contains(body, "from the api") {
						wrong.Add(1)
						example.CompareAndSwap(nil, fmt.Sprintf("%d %s", status, body))
					}
				}
				var wg sync.WaitGroup
				for range 30 {
					wg.Go(func() { check(send()) })
				}
				wg.Wait()
				for range 30 {
					check(send())
				}
				if n := wrong.Load(); n > 0 {
					t.Errorf("%d of 60 clients did not get the API's 401; first: %v", n, example.Load())
				}
				if n := tokenRequests(); n > 2 {
					t.Errorf("60 requests to a path that always answers 401 cost %d token requests, want at most 2", n)
				}
			})
		}
	}
}

// TestDefect4_TransportBearerStaysHome: an http.Client on the Gate's
// Transport follows a redirect to another origin (a CDN, another port):
// that request carries no bearer. A redirect within the origin keeps it.
func TestDefect4_TransportBearerStaysHome(t *testing.T) {
	f := newFixture(t, nil)
	want := "Bearer " + f.token(t)
	var mu sync.Mutex
	seen := map[string][]string{}
	record := func(name string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			seen[name+r.URL.Path] = r.Header.Values("Authorization")
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		}
	}
	other := httptest.NewServer(record("other"))
	t.Cleanup(other.Close)
	mux := http.NewServeMux()
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, other.URL+"/cdn", http.StatusFound)
	})
	mux.HandleFunc("/here", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/landed", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/landed", record("api"))
	api := httptest.NewServer(mux)
	t.Cleanup(api.Close)

	c := &http.Client{Transport: f.gate.Transport(nil)}
	for _, path := range []string{"/elsewhere", "/here"} {
		resp, err := c.Get(api.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if got := seen["other/cdn"]; len(got) != 0 {
		t.Errorf("the other origin got Authorization %q, want none", got)
	}
	if got := seen["api/landed"]; len(got) != 1 || got[0] != want {
		t.Errorf("a redirect within the origin got Authorization %q, want the bearer", got)
	}
}

// TestDefect7_BackoffEntriesBounded: a store outage leaves a backoff entry
// per subject that asked meanwhile (5,000 here, most of whom never come
// back); once their retry times are MaxBackoff past, the next success of
// any subject sweeps them.
func TestDefect7_BackoffEntriesBounded(t *testing.T) {
	store := &downStore{Store: mustFileStore(t)}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Store = store })
	store.failing.Store(true)
	for i := range 5000 {
		if _, err := f.gate.UserToken(context.Background(), fmt.Sprintf("user-%d", i)); err == nil {
			t.Fatal("a token while the store is down")
		}
	}
	if n := middleware.BackoffEntries(f.gate); n != 5000 {
		t.Fatalf("backoff entries during the outage = %d, want 5000 (one per subject)", n)
	}
	store.failing.Store(false)
	f.clock.Advance(3 * middleware.DefaultMaxBackoff)
	f.browser(t, "alice").connect(f, "tn-alice") // a success
	if n := middleware.BackoffEntries(f.gate); n != 0 {
		t.Errorf("backoff entries after the outage = %d, want 0", n)
	}
}

// downStore fails Get while failing is set.
type downStore struct {
	tokenstore.Store
	failing atomic.Bool
}

func (s *downStore) Get(ctx context.Context, key string) (*tokenstore.Token, error) {
	if s.failing.Load() {
		return nil, fmt.Errorf("flaky store: down")
	}
	return s.Store.Get(ctx, key)
}

func mustFileStore(t testing.TB) *tokenstore.FileStore {
	s, err := tokenstore.NewFileStore(t.TempDir(), tokenstore.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestDefect8_AuthorizationSpellings: a hand-built header map may hold the
// key in lower or upper case beside the canonical one; through every way
// in (Wrap, Serve, Authorize, Transport) the API sees exactly one
// Authorization, the gateway's. Transport, which copies the map, drops
// any spelling; the handler paths look the two usual ones up rather than
// walk the map on every request.
func TestDefect8_AuthorizationSpellings(t *testing.T) {
	f := newFixture(t, nil)
	want := "Bearer " + f.token(t)
	spellings := []string{"authorization", "AUTHORIZATION"}
	authValues := func(h http.Header) []string {
		var out []string
		for k, v := range h {
			if strings.EqualFold(k, "Authorization") {
				out = append(out, v...)
			}
		}
		return out
	}
	handBuilt := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/search", nil)
		for _, k := range spellings {
			r.Header[k] = []string{"Bearer client-" + k}
		}
		r.Header["Authorization"] = []string{"Bearer client-canonical"}
		return r
	}
	check := func(way string, got []string) {
		t.Helper()
		if len(got) != 1 || got[0] != want {
			t.Errorf("%s: the API got Authorization %q, want only the gateway's bearer", way, got)
		}
	}
	var got []string
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = authValues(r.Header) })
	f.gate.Wrap(next).ServeHTTP(httptest.NewRecorder(), handBuilt())
	check("Wrap", got)
	got = nil
	_ = f.gate.Serve(httptest.NewRecorder(), handBuilt(), "", func(w http.ResponseWriter, r *http.Request) error {
		got = authValues(r.Header)
		return nil
	})
	check("Serve", got)
	r := handBuilt()
	if err := f.gate.Authorize(r); err != nil {
		t.Fatal(err)
	}
	check("Authorize", authValues(r.Header))

	wire := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r.Header.Values("Authorization") }))
	t.Cleanup(wire.Close)
	req, _ := http.NewRequest(http.MethodGet, wire.URL+"/api/v1/search", nil)
	for _, k := range append(spellings, "AuThOrIzAtIoN") {
		req.Header[k] = []string{"Bearer client-" + k}
	}
	resp, err := (&http.Client{Transport: f.gate.Transport(nil)}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	check("Transport (over the wire)", got)
}

// TestDefect9_CloseMidRotation: a Gate closed (a Caddy reload) while a
// rotated set is on its way to the store lets that write finish: a new
// Gate on the store serves the user with the rotated set, and the fake
// never sees the spent refresh token again.
func TestDefect9_CloseMidRotation(t *testing.T) {
	dir := t.TempDir()
	file, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{})
	if err != nil {
		t.Fatal(err)
	}
	held := fleettest.Hold(file)
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) {
		c.Store = held
		c.RequestTimeout = 5 * time.Second
	})
	f.browser(t, "alice").connect(f, "tn-alice")
	f.clock.Advance(2 * time.Hour)
	held.Arm()
	refreshed := make(chan error, 1)
	go func() {
		_, err := f.gate.UserToken(context.Background(), "alice")
		refreshed <- err
	}()
	<-held.Entered() // rotated at the server; the write waits
	closed := make(chan struct{})
	go func() {
		f.gate.Close()
		close(closed)
	}()
	eventually(t, "Close to begin", func() bool {
		_, err := f.gate.UserToken(context.Background(), "bob")
		return err != nil && strings.Contains(err.Error(), "closed")
	})
	held.Release()
	<-closed
	<-refreshed

	g2, err := middleware.New(middleware.Config{
		Grant: middleware.GrantAuthorizationCode, TokenURL: f.srv.TokenURL(), AuthURL: f.srv.AuthURL(),
		RedirectURI: f.base + "/oauth2/callback", ClientID: tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret, Scopes: userScopes, Store: file, Clock: f.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g2.Close() })
	tok, err := g2.UserToken(context.Background(), "alice")
	if err != nil {
		t.Fatalf("the next Gate: %v", err)
	}
	if !f.srv.Active(tok.AccessToken) {
		t.Error("the next Gate serves an access token the fake no longer knows")
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 {
		t.Errorf("refreshes = %d, want 1 (the rotated set was stored)", n)
	}
	if s, g := f.srv.StaleRefreshReuses(), f.srv.GraceRefreshReuses(); s+g != 0 {
		t.Errorf("the spent refresh token was presented again (%d stale, %d in grace)", s, g)
	}
}

// TestDefect10_RecoveryAfterOutage: while no valid token is held, the
// token endpoint sees at most one request per 2s, and service resumes
// within 3s of the endpoint's recovery whatever the outage length (15s,
// 2min). A Retry-After is honoured, capped by MaxBackoff.
func TestDefect10_RecoveryAfterOutage(t *testing.T) {
	const tick = 100 * time.Millisecond
	for _, outage := range []time.Duration{15 * time.Second, 2 * time.Minute} {
		t.Run(outage.String(), func(t *testing.T) {
			f := newFixture(t, nil) // MinBackoff 1s, MaxBackoff 1m: the defaults
			f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus})
			var last time.Time
			for at := time.Duration(0); at < outage; at += tick {
				before := f.ccRequests()
				if _, err := f.gate.Token(context.Background()); err == nil {
					t.Fatal("a token during the outage")
				}
				if f.ccRequests() > before {
					if now := f.clock.Now(); !last.IsZero() && now.Sub(last) < 2*time.Second {
						t.Fatalf("token requests %v apart during the outage, want at least 2s", now.Sub(last))
					}
					last = f.clock.Now()
				}
				f.clock.Advance(tick)
			}
			f.srv.ClearFaults()
			for waited := time.Duration(0); ; waited += tick {
				if _, err := f.gate.Token(context.Background()); err == nil {
					t.Logf("served %v after the endpoint recovered", waited)
					break
				}
				if waited > 3*time.Second {
					t.Fatalf("not served %v after the endpoint recovered (outage %v)", waited, outage)
				}
				f.clock.Advance(tick)
			}
		})
	}
	t.Run("Retry-After", func(t *testing.T) {
		f := newFixture(t, nil)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, RetryAfter: "30"})
		if _, err := f.gate.Token(context.Background()); err == nil {
			t.Fatal("a token from a 503")
		}
		f.srv.ClearFaults()
		for at := time.Duration(0); at < 29*time.Second; at += time.Second {
			f.clock.Advance(time.Second)
			f.gate.Token(context.Background())
		}
		if n := f.ccRequests(); n != 1 {
			t.Errorf("token requests within the server's Retry-After of 30s = %d, want 1", n)
		}
		f.clock.Advance(2 * time.Second)
		if _, err := f.gate.Token(context.Background()); err != nil {
			t.Errorf("after the Retry-After: %v", err)
		}
	})
}

// TestAppToken_StoreLockDown: the store's lock only spares a fleet token
// requests; with the store down the application token is still requested
// and served.
func TestAppToken_StoreLockDown(t *testing.T) {
	f := newFixture(t, func(c *middleware.Config) { c.Store = lockDown{mustFileStore(t)} })
	if _, err := f.gate.Token(context.Background()); err != nil {
		t.Fatalf("with the store's lock failing: %v", err)
	}
	if f.logs.FilterMessageSnippet("token store lock failed").Len() == 0 {
		t.Error("the failed lock was not logged")
	}
}

// lockDown is a store whose Lock fails.
type lockDown struct{ tokenstore.Store }

func (lockDown) Lock(context.Context, string) (func(), error) {
	return nil, fmt.Errorf("lock down")
}

// TestUser_StoreMissedRotations: the store fails the writes of two
// rotations in a row (the second one's compare-and-set meets the set the
// store still holds, two generations back): the user is served throughout
// from memory, the newest set reaches the store once it works again, and
// no rotated refresh token is ever presented again.
func TestUser_StoreMissedRotations(t *testing.T) {
	file := mustFileStore(t)
	store := &failingWrites{FileStore: file}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Store = store })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	for round, fail := range []int64{1 << 20, 3, 0} {
		store.fail.Store(fail) // writes that fail from now on
		f.clock.Advance(time.Hour + time.Minute)
		if a := alice.api(f); a.status != http.StatusOK || a.json["subject"] != "tn-alice" {
			t.Fatalf("round %d: %d %s", round, a.status, a.body)
		}
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 3 {
		t.Errorf("refreshes = %d, want 3", n)
	}
	if s, g := f.srv.StaleRefreshReuses(), f.srv.GraceRefreshReuses(); s+g != 0 {
		t.Errorf("a rotated refresh token was presented again (%d stale, %d in grace)", s, g)
	}
	stored, err := file.Get(context.Background(), middleware.SubjectKeyForTest(f.gate, "alice"))
	if err != nil || !f.srv.Active(stored.AccessToken) {
		t.Errorf("the store does not hold the live set (err %v)", err)
	}
}

// failingWrites is a file store whose next fail writes fail.
type failingWrites struct {
	*tokenstore.FileStore
	fail atomic.Int64
}

func (s *failingWrites) failing() bool { return s.fail.Add(-1) >= 0 }

func (s *failingWrites) Set(ctx context.Context, key string, tok *tokenstore.Token) error {
	if s.failing() {
		return fmt.Errorf("disk full")
	}
	return s.FileStore.Set(ctx, key, tok)
}

func (s *failingWrites) CompareAndSet(ctx context.Context, key string, old uint64, tok *tokenstore.Token) error {
	if s.failing() {
		return fmt.Errorf("disk full")
	}
	return s.FileStore.CompareAndSet(ctx, key, old, tok)
}
