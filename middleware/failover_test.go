package middleware_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// TestFleet_FailoverUnderLoad: three gateways, 50 users whose access
// tokens live 8s at the fake, every user calling the API five times a
// second over the gateways in turn, so that the fleet rotates refresh
// tokens all the time. Mid-load the Redis primary is SIGKILLed (under
// Sentinel: the primary; on a cluster: the first primary, a third of the
// slots) and a replica promoted. No user is ever logged out, every user is
// served after the failover, and the fake sees no rotated refresh token
// after its grace period: no failover brought back a spent one.
func TestFleet_FailoverUnderLoad(t *testing.T) {
	t.Run("sentinel", func(t *testing.T) {
		s := redistest.StartSentinel(t)
		failoverUnderLoad(t, sentinelRedis(s), func(t *testing.T) {
			old := s.KillPrimary(t)
			s.WaitFailover(t, old)
		})
	})
	t.Run("cluster", func(t *testing.T) {
		cl := redistest.StartCluster(t)
		failoverUnderLoad(t, clusterRedis(cl), func(t *testing.T) {
			old := cl.Nodes()[0]
			old.Stop()
			cl.WaitFailover(t, old)
		})
	})
}

// Phases of the load.
const (
	beforeKill = iota
	failingOver
	afterFailover
)

// loadOutcome is one request of the load: the phase it started in, its
// status (0: no answer) and the gateway's error code, if any.
type loadOutcome struct {
	phase  int32
	status int
	code   string
	at     time.Time
}

func failoverUnderLoad(t *testing.T, r fleetRedis, kill func(*testing.T)) {
	const (
		users    = 50
		lifetime = 8 * time.Second // refreshed at 6s+: older than minRejectAge, so a gateway that still holds the revoked predecessor replaces it
		pace     = 200 * time.Millisecond
		// settleTimeout bounds how long after the promotion requests may
		// still fail: the clients learn the new primary, the per-user
		// backoff (MaxBackoff 1s here) runs out.
		settleTimeout = 3 * time.Second
	)
	srv := tasknationtest.NewServer(tasknationtest.Options{TokenLifetime: lifetime})
	defer srv.Close()
	mod := func(o *tokenstore.RedisOptions, c *middleware.Config) {
		// A lease its holder could not release (Redis was down) blocks
		// the user's refresh until it runs out: scaled to the short
		// tokens, as the backoff is.
		o.LeaseTTL = 2 * time.Second
		c.MinBackoff, c.MaxBackoff = 100*time.Millisecond, time.Second
	}
	var fleet []*fleetGateway
	for range 3 {
		fleet = append(fleet, newFleetGateway(t, r, srv, nil, mod))
	}
	names := make([]string, users)
	for i := range users {
		names[i] = fmt.Sprintf("user%02d", i)
		f := &userFixture{srv: srv, base: fleet[i%3].url}
		f.browser(t, names[i]).connect(f, "tn-"+names[i])
	}

	var phase atomic.Int32
	stop := make(chan struct{})
	outcomes := make([][]loadOutcome, users)
	client := &http.Client{Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			tick := time.NewTicker(pace) // the load's pace, not a wait for state
			defer tick.Stop()
			for n := 0; ; n++ {
				o := loadOutcome{phase: phase.Load(), at: time.Now()}
				o.status, o.code = callAPI(client, fleet[(i+n)%3].url, names[i])
				outcomes[i] = append(outcomes[i], o)
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()

	// Every user rotated once before the kill.
	waitFor(t, 30*time.Second, "a refresh of every user before the kill", func() bool {
		return srv.TokenRequests(tasknationtest.GrantRefreshToken) >= users
	})
	phase.Store(failingOver)
	killed := time.Now()
	kill(t)
	failedOver := time.Now()
	phase.Store(afterFailover)
	t.Logf("failover took %v", failedOver.Sub(killed).Round(time.Millisecond))
	// Every user rotates again on the new primary.
	after := srv.TokenRequests(tasknationtest.GrantRefreshToken)
	waitFor(t, 30*time.Second, "a refresh of every user after the failover", func() bool {
		return srv.TokenRequests(tasknationtest.GrantRefreshToken) >= after+users && time.Since(failedOver) > lifetime
	})
	stopLoad()

	// Every user, on every gateway, now.
	for _, name := range names {
		for g, gw := range fleet {
			if status, code := callAPI(client, gw.url, name); status != http.StatusOK {
				t.Errorf("%s on gateway %d after the failover: %d %s", name, g, status, code)
			}
		}
	}

	counts := map[int32]map[string]int{}
	var lastFailure time.Time
	for i, os := range outcomes {
		served := false
		for _, o := range os {
			what := fmt.Sprint(o.status)
			if o.code != "" {
				what += " " + o.code
			}
			if counts[o.phase] == nil {
				counts[o.phase] = map[string]int{}
			}
			counts[o.phase][what]++
			switch {
			case o.code == middleware.CodeReauthorizationRequired || o.code == middleware.CodeNotConnected:
				t.Errorf("%s was logged out (%s) in phase %d", names[i], what, o.phase)
			case o.phase == beforeKill && o.status != http.StatusOK:
				t.Errorf("%s before the kill: %s at %v; the gateways' logs around it:", names[i], what, o.at.Format("15:04:05.000"))
				for g, gw := range fleet {
					for _, e := range gw.logs.All() {
						if d := e.Time.Sub(o.at); d > -2*time.Second && d < time.Second && e.Level >= zapcore.InfoLevel && e.Message != "user connected" {
							t.Logf("    gateway %d %s %s %v", g, e.Time.Format("15:04:05.000"), e.Message, e.ContextMap())
						}
					}
				}
			case o.phase == afterFailover && o.status == http.StatusOK:
				served = true
			}
			if o.status != http.StatusOK && o.at.After(lastFailure) {
				lastFailure = o.at
			}
		}
		if !served {
			t.Errorf("%s was never served after the failover", names[i])
		}
	}
	// Once the new primary is named, the clients follow it and the
	// per-user backoff (at most MaxBackoff) runs out: failures stop.
	if settle := lastFailure.Sub(failedOver); settle > settleTimeout {
		t.Errorf("requests still failed %v after the failover completed, want none after %v", settle.Round(time.Millisecond), settleTimeout)
	}
	for p, name := range []string{"before the kill", "during the failover", "after the failover"} {
		t.Logf("%s: %s", name, summary(counts[int32(p)]))
	}
	if !lastFailure.IsZero() {
		t.Logf("last failed request %v after the failover completed", lastFailure.Sub(failedOver).Round(time.Millisecond))
	}
	t.Logf("refreshes %d, of which within the grace period with a rotated token %d",
		srv.TokenRequests(tasknationtest.GrantRefreshToken), srv.GraceRefreshReuses())
	if n := srv.StaleRefreshReuses(); n != 0 {
		t.Errorf("the fake saw %d rotated refresh tokens after their grace period", n)
	}
	if n := srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != users {
		t.Errorf("code exchanges = %d, want %d: a user had to connect again", n, users)
	}
}

// callAPI calls the API as user through the gateway at base: the status
// (0 when no answer came) and the error code of the answer, if any.
func callAPI(c *http.Client, base, user string) (int, string) {
	req, _ := http.NewRequest(http.MethodGet, base+"/api/v1/businesses/me", nil)
	req.SetBasicAuth(user, "pw")
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Error   string `json:"error"`
		Subject string `json:"subject"`
	}
	_ = json.Unmarshal(raw, &body)
	if resp.StatusCode == http.StatusOK && body.Subject != "tn-"+user {
		return resp.StatusCode, "served as " + body.Subject
	}
	return resp.StatusCode, body.Error
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s within %v", what, timeout)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for state
	}
}

func summary(m map[string]int) string {
	var parts []string
	for k, n := range m {
		parts = append(parts, fmt.Sprintf("%s×%d", k, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// casCounter counts the compare-and-sets of a RedisStore.
type casCounter struct {
	*tokenstore.RedisStore
	n atomic.Int32
}

func (c *casCounter) CompareAndSet(ctx context.Context, key string, old uint64, tok *tokenstore.Token) error {
	c.n.Add(1)
	return c.RedisStore.CompareAndSet(ctx, key, old, tok)
}

// TestUser_RotationNotReplicated: the store asks for more replicas than
// acknowledge (two, on a server with none): every rotated set is stored
// on the primary and reported as not replicated. The write is not tried
// again (a second compare-and-set would meet the set itself), the new set
// is served from memory, and the next refresh starts from it: no spent
// refresh token is presented, not even inside the grace period.
func TestUser_RotationNotReplicated(t *testing.T) {
	rs := redistest.Start(t)
	inner, err := tokenstore.NewRedisStore(rs.Client(t), tokenstore.RedisOptions{MinReplicas: 2, WaitTimeout: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	store := &casCounter{RedisStore: inner}
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) { c.Store = store })
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")

	for round := 1; round <= 2; round++ {
		f.clock.Advance(time.Hour + time.Minute)
		before := store.n.Load()
		if a := alice.api(f); a.status != 200 || a.json["subject"] != "tn-alice" {
			t.Fatalf("round %d: %d %s", round, a.status, a.body)
		}
		if n := store.n.Load() - before; n != 1 {
			t.Errorf("round %d: %d compare-and-sets, want 1 (a write the primary holds is not tried again)", round, n)
		}
		// A new Gate on the store reads what the store holds.
		live, _ := f.gate.UserToken(context.Background(), "alice")
		g2, err := middleware.New(middleware.Config{
			Grant: middleware.GrantAuthorizationCode, TokenURL: f.srv.TokenURL(), AuthURL: f.srv.AuthURL(),
			RedirectURI: f.gw.URL + "/oauth2/callback", ClientID: tasknationtest.DefaultClientID,
			ClientSecret: tasknationtest.DefaultClientSecret, Scopes: userScopes, Store: inner, Clock: f.clock,
		})
		if err != nil {
			t.Fatal(err)
		}
		stored, err := g2.UserToken(context.Background(), "alice")
		g2.Close()
		if err != nil || stored.RefreshToken != live.RefreshToken {
			t.Fatalf("round %d: the store holds another set than the one served (%v)", round, err)
		}
	}
	if n := f.logs.FilterMessageSnippet("held in memory only").Len(); n != 2 {
		t.Errorf("%d writes reported as held in memory only, want 2", n)
	}
	if s, g := f.srv.StaleRefreshReuses(), f.srv.GraceRefreshReuses(); s != 0 || g != 0 {
		t.Errorf("the fake saw rotated refresh tokens again: %d after the grace period, %d inside it", s, g)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 2 {
		t.Errorf("refreshes = %d, want 2", n)
	}
}
