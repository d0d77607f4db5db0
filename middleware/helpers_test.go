package middleware_test

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// clock is the test kit's settable middleware.Clock, shared by a Gate and
// the fake server; its timers fire, synchronously, when Advance passes them.
type clock = testkit.Clock

func newClock() *clock { return testkit.NewClock() }

var appScopes = []string{"demand::categories", "demand::search"}

// fixture is a fake TaskNation server and a Gate in front of it, sharing a
// clock, with the Gate's logs captured at debug level.
type fixture struct {
	srv   *tasknationtest.Server
	gate  *middleware.Gate
	clock *clock
	logs  *observer.ObservedLogs
}

func newFixture(t testing.TB, mod func(*middleware.Config)) *fixture {
	t.Helper()
	f := &fixture{clock: newClock()}
	f.srv = tasknationtest.NewServer(tasknationtest.Options{Now: f.clock.Now})
	t.Cleanup(f.srv.Close)
	core, logs := observer.New(zapcore.DebugLevel)
	f.logs = logs
	cfg := middleware.Config{
		TokenURL:     f.srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       appScopes,
		Logger:       zap.New(core),
		Clock:        f.clock,
	}
	if mod != nil {
		mod(&cfg)
	}
	g, err := middleware.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	f.gate = g
	return f
}

func (f *fixture) ccRequests() int64 {
	return f.srv.TokenRequests(tasknationtest.GrantClientCredentials)
}

// token gets a token through the Gate or fails the test.
func (f *fixture) token(t testing.TB) string {
	t.Helper()
	tok, err := f.gate.Token(context.Background())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	return tok.AccessToken
}

// eventually polls cond until it holds or the deadline passes.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond) // polling interval, not a wait for state
	}
}

// recorder is a next handler that records the Authorization header it saw.
type recorder struct {
	mu    sync.Mutex
	seen  []string
	calls int
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec.mu.Lock()
	rec.calls++
	rec.seen = append(rec.seen, r.Header.Get("Authorization"))
	rec.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rec *recorder) count() int {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return rec.calls
}
