package middleware_test

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tasknation/tokengate/middleware"
)

// TestHotPathAllocs asserts the allocation counts of the hot paths (CI
// asserts counts, never times; `make bench` reports the times): a cached
// application token through Wrap costs one allocation (the header's value
// slice), with or without headers already in the response writer (a
// server's, like Caddy's Server), and so does a connected user's cached
// token.
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
	if n := measure(app.gate.Wrap(nopHandler), req, &nopWriter{h: http.Header{}}); n > 1 {
		t.Errorf("application token through Wrap: %v allocations, want at most 1", n)
	}
	server := &nopWriter{h: http.Header{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}}}
	if n := measure(app.gate.Wrap(nopHandler), req, server); n > 1 {
		t.Errorf("application token through Wrap, writer holding headers: %v allocations, want at most 1", n)
	}

	user, ureq := connectedForHotPath(t)
	if n := measure(user.gate.Wrap(nopHandler), ureq, &nopWriter{h: http.Header{}}); n > 2 {
		t.Errorf("a connected user's token through Wrap: %v allocations, want at most 2", n)
	}
}
