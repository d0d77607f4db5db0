// Package fleettest runs the fleet scenarios every shared token store must
// pass, against a store the caller makes: several gateways (separate
// middleware.Gates, each with its own HTTP server, clock and handle on the
// store) in front of one fake TaskNation server.
//
// It is the contract a durable store keeps toward the middleware, as
// package tokenstore/storetest's contract is the one it keeps toward its
// callers. The middleware tests run it on a file store and on Redis; the
// Caddy module's tests run it on Caddy storage. Its clock is the test
// kit's (package testkit).
package fleettest

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// NewStore returns a new handle on the shared store under test: every call
// is one more gateway's view of the same data (its own client, its own
// FileStore over the same directory, ...).
type NewStore func(t testing.TB) tokenstore.Store

// Scopes are the user scopes the scenarios connect with.
var Scopes = []string{"supply::businesses", "supply::leads"}

// AppScopes are the application scopes of the cold-burst scenario.
var AppScopes = []string{"demand::categories", "demand::search"}

// Fleet is a fake TaskNation server and the gateways in front of it.
type Fleet struct {
	Srv   *tasknationtest.Server
	Clock *testkit.Clock
}

// New starts the fake server of a fleet on a fresh clock.
func New(t testing.TB, opts tasknationtest.Options) *Fleet {
	t.Helper()
	f := &Fleet{Clock: testkit.NewClock()}
	if opts.Now == nil {
		opts.Now = f.Clock.Now
	}
	f.Srv = tasknationtest.NewServer(opts)
	t.Cleanup(f.Srv.Close)
	return f
}

// Gateway is one gateway of a fleet: a Gate behind its own loopback HTTP
// server, proxying to the fake's API.
type Gateway struct {
	Gate *middleware.Gate
	URL  string
	Logs *observer.ObservedLogs
}

// Gateway starts a gateway with the authorization_code grant (or
// client_credentials, when grant says so) on store, its clock off by
// skew; mod may change its Config.
func (f *Fleet) Gateway(t testing.TB, grant string, store tokenstore.Store, skew time.Duration, mod func(*middleware.Config)) *Gateway {
	t.Helper()
	core, logs := observer.New(zapcore.DebugLevel)
	hs := httptest.NewUnstartedServer(nil)
	hs.Start()
	t.Cleanup(hs.Close)
	cfg := middleware.Config{
		Grant:        grant,
		TokenURL:     f.Srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       AppScopes,
		Store:        store,
		Clock:        testkit.Skewed{Clock: f.Clock, Skew: skew},
		Logger:       zap.New(core),
	}
	if grant == middleware.GrantAuthorizationCode {
		f.Srv.AddRedirectURI(tasknationtest.DefaultClientID, hs.URL+"/oauth2/callback")
		cfg.AuthURL = f.Srv.AuthURL()
		cfg.RedirectURI = hs.URL + "/oauth2/callback"
		cfg.Scopes = Scopes
		cfg.Subject = func(r *http.Request) string { u, _, _ := r.BasicAuth(); return u }
	}
	if mod != nil {
		mod(&cfg)
	}
	return &Gateway{Gate: Serve(t, hs, f.Srv, cfg), URL: hs.URL, Logs: logs}
}

// Serve makes the Gate of cfg, closed when the test ends, and has hs serve
// it in front of srv's API (a reverse proxy to the fake's own address).
func Serve(t testing.TB, hs *httptest.Server, srv *tasknationtest.Server, cfg middleware.Config) *middleware.Gate {
	t.Helper()
	g, err := middleware.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	api, _ := url.Parse(srv.URL)
	hs.Config.Handler = g.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }})
	return g
}

// Answer is what a client got.
type Answer struct {
	Status int
	Body   string
	JSON   map[string]any
}

// API calls the fake API through the gateway as user ("" for none).
func (g *Gateway) API(t testing.TB, user string) Answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, g.URL+"/api/v1/businesses/me", nil)
	if user != "" {
		req.SetBasicAuth(user, "pw")
	}
	return do(t, http.DefaultClient, req)
}

func do(t testing.TB, c *http.Client, req *http.Request) Answer {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := Answer{Status: resp.StatusCode, Body: string(raw)}
	_ = json.Unmarshal(raw, &a.JSON)
	return a
}

// Connect runs the connect flow of user through g, approving as login at
// the fake, in a browser of its own (a cookie jar, redirects not followed).
func (g *Gateway) Connect(t testing.TB, user, login string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(raw string, asUser bool) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodGet, raw, nil)
		if asUser {
			req.SetBasicAuth(user, "pw")
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := get(g.URL+"/oauth2/connect", true)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("connect: %d %s", resp.StatusCode, body)
	}
	auth, _ := url.Parse(resp.Header.Get("Location"))
	q := auth.Query()
	q.Set("login_hint", login)
	auth.RawQuery = q.Encode()
	resp, body = get(auth.String(), false)
	if resp.StatusCode != http.StatusFound {
		t.Fatalf("authorize: %d %s", resp.StatusCode, body)
	}
	resp, body = get(resp.Header.Get("Location"), true)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("callback: %d %s", resp.StatusCode, body)
	}
}

// HeldWrites wraps a store so that, once armed, its next write (Set or
// CompareAndSet) waits until Release: a gateway whose rotated set is on
// its way to the store while something else happens.
type HeldWrites struct {
	tokenstore.Store
	armed   atomic.Bool
	entered chan struct{}
	release chan struct{}
}

// Hold wraps store.
func Hold(store tokenstore.Store) *HeldWrites { return &HeldWrites{Store: store} }

// Arm makes the next write wait; Entered is closed when it starts waiting.
func (h *HeldWrites) Arm() {
	h.entered, h.release = make(chan struct{}), make(chan struct{})
	h.armed.Store(true)
}

// Entered is closed once the held write waits.
func (h *HeldWrites) Entered() <-chan struct{} { return h.entered }

// Release lets the held write go on.
func (h *HeldWrites) Release() { close(h.release) }

func (h *HeldWrites) wait() {
	if h.armed.CompareAndSwap(true, false) {
		close(h.entered)
		<-h.release
	}
}

// Set waits when armed, then writes.
func (h *HeldWrites) Set(ctx context.Context, key string, tok *tokenstore.Token) error {
	h.wait()
	return h.Store.Set(ctx, key, tok)
}

// CompareAndSet waits when armed, then writes, if the store can.
func (h *HeldWrites) CompareAndSet(ctx context.Context, key string, old uint64, tok *tokenstore.Token) error {
	h.wait()
	cas, ok := h.Store.(tokenstore.CASStore)
	if !ok {
		return errUnsupported
	}
	return cas.CompareAndSet(ctx, key, old, tok)
}

// Lock is the store's, when it has one.
func (h *HeldWrites) Lock(ctx context.Context, key string) (func(), error) {
	l, ok := h.Store.(tokenstore.Locker)
	if !ok {
		return nil, tokenstore.ErrLockUnsupported
	}
	return l.Lock(ctx, key)
}
