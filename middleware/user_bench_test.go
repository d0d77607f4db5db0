package middleware_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
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

// BenchmarkWrap_UserParallel is BenchmarkWrap_UserCacheHit on every core,
// each goroutine serving a subject of its own among 1,024 connected ones.
func BenchmarkWrap_UserParallel(b *testing.B) {
	b.Run("impl=baseline", func(b *testing.B) { benchHandlerParallel(b, staticMiddleware(nopHandler)) })
	b.Run("impl=app", func(b *testing.B) { benchHandlerParallel(b, primedGate(b).Wrap(nopHandler)) })
	b.Run("impl=user", func(b *testing.B) {
		f, subjects := manyConnected(b, 1024)
		h := f.gate.Wrap(nopHandler)
		var next atomic.Uint32
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			subject := subjects[int(next.Add(1))%len(subjects)]
			req := httptest.NewRequest("GET", "/api/v1/search", nil)
			req = req.WithContext(context.WithValue(req.Context(), benchSubject{}, subject))
			w := &nopWriter{h: http.Header{}}
			served := false
			for pb.Next() {
				h.ServeHTTP(w, req)
				served = true
			}
			if got := req.Header.Get("Authorization"); served && !strings.HasPrefix(got, "Bearer tn_at_many-") {
				b.Errorf("no bearer of %s injected: %q", subject, got)
			}
		})
	})
}

// manyConnected is a user fixture on the real clock whose durable store
// holds a valid set for each of n subjects, and the subjects.
func manyConnected(tb testing.TB, n int) (*userFixture, []string) {
	durable, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { durable.Close() })
	f := newUserFixture(tb, tasknationtest.Options{}, func(c *middleware.Config) {
		c.Clock = middleware.SystemClock{}
		c.Store = durable
		c.Subject = benchSubjectOf
	})
	now := time.Now()
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = fmt.Sprint("user-", i)
		tok := &tokenstore.Token{AccessToken: fmt.Sprint("tn_at_many-", i), TokenType: "Bearer", RefreshToken: "tn_rt_x",
			Expiry: now.Add(time.Hour), ObtainedAt: now, Version: uint64(1000 + i)}
		if err := durable.Set(context.Background(), middleware.SubjectKeyForTest(f.gate, subjects[i]), tok); err != nil {
			tb.Fatal(err)
		}
	}
	return f, subjects
}

type benchSubject struct{}

// benchSubjectOf is the subject in the request's context (as a login in
// front would hand it over), else the Basic auth user.
func benchSubjectOf(r *http.Request) string {
	if s, ok := r.Context().Value(benchSubject{}).(string); ok {
		return s
	}
	return basicUser(r)
}

// connectedForHotPath is a user fixture on the real clock with alice
// connected, whose subject comes in the request's context (as a login in
// front would hand it over; Basic auth would be replaced by the bearer),
// and a request of alice's.
func connectedForHotPath(tb testing.TB) (*userFixture, *http.Request) {
	f := newUserFixture(tb, tasknationtest.Options{}, func(c *middleware.Config) {
		c.Clock = middleware.SystemClock{}
		c.Subject = benchSubjectOf
	})
	f.browser(tb, "alice").connect(f, "tn-alice")
	req := httptest.NewRequest("GET", "/api/v1/search", nil)
	return f, req.WithContext(context.WithValue(req.Context(), benchSubject{}, "alice"))
}
