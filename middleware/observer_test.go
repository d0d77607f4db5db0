package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// events records an Observer's calls.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) { e.mu.Lock(); e.log = append(e.log, s); e.mu.Unlock() }
func (e *events) TokenRequest(grant, outcome string, took time.Duration) {
	if took < 0 {
		outcome += "(negative duration)"
	}
	e.add("token " + grant + " " + outcome)
}
func (e *events) CacheLookup(hit bool) { e.add(fmt.Sprint("lookup hit=", hit)) }
func (e *events) BackgroundRefresh()   { e.add("background") }
func (e *events) Refused()             { e.add("refused") }
func (e *events) len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.log)
}

func (e *events) snapshot() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

func (e *events) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.log
	e.log = nil
	return out
}

func TestObserver_Events(t *testing.T) {
	ev := &events{}
	f := newFixture(t, func(c *middleware.Config) { c.Observer = ev })
	h := f.gate.Wrap(&recorder{})
	serve := func() int {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		return w.Code
	}
	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"cold", func() { serve() }, []string{"lookup hit=false", "token client_credentials success"}},
		{"warm", func() { serve(); serve() }, []string{"lookup hit=true", "lookup hit=true"}},
		{"refresh window", func() {
			f.clock.Advance(55 * time.Minute)
			serve()
			eventually(t, "the refresh to finish", func() bool { return ev.len() == 3 })
		}, []string{"lookup hit=true", "background", "token client_credentials success"}},
	}
	for _, s := range steps {
		s.do()
		if got := ev.take(); !slices.Equal(got, s.want) {
			t.Fatalf("%s: events %q, want %q", s.name, got, s.want)
		}
	}
}

func TestObserver_FailureAndRefusal(t *testing.T) {
	ev := &events{}
	f := newFixture(t, func(c *middleware.Config) { c.Observer = ev })
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 503})
	w := httptest.NewRecorder()
	f.gate.Wrap(&recorder{}).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("status %d", w.Code)
	}
	want := []string{"lookup hit=false", "token client_credentials status", "refused"}
	if got := ev.take(); !slices.Equal(got, want) {
		t.Fatalf("events %q, want %q", got, want)
	}
}

// Authorize removes the client's header even when it fails.
func TestAuthorize_FailureDropsClientHeader(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 503})
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer client")
	if err := f.gate.Authorize(r); err == nil {
		t.Fatal("Authorize succeeded without a token")
	}
	if r.Header.Get("Authorization") != "" {
		t.Fatal("client's Authorization header kept")
	}
}
