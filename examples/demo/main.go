// Command demo runs tokengate the way an operator does: a real Caddy with
// the oauth2_token module, here in-process, configured from the Caddyfile
// beside this file, in front of the fake TaskNation server from
// middleware/tasknationtest, all on loopback.
//
// The program starts the fake, puts its token URL, API address and client
// credentials in the environment ({env.*} placeholders in the Caddyfile),
// loads the Caddyfile, prints the URLs and curl commands to try, and runs a
// self-check: a burst of concurrent requests with a client-chosen
// Authorization header must all reach the API with the gateway's token,
// for one token request, and no response may show the token. It then
// serves until Ctrl-C and stops Caddy.
//
// DEMO_PORT sets the gateway port (default 8080, or a free port when 8080
// is taken; 0 picks a free port); DEMO_ADMIN_PORT does the same for Caddy's
// admin API (default 2019). DEMO_ONESHOT=1 exits after the self-check with
// its status.
package main

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
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

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run starts the fake TaskNation server and Caddy, prints how to use them,
// runs the self-check, then serves until ctx ends, or returns after the
// self-check when DEMO_ONESHOT=1. Caddy reads its settings from the process
// environment, so run sets the variables the Caddyfile uses and restores
// them when it returns.
func run(ctx context.Context, getenv func(string) string, out io.Writer) error {
	fake := tasknationtest.NewServer(tasknationtest.Options{})
	defer fake.Close()
	fakeURL, err := url.Parse(fake.URL)
	if err != nil {
		return err
	}

	port, err := pickPort(getenv("DEMO_PORT"), 8080)
	if err != nil {
		return fmt.Errorf("DEMO_PORT: %w", err)
	}
	adminPort, err := pickPort(getenv("DEMO_ADMIN_PORT"), 2019)
	if err != nil {
		return fmt.Errorf("DEMO_ADMIN_PORT: %w", err)
	}
	restore := setenv(map[string]string{
		"DEMO_PORT":                port,
		"DEMO_ADMIN_PORT":          adminPort,
		"TASKNATION_TOKEN_URL":     fake.TokenURL(),
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

	base := "http://127.0.0.1:" + port
	admin := "http://127.0.0.1:" + adminPort
	fmt.Fprintf(out, "Fake TaskNation server (token endpoint and API): %s\n", fake.URL)
	fmt.Fprintf(out, "Caddy with oauth2_token listening on %s (examples/demo/Caddyfile), admin API on %s\n\n", base, admin)
	fmt.Fprintf(out, "Try it (Caddy adds the bearer token; your client never sees it):\n")
	fmt.Fprintf(out, "  curl -s %s/api/v1/categories\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/search\n", base)
	fmt.Fprintf(out, "  curl -s -H 'Authorization: Bearer mine' %s/api/v1/categories   # yours is replaced\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/leads        # 403: a Demand token lacks supply::leads\n", base)
	fmt.Fprintf(out, "  curl -s %s/metrics | grep '^caddy_oauth2_token'\n\n", admin)

	if err := selfCheck(ctx, base, fake, out); err != nil {
		return fmt.Errorf("self-check failed: %w", err)
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
