package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tasknation/tokengate/middleware"
)

// TestHotPathAllocs asserts the allocation counts of the hot paths (CI
// asserts counts, never times; `make bench` reports the times): a cached
// application token through Wrap costs no allocation per request (the
// Authorization value slices are cut 64 at a time from one allocation,
// which testing.AllocsPerRun's whole-number average rounds to 0), with or
// without headers already in the response writer (a server's, like
// Caddy's Server), and so does a connected user's cached token.
func TestHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts need a build without the race detector (make test runs this test again without it)")
	}
	measure := func(h http.Handler, req *http.Request, w http.ResponseWriter) float64 {
		h.ServeHTTP(w, req) // warm the pools
		return testing.AllocsPerRun(200, func() { h.ServeHTTP(w, req) })
	}
	app := newFixture(t, func(c *middleware.Config) { c.Clock = middleware.SystemClock{} })
	app.token(t)
	req := httptest.NewRequest(http.MethodGet, "/api/v1/search", nil)
	if n := measure(app.gate.Wrap(nopHandler), req, &nopWriter{h: http.Header{}}); n != 0 {
		t.Errorf("application token through Wrap: %v allocations, want 0", n)
	}
	server := &nopWriter{h: http.Header{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}}}
	if n := measure(app.gate.Wrap(nopHandler), req, server); n != 0 {
		t.Errorf("application token through Wrap, writer holding headers: %v allocations, want 0", n)
	}

	user, ureq := connectedForHotPath(t)
	if n := measure(user.gate.Wrap(nopHandler), ureq, &nopWriter{h: http.Header{}}); n != 0 {
		t.Errorf("a connected user's token through Wrap: %v allocations, want 0", n)
	}
}

// TestWrap_BearerValuesAreTheRequests: the Authorization value slices the
// hot path cuts from shared runs are each one request's own. Handlers on
// four goroutines write into their request's value, append to it and keep
// the request past its return, over several runs' worth of requests: each
// got the token, and each kept request still holds what its handler
// wrote (a slot handed out twice would show another request's, and the
// race detector would see the writes).
func TestWrap_BearerValuesAreTheRequests(t *testing.T) {
	f := newFixture(t, nil)
	want := "Bearer " + f.token(t)
	type kept struct {
		r    *http.Request
		slot []string
		mark string
	}
	var (
		mu   sync.Mutex
		all  []kept
		seen atomic.Int64
	)
	h := f.gate.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := r.Header["Authorization"]
		if len(v) != 1 || v[0] != want {
			t.Errorf("Authorization %q, want [%q]", v, want)
			return
		}
		mark := fmt.Sprintf("request %d", seen.Add(1))
		v[0] = mark
		r.Header["Authorization"] = append(v, "appended")
		mu.Lock()
		all = append(all, kept{r, v, mark})
		mu.Unlock()
	}))
	const perGoroutine = 100 // 400 requests: six runs of slots and more
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range perGoroutine {
				h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/api/v1/search", nil))
			}
		})
	}
	wg.Wait()
	if len(all) != 4*perGoroutine {
		t.Fatalf("%d requests reached the handler, want %d", len(all), 4*perGoroutine)
	}
	for _, k := range all {
		if got := k.r.Header["Authorization"]; !slices.Equal(got, []string{k.mark, "appended"}) || k.slot[0] != k.mark {
			t.Fatalf("a kept request holds %q (its slot %q), want [%q appended]", got, k.slot, k.mark)
		}
	}
}
