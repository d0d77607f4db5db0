package middleware_test

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// clock is a settable middleware.Clock shared by a Gate and the fake
// server. Its timers fire, synchronously, when Advance passes them.
type clock struct {
	mu     sync.Mutex
	t      time.Time
	timers []*fakeTimer
}

type fakeTimer struct {
	c       *clock
	at      time.Time
	f       func()
	stopped bool
}

func newClock() *clock { return &clock{t: time.Now()} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) AfterFunc(d time.Duration, f func()) middleware.Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{c: c, at: c.t.Add(d), f: f}
	c.timers = append(c.timers, t)
	return t
}

func (t *fakeTimer) Stop() bool {
	t.c.mu.Lock()
	defer t.c.mu.Unlock()
	was := !t.stopped
	t.stopped = true
	return was
}

// pending is the number of timers not yet fired or stopped.
func (c *clock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// Advance moves the clock and runs the timers that came due, in order.
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	var due, pending []*fakeTimer
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case !t.at.After(c.t):
			t.stopped = true
			due = append(due, t)
		default:
			pending = append(pending, t)
		}
	}
	c.timers = pending
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *fakeTimer) int { return a.at.Compare(b.at) })
	for _, t := range due {
		t.f()
	}
}

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
