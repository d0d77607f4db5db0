package middleware_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// The benchmarks compare the hot path (a cached token) with a static header
// (the floor) and with x/oauth2 used the two usual ways, in one run.

const staticHeader = "Bearer tn_at_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG"

// nopWriter is a ResponseWriter that costs nothing.
type nopWriter struct{ h http.Header }

func (w *nopWriter) Header() http.Header         { return w.h }
func (w *nopWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *nopWriter) WriteHeader(int)             {}

var nopHandler = http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})

// nopRoundTripper answers every request with an empty 204.
type nopRoundTripper struct{}

func (nopRoundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
}

func benchHandler(b *testing.B, h http.Handler) {
	req := httptest.NewRequest("GET", "/api/v1/search", nil)
	w := &nopWriter{h: http.Header{}}
	b.ReportAllocs()
	for b.Loop() {
		h.ServeHTTP(w, req)
	}
}

func benchHandlerParallel(b *testing.B, h http.Handler) {
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := httptest.NewRequest("GET", "/api/v1/search", nil)
		w := &nopWriter{h: http.Header{}}
		for pb.Next() {
			h.ServeHTTP(w, req)
		}
	})
}

func staticMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("Authorization", staticHeader)
		next.ServeHTTP(w, r)
	})
}

func primedGate(b *testing.B) *middleware.Gate {
	f := newFixture(b, func(c *middleware.Config) { c.Clock = middleware.SystemClock{} })
	f.token(b)
	return f.gate
}

// Sub-benchmarks are named impl=...: `benchstat -col /impl` then prints
// each against the first, the baseline, from the same run.
func BenchmarkWrap_CacheHit(b *testing.B) {
	b.Run("impl=baseline", func(b *testing.B) { benchHandler(b, staticMiddleware(nopHandler)) })
	b.Run("impl=tokengate", func(b *testing.B) { benchHandler(b, primedGate(b).Wrap(nopHandler)) })
	b.Run("impl=x-oauth2", func(b *testing.B) { benchHandler(b, xoauth2Middleware(xoauth2Source(b), nopHandler)) })
}

// BenchmarkWrap_CacheHitServerHeaders is BenchmarkWrap_CacheHit with a
// response writer that already holds headers, as a server's does
// (Caddy's holds Server): what the held-401 machinery saves before next
// runs must cost no allocation.
func BenchmarkWrap_CacheHitServerHeaders(b *testing.B) {
	bench := func(b *testing.B, h http.Handler) {
		req := httptest.NewRequest("GET", "/api/v1/search", nil)
		w := &nopWriter{h: http.Header{"Server": {"Caddy"}, "Alt-Svc": {`h3=":443"`}}}
		b.ReportAllocs()
		for b.Loop() {
			h.ServeHTTP(w, req)
		}
	}
	b.Run("impl=baseline", func(b *testing.B) { bench(b, staticMiddleware(nopHandler)) })
	b.Run("impl=tokengate", func(b *testing.B) { bench(b, primedGate(b).Wrap(nopHandler)) })
}

func BenchmarkWrap_Parallel(b *testing.B) {
	b.Run("impl=baseline", func(b *testing.B) { benchHandlerParallel(b, staticMiddleware(nopHandler)) })
	b.Run("impl=tokengate", func(b *testing.B) { benchHandlerParallel(b, primedGate(b).Wrap(nopHandler)) })
	b.Run("impl=x-oauth2", func(b *testing.B) {
		benchHandlerParallel(b, xoauth2Middleware(xoauth2Source(b), nopHandler))
	})
}

// xoauth2Source is x/oauth2's usual application-token source, primed.
func xoauth2Source(b *testing.B) oauth2.TokenSource {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	b.Cleanup(srv.Close)
	cc := clientcredentials.Config{
		ClientID: tasknationtest.DefaultClientID, ClientSecret: tasknationtest.DefaultClientSecret,
		TokenURL: srv.TokenURL(), Scopes: appScopes, AuthStyle: oauth2.AuthStyleInParams,
	}
	ts := cc.TokenSource(context.Background()) // a ReuseTokenSource
	if _, err := ts.Token(); err != nil {
		b.Fatal(err)
	}
	return ts
}

func xoauth2Middleware(ts oauth2.TokenSource, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, err := ts.Token()
		if err != nil {
			http.Error(w, "no token", http.StatusServiceUnavailable)
			return
		}
		tok.SetAuthHeader(r)
		next.ServeHTTP(w, r)
	})
}

func benchRoundTrip(b *testing.B, rt http.RoundTripper) {
	req := httptest.NewRequest("GET", "http://api.test/api/v1/search", nil)
	req.RequestURI = ""
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "bench")
	b.ReportAllocs()
	for b.Loop() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
	}
}

// cloneSet is the floor for a RoundTripper that must not touch the
// caller's request: req.Clone and one Set.
type cloneSet struct{ base http.RoundTripper }

func (c cloneSet) RoundTrip(r *http.Request) (*http.Response, error) {
	r2 := r.Clone(r.Context())
	r2.Header.Set("Authorization", staticHeader)
	return c.base.RoundTrip(r2)
}

func BenchmarkTransport_CacheHit(b *testing.B) {
	b.Run("impl=baseline", func(b *testing.B) { benchRoundTrip(b, cloneSet{nopRoundTripper{}}) })
	b.Run("impl=tokengate", func(b *testing.B) { benchRoundTrip(b, primedGate(b).Transport(nopRoundTripper{})) })
	b.Run("impl=x-oauth2", func(b *testing.B) {
		benchRoundTrip(b, &oauth2.Transport{Source: xoauth2Source(b), Base: nopRoundTripper{}})
	})
}

// The herd: 1,000 callers arrive together when the token is 5 s from
// expiry and the token endpoint takes 20 ms. x/oauth2 (10 s expiry delta)
// makes all of them wait for the refresh; the Gate serves the current token
// and refreshes in the background. Reported: p99 caller latency, callers
// that waited for the endpoint, endpoint calls. Asserted: counts only.
const herd = 1000

type herdResult struct {
	p99     time.Duration
	waited  int // callers that got the new token, i.e. waited for the refresh
	calls   int64
	failed  int
	elapsed time.Duration
}

func runHerd(call func() (string, error), old string) herdResult {
	var wg sync.WaitGroup
	lat := make([]time.Duration, herd)
	got := make([]string, herd)
	errs := make([]error, herd)
	start := make(chan struct{})
	for i := 0; i < herd; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			t := time.Now()
			got[i], errs[i] = call()
			lat[i] = time.Since(t)
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	r := herdResult{elapsed: time.Since(began)}
	slices.Sort(lat)
	r.p99 = lat[herd*99/100]
	for i := range got {
		if errs[i] != nil {
			r.failed++
		} else if got[i] != old {
			r.waited++
		}
	}
	return r
}

func reportHerd(b *testing.B, rs []herdResult) {
	var p99s []float64
	var waited, calls, failed float64
	for _, r := range rs {
		p99s = append(p99s, r.p99.Seconds())
		waited += float64(r.waited)
		calls += float64(r.calls)
		failed += float64(r.failed)
	}
	slices.Sort(p99s)
	n := float64(len(rs))
	b.ReportMetric(p99s[len(p99s)/2], "p99-sec")
	b.ReportMetric(waited/n, "waited/op")
	b.ReportMetric(calls/n, "endpoint-calls/op")
	b.ReportMetric(failed/n, "failed/op")
	b.ReportMetric(0, "ns/op")
}

func BenchmarkHerd(b *testing.B) {
	b.Run("impl=x-oauth2", func(b *testing.B) {
		herdXOAuth2(b, oauth2.AuthStyleInParams, 5*time.Second,
			func(srv *tasknationtest.Server) { srv.SetLatency(20 * time.Millisecond) },
			func(r herdResult) bool { return r.calls == 1 && r.waited == herd })
	})
	b.Run("impl=tokengate", func(b *testing.B) {
		herdGate(b, func(f *fixture) string {
			old := f.token(b)
			f.clock.Advance(time.Hour - 5*time.Second)
			f.srv.SetLatency(20 * time.Millisecond)
			f.srv.ResetCounters()
			return old
		}, func(r herdResult) bool { return r.calls == 1 && r.waited == 0 && r.failed == 0 })
	})
}

// The same herd with the token expired and the endpoint answering 503.
// x/oauth2 calls the endpoint for every caller (twice each when it probes
// the auth style, its default); the Gate calls it once and backs off.
func BenchmarkHerd503(b *testing.B) {
	fail := func(srv *tasknationtest.Server) {
		srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 503})
	}
	b.Run("impl=x-oauth2", func(b *testing.B) {
		herdXOAuth2(b, oauth2.AuthStyleAutoDetect, -time.Second, fail,
			func(r herdResult) bool { return r.calls >= herd })
	})
	b.Run("impl=tokengate", func(b *testing.B) {
		herdGate(b, func(f *fixture) string { fail(f.srv); return "" },
			func(r herdResult) bool { return r.calls == 1 && r.failed == herd })
	})
}

// herdXOAuth2 runs the herd on an x/oauth2 ReuseTokenSource holding a
// token that expires in left, against a fake server set up by prepare.
func herdXOAuth2(b *testing.B, style oauth2.AuthStyle, left time.Duration, prepare func(*tasknationtest.Server), ok func(herdResult) bool) {
	var rs []herdResult
	for b.Loop() {
		b.StopTimer()
		srv := tasknationtest.NewServer(tasknationtest.Options{})
		prepare(srv)
		cc := clientcredentials.Config{
			ClientID: tasknationtest.DefaultClientID, ClientSecret: tasknationtest.DefaultClientSecret,
			TokenURL: srv.TokenURL(), Scopes: appScopes, AuthStyle: style,
		}
		ts := oauth2.ReuseTokenSource(&oauth2.Token{AccessToken: "old", TokenType: "Bearer", Expiry: time.Now().Add(left)},
			cc.TokenSource(context.Background()))
		b.StartTimer()
		r := runHerd(func() (string, error) {
			t, err := ts.Token()
			if err != nil {
				return "", err
			}
			return t.AccessToken, nil
		}, "old")
		b.StopTimer()
		r.calls = srv.TokenRequests("")
		srv.Close()
		b.StartTimer()
		if !ok(r) {
			b.Fatalf("x/oauth2 herd: %d endpoint calls, %d waited, %d failed", r.calls, r.waited, r.failed)
		}
		rs = append(rs, r)
	}
	reportHerd(b, rs)
}

// herdGate runs the herd on a Gate set up by prepare, which returns the
// token the Gate holds (if any).
func herdGate(b *testing.B, prepare func(*fixture) string, ok func(herdResult) bool) {
	var rs []herdResult
	for b.Loop() {
		b.StopTimer()
		f := newFixture(b, nil)
		old := prepare(f)
		b.StartTimer()
		r := runHerd(func() (string, error) {
			t, err := f.gate.Token(context.Background())
			return t.AccessToken, err
		}, old)
		b.StopTimer()
		eventually(b, "the token request", func() bool { return f.ccRequests() >= 1 })
		r.calls = f.ccRequests()
		f.gate.Close()
		f.srv.Close()
		b.StartTimer()
		if !ok(r) {
			b.Fatalf("gate herd: %d endpoint calls, %d waited, %d failed", r.calls, r.waited, r.failed)
		}
		rs = append(rs, r)
	}
	reportHerd(b, rs)
}
