package middleware_test

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// pendingFleet is two gateways sharing one Redis (and nothing else) behind
// one public redirect URI, gateway a's: a callback the fake sends to it
// is routed to either, as a load balancer without sticky sessions does.
type pendingFleet struct {
	srv   *tasknationtest.Server
	clock *clock
	rc    *redis.Client
	gws   [2]*userFixture
}

func newPendingFleet(t *testing.T, sealed bool, mod func(*middleware.Config)) *pendingFleet {
	t.Helper()
	return newPendingFleetOn(t, redistest.Start(t), sealed, mod)
}

func newPendingFleetOn(t *testing.T, rs *redistest.Server, sealed bool, mod func(*middleware.Config)) *pendingFleet {
	t.Helper()
	return newPendingFleetWith(t, rs, func(t *testing.T) redis.UniversalClient { return rs.Client(t) }, sealed, mod)
}

// newPendingFleetWith is a pending fleet whose gateways reach rs through
// the clients client makes.
func newPendingFleetWith(t *testing.T, rs *redistest.Server, client func(t *testing.T) redis.UniversalClient, sealed bool, mod func(*middleware.Config)) *pendingFleet {
	t.Helper()
	p := &pendingFleet{clock: newClock()}
	p.srv = tasknationtest.NewServer(tasknationtest.Options{Now: p.clock.Now})
	t.Cleanup(p.srv.Close)
	p.rc = rs.Client(t)
	var redirect string
	for i := range p.gws {
		rstore, err := tokenstore.NewRedisStore(client(t), tokenstore.RedisOptions{Namespace: "pend", Now: p.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		var store tokenstore.Store = rstore
		if sealed {
			if store, err = tokenstore.NewSealed(rstore, fleetKey); err != nil {
				t.Fatal(err)
			}
		}
		hs := httptest.NewServer(nil)
		t.Cleanup(hs.Close)
		if i == 0 {
			redirect = hs.URL + "/oauth2/callback"
			p.srv.AddRedirectURI(tasknationtest.DefaultClientID, redirect)
		}
		core, logs := observer.New(zapcore.DebugLevel)
		cfg := middleware.Config{
			Grant: middleware.GrantAuthorizationCode, TokenURL: p.srv.TokenURL(), AuthURL: p.srv.AuthURL(),
			RedirectURI: redirect, ClientID: tasknationtest.DefaultClientID, ClientSecret: tasknationtest.DefaultClientSecret,
			Scopes: userScopes, Subject: basicUser, Store: store, Clock: p.clock, Logger: zap.New(core),
		}
		if mod != nil {
			mod(&cfg)
		}
		g := fleettest.Serve(t, hs, p.srv, cfg)
		p.gws[i] = &userFixture{srv: p.srv, gate: g, base: hs.URL, clock: p.clock, logs: logs}
	}
	return p
}

// on is u routed to gateway i: the same path and query on its host.
func (p *pendingFleet) on(i int, u *url.URL) string {
	b, _ := url.Parse(p.gws[i].base)
	v := *u
	v.Scheme, v.Host = b.Scheme, b.Host
	return v.String()
}

// stateCookie returns the state cookie the connect answer a set.
func stateCookie(t *testing.T, a answer) *http.Cookie {
	t.Helper()
	for _, c := range (&http.Response{Header: a.header}).Cookies() {
		if c.Name == "tokengate_state" {
			return c
		}
	}
	t.Fatalf("the connect set no state cookie: %v", a.header)
	return nil
}

// started is one connect started, not yet called back.
type started struct {
	auth   *url.URL
	cookie *http.Cookie
}

func (p *pendingFleet) start(b *browser, i int) started {
	b.t.Helper()
	a := b.get(p.gws[i].base + "/oauth2/connect")
	if a.status != http.StatusFound {
		b.t.Fatalf("connect on gateway %d: %d %s", i, a.status, a.body)
	}
	auth, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		b.t.Fatal(err)
	}
	return started{auth: auth, cookie: stateCookie(b.t.(*testing.T), a)}
}

// callback approves s at the fake as login and sends the callback to
// gateway i with s's cookie.
func (p *pendingFleet) callback(b *browser, s started, login string, i int) answer {
	b.t.Helper()
	cb := b.authorize(s.auth, login)
	return p.replay(b, s, cb, i)
}

// replay sends the callback URL cb to gateway i with s's cookie.
func (p *pendingFleet) replay(b *browser, s started, cb *url.URL, i int) answer {
	b.t.Helper()
	target := p.on(i, cb)
	u, _ := url.Parse(target)
	b.c.Jar.SetCookies(u, []*http.Cookie{{Name: s.cookie.Name, Value: s.cookie.Value, Path: "/oauth2/callback"}})
	return b.get(target)
}

// TestPending_CallbackOnAnotherInstance: a connect started on one gateway
// completes on the other, the user's API calls go out as their TaskNation
// user through both, and the callback replayed on the first is refused.
func TestPending_CallbackOnAnotherInstance(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "sealed"}[sealed], func(t *testing.T) {
			p := newPendingFleet(t, sealed, nil)
			alice := p.gws[0].browser(t, "alice")
			s := p.start(alice, 0)
			cb := alice.authorize(s.auth, "tn-alice")
			if a := p.replay(alice, s, cb, 1); a.status != http.StatusOK || a.json["status"] != "connected" {
				t.Fatalf("callback on the other gateway: %d %s, want 200 connected", a.status, a.body)
			}
			for i, gw := range p.gws {
				if a := alice.api(gw); a.status != http.StatusOK || a.json["subject"] != "tn-alice" {
					t.Fatalf("alice's API call through gateway %d: %d %s, want 200 as tn-alice", i, a.status, a.body)
				}
			}
			a := p.replay(alice, s, cb, 0)
			wantUserError(t, a, http.StatusBadRequest, "invalid_state")
			if !strings.Contains(a.json["error_description"].(string), "unknown or was already used") {
				t.Fatalf("replay: %s", a.body)
			}
		})
	}
}

// TestPending_OtherSubjectsStateNotFoundNorConsumed: mallory, logged in,
// sends alice's state with alice's cookie to the other gateway: not found
// (a shared store files states under their subject), and alice's connect
// still completes.
func TestPending_OtherSubjectsStateNotFoundNorConsumed(t *testing.T) {
	p := newPendingFleet(t, true, nil)
	alice, mallory := p.gws[0].browser(t, "alice"), p.gws[0].browser(t, "mallory")
	s := p.start(alice, 0)
	cb := alice.authorize(s.auth, "tn-alice")
	a := p.replay(mallory, s, cb, 1)
	wantUserError(t, a, http.StatusBadRequest, "invalid_state")
	if a := p.replay(alice, s, cb, 1); a.status != http.StatusOK {
		t.Fatalf("alice's callback after mallory's attempt: %d %s", a.status, a.body)
	}
	if a := mallory.api(p.gws[1]); a.status == http.StatusOK {
		t.Fatalf("mallory's API call succeeded: %s", a.body)
	}
}

// TestPending_CapPerSubject: past MaxPendingPerSubject, a subject's oldest
// connects are dropped, in the shared store as in memory, and no other
// subject's.
func TestPending_CapPerSubject(t *testing.T) {
	run := func(t *testing.T, p *pendingFleet, a, b int) {
		alice, bob := p.gws[0].browser(t, "alice"), p.gws[0].browser(t, "bob")
		bobs := p.start(bob, a)
		var alices []started
		for i := range 4 {
			alices = append(alices, p.start(alice, []int{a, b}[i%2]))
		}
		for i := range 2 { // beyond the cap of 2
			r := p.callback(alice, alices[i], "tn-alice", b)
			wantUserError(t, r, http.StatusBadRequest, "invalid_state")
		}
		if r := p.callback(alice, alices[3], "tn-alice", b); r.status != http.StatusOK {
			t.Fatalf("alice's newest connect: %d %s", r.status, r.body)
		}
		if r := p.callback(alice, alices[2], "tn-alice", a); r.status != http.StatusOK {
			t.Fatalf("alice's second newest connect: %d %s", r.status, r.body)
		}
		if r := p.callback(bob, bobs, "tn-bob", b); r.status != http.StatusOK {
			t.Fatalf("bob's connect after alice's four: %d %s", r.status, r.body)
		}
		if r := bob.api(p.gws[a]); r.json["subject"] != "tn-bob" {
			t.Fatalf("bob's API call: %s", r.body)
		}
	}
	cap2 := func(c *middleware.Config) { c.MaxPendingPerSubject = 2 }
	t.Run("redis", func(t *testing.T) { run(t, newPendingFleet(t, true, cap2), 0, 1) })
	t.Run("memory", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, cap2)
		run(t, &pendingFleet{srv: f.srv, clock: f.clock, gws: [2]*userFixture{f, f}}, 0, 1)
	})
}

// TestPending_Expired: a state past StateLifetime is refused on the other
// gateway, and gone.
func TestPending_Expired(t *testing.T) {
	p := newPendingFleet(t, true, func(c *middleware.Config) { c.StateLifetime = time.Minute })
	alice := p.gws[0].browser(t, "alice")
	s := p.start(alice, 0)
	cb := alice.authorize(s.auth, "tn-alice")
	p.clock.Advance(time.Minute)
	a := p.replay(alice, s, cb, 1)
	wantUserError(t, a, http.StatusBadRequest, "invalid_state")
	if !strings.Contains(a.json["error_description"].(string), "expired") {
		t.Fatalf("expired state: %s", a.body)
	}
	if keys := p.rc.Keys(context.Background(), "pend:*:pend:*").Val(); len(keys) != 0 {
		t.Fatalf("pending records left after the expired take: %v", keys)
	}
}

// TestPending_SealedAtRest: what Redis holds of a pending connect shows
// neither its state nor its PKCE verifier when the store is sealed; the
// same search finds the verifier in a plain store, so it would find it.
func TestPending_SealedAtRest(t *testing.T) {
	for _, sealed := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "sealed"}[sealed], func(t *testing.T) {
			p := newPendingFleet(t, sealed, nil)
			alice := p.gws[0].browser(t, "alice")
			s := p.start(alice, 0)
			state, challenge := s.auth.Query().Get("state"), s.auth.Query().Get("code_challenge")
			ctx := context.Background()
			keys := p.rc.Keys(ctx, "pend:*:pend:*").Val()
			if len(keys) != 1 {
				t.Fatalf("pending records %v, want one", keys)
			}
			v := p.rc.Get(ctx, keys[0]).Val()
			for _, k := range p.rc.Keys(ctx, "*").Val() {
				if strings.Contains(k, state) {
					t.Errorf("key %s holds the state", k)
				}
			}
			if strings.Contains(v, state) {
				t.Errorf("the record holds the state")
			}
			if found := holdsVerifier(v, challenge); found == sealed {
				t.Fatalf("verifier of the challenge found in the record: %v, want %v", found, !sealed)
			}
		})
	}
}

// holdsVerifier reports whether v holds, anywhere, a 43-character PKCE
// verifier whose S256 challenge is challenge.
func holdsVerifier(v, challenge string) bool {
	for i := 0; i+43 <= len(v); i++ {
		sum := sha256.Sum256([]byte(v[i : i+43]))
		if base64.RawURLEncoding.EncodeToString(sum[:]) == challenge {
			return true
		}
	}
	return false
}

// TestPending_StoreDown: with Redis down, a connect is refused with 503
// store_unavailable, and so is a callback, which leaves the state in
// place: once Redis is back, the same callback completes.
func TestPending_StoreDown(t *testing.T) {
	rs := redistest.StartPersistent(t)
	p := newPendingFleetOn(t, rs, true, nil)
	alice := p.gws[0].browser(t, "alice")
	s := p.start(alice, 0)
	cb := alice.authorize(s.auth, "tn-alice")
	rs.Stop()
	wantUserError(t, alice.get(p.gws[1].base+"/oauth2/connect"), http.StatusServiceUnavailable, "store_unavailable")
	wantUserError(t, p.replay(alice, s, cb, 1), http.StatusServiceUnavailable, "store_unavailable")
	rs.Restart(t)
	if a := p.replay(alice, s, cb, 1); a.status != http.StatusOK || a.json["status"] != "connected" {
		t.Fatalf("the callback once Redis is back: %d %s", a.status, a.body)
	}
}

// TestPending_TokenWriteFails: the state is taken from Redis but the
// tokens cannot be written there (a Redis user whose ACL allows the
// pending keys only): the callback answers 503 store_failed, the state is
// spent (a replay is refused), and nothing is served as the user.
func TestPending_TokenWriteFails(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	if err := rs.Client(t).Do(ctx, "ACL", "SETUSER", "pending-only", "on", ">pending-pw", "resetkeys", "~pend:{*}:pend*", "+@all").Err(); err != nil {
		t.Fatal(err)
	}
	p := newPendingFleetWith(t, rs, func(t *testing.T) redis.UniversalClient {
		c := redis.NewClient(&redis.Options{Addr: rs.Addr(), Username: "pending-only", Password: "pending-pw"})
		t.Cleanup(func() { c.Close() })
		return c
	}, true, nil)
	alice := p.gws[0].browser(t, "alice")
	s := p.start(alice, 0)
	cb := alice.authorize(s.auth, "tn-alice")
	wantUserError(t, p.replay(alice, s, cb, 1), http.StatusServiceUnavailable, "store_failed")
	wantUserError(t, p.replay(alice, s, cb, 0), http.StatusBadRequest, "invalid_state")
	if a := alice.api(p.gws[1]); a.status == http.StatusOK {
		t.Fatalf("alice's API call succeeded though her tokens were never stored: %s", a.body)
	}
}
