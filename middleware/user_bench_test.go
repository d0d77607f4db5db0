package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// BenchmarkWrap_UserCacheHit is the hot path of the user context: the
// subject's entry in the hot set (a map lookup under a read lock and a
// clock read; the bigcache layer behind it hashes the subject and decodes
// the set) against the application token's atomic loads and the
// static-header floor, in one run.
func BenchmarkWrap_UserCacheHit(b *testing.B) {
	b.Run("impl=baseline", func(b *testing.B) { benchHandler(b, staticMiddleware(nopHandler)) })
	b.Run("impl=app", func(b *testing.B) { benchHandler(b, primedGate(b).Wrap(nopHandler)) })
	b.Run("impl=user", func(b *testing.B) {
		f, req := connectedForHotPath(b)
		h := f.gate.Wrap(nopHandler)
		w := &nopWriter{h: http.Header{}}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
		if got := req.Header.Get("Authorization"); len(got) < 10 || got[:7] != "Bearer " {
			b.Fatalf("no bearer injected: %q", got)
		}
	})
}

type benchSubject struct{}

// connectedForHotPath is a user fixture on the real clock with alice
// connected, whose subject comes in the request's context (as a login in
// front would hand it over; Basic auth would be replaced by the bearer),
// and a request of alice's.
func connectedForHotPath(tb testing.TB) (*userFixture, *http.Request) {
	f := newUserFixture(tb, tasknationtest.Options{}, func(c *middleware.Config) {
		c.Clock = middleware.SystemClock{}
		c.Subject = func(r *http.Request) string {
			if s, ok := r.Context().Value(benchSubject{}).(string); ok {
				return s
			}
			return basicUser(r)
		}
	})
	f.browser(tb, "alice").connect(f, "tn-alice")
	req := httptest.NewRequest("GET", "/api/v1/search", nil)
	return f, req.WithContext(context.WithValue(req.Context(), benchSubject{}, "alice"))
}
