package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// These tests run a real Caddy in this process. Caddy's running config is
// global, so they must not call t.Parallel.

const (
	// clientJunk is what a client sends in its own Authorization header:
	// the fake API answers 401 to it, so a 200 proves the gateway replaced it.
	clientJunk = "Bearer client-junk"
	// accessTokenMark starts every access token the fake issues.
	accessTokenMark = tasknationtest.AccessTokenPrefix
	// waitFor bounds every poll.
	waitFor = 15 * time.Second
)

// gateway is one Caddy instance in front of a fake TaskNation server, on
// free loopback ports.
type gateway struct {
	t         *testing.T
	fake      *tasknationtest.Server
	adminAddr string // host:port of the admin API
	httpPort  int
	httpsPort int
	dir       string // storage, logs and secret files
	client    *http.Client
}

// isolate gives the test its own temp dir with Caddy's data and config
// directories in it, and puts the fake's client credentials in the
// environment, for {env.*} placeholders. It returns the dir.
func isolate(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Setenv("XDG_DATA_HOME", filepath.Join(dir, "data"))
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "config"))
	t.Setenv("TN_CLIENT_ID", tasknationtest.DefaultClientID)
	t.Setenv("TN_CLIENT_SECRET", tasknationtest.DefaultClientSecret)
	return dir
}

// newGateway starts a fake TaskNation server and prepares (but does not
// load) a Caddy config around it. The client credentials are in the
// environment only, for {env.*} placeholders.
func newGateway(t *testing.T) *gateway {
	t.Helper()
	fake := tasknationtest.NewServer(tasknationtest.Options{})
	t.Cleanup(fake.Close)
	dir := isolate(t)
	ports := freePorts(t, 3)
	g := &gateway{
		t:         t,
		fake:      fake,
		adminAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]),
		httpPort:  ports[1],
		httpsPort: ports[2],
		dir:       dir,
		// No keep-alives: after a reload a pooled connection may belong
		// to the server being shut down.
		client: &http.Client{
			Timeout:   waitFor,
			Transport: &http.Transport{DisableKeepAlives: true},
		},
	}
	logCaddyTo(t)
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Errorf("stopping caddy: %v", err)
		}
	})
	return g
}

// global is the global options of g's Caddy, its default log in logFile
// ("": the test's t.Log) at level ("": INFO).
func (g *gateway) global(logFile, level string) caddyGlobal {
	return caddyGlobal{admin: g.adminAddr, httpPort: g.httpPort, httpsPort: g.httpsPort,
		storage: filepath.Join(g.dir, "storage"), logFile: logFile, logLevel: level}
}

// freePorts returns n distinct loopback TCP ports that were free a moment
// ago: all n are held open until the last is found, so none repeats.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports
}

// siteOptions vary the Caddyfile between tests and reloads.
type siteOptions struct {
	scopes string // the scopes subdirective's arguments
	extra  string // more lines inside the oauth2_token block
	site   string // more directives in the site block
	log    string // a file for Caddy's default log, at DEBUG; "": the test's t.Log
}

// caddyfile is the gateway config: reverse_proxy written before
// oauth2_token on purpose (the directive orders itself).
func (g *gateway) caddyfile(o siteOptions) string {
	if o.scopes == "" {
		o.scopes = "demand::categories"
	}
	if o.site != "" && !strings.HasSuffix(o.site, "\n") {
		o.site += "\n"
	}
	var level string
	if o.log != "" {
		level = "DEBUG"
	}
	return testCaddyfile(g.global(o.log, level), g.httpPort, fmt.Sprintf(`	reverse_proxy %s
	oauth2_token {
		token_url %s
		client_id {env.TN_CLIENT_ID}
		client_secret {env.TN_CLIENT_SECRET}
		scopes %s
%s	}
%s`, g.fake.URL, g.fake.TokenURL(), o.scopes, o.extra, o.site))
}

// loadCaddyfile adapts cfg and runs it, as `caddy run` would.
func (g *gateway) loadCaddyfile(cfg string) {
	g.t.Helper()
	out, warnings, err := adapt(cfg)
	if err != nil {
		g.t.Fatalf("adapting the Caddyfile: %v\n%s", err, cfg)
	}
	for _, w := range warnings {
		g.t.Logf("adapt warning: %s:%d: %s", w.File, w.Line, w.Message)
	}
	if err := caddy.Load(out, true); err != nil {
		g.t.Fatalf("loading the config: %v", err)
	}
}

// reload posts cfg to the admin API's /load endpoint.
func (g *gateway) reload(contentType, cfg string) {
	g.t.Helper()
	resp, err := g.client.Post("http://"+g.adminAddr+"/load", contentType, strings.NewReader(cfg))
	if err != nil {
		g.t.Fatalf("POST /load: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		g.t.Fatalf("POST /load: %s: %s", resp.Status, body)
	}
}

// awaitConfig waits until the API answers through a config that sets
// X-Config: want (a reload takes effect asynchronously).
func (g *gateway) awaitConfig(want string) {
	g.t.Helper()
	eventually(g.t, "the reloaded config answers", func() error {
		r, err := g.get("/api/v1/categories")
		if err != nil {
			return err
		}
		if got := r.header.Get("X-Config"); got != want {
			return fmt.Errorf("X-Config = %q, want %s", got, want)
		}
		_, err = r.apiResponse("/api/v1/categories")
		return err
	})
}

// result is a response read in full.
type result struct {
	status int
	header http.Header
	body   []byte
}

// get sends GET path through Caddy with the client's junk bearer token.
func (g *gateway) get(path string) (result, error) {
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", g.httpPort, path), nil)
	if err != nil {
		return result{}, err
	}
	req.Header.Set("Authorization", clientJunk)
	resp, err := g.client.Do(req)
	if errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.EOF) {
		// Right after a reload, the server being replaced may still
		// accept a connection on the listener the two share, then close
		// it: the GET never reached a handler; a client sends it again.
		resp, err = g.client.Do(req)
	}
	if err != nil {
		return result{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return result{status: resp.StatusCode, header: resp.Header, body: body}, err
}

// mustGetAPI gets path and checks that the fake API answered it for the
// default client; it returns the API's answer.
func (g *gateway) mustGetAPI(path string) (tasknationtest.APIResponse, result) {
	g.t.Helper()
	r, err := g.get(path)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	api, err := r.apiResponse(path)
	if err != nil {
		g.t.Fatalf("GET %s: %v", path, err)
	}
	return api, r
}

// apiResponse checks that r is the fake API's 200 for path and decodes it.
func (r result) apiResponse(path string) (tasknationtest.APIResponse, error) {
	var api tasknationtest.APIResponse
	if r.status != http.StatusOK {
		return api, fmt.Errorf("status %d, want 200 from the fake API; body: %s", r.status, r.body)
	}
	if err := json.Unmarshal(r.body, &api); err != nil {
		return api, fmt.Errorf("decoding the API answer: %v; body: %s", err, r.body)
	}
	if !api.OK || api.Path != path || api.ClientID != tasknationtest.DefaultClientID {
		return api, fmt.Errorf("API answer %+v, want ok for %s and client %s", api, path, tasknationtest.DefaultClientID)
	}
	return api, nil
}

// leaks reports where r shows an access token or the client secret.
func (r result) leaks() []string {
	var where []string
	for k, vs := range r.header {
		for _, v := range vs {
			if strings.Contains(v, accessTokenMark) || strings.Contains(v, tasknationtest.DefaultClientSecret) {
				where = append(where, "header "+k)
			}
		}
	}
	if bytes.Contains(r.body, []byte(accessTokenMark)) || bytes.Contains(r.body, []byte(tasknationtest.DefaultClientSecret)) {
		where = append(where, "body")
	}
	return where
}

func (g *gateway) tokenRequests() int64 {
	return g.fake.TokenRequests(tasknationtest.GrantClientCredentials)
}

// eventually calls f until it succeeds or waitFor has passed.
func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still failing after %v: %v", what, waitFor, err)
		}
		<-tick.C
	}
}

func TestCaddyfile_InjectsGatewayToken(t *testing.T) {
	g := newGateway(t)
	logFile := filepath.Join(g.dir, "caddy.log")
	g.loadCaddyfile(g.caddyfile(siteOptions{log: logFile}))

	// A cold cache and a burst: every request waits on one token request.
	const burst = 100
	const path = "/api/v1/categories"
	results := make([]result, burst)
	errs := make([]error, burst)
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() { results[i], errs[i] = g.get(path) })
	}
	wg.Wait()
	for i := range burst {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		api, err := results[i].apiResponse(path)
		if err != nil {
			// The fake answers 401 to the client's junk token: a 200
			// means the upstream saw the gateway's token instead.
			t.Fatalf("request %d: %v", i, err)
		}
		if api.Scope != "demand::categories" {
			t.Errorf("request %d: the token's scope is %q, want demand::categories", i, api.Scope)
		}
		if where := results[i].leaks(); len(where) > 0 {
			t.Errorf("request %d: the client saw an access token or the secret in %v", i, where)
		}
	}
	if n := g.tokenRequests(); n != 1 {
		t.Errorf("a burst of %d requests on a cold cache made %d token requests, want 1", burst, n)
	}
	if n := g.fake.APIRequests(); n != burst {
		t.Errorf("the fake API saw %d requests, want %d", n, burst)
	}

	// Nothing logged a secret or a token, at DEBUG level either. Stop
	// Caddy first so that the log is complete.
	logs := stoppedLog(t, logFile)
	for _, secret := range []string{tasknationtest.DefaultClientSecret, accessTokenMark, "client-junk"} {
		if bytes.Contains(logs, []byte(secret)) {
			t.Errorf("the log contains %q", secret)
		}
	}
}

// stoppedLog stops Caddy, so that its log is complete, and returns the
// log file, which must have lines of the oauth2_token module.
func stoppedLog(t *testing.T, logFile string) []byte {
	t.Helper()
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, []byte("http.handlers.oauth2_token")) {
		t.Fatalf("the log has no line of the oauth2_token module; is it the right file?\n%s", logs)
	}
	return logs
}

func TestAdminReload_KeepsTokenUnlessClientChanges(t *testing.T) {
	g := newGateway(t)
	g.loadCaddyfile(g.caddyfile(siteOptions{site: "\theader X-Config first"}))
	if _, r := g.mustGetAPI("/api/v1/categories"); r.header.Get("X-Config") != "first" {
		t.Fatalf("X-Config = %q, want first", r.header.Get("X-Config"))
	}
	if n := g.tokenRequests(); n != 1 {
		t.Fatalf("token requests after the first call = %d, want 1", n)
	}

	// The same client, another route and header: the token is kept.
	g.reload("text/caddyfile", g.caddyfile(siteOptions{
		site: "\theader X-Config second\n\trespond /healthz 204",
	}))
	g.awaitConfig("second")
	if r, err := g.get("/healthz"); err != nil || r.status != http.StatusNoContent {
		t.Errorf("GET /healthz after the reload: %v, status %d, want 204 from the new route", err, r.status)
	}
	if n := g.tokenRequests(); n != 1 {
		t.Errorf("token requests after reloading the same client = %d, want still 1", n)
	}

	// Other scopes: another token source, one new token. This time the
	// admin API gets JSON, as `caddy reload` sends it.
	cfg, _, err := adapt(g.caddyfile(siteOptions{
		scopes: "demand::categories demand::search",
		site:   "\theader X-Config third",
	}))
	if err != nil {
		t.Fatal(err)
	}
	g.reload("application/json", string(cfg))
	eventually(t, "the config with new scopes answers", func() error {
		r, err := g.get("/api/v1/search")
		if err != nil {
			return err
		}
		if got := r.header.Get("X-Config"); got != "third" {
			return fmt.Errorf("X-Config = %q, want third", got)
		}
		api, err := r.apiResponse("/api/v1/search")
		if err != nil {
			return err
		}
		if api.Scope != "demand::categories demand::search" {
			return fmt.Errorf("token scope %q, want demand::categories demand::search", api.Scope)
		}
		return nil
	})
	g.mustGetAPI("/api/v1/categories")
	if n := g.tokenRequests(); n != 2 {
		t.Errorf("token requests after changing the scopes = %d, want 2 (exactly one new token)", n)
	}
}

// gatewayJSON is a config written by hand, not adapted: the JSON field
// names are an interface of their own. The secret comes from a file;
// durations are written as people write them ("5s"), which
// caddy.Duration reads as well as nanoseconds.
const gatewayJSON = `{
	"admin": {"listen": "%[1]s", "config": {"persist": false}},
	"storage": {"module": "file_system", "root": %[2]q},
	"logging": {"logs": {"default": {"writer": {"output": "test_log"}, "encoder": {"format": "console", "level_format": "upper"}}}},
	"apps": {
		"http": {
			"http_port": %[3]d,
			"servers": {
				"gateway": {
					"listen": ["127.0.0.1:%[3]d"],
					"automatic_https": {"disable": true},
					"routes": [{
						"match": [{"path": ["/api/*"]}],
						"handle": [
							{
								"handler": "oauth2_token",
								"provider": "tasknation",
								"token_url": %[4]q,
								"client_id": "{env.TN_CLIENT_ID}",
								"client_secret": "{file.%[5]s}",
								"scopes": ["demand::categories"],
								"request_timeout": "5s",
								"refresh_window": 0.25,
								"min_backoff": "100ms",
								"max_backoff": 10000000000,
								"store": {"kind": "memory"}
							},
							{
								"handler": "reverse_proxy",
								"upstreams": [{"dial": %[6]q}]
							}
						]
					}]
				}
			}
		}
	}
}`

func TestJSONConfig(t *testing.T) {
	g := newGateway(t)
	secretFile := filepath.Join(g.dir, "tn-secret")
	// A trailing newline, as editors and `echo` leave it.
	if err := os.WriteFile(secretFile, []byte(tasknationtest.DefaultClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(gatewayJSON, g.adminAddr, filepath.Join(g.dir, "storage"), g.httpPort,
		g.fake.TokenURL(), secretFile, strings.TrimPrefix(g.fake.URL, "http://"))
	if !json.Valid([]byte(cfg)) {
		t.Fatalf("the test's JSON config is not valid JSON:\n%s", cfg)
	}
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatalf("loading the JSON config: %v", err)
	}
	for range 3 {
		api, r := g.mustGetAPI("/api/v1/categories")
		if api.Scope != "demand::categories" {
			t.Errorf("token scope %q, want demand::categories", api.Scope)
		}
		if where := r.leaks(); len(where) > 0 {
			t.Errorf("the client saw an access token or the secret in %v", where)
		}
	}
	if n := g.tokenRequests(); n != 1 {
		t.Errorf("token requests for 3 calls = %d, want 1", n)
	}
}

func TestMissingEnvPlaceholder_FailsLoad(t *testing.T) {
	g := newGateway(t)
	t.Setenv("TN_UNSET_X", "")
	os.Unsetenv("TN_UNSET_X") // t.Setenv restores it afterwards
	cfg := strings.Replace(g.caddyfile(siteOptions{}), "{env.TN_CLIENT_SECRET}", "{env.TN_UNSET_X}", 1)
	out, _, err := adapt(cfg)
	if err != nil {
		t.Fatalf("adapting: %v (placeholders are resolved at load, not at adapt)", err)
	}
	err = caddy.Load(out, true)
	if err == nil {
		t.Fatal("loading a config whose client_secret placeholder is unset succeeded")
	}
	msg := err.Error()
	for _, want := range []string{"client_secret", "TN_UNSET_X"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not name %q: %s", want, msg)
		}
	}
	// $TN_CLIENT_SECRET is set (to the real secret) but this config does
	// not use it; no secret may appear in any case.
	for _, secret := range []string{tasknationtest.DefaultClientSecret, accessTokenMark} {
		if strings.Contains(msg, secret) {
			t.Errorf("the error contains %q: %s", secret, msg)
		}
	}
	if n := g.tokenRequests(); n != 0 {
		t.Errorf("a config that failed to load made %d token requests", n)
	}
}

// TestLiteralSecretWithBraces_NotEchoed writes a client secret in clear in
// the Caddyfile, as the syntax allows, with braces in it. The config may
// take the secret literally (then it must work) or refuse it (then the
// error, which Caddy also logs and returns from the admin API, must name
// client_secret and show no part of the secret).
func TestLiteralSecretWithBraces_NotEchoed(t *testing.T) {
	g := newGateway(t)
	const (
		clientID = "brace-client"
		fragment = "k3yP4rt"
		secret   = "Zq8{" + fragment + "}w"
	)
	g.fake.AddClient(tasknationtest.Client{ID: clientID, Secret: secret})
	cfg := g.caddyfile(siteOptions{})
	cfg = strings.Replace(cfg, "{env.TN_CLIENT_ID}", clientID, 1)
	cfg = strings.Replace(cfg, "{env.TN_CLIENT_SECRET}", secret, 1)
	out, _, err := adapt(cfg)
	if err != nil {
		t.Fatalf("adapting: %v", err)
	}
	if err := caddy.Load(out, true); err != nil {
		if !strings.Contains(err.Error(), "client_secret") {
			t.Errorf("the error does not name client_secret: %v", err)
		}
		if strings.Contains(err.Error(), fragment) {
			t.Errorf("the load error shows part of the literal client secret (%q): %v", fragment, err)
		}
		return
	}
	r, err := g.get("/api/v1/categories")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusOK || !bytes.Contains(r.body, []byte(`"client_id":"`+clientID+`"`)) {
		t.Errorf("the config loaded but the literal secret does not work: status %d: %s", r.status, r.body)
	}
}

func TestTokenEndpointDown_ColdCache503(t *testing.T) {
	g := newGateway(t)
	g.fake.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: http.StatusServiceUnavailable})
	g.loadCaddyfile(g.caddyfile(siteOptions{}))
	apiBefore := g.fake.APIRequests()

	r, err := g.get("/api/v1/categories")
	if err != nil {
		t.Fatal(err)
	}
	if r.status != http.StatusServiceUnavailable {
		t.Fatalf("status %d, want 503; body: %s", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	if s, err := strconv.Atoi(r.header.Get("Retry-After")); err != nil || s < 1 {
		t.Errorf("Retry-After %q, want a number of seconds >= 1", r.header.Get("Retry-After"))
	}
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("the body is not JSON: %v: %s", err, r.body)
	}
	if body.Error != "token_unavailable" {
		t.Errorf("error %q, want token_unavailable; body: %s", body.Error, r.body)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("the 503 shows an access token or the secret in %v", where)
	}
	if n := g.fake.APIRequests() - apiBefore; n != 0 {
		t.Errorf("the fake API saw %d requests; a request without a token must not be forwarded", n)
	}
	if n := g.tokenRequests(); n < 1 {
		t.Errorf("the gateway made no token request; the 503 is not the endpoint's")
	}
}

// Series the module exports on Caddy's admin /metrics.
const (
	seriesSuccess = `caddy_oauth2_token_token_requests_total{grant="client_credentials",outcome="success"}`
	seriesStatus  = `caddy_oauth2_token_token_requests_total{grant="client_credentials",outcome="status"}`
	seriesHit     = `caddy_oauth2_token_cache_lookups_total{result="hit"}`
	seriesMiss    = `caddy_oauth2_token_cache_lookups_total{result="miss"}`
	seriesRefused = `caddy_oauth2_token_requests_refused_total`
)

// metrics scrapes the admin API's /metrics.
func (g *gateway) metrics() map[string]float64 {
	g.t.Helper()
	resp, err := g.client.Get("http://" + g.adminAddr + "/metrics")
	if err != nil {
		g.t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		g.t.Fatalf("GET /metrics: %s, %v: %s", resp.Status, err, body)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "caddy_oauth2_token_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// delta is after[s] - before[s], failing when after lacks s.
func delta(t *testing.T, before, after map[string]float64, s string) float64 {
	t.Helper()
	v, ok := after[s]
	if !ok {
		t.Fatalf("/metrics has no %s; oauth2_token series: %v", s, after)
	}
	return v - before[s]
}

func TestMetrics_ExposedAndSurviveReload(t *testing.T) {
	g := newGateway(t)
	// One failed token request, then the endpoint recovers; a short
	// backoff so that the recovery does not take a second.
	g.fake.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: http.StatusServiceUnavailable, Count: 1})
	opts := siteOptions{extra: "\t\tbackoff 10ms 50ms\n", site: "\theader X-Config first"}
	g.loadCaddyfile(g.caddyfile(opts))
	before := g.metrics()
	if _, ok := before[seriesRefused]; !ok {
		t.Fatalf("/metrics has no %s before any request; oauth2_token series: %v", seriesRefused, before)
	}

	if r, err := g.get("/api/v1/categories"); err != nil || r.status != http.StatusServiceUnavailable {
		t.Fatalf("first request with the token endpoint failing: %v, status %d, want 503", err, r.status)
	}
	eventually(t, "the gateway recovers once the token endpoint does", func() error {
		r, err := g.get("/api/v1/categories")
		if err != nil {
			return err
		}
		_, err = r.apiResponse("/api/v1/categories")
		return err
	})
	g.mustGetAPI("/api/v1/categories") // a cache hit

	after := g.metrics()
	if d := delta(t, before, after, seriesSuccess); d != 1 {
		t.Errorf("%s grew by %v, want 1", seriesSuccess, d)
	}
	if d := delta(t, before, after, seriesStatus); d != 1 {
		t.Errorf("%s grew by %v, want 1", seriesStatus, d)
	}
	if d := delta(t, before, after, seriesHit); d < 1 {
		t.Errorf("%s grew by %v, want >= 1", seriesHit, d)
	}
	if d := delta(t, before, after, seriesMiss); d < 1 {
		t.Errorf("%s grew by %v, want >= 1", seriesMiss, d)
	}
	if d := delta(t, before, after, seriesRefused); d < 1 {
		t.Errorf("%s grew by %v, want >= 1", seriesRefused, d)
	}

	// A reload registers the collectors on the new config's registry: no
	// panic, the series still there, the counts carried over and still fed.
	opts.site = "\theader X-Config second"
	g.reload("text/caddyfile", g.caddyfile(opts))
	g.awaitConfig("second")
	reloaded := g.metrics()
	for _, s := range []string{seriesSuccess, seriesStatus, seriesMiss, seriesRefused} {
		if d := delta(t, after, reloaded, s); d < 0 {
			t.Errorf("%s went down by %v across the reload", s, -d)
		}
	}
	if d := delta(t, after, reloaded, seriesHit); d < 1 {
		t.Errorf("%s grew by %v after the reload, want >= 1: the reloaded handler does not feed it", seriesHit, d)
	}
	if n := g.tokenRequests(); n != 2 {
		t.Errorf("token requests = %d, want 2 (one failed, one success, none after the reload)", n)
	}
}
