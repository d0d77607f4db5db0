// Command bench-e2e measures what the oauth2_token module costs a real
// Caddy, end to end over loopback: `make bench-e2e`.
//
// One ./caddy process (built by `make caddy`) serves four sites:
//
//	(a) oauth2_token (client_credentials) + reverse_proxy: the module gets
//	    a token from the fake TaskNation token endpoint and injects it into
//	    every request (application context);
//	(b) reverse_proxy with a static `header_up Authorization "Bearer ..."`:
//	    the baseline;
//	(c) request_header, oauth2_token (authorization_code) and
//	    reverse_proxy (user context): request_header copies the load
//	    generator's X-Bench-User into X-Tokengate-Subject, standing for the
//	    login in front (forward_auth, basic_auth) that sets a trusted
//	    subject header; the module injects that subject's token;
//	(d) (c) with the static header instead of the module: c/d is what the
//	    module costs in the user context, c/b adds its front handler.
//
// Before the rounds, -users subjects (user-0 … user-9999 by default) connect
// through (c) with the real flow, as a browser would: /oauth2/connect, the
// fake's authorization page, the callback. The load then names a different
// subject on every request, round-robin over all of them; (a), (b) and (d)
// get the very same requests, so that the load generator costs the same on
// every site.
//
// All four proxy to the same trivial upstream, which answers 200 to any
// "Bearer" request and counts which kind of token it saw, so that each run
// proves that its configuration was in effect. Load comes from wrk (one
// thread, 50 connections by default, the subject rotation in a Lua script)
// or, when wrk is not installed, from a small Go load generator. Rounds
// rotate the order of the sites (abcd, bcda, …). Each run also measures
// the CPU time the Caddy process used, per request proxied (Linux only).
// The report gives every run, the medians per site, the throughput and
// CPU-per-request ratios of (a) and (c) to (b) with their targets, and the
// per-round ratios. A missed target is reported, not an error: the command
// fails only when the measurement is wrong (failed requests, a token of the
// wrong kind, token requests during the rounds).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
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

// Targets, against the static configuration (b).
const (
	targetApp    = 0.98 // throughput (a)/(b), at least
	targetUser   = 0.95 // throughput (c)/(b), at least
	targetAppCPU = 1.02 // Caddy CPU per request (a)/(b), at most
)

// userScopes are what site (c) asks for: scopes the fake's default client
// may request.
const userScopes = "supply::businesses supply::leads"

// subjectHeader is the header the load generator names the user in;
// site (c) copies it into trustedHeader, which the module reads.
const (
	subjectHeader = "X-Bench-User"
	trustedHeader = "X-Tokengate-Subject"
)

// connectWorkers connect the subjects in parallel, well under the
// module's default max_pending_states (10,000).
const connectWorkers = 8

type options struct {
	caddy    string
	rounds   int
	duration time.Duration
	warmup   time.Duration
	conns    int
	threads  int
	users    int
	loader   string
	path     string
	// instructions, when > 0, runs Caddy under callgrind and counts the
	// instructions of that many requests per site and round instead of
	// loading the sites (see instructions.go).
	instructions int
	keep         bool // leave the work directory (Caddyfile, logs, callgrind dumps)
}

func main() {
	var o options
	flag.StringVar(&o.caddy, "caddy", "./caddy", "the Caddy binary with the oauth2_token module (make caddy)")
	flag.IntVar(&o.rounds, "rounds", 10, "rounds; each runs a, b and c once, rotating which goes first")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "length of one run")
	flag.DurationVar(&o.warmup, "warmup", 2*time.Second, "unmeasured load on each site before the first round")
	flag.IntVar(&o.conns, "c", 50, "concurrent connections")
	flag.IntVar(&o.threads, "t", 1, "wrk threads")
	flag.IntVar(&o.users, "users", 10000, "subjects connected through site c; every site's load rotates over them")
	flag.StringVar(&o.loader, "loader", "auto", "load generator: wrk, go, or auto (wrk when installed)")
	flag.StringVar(&o.path, "path", "/api/v1/categories", "request path")
	flag.IntVar(&o.instructions, "instructions", 0, "instead of load: run Caddy under valgrind's callgrind and count the instructions of this many requests per site and round")
	flag.BoolVar(&o.keep, "keep", false, "leave the work directory (Caddyfile, Caddy's log, callgrind dumps) and print its path")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-e2e:", err)
		os.Exit(1)
	}
}

// site is one of the configurations under load.
type site struct {
	name, desc string
	base       string // scheme and host
	url        string // base + the request path
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
	// cpu is the Caddy process's CPU time per request proxied, in
	// microseconds; NaN when it cannot be measured.
	cpu float64
}

// subjects returns user-0 … user-(n-1).
func subjects(n int) []string {
	s := make([]string, n)
	for i := range s {
		s[i] = "user-" + strconv.Itoa(i)
	}
	return s
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.rounds < 1 || o.duration < time.Second || o.conns < 1 || o.threads < 1 || o.users < 1 {
		return errors.New("want -rounds ≥ 1, -duration ≥ 1s, -c ≥ 1, -t ≥ 1, -users ≥ 1")
	}
	caddyBin, err := filepath.Abs(o.caddy)
	if err != nil {
		return err
	}
	if _, err := os.Stat(caddyBin); err != nil {
		return fmt.Errorf("%w (build it with `make caddy`)", err)
	}
	dir, err := os.MkdirTemp("", "tokengate-bench-e2e-")
	if err != nil {
		return err
	}
	if o.keep {
		defer fmt.Fprintln(out, "work directory left in", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	load, loaderName, err := pickLoader(o, dir)
	if err != nil {
		return err
	}

	fake := tasknationtest.NewServer(tasknationtest.Options{})
	defer fake.Close()
	up, err := startUpstream()
	if err != nil {
		return err
	}
	defer up.close()

	portA, portB, portC, portD := freePort(), freePort(), freePort(), freePort()
	if portA == "" || portB == "" || portC == "" || portD == "" {
		return errors.New("no free loopback port")
	}
	hostC := "http://127.0.0.1:" + portC
	fake.AddRedirectURI(tasknationtest.DefaultClientID, hostC+"/oauth2/callback")
	cfg := caddyfile(dir, fake.TokenURL(), fake.AuthURL(), up.addr, portA, portB, portC, portD)
	cfgPath := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		return err
	}
	newSite := func(name, desc, port string, kind tokenKind) *site {
		base := "http://127.0.0.1:" + port
		return &site{name: name, desc: desc, base: base, url: base + o.path, kind: kind}
	}
	a := newSite("a", "oauth2_token (client_credentials) + reverse_proxy", portA, kindGate)
	b := newSite("b", "static header_up Authorization + reverse_proxy", portB, kindStatic)
	c := newSite("c", "request_header + oauth2_token (user) + reverse_proxy", portC, kindGate)
	d := newSite("d", "request_header + static header_up + reverse_proxy", portD, kindStatic)

	version := "unknown version"
	if v, err := exec.Command(caddyBin, "version").Output(); err == nil && len(bytes.Fields(v)) > 0 {
		version = string(bytes.Fields(v)[0])
	}
	fmt.Fprintf(out, "bench-e2e: %s (Caddy %s), load from %s over %d subjects, %d rounds × %s per site, rotating\n",
		o.caddy, version, loaderName, o.users, o.rounds, o.duration)
	fmt.Fprintf(out, "  a: %s\n  b: %s\n  c: %s\n  d: %s\n  upstream: Go HTTP server on %s (200 to any Bearer request)\n",
		a.desc, b.desc, c.desc, d.desc, up.addr)

	// (c) answers nothing but errors until its subjects connect: (a) and
	// (b) tell when Caddy is up.
	var wrap, env []string
	ready := 30 * time.Second
	if o.instructions > 0 {
		if wrap, env, err = callgrindWrap(dir); err != nil {
			return err
		}
		ready = 5 * time.Minute // valgrind runs Caddy ~50 times slower
		fmt.Fprintf(out, "  instructions: Caddy under callgrind, %d requests per site and round, one connection\n", o.instructions)
	}
	stopCaddy, pid, err := startCaddy(ctx, caddyBin, cfgPath, filepath.Join(dir, "caddy.log"), []*site{a, b, d}, up, wrap, env, ready)
	if err != nil {
		return err
	}
	defer stopCaddy()
	cpu := newCPUMeter(pid)
	fmt.Fprintf(out, "  Caddy CPU: %s\n\n", cpu.desc)

	users := subjects(o.users)
	codesBefore := fake.TokenRequests(tasknationtest.GrantAuthorizationCode)
	took, err := connectUsers(ctx, c.base, users, connectWorkers)
	if err != nil {
		return fmt.Errorf("connecting the subjects through site c: %w", err)
	}
	if n := fake.TokenRequests(tasknationtest.GrantAuthorizationCode) - codesBefore; n != int64(len(users)) {
		return fmt.Errorf("the connects made %d authorization_code grants, want %d", n, len(users))
	}
	fmt.Fprintf(out, "connected %d subjects through c in %s (%d workers, %.0f connects/s)\n",
		len(users), took.Round(10*time.Millisecond), connectWorkers, float64(len(users))/took.Seconds())
	if err := spotCheck(c, up, users); err != nil {
		return fmt.Errorf("site c: %w", err)
	}
	fmt.Fprintln(out)
	if o.instructions > 0 {
		return measureInstructions(ctx, out, o, &counter{pid: pid, dir: dir}, []*site{a, b, c, d}, b, [][2]*site{{c, d}}, users, up)
	}

	// One run: load the site, then check that every request the upstream
	// saw carried this site's kind of token and that none failed.
	measure := func(s *site, d time.Duration, round int) (result, error) {
		up.reset()
		cpu0, cpuOK := cpu.read()
		lr, err := load(ctx, s.url, d)
		if err != nil {
			return result{}, fmt.Errorf("site %s: %w", s.name, err)
		}
		up.settle() // requests cut off at the end may still reach the upstream
		cpu1, cpuOK1 := cpu.read()
		if lr.failed > 0 {
			return result{}, fmt.Errorf("site %s: %d of %d requests failed or were not 200", s.name, lr.failed, lr.requests)
		}
		seen := up.counts()
		if seen[s.kind] == 0 || seen[s.kind] != seen.total() {
			return result{}, fmt.Errorf("site %s: the upstream saw %v, want only %s tokens", s.name, seen, s.kind)
		}
		if seen.total() < lr.requests {
			return result{}, fmt.Errorf("site %s: %d requests answered 200, the upstream saw only %d", s.name, lr.requests, seen.total())
		}
		res := result{round: round, site: s, rps: lr.rps, p99: lr.p99, requests: lr.requests, cpu: math.NaN()}
		if cpuOK && cpuOK1 {
			res.cpu = cpuPerRequest(cpu1-cpu0, seen.total())
		}
		return res, nil
	}

	sites := []*site{a, b, c, d}
	for _, s := range sites {
		if _, err := measure(s, o.warmup, 0); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	// Every token lasts an hour: from here on (a) and (c) inject tokens
	// they hold.
	grants := []string{tasknationtest.GrantClientCredentials, tasknationtest.GrantAuthorizationCode, tasknationtest.GrantRefreshToken}
	tokensBefore := map[string]int64{"": fake.TokenRequests("")}
	for _, g := range grants {
		tokensBefore[g] = fake.TokenRequests(g)
	}

	var results []result
	fmt.Fprintf(out, runRow, "round", "site", "req/s", "p99", "requests", "CPU µs/req")
	for r := 1; r <= o.rounds; r++ {
		for _, s := range roundOrder(sites, r) {
			if err := ctx.Err(); err != nil {
				return err
			}
			res, err := measure(s, o.duration, r)
			if err != nil {
				return fmt.Errorf("round %d: %w", r, err)
			}
			results = append(results, res)
			fmt.Fprintf(out, runRow, strconv.Itoa(r), s.name, fmt.Sprintf("%.0f", res.rps), fmtDur(res.p99),
				strconv.FormatInt(res.requests, 10), fmtCPU(res.cpu))
		}
	}
	for _, g := range grants {
		if n := fake.TokenRequests(g) - tokensBefore[g]; n != 0 {
			who := "c"
			if g == tasknationtest.GrantClientCredentials {
				who = "a"
			}
			return fmt.Errorf("site %s made %d %s token requests during the measured rounds, want 0 (one token lasts an hour)", who, n, g)
		}
	}
	if n := fake.TokenRequests("") - tokensBefore[""]; n != 0 {
		return fmt.Errorf("%d token requests during the measured rounds, want 0 (one token lasts an hour)", n)
	}

	report(out, results, b, []comparison{
		{s: a, minRPS: targetApp, maxCPU: targetAppCPU},
		{s: c, minRPS: targetUser},
		{s: c, base: d},
	}, sites)
	return nil
}

const runRow = "%5s  %4s  %8s  %9s  %9s  %10s\n"

// roundOrder rotates the sites by round: abc, bca, cab, abc, …, so that
// each site runs first, second and last equally often.
func roundOrder(sites []*site, round int) []*site {
	k := (round - 1) % len(sites)
	return append(slices.Clone(sites[k:]), sites[:k]...)
}

// comparison is a site measured against the baseline, with its targets
// (0: none).
type comparison struct {
	s      *site
	base   *site   // nil: report's base
	minRPS float64 // throughput ratio to the baseline, at least (0: no target)
	maxCPU float64 // CPU-per-request ratio to the baseline, at most (0: no target)
}

// siteMedians picks s's runs out of results and returns the median
// throughput, p99 and CPU per request (NaN if any run lacks it).
func siteMedians(results []result, s *site) (rps float64, p99 time.Duration, cpu float64, n int) {
	var rs, cs []float64
	var ps []time.Duration
	for _, r := range results {
		if r.site == s {
			rs, ps, cs = append(rs, r.rps), append(ps, r.p99), append(cs, r.cpu)
		}
	}
	return median(rs), medianDur(ps), median(cs), len(rs)
}

// pairedRatios returns, round by round, num's value over den's value in
// the same round: the two ran back to back, so a drift of the machine
// cancels out of each ratio. Rounds missing either site are skipped.
func pairedRatios(results []result, num, den *site, val func(result) float64) (rounds []int, ratios []float64) {
	dens := map[int]float64{}
	for _, r := range results {
		if r.site == den {
			dens[r.round] = val(r)
		}
	}
	for _, r := range results {
		if d, ok := dens[r.round]; ok && r.site == num {
			rounds, ratios = append(rounds, r.round), append(ratios, val(r)/d)
		}
	}
	return rounds, ratios
}

func rpsOf(r result) float64 { return r.rps }
func cpuOf(r result) float64 { return r.cpu }

// report prints the medians per site, the per-round ratios, and the
// ratios of each compared site to the baseline with their targets.
func report(out io.Writer, results []result, base *site, cmps []comparison, sites []*site) {
	for i := range cmps {
		if cmps[i].base == nil {
			cmps[i].base = base
		}
	}
	type med struct {
		rps, cpu float64
		p99      time.Duration
	}
	meds := map[*site]med{}
	rounds := 0
	for _, r := range results {
		rounds = max(rounds, r.round)
	}
	fmt.Fprintf(out, "\nmedians over %d rounds:\n", rounds)
	for _, s := range sites {
		rps, p99, cpu, _ := siteMedians(results, s)
		meds[s] = med{rps, cpu, p99}
		fmt.Fprintf(out, "  %s %-52s %8.0f req/s   p99 %8s   Caddy CPU %s µs/req\n", s.name, s.desc, rps, fmtDur(p99), fmtCPU(cpu))
	}

	// The per-round ratios, one column per compared site and measure.
	type column struct {
		head   string
		rounds []int
		ratios []float64
	}
	var cols []column
	for _, m := range []struct {
		name string
		val  func(result) float64
	}{{"req/s", rpsOf}, {"CPU/req", cpuOf}} {
		for _, c := range cmps {
			rs, xs := pairedRatios(results, c.s, c.base, m.val)
			cols = append(cols, column{fmt.Sprintf("%s/%s %s", c.s.name, c.base.name, m.name), rs, xs})
		}
	}
	fmt.Fprintf(out, "\nper-round ratios (same round, back to back):\n%5s", "round")
	for _, c := range cols {
		fmt.Fprintf(out, "  %11s", c.head)
	}
	fmt.Fprintln(out)
	for r := 1; r <= rounds; r++ {
		fmt.Fprintf(out, "%5d", r)
		for _, c := range cols {
			v := "-"
			if i := slices.Index(c.rounds, r); i >= 0 {
				v = fmtRatio(c.ratios[i])
			}
			fmt.Fprintf(out, "  %11s", v)
		}
		fmt.Fprintln(out)
	}

	fmt.Fprintln(out)
	for _, c := range cmps {
		_, xs := pairedRatios(results, c.s, c.base, rpsOf)
		ratio := meds[c.s].rps / meds[c.base].rps
		line := fmt.Sprintf("throughput %s/%s: %s (of the medians; per-round median %s, range %s)",
			c.s.name, c.base.name, fmtRatio(ratio), fmtRatio(median(xs)), fmtRange(xs))
		if c.minRPS > 0 {
			line += fmt.Sprintf("; target ≥ %.2f: %s", c.minRPS, verdict(ratio >= c.minRPS))
		}
		fmt.Fprintln(out, line)
	}
	for _, c := range cmps {
		_, xs := pairedRatios(results, c.s, c.base, cpuOf)
		ratio := meds[c.s].cpu / meds[c.base].cpu
		line := fmt.Sprintf("Caddy CPU per request %s/%s: %s (of the medians; per-round median %s, range %s)",
			c.s.name, c.base.name, fmtRatio(ratio), fmtRatio(median(xs)), fmtRange(xs))
		switch {
		case c.maxCPU == 0:
		case math.IsNaN(ratio):
			line += fmt.Sprintf("; target ≤ %.2f: n/a", c.maxCPU)
		default:
			line += fmt.Sprintf("; target ≤ %.2f: %s", c.maxCPU, verdict(ratio <= c.maxCPU))
		}
		fmt.Fprintln(out, line)
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func fmtRatio(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "n/a"
	}
	return fmt.Sprintf("%.3f", x)
}

func fmtRange(xs []float64) string {
	if len(xs) == 0 || slices.ContainsFunc(xs, math.IsNaN) {
		return "n/a"
	}
	return fmtRatio(slices.Min(xs)) + "–" + fmtRatio(slices.Max(xs))
}

// caddyfile is the config of the three sites, identical but for the auth.
func caddyfile(dir, tokenURL, authURL, upstream, portA, portB, portC, portD string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	storage file_system %[1]q
	log {
		level ERROR
	}
}

# (a) the module under test, application context
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

# (c) the module under test, user context. request_header stands for the
# login in front of the module (forward_auth or basic_auth) that sets a
# trusted subject header: here it copies the load generator's %[11]s,
# which names one of the connected subjects, into %[12]s, which the module
# reads. oauth2_token orders itself after request_header, so no route is
# needed (a route compiles its handler chain on every request).
http://:%[8]s {
	bind 127.0.0.1
	request_header %[12]s {http.request.header.%[11]s}
	oauth2_token {
		grant authorization_code
		token_url %[2]s
		auth_url %[9]s
		client_id %[5]s
		client_secret {env.TASKNATION_CLIENT_SECRET}
		user {http.request.header.%[12]s}
		redirect_uri http://127.0.0.1:%[8]s/oauth2/callback
		store memory
		scopes %[10]s
	}
	reverse_proxy %[3]s {
		header_up Host {upstream_hostport}
	}
}

# (d) the baseline of (c): the same handler in front and a constant token,
# so that c/d is what the module costs in the user context.
http://:%[13]s {
	bind 127.0.0.1
	request_header %[12]s {http.request.header.%[11]s}
	reverse_proxy %[3]s {
		header_up Host {upstream_hostport}
		header_up Authorization "Bearer %[7]s"
	}
}
`, filepath.Join(dir, "storage"), tokenURL, upstream, portA, tasknationtest.DefaultClientID, portB, staticToken,
		portC, authURL, userScopes, subjectHeader, trustedHeader, portD)
}

// startCaddy runs caddy with the config and waits until the sites answer
// 200 through to the upstream. It returns a function that stops it, and
// its process id.
func startCaddy(ctx context.Context, bin, cfgPath, logPath string, sites []*site, up *upstream,
	wrap, env []string, ready time.Duration) (stop func(), pid int, err error) {
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, 0, err
	}
	argv := append(append(slices.Clone(wrap), bin), "run", "--config", cfgPath, "--adapter", "caddyfile")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append(os.Environ(), env...), "TASKNATION_CLIENT_SECRET="+tasknationtest.DefaultClientSecret)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, 0, err
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
	fail := func(err error) (func(), int, error) {
		stop()
		logText, _ := os.ReadFile(logPath)
		return nil, 0, fmt.Errorf("%w\ncaddy log:\n%s", err, logText)
	}

	client := &http.Client{Timeout: max(2*time.Second, ready/10)}
	deadline := time.Now().Add(ready)
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
				return fail(fmt.Errorf("caddy not ready after %s: %v", ready, err))
			}
		}
	}
	return stop, cmd.Process.Pid, nil
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

// A loader loads url for d, each request naming the next subject
// round-robin in the X-Bench-User header.
type loader func(ctx context.Context, url string, d time.Duration) (loadResult, error)

func pickLoader(o options, dir string) (loader, string, error) {
	wrk, lookErr := exec.LookPath("wrk")
	switch {
	case o.loader == "wrk" && lookErr != nil:
		return nil, "", fmt.Errorf("-loader wrk: %w", lookErr)
	case o.loader == "wrk" || o.loader == "auto" && lookErr == nil:
		script := filepath.Join(dir, "subjects.lua")
		if err := os.WriteFile(script, []byte(wrkScript(o.users)), 0o600); err != nil {
			return nil, "", err
		}
		return wrkLoader(wrk, o.threads, o.conns, script), fmt.Sprintf("wrk -t%d -c%d", o.threads, o.conns), nil
	case o.loader == "go":
		return goLoader(o.conns, subjects(o.users)), fmt.Sprintf("the Go load generator, %d connections,", o.conns), nil
	case o.loader == "auto":
		return goLoader(o.conns, subjects(o.users)), fmt.Sprintf("the Go load generator, %d connections (wrk not installed),", o.conns), nil
	default:
		return nil, "", fmt.Errorf("-loader %q: want wrk, go or auto", o.loader)
	}
}

// wrkScript is the wrk Lua script that names subject user-0 … user-(n-1)
// round-robin, one per request, in X-Bench-User. The requests are built
// once, in init; request() only hands out the next, so that rotating the
// subject costs wrk little and the same on every site. Each wrk thread
// runs its own copy, starting at user-0.
func wrkScript(n int) string {
	return fmt.Sprintf(`-- written by bench-e2e: one subject per request, round-robin
local n = %d
local requests = {}
local cursor = 0

function init(args)
	for i = 0, n - 1 do
		requests[i] = wrk.format(nil, nil, {[%q] = "user-" .. i})
	end
end

function request()
	local r = requests[cursor]
	cursor = (cursor + 1) %% n
	return r
end
`, n, subjectHeader)
}

var (
	wrkRPS      = regexp.MustCompile(`(?m)^Requests/sec:\s+([0-9.]+)`)
	wrkP99      = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s)\b`)
	wrkRequests = regexp.MustCompile(`(?m)^\s+(\d+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`(?m)Non-2xx or 3xx responses:\s+(\d+)`)
	wrkSocket   = regexp.MustCompile(`(?m)Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
)

// wrkLoader runs wrk with the subject script and latency statistics and
// parses its report.
func wrkLoader(bin string, threads, conns int, script string) loader {
	return func(ctx context.Context, url string, d time.Duration) (loadResult, error) {
		secs := max(1, int(d.Round(time.Second)/time.Second))
		cmd := exec.CommandContext(ctx, bin, "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns),
			"-d"+strconv.Itoa(secs)+"s", "--latency", "-s", script, url)
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
// for d, and records every latency. Requests name the subjects
// round-robin, shared by all connections, like wrk's script.
func goLoader(conns int, users []string) loader {
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
			next      atomic.Uint64
			wg        sync.WaitGroup
		)
		start := time.Now()
		for range conns {
			wg.Go(func() {
				local := make([]time.Duration, 0, 1<<14)
				for ctx.Err() == nil {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
					req.Header[subjectHeader] = []string{users[(next.Add(1)-1)%uint64(len(users))]}
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

// median is NaN for no values or when one is NaN.
func median(xs []float64) float64 {
	if len(xs) == 0 || slices.ContainsFunc(xs, math.IsNaN) {
		return math.NaN()
	}
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

// fmtCPU formats microseconds per request; n/a for NaN.
func fmtCPU(us float64) string {
	if math.IsNaN(us) {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", us)
}
