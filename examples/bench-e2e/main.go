// Command bench-e2e measures what the oauth2_token module costs a real
// Caddy, end to end over loopback: `make bench-e2e`.
//
// One ./caddy process (built by `make caddy`) serves two sites that differ
// in one line only:
//
//	(a) oauth2_token + reverse_proxy: the module gets a token from the fake
//	    TaskNation token endpoint and injects it into every request;
//	(b) reverse_proxy with a static `header_up Authorization "Bearer ..."`.
//
// Both proxy to the same trivial upstream, which answers 200 to any
// "Bearer" request and counts which kind of token it saw, so that each
// run proves that its configuration was in effect. Load comes from wrk
// (one thread, 50 connections by default) or, when wrk is not installed,
// from a small Go load generator. Rounds alternate the order of a and b;
// the report gives every run, the medians, the ratio of the median
// throughputs (a)/(b) and the p99 latencies.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// staticToken is what configuration (b) sends upstream.
const staticToken = "bench-static-token-0123456789abcdef0123456789abcdef"

// target is the throughput ratio (a)/(b) the module should reach.
const target = 0.97

type options struct {
	caddy    string
	rounds   int
	duration time.Duration
	warmup   time.Duration
	conns    int
	threads  int
	loader   string
	path     string
}

func main() {
	var o options
	flag.StringVar(&o.caddy, "caddy", "./caddy", "the Caddy binary with the oauth2_token module (make caddy)")
	flag.IntVar(&o.rounds, "rounds", 10, "rounds; each runs a and b once, alternating which goes first")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of one run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load on each site before the first round")
	flag.IntVar(&o.conns, "c", 50, "concurrent connections")
	flag.IntVar(&o.threads, "t", 1, "wrk threads")
	flag.StringVar(&o.loader, "loader", "auto", "load generator: wrk, go, or auto (wrk when installed)")
	flag.StringVar(&o.path, "path", "/api/v1/categories", "request path")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-e2e:", err)
		os.Exit(1)
	}
}

// site is one of the two configurations under load.
type site struct {
	name, desc string
	url        string
	// kind is the token kind the upstream must see for this site.
	kind tokenKind
}

// result is one measured run.
type result struct {
	round    int
	site     *site
	rps      float64
	p99      time.Duration
	requests int64
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.rounds < 1 || o.duration < time.Second || o.conns < 1 || o.threads < 1 {
		return errors.New("want -rounds ≥ 1, -duration ≥ 1s, -c ≥ 1, -t ≥ 1")
	}
	load, loaderName, err := pickLoader(o)
	if err != nil {
		return err
	}
	caddyBin, err := filepath.Abs(o.caddy)
	if err != nil {
		return err
	}
	if _, err := os.Stat(caddyBin); err != nil {
		return fmt.Errorf("%w (build it with `make caddy`)", err)
	}

	fake := tasknationtest.NewServer(tasknationtest.Options{})
	defer fake.Close()
	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.close()

	dir, err := os.MkdirTemp("", "tokengate-bench-e2e-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	portA, portB := freePort(), freePort()
	if portA == "" || portB == "" {
		return errors.New("no free loopback port")
	}
	cfg := caddyfile(dir, fake.TokenURL(), up.addr, portA, portB)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	a := &site{name: "a", desc: "oauth2_token + reverse_proxy", url: "http://127.0.0.1:" + portA + o.path, kind: kindGate}
	b := &site{name: "b", desc: "static header_up Authorization + reverse_proxy", url: "http://127.0.0.1:" + portB + o.path, kind: kindStatic}

	version := "unknown version"
	if v, err := exec.Command(caddyBin, "version").Output(); err == nil && len(bytes.Fields(v)) > 0 {
		version = string(bytes.Fields(v)[0])
	}
	fmt.Fprintf(out, "bench-e2e: %s (Caddy %s), load from %s, %d rounds × %s per site, alternating\n",
		o.caddy, version, loaderName, o.rounds, o.duration)
	fmt.Fprintf(out, "  a: %s\n  b: %s\n  upstream: Go HTTP server on %s (200 to any Bearer request)\n\n", a.desc, b.desc, up.addr)

	stopCaddy, err := startCaddy(ctx, caddyBin, cfgPath, filepath.Join(dir, "caddy.log"), []*site{a, b}, up)
	if err != nil {
		return err
	}
	defer stopCaddy()

	// One run: load the site, then check that every request the upstream
	// saw carried this site's kind of token and that none failed.
	measure := func(s *site, d time.Duration, round int) (result, error) {
		up.reset()
		lr, err := load(ctx, s.url, d)
		if err != nil {
			return result{}, fmt.Errorf("site %s: %w", s.name, err)
		}
		up.settle() // requests cut off at the end may still reach the upstream
		if lr.failed > 0 {
			return result{}, fmt.Errorf("site %s: %d of %d requests failed or were not 200", s.name, lr.failed, lr.requests)
		}
		seen := up.counts()
		if seen[s.kind] == 0 || seen[s.kind] != seen.total() {
			return result{}, fmt.Errorf("site %s: the upstream saw %v, want only %s tokens", s.name, seen, s.kind)
		}
		return result{round: round, site: s, rps: lr.rps, p99: lr.p99, requests: lr.requests}, nil
	}

	for _, s := range []*site{a, b} {
		if _, err := measure(s, o.warmup, 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	tokensAfterWarmup := fake.TokenRequests("")

	var results []result
	const row = "%5s  %4s  %8s  %9s  %9s\n"
	fmt.Fprintf(out, row, "round", "site", "req/s", "p99", "requests")
	for r := 1; r <= o.rounds; r++ {
		order := []*site{a, b}
		if r%2 == 0 {
			order = []*site{b, a}
		}
		for _, s := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			res, err := measure(s, o.duration, r)
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			results = append(results, res)
			fmt.Fprintf(out, row, strconv.Itoa(r), s.name, fmt.Sprintf("%.0f", res.rps), fmtDur(res.p99), strconv.FormatInt(res.requests, 10))
		}
	}
	if n := fake.TokenRequests("") - tokensAfterWarmup; n != 0 {
		return fmt.Errorf("site a made %d token requests during the measured rounds, want 0 (one token lasts an hour)", n)
	}

	report(out, results, a, b)
	return nil
}

// report prints the medians, the throughput ratio and whether it meets
// the target.
func report(out io.Writer, results []result, a, b *site) {
	pick := func(s *site) (rps []float64, p99 []time.Duration) {
		for _, r := range results {
			if r.site == s {
				rps, p99 = append(rps, r.rps), append(p99, r.p99)
			}
		}
		return rps, p99
	}
	rpsA, p99A := pick(a)
	rpsB, p99B := pick(b)
	// Paired by round: a and b ran back to back, so a drift of the machine
	// cancels out of each round's ratio.
	var paired []float64
	for i := range rpsA {
		paired = append(paired, rpsA[i]/rpsB[i])
	}
	ratio := median(rpsA) / median(rpsB)
	verdict := "met"
	if ratio < target {
		verdict = "MISSED"
	}
	fmt.Fprintf(out, "\nmedians over %d rounds:\n", len(rpsA))
	fmt.Fprintf(out, "  a %-48s %8.0f req/s   p99 %s\n", a.desc, median(rpsA), fmtDur(medianDur(p99A)))
	fmt.Fprintf(out, "  b %-48s %8.0f req/s   p99 %s\n", b.desc, median(rpsB), fmtDur(medianDur(p99B)))
	fmt.Fprintf(out, "throughput ratio a/b: %.3f (median of per-round ratios %.3f, range %.3f–%.3f); target ≥ %.2f: %s\n",
		ratio, median(paired), slices.Min(paired), slices.Max(paired), target, verdict)
}

// caddyfile is the config of both sites: identical but for the auth line.
func caddyfile(dir, tokenURL, upstream, portA, portB string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]q
	log {
		level ERROR
	}
}

# (a) the module under test
http://:%[4]s {
	bind 127.0.0.1
	oauth2_token {
		token_url %[2]s
		client_id %[5]s
		client_secret {env.TASKNATION_CLIENT_SECRET}
		scopes demand::categories demand::search
	}
	reverse_proxy %[3]s {
		header_up Host {upstream_hostport}
	}
}

# (b) the baseline: a constant token
http://:%[6]s {
	bind 127.0.0.1
	reverse_proxy %[3]s {
		header_up Host {upstream_hostport}
		header_up Authorization "Bearer %[7]s"
	}
}
`, filepath.Join(dir, "storage"), tokenURL, upstream, portA, tasknationtest.DefaultClientID, portB, staticToken)
}

// startCaddy runs caddy with the config and waits until both sites answer
// 200 through to the upstream. The returned function stops it.
func startCaddy(ctx context.Context, bin, cfgPath, logPath string, sites []*site, up *upstream) (stop func(), err error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), "TASKNATION_CLIENT_SECRET="+tasknationtest.DefaultClientSecret)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, err
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	stop = func() {
		_ = cmd.Process.Signal(os.Interrupt) // an error: it has exited already
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		logFile.Close()
	}
	fail := func(err error) (func(), error) {
		stop()
		logText, _ := os.ReadFile(logPath)
		return nil, fmt.Errorf("%w\ncaddy log:\n%s", err, logText)
	}

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for _, s := range sites {
		for {
			up.reset()
			resp, err := client.Get(s.url)
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK && up.counts()[s.kind] == 1 {
					break
				}
				err = fmt.Errorf("site %s answered %s, upstream saw %v", s.name, resp.Status, up.counts())
			}
			select {
			case <-exited:
				return fail(fmt.Errorf("caddy exited: %v", waitErr))
			case <-ctx.Done():
				return fail(ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("caddy not ready after 30s: %v", err))
			}
		}
	}
	return stop, nil
}

// tokenKind classifies the Authorization header the upstream received.
type tokenKind int

const (
	kindGate   tokenKind = iota // a token from the fake token endpoint
	kindStatic                  // the constant of configuration (b)
	kindOther                   // anything else: a bug in the setup
	kinds
)

func (k tokenKind) String() string {
	return [...]string{"gateway", "static", "other"}[k]
}

type kindCounts [kinds]int64

func (c kindCounts) total() (n int64) {
	for _, v := range c {
		n += v
	}
	return n
}

func (c kindCounts) String() string {
	return fmt.Sprintf("gateway=%d static=%d other=%d", c[kindGate], c[kindStatic], c[kindOther])
}

// upstream is the fast backend: 200 and a small JSON body to any request
// with a Bearer token, 401 otherwise.
type upstream struct {
	addr string
	srv  *http.Server
	seen [kinds]atomic.Int64
}

var upstreamBody = []byte(`{"ok":true,"path":"/api/v1/categories","method":"GET","client_id":"tn-test-client","scope":"demand::categories demand::search"}` + "\n")

func startUpstream() (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{addr: ln.Addr().String()}
	u.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, token, _ := strings.Cut(r.Header.Get("Authorization"), " ")
		if !strings.EqualFold(scheme, "Bearer") || token == "" {
			u.seen[kindOther].Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		switch {
		case strings.HasPrefix(token, tasknationtest.AccessTokenPrefix):
			u.seen[kindGate].Add(1)
		case token == staticToken:
			u.seen[kindStatic].Add(1)
		default:
			u.seen[kindOther].Add(1)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(upstreamBody)))
		w.Write(upstreamBody)
	})}
	go u.srv.Serve(ln)
	return u, nil
}

func (u *upstream) reset() {
	for i := range u.seen {
		u.seen[i].Store(0)
	}
}

func (u *upstream) counts() (c kindCounts) {
	for i := range u.seen {
		c[i] = u.seen[i].Load()
	}
	return c
}

// settle waits until no request has arrived for 100ms (at most 2s), so
// that the stragglers of a run are not counted in the next.
func (u *upstream) settle() {
	deadline := time.Now().Add(2 * time.Second)
	for last := u.counts().total(); time.Now().Before(deadline); {
		time.Sleep(100 * time.Millisecond)
		n := u.counts().total()
		if n == last {
			return
		}
		last = n
	}
}

func (u *upstream) close() { u.srv.Close() }

// loadResult is what a load generator measured.
type loadResult struct {
	rps      float64
	p99      time.Duration
	requests int64
	failed   int64 // transport errors and answers other than 200
}

type loader func(ctx context.Context, url string, d time.Duration) (loadResult, error)

func pickLoader(o options) (loader, string, error) {
	wrk, lookErr := exec.LookPath("wrk")
	switch {
	case o.loader == "wrk" && lookErr != nil:
		return nil, "", fmt.Errorf("-loader wrk: %w", lookErr)
	case o.loader == "wrk" || o.loader == "auto" && lookErr == nil:
		return wrkLoader(wrk, o.threads, o.conns), fmt.Sprintf("wrk -t%d -c%d", o.threads, o.conns), nil
	case o.loader == "go":
		return goLoader(o.conns), fmt.Sprintf("the Go load generator, %d connections", o.conns), nil
	case o.loader == "auto":
		return goLoader(o.conns), fmt.Sprintf("the Go load generator, %d connections (wrk not installed)", o.conns), nil
	default:
		return nil, "", fmt.Errorf("-loader %q: want wrk, go or auto", o.loader)
	}
}

var (
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkP99      = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\b`)
	wrkRequests = regexp.MustCompile(`(?m)^\s+(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`(?m)Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocket   = regexp.MustCompile(`(?m)Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrkLoader runs wrk with latency statistics and parses its report.
func wrkLoader(bin string, threads, conns int) loader {
	return func(ctx context.Context, url string, d time.Duration) (loadResult, error) {
		secs := max(1, int(d.Round(time.Second)/time.Second))
		cmd := exec.CommandContext(ctx, bin, "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
			"-d"+strconv.Itoa(secs)+"s", "--latency", url)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			return loadResult{}, fmt.Errorf("wrk: %w: %s", err, stderr.String())
		}
		return parseWrk(stdout.String())
	}
}

// parseWrk reads a `wrk --latency` report. Non-2xx answers and socket
// errors count as failed requests.
func parseWrk(text string) (loadResult, error) {
	var r loadResult
	m := wrkRPS.FindStringSubmatch(text)
	p := wrkP99.FindStringSubmatch(text)
	n := wrkRequests.FindStringSubmatch(text)
	if m == nil || p == nil || n == nil {
		return loadResult{}, fmt.Errorf("cannot read wrk's report:\n%s", text)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	v, _ := strconv.ParseFloat(p[1], 64)
	unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[2]]
	r.p99 = time.Duration(v * float64(unit))
	r.requests, _ = strconv.ParseInt(n[1], 10, 64)
	if m := wrkNon2xx.FindStringSubmatch(text); m != nil {
		k, _ := strconv.ParseInt(m[1], 10, 64)
		r.failed += k
	}
	if m := wrkSocket.FindStringSubmatch(text); m != nil {
		for _, s := range m[1:] {
			k, _ := strconv.ParseInt(s, 10, 64)
			r.failed += k
		}
	}
	return r, nil
}

// goLoader keeps conns requests in flight, each connection a closed loop,
// for d, and records every latency.
func goLoader(conns int) loader {
	return func(ctx context.Context, url string, d time.Duration) (loadResult, error) {
		tr := &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns, DisableCompression: true}
		defer tr.CloseIdleConnections()
		client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		ctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()

		var (
			mu        sync.Mutex
			latencies []time.Duration
			failed    atomic.Int64
			wg        sync.WaitGroup
		)
		start := time.Now()
		for range conns {
			wg.Go(func() {
				local := make([]time.Duration, 0, 1<<14)
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					t0 := time.Now()
					resp, err := client.Do(req)
					if err != nil {
						if ctx.Err() == nil {
							failed.Add(1)
						}
						continue
					}
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if ctx.Err() != nil {
						break // cut off by the end of the run: not counted
					}
					if err != nil || resp.StatusCode != http.StatusOK {
						failed.Add(1)
						continue
					}
					local = append(local, time.Since(t0))
				}
				mu.Lock()
				latencies = append(latencies, local...)
				mu.Unlock()
			})
		}
		wg.Wait()
		elapsed := time.Since(start)
		if len(latencies) == 0 {
			return loadResult{}, errors.New("no request completed")
		}
		slices.Sort(latencies)
		return loadResult{
			rps:      float64(len(latencies)) / elapsed.Seconds(),
			p99:      latencies[len(latencies)*99/100],
			requests: int64(len(latencies)) + failed.Load(),
			failed:   failed.Load(),
		}, nil
	}
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return ""
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
}

func median(xs []float64) float64 {
	s := slices.Sorted(slices.Values(xs))
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDur(xs []time.Duration) time.Duration {
	f := make([]float64, len(xs))
	for i, x := range xs {
		f[i] = float64(x)
	}
	return time.Duration(median(f))
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fµs", float64(d)/float64(time.Microsecond))
	}
}
