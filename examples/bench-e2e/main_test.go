package main

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const wrkReport = `Running 5s test @ http://127.0.0.1:40000/api/v1/categories
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.71ms    3.02ms  45.10ms   81.22%
    Req/Sec     7.52k   412.33     8.01k    88.00%
  Latency Distribution
     50%    6.12ms
     75%    7.80ms
     90%   10.02ms
     99%   18.49ms
  37869 requests in 5.01s, 9.21MB read
Requests/sec:   7551.32
Transfer/sec:      1.84MB
`

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		text string
		want loadResult
	}{
		{"clean run", wrkReport, loadResult{rps: 7551.32, p99: 18490 * time.Microsecond, requests: 37869}},
		{"non-2xx and socket errors are failures",
			strings.Replace(wrkReport, "Requests/sec:", "  Socket errors: connect 0, read 2, write 0, timeout 1\n  Non-2xx or 3xx responses: 12\nRequests/sec:", 1),
			loadResult{rps: 7551.32, p99: 18490 * time.Microsecond, requests: 37869, failed: 15}},
		{"microseconds", strings.Replace(wrkReport, "99%   18.49ms", "99%  850.00us", 1),
			loadResult{rps: 7551.32, p99: 850 * time.Microsecond, requests: 37869}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(tt.text)
			if err != nil {
				t.Fatal(err)
			}
			if got.requests != tt.want.requests || got.failed != tt.want.failed || got.p99.Round(time.Microsecond) != tt.want.p99 ||
				got.rps != tt.want.rps {
				t.Errorf("parseWrk = %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := parseWrk("wrk: unable to connect"); err == nil {
		t.Error("parseWrk accepted a report without figures")
	}
}

func TestMedian(t *testing.T) {
	for _, tt := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tt.in); got != tt.want {
			t.Errorf("median(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMedianNaN(t *testing.T) {
	for _, in := range [][]float64{nil, {1, math.NaN(), 3}} {
		if got := median(in); !math.IsNaN(got) {
			t.Errorf("median(%v) = %v, want NaN", in, got)
		}
	}
}

func TestRoundOrder(t *testing.T) {
	a, b, c := &site{name: "a"}, &site{name: "b"}, &site{name: "c"}
	sites := []*site{a, b, c}
	var got []string
	for r := 1; r <= 4; r++ {
		var s string
		for _, x := range roundOrder(sites, r) {
			s += x.name
		}
		got = append(got, s)
	}
	if want := []string{"abc", "bca", "cab", "abc"}; !slices.Equal(got, want) {
		t.Errorf("orders %v, want %v", got, want)
	}
	if sites[0] != a || sites[1] != b || sites[2] != c {
		t.Error("roundOrder changed its argument")
	}
}

// benchResults are two rounds of three sites, in rotated order.
func benchResults(a, b, c *site) []result {
	return []result{
		{round: 1, site: a, rps: 9800, p99: 5 * time.Millisecond, cpu: 102},
		{round: 1, site: b, rps: 10000, p99: 4 * time.Millisecond, cpu: 100},
		{round: 1, site: c, rps: 9000, p99: 6 * time.Millisecond, cpu: 110},
		{round: 2, site: b, rps: 8000, p99: 6 * time.Millisecond, cpu: 120},
		{round: 2, site: c, rps: 7800, p99: 7 * time.Millisecond, cpu: 126},
		{round: 2, site: a, rps: 8000, p99: 5 * time.Millisecond, cpu: 120},
	}
}

func TestPairedRatios(t *testing.T) {
	a, b, c := &site{name: "a"}, &site{name: "b"}, &site{name: "c"}
	res := benchResults(a, b, c)
	rounds, rs := pairedRatios(res, a, b, rpsOf)
	if !slices.Equal(rounds, []int{1, 2}) || !slices.Equal(rs, []float64{0.98, 1}) {
		t.Errorf("a/b req/s = %v %v, want [1 2] [0.98 1]", rounds, rs)
	}
	_, rs = pairedRatios(res, c, b, cpuOf)
	if !slices.Equal(rs, []float64{1.1, 1.05}) {
		t.Errorf("c/b CPU = %v, want [1.1 1.05]", rs)
	}
	// A round without the baseline is skipped, not paired with another.
	_, rs = pairedRatios(append(res, result{round: 3, site: a, rps: 1}), a, b, rpsOf)
	if len(rs) != 2 {
		t.Errorf("paired %d rounds, want 2", len(rs))
	}
	rps, p99, cpu, n := siteMedians(res, c)
	if rps != 8400 || p99 != 6500*time.Microsecond || cpu != 118 || n != 2 {
		t.Errorf("siteMedians(c) = %v %v %v %d, want 8400 6.5ms 118 2", rps, p99, cpu, n)
	}
}

func TestReport(t *testing.T) {
	a := &site{name: "a", desc: "app"}
	b := &site{name: "b", desc: "static"}
	c := &site{name: "c", desc: "user"}
	cmps := []comparison{{s: a, minRPS: 0.98, maxCPU: 1.02}, {s: c, minRPS: 0.95}}
	var out strings.Builder
	report(&out, benchResults(a, b, c), b, cmps, []*site{a, b, c})
	text := out.String()
	for _, want := range []string{
		"medians over 2 rounds:",
		// medians: a 8900, b 9000, c 8400; CPU a 111, b 110, c 118
		"throughput a/b: 0.989 (of the medians; per-round median 0.990, range 0.980–1.000); target ≥ 0.98: met",
		"throughput c/b: 0.933 (of the medians; per-round median 0.938, range 0.900–0.975); target ≥ 0.95: MISSED",
		"Caddy CPU per request a/b: 1.009 (of the medians; per-round median 1.010, range 1.000–1.020); target ≤ 1.02: met",
		"Caddy CPU per request c/b: 1.073 (of the medians; per-round median 1.075, range 1.050–1.100)\n",
		"    1        0.980        0.900        1.020        1.100\n",
		"    2        1.000        0.975        1.000        1.050\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}

	// Without CPU figures (not Linux) the CPU lines say n/a.
	res := benchResults(a, b, c)
	for i := range res {
		res[i].cpu = math.NaN()
	}
	out.Reset()
	report(&out, res, b, cmps, []*site{a, b, c})
	for _, want := range []string{
		"Caddy CPU n/a µs/req",
		"Caddy CPU per request a/b: n/a (of the medians; per-round median n/a, range n/a); target ≤ 1.02: n/a",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestWrkScript(t *testing.T) {
	s := wrkScript(10000)
	for _, want := range []string{
		"local n = 10000\n",
		`requests[i] = wrk.format(nil, nil, {["X-Bench-User"] = "user-" .. i})`,
		"for i = 0, n - 1 do",
		"cursor = (cursor + 1) % n",
		"function request()",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	// wrk calls response() for every answer when the script defines it:
	// a cost the static site would pay too, but one the load does not need.
	if strings.Contains(s, "function response") {
		t.Error("the script defines response()")
	}
}

func TestGoLoaderRotatesSubjects(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.Header.Get("X-Bench-User")]++
		mu.Unlock()
	}))
	defer srv.Close()
	lr, err := goLoader(2, subjects(3))(context.Background(), srv.URL, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || lr.failed != 0 {
		t.Fatalf("subjects seen %v (failed %d), want user-0, user-1, user-2", seen, lr.failed)
	}
	lo, hi := math.MaxInt, 0
	for _, n := range seen {
		lo, hi = min(lo, n), max(hi, n)
	}
	if hi-lo > 2+hi/100 { // round-robin, but the last requests of a run may be cut off
		t.Errorf("subjects seen %v, want an even spread", seen)
	}
}

func TestCallgrindTotal(t *testing.T) {
	dump := "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 626763332\n\nfn=(1) main\n1 5\ntotals: 626763332\n"
	if n, err := callgrindTotal(strings.NewReader(dump)); err != nil || n != 626763332 {
		t.Fatalf("callgrindTotal = %d, %v", n, err)
	}
	if _, err := callgrindTotal(strings.NewReader("events: Ir\nfn=(1) main\n")); err == nil {
		t.Error("callgrindTotal accepted a dump without totals")
	}
}
