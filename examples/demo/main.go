// Command demo runs tokengate the way an operator does: a real Caddy with
// the oauth2_token module, here in-process, configured from the Caddyfile
// beside this file, in front of the fake TaskNation server from
// middleware/tasknationtest, all on loopback.
//
// The program starts the fake, puts its token and authorization URLs, API
// address and client credentials in the environment ({env.*} placeholders
// in the Caddyfile), loads the Caddyfile, prints the URLs and curl commands
// to try, and runs two self-checks.
//
// The application context (client_credentials, the first site): a burst
// of concurrent requests with a client-chosen Authorization header must
// all reach the API with the gateway's token, for one token request, and
// no response may show the token.
//
// The user context (authorization_code, the second site, where basic_auth
// logs in the demo users alice and bob): alice is answered 401
// not_connected; she connects headlessly, each hop checked (connect, the
// fake's authorization endpoint, the callback); her API calls then reach
// the API as her TaskNation user; bob, who has not connected, is answered
// 401 not_connected and never gets her token. No answer may show a token,
// a code or the client secret. Her tokens are kept, sealed, in a temporary
// directory with a key made for this run; both go when the program ends.
//
// It then serves until Ctrl-C and stops Caddy.
//
// DEMO_PORT sets the port of the application-context site (default 8080,
// or a free port when 8080 is taken; 0 picks a free port); DEMO_USER_PORT
// does the same for the user-context site (default 8081) and
// DEMO_ADMIN_PORT for Caddy's admin API (default 2019). DEMO_ONESHOT=1
// exits after the self-checks with their status.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile" // the caddyfile adapter
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/tasknation/tokengate/caddymodule"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// caddyfile is examples/demo/Caddyfile, embedded so that the demo runs
// from any working directory.
//
//go:embed Caddyfile
var caddyfile []byte

// burst is the number of concurrent requests of the self-check.
const burst = 50

// The demo users of the user-context site (basic_auth in the Caddyfile:
// demo only) and the TaskNation user alice connects as in the self-check.
const (
	connectedUser     = "alice"
	connectedPassword = "alice-demo-password"
	otherUser         = "bob"
	otherPassword     = "bob-demo-password"
	tasknationUser    = "tn-alice"
)

// userAPIPath is what the users call: it needs supply::businesses.
const userAPIPath = "/api/v1/businesses/me"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run starts the fake TaskNation server and Caddy, prints how to use them,
// runs the self-checks, then serves until ctx ends, or returns after the
// self-checks when DEMO_ONESHOT=1. Caddy reads its settings from the process
// environment, so run sets the variables the Caddyfile uses and restores
// them when it returns.
func run(ctx context.Context, getenv func(string) string, out io.Writer) error {
	fake := tasknationtest.NewServer(tasknationtest.Options{})
	defer fake.Close()
	fakeURL, err := url.Parse(fake.URL)
	if err != nil {
		return err
	}

	ports, err := pickPorts(getenv, []portSetting{{"DEMO_PORT", 8080}, {"DEMO_USER_PORT", 8081}, {"DEMO_ADMIN_PORT", 2019}})
	if err != nil {
		return err
	}
	port, userPort, adminPort := ports[0], ports[1], ports[2]
	base := "http://127.0.0.1:" + port
	userBase := "http://127.0.0.1:" + userPort
	admin := "http://127.0.0.1:" + adminPort
	// The Caddyfile's redirect_uri, registered with the fake as it must be
	// with TaskNation.
	fake.AddRedirectURI(tasknationtest.DefaultClientID, userBase+"/oauth2/callback")

	// The user context keeps its tokens in a directory of this run, sealed
	// with a key of this run: nothing outlives the demo. Removed after
	// Caddy has stopped (defers run last first).
	tokenDir, err := os.MkdirTemp("", "tokengate-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tokenDir)
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}

	restore := setenv(map[string]string{
		"DEMO_PORT":                port,
		"DEMO_USER_PORT":           userPort,
		"DEMO_ADMIN_PORT":          adminPort,
		"DEMO_TOKEN_DIR":           tokenDir,
		"TOKENGATE_KEY":            base64.StdEncoding.EncodeToString(key),
		"TASKNATION_TOKEN_URL":     fake.TokenURL(),
		"TASKNATION_AUTH_URL":      fake.AuthURL(),
		"TASKNATION_API_ADDR":      fakeURL.Host,
		"TASKNATION_CLIENT_ID":     tasknationtest.DefaultClientID,
		"TASKNATION_CLIENT_SECRET": tasknationtest.DefaultClientSecret,
	})
	defer restore()

	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		return errors.New("no caddyfile config adapter registered")
	}
	cfgJSON, warnings, err := adapter.Adapt(caddyfile, map[string]any{"filename": "examples/demo/Caddyfile"})
	if err != nil {
		return fmt.Errorf("adapting the Caddyfile: %w", err)
	}
	for _, w := range warnings {
		fmt.Fprintf(out, "Caddyfile warning: %s\n", w)
	}
	if err := caddy.Load(cfgJSON, true); err != nil {
		return fmt.Errorf("starting Caddy: %w", err)
	}
	defer stopCaddy(out)

	fmt.Fprintf(out, "Fake TaskNation server (token endpoint and API): %s\n", fake.URL)
	fmt.Fprintf(out, "Caddy with oauth2_token listening on %s (examples/demo/Caddyfile), admin API on %s\n\n", base, admin)
	fmt.Fprintf(out, "Try it (Caddy adds the bearer token; your client never sees it):\n")
	fmt.Fprintf(out, "  curl -s %s/api/v1/categories\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/search\n", base)
	fmt.Fprintf(out, "  curl -s -H 'Authorization: Bearer mine' %s/api/v1/categories   # yours is replaced\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/leads        # 403: a Demand token lacks supply::leads\n", base)
	fmt.Fprintf(out, "  curl -s %s/metrics | grep '^caddy_oauth2_token'\n\n", admin)

	fmt.Fprintf(out, "User context (authorization_code) on %s: basic_auth logs in the demo users %s (password %s)\n",
		userBase, connectedUser, connectedPassword)
	fmt.Fprintf(out, "and %s (password %s); each connects their own TaskNation account, and their calls carry their own token.\n",
		otherUser, otherPassword)
	fmt.Fprintf(out, "After the self-check below %s is connected, as TaskNation user %s, and %s is not:\n", connectedUser, tasknationUser, otherUser)
	fmt.Fprintf(out, "  curl -s -u %s:%s %s%s   # the API answers as %s\n", connectedUser, connectedPassword, userBase, userAPIPath, tasknationUser)
	fmt.Fprintf(out, "  curl -s -u %s:%s %s%s       # 401 not_connected, with the connect_url\n", otherUser, otherPassword, userBase, userAPIPath)
	fmt.Fprintf(out, "  # %s connects: open %s/oauth2/connect in a browser and log in as %s. The fake has no\n", otherUser, userBase, otherUser)
	fmt.Fprintf(out, "  # consent page: it approves at once as its default user %s, as whom %s's curl then answers.\n", tasknationtest.DefaultUser, otherUser)
	fmt.Fprintf(out, "  curl -s -u %s:%s -X POST %s/oauth2/disconnect   # %s's tokens are deleted\n", connectedUser, connectedPassword, userBase, connectedUser)
	fmt.Fprintf(out, "Caddy's log, with this site's access log (code and state deleted from URLs), goes to stderr.\n\n")

	if err := selfCheck(ctx, base, fake, out); err != nil {
		return fmt.Errorf("self-check failed: %w", err)
	}
	if err := userSelfCheck(ctx, userBase, tokenDir, fake, out); err != nil {
		return fmt.Errorf("user-context self-check failed: %w", err)
	}
	if getenv("DEMO_ONESHOT") == "1" {
		return nil
	}
	fmt.Fprintln(out, "Serving until Ctrl-C.")
	<-ctx.Done()
	return nil
}

// pickPort returns the port to use for a DEMO_*PORT setting: the one
// given, a free loopback port for "0", and for "" the preferred port when
// it is free or else a free one. Between the check and Caddy binding it,
// another program could take the port; Caddy then fails to start and says so.
func pickPort(setting string, preferred int) (string, error) {
	switch setting {
	case "":
		if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(preferred))); err == nil {
			ln.Close()
			return strconv.Itoa(preferred), nil
		}
	case "0":
	default:
		if n, err := strconv.Atoi(setting); err != nil || n < 1 || n > 65535 {
			return "", fmt.Errorf("%q is not a port number", setting)
		}
		return setting, nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port), nil
}

// portSetting is a DEMO_*PORT variable and its preferred port.
type portSetting struct {
	name      string
	preferred int
}

// pickPorts picks the port of each setting (see pickPort), no two the
// same: a port picked for an earlier setting is picked again for a later
// one that did not name it, and is an error for one that did.
func pickPorts(getenv func(string) string, settings []portSetting) ([]string, error) {
	owner := map[string]string{} // port → setting
	var ports []string
	for _, s := range settings {
		setting := getenv(s.name)
		for try := 0; ; try++ {
			p, err := pickPort(setting, s.preferred)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", s.name, err)
			}
			other, dup := owner[p]
			if !dup {
				owner[p] = s.name
				ports = append(ports, p)
				break
			}
			if (setting != "" && setting != "0") || try == 10 {
				return nil, fmt.Errorf("%s: port %s is %s's", s.name, p, other)
			}
			setting = "0" // a free port, another one this time
		}
	}
	return ports, nil
}

// setenv sets the variables and returns a function that puts back what
// was there before.
func setenv(vars map[string]string) (restore func()) {
	type old struct {
		value string
		set   bool
	}
	saved := map[string]old{}
	for k, v := range vars {
		prev, ok := os.LookupEnv(k)
		saved[k] = old{prev, ok}
		os.Setenv(k, v)
	}
	return func() {
		for k, o := range saved {
			if o.set {
				os.Setenv(k, o.value)
			} else {
				os.Unsetenv(k)
			}
		}
	}
}

// stopCaddy stops the running config and the admin endpoint: caddy.Stop
// alone leaves the admin endpoint listening, so first load a config that
// disables it (and, like the demo's, persists nothing).
func stopCaddy(out io.Writer) {
	if err := caddy.Load([]byte(`{"admin":{"disabled":true,"config":{"persist":false}}}`), true); err != nil {
		fmt.Fprintln(out, "stopping Caddy:", err)
	}
	if err := caddy.Stop(); err != nil {
		fmt.Fprintln(out, "stopping Caddy:", err)
	}
}

// selfCheck sends a burst through Caddy, each request with a
// client-chosen Authorization header, and checks that every request
// reached the API with the gateway's token (the fake API answers 200 only
// to a token it issued), that the burst cost one token request, and that
// no response shows the token to the client.
func selfCheck(ctx context.Context, base string, fake *tasknationtest.Server, out io.Writer) error {
	tr := &http.Transport{MaxIdleConnsPerHost: burst}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}

	tokensBefore := fake.TokenRequests(tasknationtest.GrantClientCredentials)
	apiBefore := fake.APIRequests()
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for range burst {
		wg.Go(func() { errs <- checkOne(ctx, client, base+"/api/v1/categories") })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if n := fake.TokenRequests(tasknationtest.GrantClientCredentials) - tokensBefore; n != 1 {
		return fmt.Errorf("%d token requests for a burst of %d, want 1", n, burst)
	}
	if n := fake.APIRequests() - apiBefore; n != burst {
		return fmt.Errorf("the API saw %d requests of a burst of %d", n, burst)
	}
	fmt.Fprintf(out, "Self-check passed: %d concurrent requests through Caddy, each with a client-sent Authorization header; "+
		"1 token request; every request reached the API with the gateway's token; no response showed it.\n\n", burst)
	return nil
}

func checkOne(ctx context.Context, client *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer not-the-gateways") // must be replaced
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s answered %s", u, resp.Status)
	}
	if bytes.Contains(raw, []byte(tasknationtest.AccessTokenPrefix)) {
		return errors.New("a response body shows the access token")
	}
	for name, values := range resp.Header {
		if strings.Contains(strings.Join(values, " "), tasknationtest.AccessTokenPrefix) {
			return fmt.Errorf("the response header %s shows the access token", name)
		}
	}
	var body tasknationtest.APIResponse
	if err := json.Unmarshal(raw, &body); err != nil {
		return fmt.Errorf("API answer: %w", err)
	}
	if !body.OK || body.ClientID != tasknationtest.DefaultClientID {
		return errors.New("the API saw no token of the gateway's client")
	}
	return nil
}

// userSelfCheck runs the user context through Caddy's second site as a
// headless browser would (a cookie jar, each redirect followed by hand
// so that every hop is checked) and prints one line per step:
// alice is not connected; she connects, approving at the fake as
// TaskNation user tasknationUser; her API call reaches the API with that
// user's token; bob, not connected, is refused and never forwarded.
// No answer of Caddy may show a token, a code or the client secret, and
// the token store in tokenDir holds no credential in clear.
func userSelfCheck(ctx context.Context, base, tokenDir string, fake *tasknationtest.Server, out io.Writer) error {
	connectURL := base + "/oauth2/connect"
	callbackURL := base + "/oauth2/callback"
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	alice, err := newBrowser(tr, base, connectedUser, connectedPassword)
	if err != nil {
		return err
	}
	bob, err := newBrowser(tr, base, otherUser, otherPassword)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "User-context self-check:")

	// 1. Not connected yet: 401 not_connected, where to connect, and the
	// API never sees the request.
	if err := alice.mustBeRefused(ctx, fake, connectURL); err != nil {
		return err
	}
	fmt.Fprintf(out, "  1. %s calls %s before connecting: 401 not_connected, connect_url %s; not forwarded\n",
		connectedUser, userAPIPath, connectURL)

	// 2. Connect: a redirect to the fake's authorization endpoint, with a
	// state, a PKCE challenge and the registered redirect URI, and a state
	// cookie for the callback.
	a, err := alice.do(ctx, connectURL, nil)
	if err != nil {
		return err
	}
	if a.status != http.StatusFound {
		return fmt.Errorf("connect as %s: status %d, want 302", connectedUser, a.status)
	}
	auth, err := url.Parse(a.header.Get("Location"))
	if err != nil || auth.Scheme+"://"+auth.Host+auth.Path != fake.AuthURL() {
		return fmt.Errorf("connect as %s does not redirect to the fake's authorization endpoint", connectedUser)
	}
	q := auth.Query()
	state := q.Get("state")
	switch {
	case q.Get("client_id") != tasknationtest.DefaultClientID, q.Get("response_type") != "code":
		return errors.New("the authorization request names another client or response type")
	case q.Get("redirect_uri") != callbackURL:
		return errors.New("the authorization request has another redirect_uri than the Caddyfile's")
	case len(state) < 32:
		return errors.New("the authorization request's state is shorter than 32 characters")
	case q.Get("code_challenge") == "" || q.Get("code_challenge_method") != "S256":
		return errors.New("the authorization request has no PKCE S256 challenge")
	}
	cb, _ := url.Parse(callbackURL)
	if len(alice.c.Jar.Cookies(cb)) == 0 {
		return errors.New("connect set no state cookie for the callback")
	}
	fmt.Fprintf(out, "  2. %s opens /oauth2/connect: 302 to the fake's authorization endpoint (state, PKCE S256), state cookie set\n", connectedUser)

	// 3. The fake approves at once (no consent page) as the login_hint,
	// and redirects to the callback with a code and the same state. Its
	// answer carries the code, as it must: it is not checked for leaks.
	q.Set("login_hint", tasknationUser)
	auth.RawQuery = q.Encode()
	a, err = alice.do(ctx, auth.String(), nil)
	if err != nil {
		return err
	}
	if a.status != http.StatusFound {
		return fmt.Errorf("the fake's authorization endpoint: status %d, want 302", a.status)
	}
	back, err := url.Parse(a.header.Get("Location"))
	if err != nil || back.Scheme+"://"+back.Host+back.Path != callbackURL {
		return errors.New("the fake does not redirect to the callback")
	}
	if back.Query().Get("state") != state || back.Query().Get("code") == "" {
		return errors.New("the fake's redirect lacks the code or the state sent")
	}
	fmt.Fprintf(out, "  3. the fake approves as TaskNation user %s: 302 to /oauth2/callback with a code and the state\n", tasknationUser)

	// 4. The callback, with the state cookie (and the Referer a browser
	// may send, which the access log filters): the code is exchanged once.
	exchanges := fake.TokenRequests(tasknationtest.GrantAuthorizationCode)
	a, err = alice.do(ctx, back.String(), http.Header{"Referer": {auth.String()}})
	if err != nil {
		return err
	}
	var done struct{ Status string }
	if a.status != http.StatusOK || json.Unmarshal(a.body, &done) != nil || done.Status != "connected" {
		return fmt.Errorf("callback as %s: status %d, want 200 connected", connectedUser, a.status)
	}
	if n := fake.TokenRequests(tasknationtest.GrantAuthorizationCode) - exchanges; n != 1 {
		return fmt.Errorf("the callback made %d code exchanges, want 1", n)
	}
	if err := storeSealed(tokenDir); err != nil {
		return err
	}
	fmt.Fprintf(out, "  4. the callback exchanges the code: 200 connected; the tokens are sealed in the demo's file store\n")

	// 5. Her calls go out with her token: the fake API names her
	// TaskNation user. One token request for all of it: the exchange.
	tokens := fake.TokenRequests("")
	for range 3 {
		api, err := alice.callAPI(ctx)
		if err != nil {
			return err
		}
		if api.Subject != tasknationUser {
			return fmt.Errorf("%s's call reached the API as TaskNation user %q, want %q", connectedUser, api.Subject, tasknationUser)
		}
	}
	if n := fake.TokenRequests("") - tokens; n != 0 {
		return fmt.Errorf("%d token requests for 3 calls after connecting, want 0", n)
	}
	fmt.Fprintf(out, "  5. %s calls %s: 200, the API saw TaskNation user %s's token (3 calls, no further token request)\n",
		connectedUser, userAPIPath, tasknationUser)

	// 6. Bob is logged in but has not connected: refused, never forwarded
	// with alice's token.
	if err := bob.mustBeRefused(ctx, fake, connectURL); err != nil {
		return err
	}
	fmt.Fprintf(out, "  6. %s, logged in but not connected: 401 not_connected; not forwarded, so never with %s's token\n",
		otherUser, connectedUser)
	fmt.Fprintf(out, "User-context self-check passed: no answer showed a token, a code or the secret.\n\n")
	return nil
}

// browser is one logged-in user of the user-context site: HTTP Basic
// credentials (sent to the site only), a cookie jar, and redirects not
// followed.
type browser struct {
	base, user, password string
	c                    *http.Client
}

func newBrowser(tr http.RoundTripper, base, user, password string) (*browser, error) {
	jar, err := cookiejar.New(nil)
	if err != nil {
		return nil, err
	}
	return &browser{base: base, user: user, password: password, c: &http.Client{
		Transport:     tr,
		Jar:           jar,
		Timeout:       30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

// do GETs u, as b's user when u is on the site. Answers of the site must
// not show a token, a code or the client secret.
func (b *browser) do(ctx context.Context, u string, header http.Header) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return answer{}, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	site := strings.HasPrefix(u, b.base+"/")
	if site {
		req.SetBasicAuth(b.user, b.password)
	}
	resp, err := b.c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	a := answer{status: resp.StatusCode, header: resp.Header, body: raw}
	if site {
		if where := leaks(a); where != "" {
			return a, fmt.Errorf("the answer to %s's %s shows %s", b.user, req.URL.Path, where)
		}
	}
	return a, nil
}

// leaks names a credential that a shows, or returns "".
func leaks(a answer) string {
	secrets := map[string]string{
		"an access token":   tasknationtest.AccessTokenPrefix,
		"a refresh token":   tasknationtest.RefreshTokenPrefix,
		"a code":            tasknationtest.CodePrefix,
		"the client secret": tasknationtest.DefaultClientSecret,
	}
	for what, s := range secrets {
		if bytes.Contains(a.body, []byte(s)) {
			return what + " in the body"
		}
		for name, values := range a.header {
			if strings.Contains(strings.Join(values, " "), s) {
				return what + " in the header " + name
			}
		}
	}
	return ""
}

// callAPI calls the API through the site and returns what the fake API
// saw.
func (b *browser) callAPI(ctx context.Context) (tasknationtest.APIResponse, error) {
	var api tasknationtest.APIResponse
	a, err := b.do(ctx, b.base+userAPIPath, nil)
	if err != nil {
		return api, err
	}
	if a.status != http.StatusOK {
		return api, fmt.Errorf("%s's call of %s: status %d, want 200", b.user, userAPIPath, a.status)
	}
	if err := json.Unmarshal(a.body, &api); err != nil {
		return api, fmt.Errorf("API answer: %w", err)
	}
	if !api.OK || api.ClientID != tasknationtest.DefaultClientID {
		return api, fmt.Errorf("%s's call reached the API without a token of the gateway's client", b.user)
	}
	return api, nil
}

// mustBeRefused checks that b's API call is answered 401 not_connected
// with connectURL, in JSON, and not forwarded to the API.
func (b *browser) mustBeRefused(ctx context.Context, fake *tasknationtest.Server, connectURL string) error {
	before := fake.APIRequests()
	a, err := b.do(ctx, b.base+userAPIPath, nil)
	if err != nil {
		return err
	}
	var e struct {
		Error      string `json:"error"`
		ConnectURL string `json:"connect_url"`
	}
	if a.status != http.StatusUnauthorized || json.Unmarshal(a.body, &e) != nil || e.Error != "not_connected" {
		return fmt.Errorf("%s's call of %s: status %d, want 401 not_connected", b.user, userAPIPath, a.status)
	}
	if ct := a.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("%s's refusal has Content-Type %q, want JSON", b.user, ct)
	}
	if e.ConnectURL != connectURL {
		return fmt.Errorf("%s's refusal has connect_url %q, want %s", b.user, e.ConnectURL, connectURL)
	}
	if n := fake.APIRequests() - before; n != 0 {
		return fmt.Errorf("%s's call was forwarded to the API without being connected", b.user)
	}
	return nil
}

// storeSealed checks that the file store in dir holds something, and no
// access or refresh token in clear.
func storeSealed(dir string) error {
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range []string{tasknationtest.AccessTokenPrefix, tasknationtest.RefreshTokenPrefix} {
			if bytes.Contains(b, []byte(s)) {
				return fmt.Errorf("the file store holds a token in clear (%s...)", s)
			}
		}
		return nil
	})
	if err == nil && files == 0 {
		err = errors.New("the file store is empty after the connect")
	}
	return err
}
