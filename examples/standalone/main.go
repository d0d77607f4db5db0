// Command standalone is a tokengate gateway in plain Go: an
// httputil.ReverseProxy to the TaskNation API wrapped by the middleware,
// which gets an application token (client_credentials) and injects it.
//
// With TASKNATION_CLIENT_ID and TASKNATION_CLIENT_SECRET set it talks to
// TaskNation (TASKNATION_TOKEN_URL and TASKNATION_API_URL override the
// endpoints). Without them it starts the fake TaskNation server from
// middleware/tasknationtest on loopback and uses that, so it runs anywhere.
//
// LISTEN sets the gateway address (default 127.0.0.1:8080, or a free
// loopback port when that is taken). DEMO_ONESHOT=1 runs the self-check and
// exits with its status instead of serving until Ctrl-C.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "standalone:", err)
		os.Exit(1)
	}
}

// run starts the gateway (and the fake server when no credentials are
// given), prints how to use it, runs the self-check, then serves until ctx
// ends, or returns after the self-check when DEMO_ONESHOT=1.
func run(ctx context.Context, getenv func(string) string, out io.Writer) error {
	logger, err := zap.NewDevelopment(zap.IncreaseLevel(zap.InfoLevel))
	if err != nil {
		return err
	}
	defer logger.Sync()

	cfg := middleware.Config{
		ClientID:     getenv("TASKNATION_CLIENT_ID"),
		ClientSecret: getenv("TASKNATION_CLIENT_SECRET"),
		TokenURL:     getenv("TASKNATION_TOKEN_URL"),
		Scopes:       []string{"demand::categories", "demand::search"},
		Logger:       logger,
	}
	apiURL := getenv("TASKNATION_API_URL")
	var fake *tasknationtest.Server
	if cfg.ClientID == "" && cfg.ClientSecret == "" {
		fake = tasknationtest.NewServer(tasknationtest.Options{})
		defer fake.Close()
		cfg.ClientID, cfg.ClientSecret = tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret
		cfg.TokenURL, apiURL = fake.TokenURL(), fake.URL
		fmt.Fprintf(out, "No TaskNation credentials set: using the fake TaskNation server at %s\n", fake.URL)
	}
	if apiURL == "" {
		apiURL = "https://api.tasknation.com"
	}
	upstream, err := url.Parse(apiURL)
	if err != nil {
		return fmt.Errorf("TASKNATION_API_URL: %w", err)
	}

	gate, err := middleware.New(cfg)
	if err != nil {
		return err
	}
	defer gate.Close()
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		r.SetURL(upstream)
		r.Out.Host = upstream.Host
	}}

	ln, err := listen(getenv("LISTEN"))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: gate.Wrap(proxy), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	defer srv.Close()

	base := "http://" + ln.Addr().String()
	fmt.Fprintf(out, "tokengate gateway listening on %s, proxying to %s\n\n", base, upstream)
	fmt.Fprintf(out, "Try it (the gateway adds the bearer token; your client never sees it):\n")
	fmt.Fprintf(out, "  curl -s %s/api/v1/categories\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/search\n", base)
	fmt.Fprintf(out, "  curl -s %s/api/v1/leads      # 403: a Demand token lacks supply::leads\n\n", base)

	if fake != nil {
		if err := selfCheck(ctx, base, fake, out); err != nil {
			return fmt.Errorf("self-check failed: %w", err)
		}
	}
	if getenv("DEMO_ONESHOT") == "1" {
		return nil
	}
	fmt.Fprintln(out, "Serving until Ctrl-C.")
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		return err
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}

// listen binds addr, or 127.0.0.1:8080 falling back to a free port.
func listen(addr string) (net.Listener, error) {
	if addr != "" {
		return net.Listen("tcp", addr)
	}
	if ln, err := net.Listen("tcp", "127.0.0.1:8080"); err == nil {
		return ln, nil
	}
	return net.Listen("tcp", "127.0.0.1:0")
}

// selfCheck sends a burst through the gateway with a client-chosen
// Authorization header and checks that every request reached the API with
// the gateway's token, and that the burst cost one token request.
func selfCheck(ctx context.Context, base string, fake *tasknationtest.Server, out io.Writer) error {
	const burst = 50
	var wg sync.WaitGroup
	errs := make(chan error, burst)
	for i := 0; i < burst; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- checkOne(ctx, base+"/api/v1/categories")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	if n := fake.TokenRequests(tasknationtest.GrantClientCredentials); n != 1 {
		return fmt.Errorf("%d token requests for a burst of %d, want 1", n, burst)
	}
	fmt.Fprintf(out, "Self-check passed: %d concurrent requests, 1 token request, every request reached the API with the gateway's token.\n\n", burst)
	return nil
}

func checkOne(ctx context.Context, u string) error {
	req, err := http.NewRequestWithContext(ctx, "GET", u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer not-the-gateways") // must be replaced
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var body tasknationtest.APIResponse
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("API answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !body.OK {
		return fmt.Errorf("API answered %s", resp.Status)
	}
	if body.ClientID != tasknationtest.DefaultClientID {
		return errors.New("API saw a token of another client")
	}
	return nil
}
