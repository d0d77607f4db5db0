package middleware_test

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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

// fleetKey seals the fleet tests' token sets.
var fleetKey = []byte("fleet-test-key-0123456789abcdef!")

// fleetRedis is the Redis a fleet test runs on: a standalone server, a
// Sentinel setup or a cluster.
type fleetRedis struct {
	// client is one more gateway's client.
	client func(t testing.TB) redis.UniversalClient
	// env tells a crash child how to reach it.
	env []string
}

func standaloneRedis(rs *redistest.Server) fleetRedis {
	return fleetRedis{
		client: func(t testing.TB) redis.UniversalClient { return rs.Client(t) },
		env:    []string{"CRASH_REDIS_ADDR=" + rs.Addr()},
	}
}

func clusterRedis(cl *redistest.Cluster) fleetRedis {
	return fleetRedis{
		client: func(t testing.TB) redis.UniversalClient { return cl.Client(t) },
		env:    []string{"CRASH_REDIS_CLUSTER=" + strings.Join(cl.Addrs(), ",")},
	}
}

func sentinelRedis(s *redistest.Sentinel) fleetRedis {
	return fleetRedis{
		client: func(t testing.TB) redis.UniversalClient { return s.Client(t) },
		env:    []string{"CRASH_REDIS_SENTINEL=" + strings.Join(append([]string{redistest.MasterName}, s.SentinelAddrs()...), ",")},
	}
}

// fleetBackends are the Redis setups the fleet tests run on.
var fleetBackends = []struct {
	name  string
	start func(t *testing.T) fleetRedis
}{
	{"standalone", func(t *testing.T) fleetRedis { return standaloneRedis(redistest.Start(t)) }},
	{"cluster", func(t *testing.T) fleetRedis { return clusterRedis(redistest.StartCluster(t)) }},
}

// fleetGateway is one gateway of a fleet: its own Gate, HTTP server and
// Redis client; the gateways share nothing but Redis (and the fake).
type fleetGateway struct {
	gate *middleware.Gate
	url  string
	logs *observer.ObservedLogs
}

// newFleetGateway starts a gateway on its own client of r, with a sealed
// store; mods may change its store options and Config.
func newFleetGateway(t *testing.T, r fleetRedis, srv *tasknationtest.Server, clk middleware.Clock, mods ...func(*tokenstore.RedisOptions, *middleware.Config)) *fleetGateway {
	t.Helper()
	opts := tokenstore.RedisOptions{Namespace: "fleet"}
	var cfg middleware.Config
	for _, mod := range mods {
		mod(&opts, &cfg)
	}
	rstore, err := tokenstore.NewRedisStore(r.client(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	store, err := tokenstore.NewSealed(rstore, fleetKey)
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	hs := httptest.NewUnstartedServer(nil)
	hs.Start()
	t.Cleanup(hs.Close)
	srv.AddRedirectURI(tasknationtest.DefaultClientID, hs.URL+"/oauth2/callback")
	cfg.Grant = middleware.GrantAuthorizationCode
	cfg.TokenURL, cfg.AuthURL = srv.TokenURL(), srv.AuthURL()
	cfg.RedirectURI = hs.URL + "/oauth2/callback"
	cfg.ClientID, cfg.ClientSecret = tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret
	cfg.Scopes, cfg.Subject = userScopes, basicUser
	cfg.Store, cfg.Clock, cfg.Logger = store, clk, zap.New(core)
	g := fleettest.Serve(t, hs, srv, cfg)
	return &fleetGateway{gate: g, url: hs.URL, logs: logs}
}

// TestFleet_ThreeGatewaysOneRefresh: three gateways that share only Redis
// get 300 concurrent requests of one user whose access token expired: the
// authorization server sees exactly one refresh, and every request is
// served as that user.
func TestFleet_ThreeGatewaysOneRefresh(t *testing.T) {
	for _, b := range fleetBackends {
		t.Run(b.name, func(t *testing.T) { threeGatewaysOneRefresh(t, b.start(t)) })
	}
}

func threeGatewaysOneRefresh(t *testing.T, rs fleetRedis) {
	clk := newClock()
	srv := tasknationtest.NewServer(tasknationtest.Options{Now: clk.Now})
	defer srv.Close()
	var fleet []*fleetGateway
	for range 3 {
		fleet = append(fleet, newFleetGateway(t, rs, srv, clk))
	}
	f := &userFixture{srv: srv, base: fleet[0].url, clock: clk}
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	for i, gw := range fleet { // every gateway serves her from the shared store
		if a := alice.get(gw.url + "/api/v1/businesses/me"); a.status != 200 || a.json["subject"] != "tn-alice" {
			t.Fatalf("gateway %d before expiry: %d %s", i, a.status, a.body)
		}
	}

	clk.Advance(time.Hour + time.Minute)
	srv.SetLatency(100 * time.Millisecond) // the refresh is in flight while the others arrive
	var wg sync.WaitGroup
	failures := make(chan string, 300)
	for i := range 300 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, fleet[i%3].url+"/api/v1/businesses/me", nil)
			req.SetBasicAuth("alice", "pw")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				failures <- err.Error()
				return
			}
			defer resp.Body.Close()
			var body strings.Builder
			buf := make([]byte, 4096)
			for {
				n, err := resp.Body.Read(buf)
				body.Write(buf[:n])
				if err != nil {
					break
				}
			}
			if resp.StatusCode != 200 || !strings.Contains(body.String(), `"subject":"tn-alice"`) {
				failures <- body.String()
			}
		})
	}
	wg.Wait()
	close(failures)
	n := 0
	for msg := range failures {
		if n++; n <= 3 {
			t.Errorf("request failed: %s", msg)
		}
	}
	if n > 0 {
		t.Errorf("%d of 300 requests failed", n)
	}
	if got := srv.TokenRequests(tasknationtest.GrantRefreshToken); got != 1 {
		t.Errorf("refresh_token requests = %d, want exactly 1 across the fleet", got)
	}
	if got := srv.StaleRefreshReuses() + srv.GraceRefreshReuses(); got != 0 {
		t.Errorf("the fake saw a rotated refresh token %d times", got)
	}
	// All three hold the same set.
	var first string
	for i, gw := range fleet {
		tok, err := gw.gate.UserToken(context.Background(), "alice")
		if err != nil {
			t.Fatalf("gateway %d: %v", i, err)
		}
		if i == 0 {
			first = tok.AccessToken
		} else if tok.AccessToken != first {
			t.Errorf("gateway %d holds another access token than gateway 0", i)
		}
	}
}

// TestFleet_LeaseHolderKilled: the gateway holding the refresh lease is
// SIGKILLed after the authorization server rotated (its answer lost);
// another gateway takes over once the lease expires, inside the grace
// period, and the user stays connected.
func TestFleet_LeaseHolderKilled(t *testing.T) {
	for _, b := range fleetBackends {
		t.Run(b.name, func(t *testing.T) { leaseHolderKilled(t, b.start(t)) })
	}
}

func leaseHolderKilled(t *testing.T, rs fleetRedis) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	env := append([]string{
		"CRASH_FAKE_URL=" + srv.URL,
		"CRASH_LEASE_TTL=1s",
		"CRASH_KEY=" + base64.StdEncoding.EncodeToString(fleetKey),
	}, rs.env...)
	holder, other := startChild(t, env), startChild(t, env)
	for _, c := range []*child{holder, other} {
		srv.AddRedirectURI(tasknationtest.DefaultClientID, c.url+"/oauth2/callback")
	}
	f := &userFixture{srv: srv, base: holder.url}
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	if a := alice.get(other.url + "/api/v1/businesses/me"); a.status != 200 || a.json["subject"] != "tn-alice" {
		t.Fatalf("the other gateway before the crash: %d %s", a.status, a.body)
	}

	killed := make(chan struct{})
	var once sync.Once
	srv.OnTokenAnswer(func(ev tasknationtest.TokenEvent) {
		if ev.Grant == tasknationtest.GrantRefreshToken && ev.Issued {
			holder.kill()
			once.Do(func() { close(killed) })
		}
	})
	srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1})
	for _, c := range []*child{holder, other} {
		if a := alice.get(c.url + "/_clock?offset=2h"); a.status != 200 {
			t.Fatalf("setting a child's clock: %d", a.status)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, holder.url+"/api/v1/businesses/me", nil)
	req.SetBasicAuth("alice", "pw")
	if resp, err := alice.c.Do(req); err == nil { // dies with the holder
		resp.Body.Close()
	}
	<-killed
	<-holder.done
	srv.OnTokenAnswer(nil)

	a := alice.get(other.url + "/api/v1/businesses/me")
	if a.status != 200 || a.json["subject"] != "tn-alice" {
		t.Fatalf("the other gateway after the holder died: %d %s, want 200 without reconnecting", a.status, a.body)
	}
	if n := srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Errorf("code exchanges = %d, want 1: the user had to reconnect", n)
	}
	if n := srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
		t.Errorf("refresh requests = %d, want 2 (the holder's, lost; the other's)", n)
	}
	if n := srv.StaleRefreshReuses(); n != 0 {
		t.Errorf("the fake saw %d rotated refresh tokens after the grace period", n)
	}
	if n := srv.GraceRefreshReuses(); n != 1 {
		t.Errorf("grace reuses = %d, want 1 (the other gateway redeemed the old refresh token in the window)", n)
	}
}

// TestFleet_RedisRestart: while Redis is down, requests with a valid
// cached token keep working; once it is back the store works again with
// no manual action.
func TestFleet_RedisRestart(t *testing.T) {
	rs := redistest.StartPersistent(t)
	clk := newClock()
	srv := tasknationtest.NewServer(tasknationtest.Options{Now: clk.Now})
	defer srv.Close()
	gw := newFleetGateway(t, standaloneRedis(rs), srv, clk)
	f := &userFixture{srv: srv, base: gw.url, clock: clk}
	alice, bob := f.browser(t, "alice"), f.browser(t, "bob")
	alice.connect(f, "tn-alice")

	rs.Stop()
	for range 5 {
		if a := alice.api(f); a.status != 200 {
			t.Fatalf("with Redis down and a cached token: %d %s", a.status, a.body)
		}
	}
	// Bob's connect cannot start while Redis is down (its state lives
	// there): a clear 503.
	wantUserError(t, bob.get(f.base+"/oauth2/connect"), http.StatusServiceUnavailable, "store_unavailable")

	rs.Restart(t)
	bob.connect(f, "tn-bob")
	if a := bob.api(f); a.status != 200 || a.json["subject"] != "tn-bob" {
		t.Fatalf("after Redis came back: %d %s", a.status, a.body)
	}
	// Alice's set survived the restart (Redis persists): her refresh works.
	clk.Advance(time.Hour + time.Minute)
	if a := alice.api(f); a.status != 200 {
		t.Fatalf("alice's refresh after the restart: %d %s", a.status, a.body)
	}
}

// TestFleet_FencedAfterLeaseLost: a gateway whose lease was lost while its
// refresh waited at the token endpoint (a pause longer than the lease)
// cannot overwrite the set another gateway stored meanwhile: the store's
// version fences its write, and it adopts the stored set.
func TestFleet_FencedAfterLeaseLost(t *testing.T) {
	for _, b := range fleetBackends {
		t.Run(b.name, func(t *testing.T) { fencedAfterLeaseLost(t, b.start(t)) })
	}
}

func fencedAfterLeaseLost(t *testing.T, rs fleetRedis) {
	raw := rs.client(t)
	clk := newClock()
	srv := tasknationtest.NewServer(tasknationtest.Options{Now: clk.Now})
	defer srv.Close()
	a, b := newFleetGateway(t, rs, srv, clk), newFleetGateway(t, rs, srv, clk)
	f := &userFixture{srv: srv, base: a.url, clock: clk}
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	clk.Advance(time.Hour + time.Minute)

	// a's refresh reaches the endpoint and waits there; its lease is then
	// lost, as after a pause longer than the lease.
	srv.SetLatency(300 * time.Millisecond)
	done := make(chan answer, 2)
	go func() { done <- alice.get(a.url + "/api/v1/businesses/me") }()
	eventually(t, "a's refresh at the endpoint", func() bool { return srv.TokenRequests(tasknationtest.GrantRefreshToken) == 1 })
	keys := redistest.Keys(t, raw, "fleet:*:lock")
	if len(keys) != 1 {
		t.Fatalf("lease keys = %v; want a's one lease", keys)
	}
	raw.Del(context.Background(), keys...)
	// b takes the lease at once and refreshes too (same refresh token,
	// inside the grace window).
	go func() { done <- alice.get(b.url + "/api/v1/businesses/me") }()
	for range 2 {
		if r := <-done; r.status != 200 || r.json["subject"] != "tn-alice" {
			t.Fatalf("a request: %d %s", r.status, r.body)
		}
	}
	if n := srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
		t.Fatalf("refreshes = %d, want 2 (a's, then b's after a's lease was lost)", n)
	}
	fenced := a.logs.FilterMessageSnippet("using its token set").Len() + b.logs.FilterMessageSnippet("using its token set").Len()
	if fenced != 1 {
		t.Errorf("fenced writes = %d, want 1: the later of the two refreshes must adopt the stored set", fenced)
	}
	ta, _ := a.gate.UserToken(context.Background(), "alice")
	tb, _ := b.gate.UserToken(context.Background(), "alice")
	if ta.AccessToken != tb.AccessToken || ta.RefreshToken != tb.RefreshToken {
		t.Error("the two gateways hold different sets after the fenced write")
	}
	if srv.StaleRefreshReuses() != 0 {
		t.Error("a rotated refresh token was presented after the grace period")
	}
}
