// Command tasknation-fake runs the fake TaskNation authorization server
// and API of middleware/tasknationtest on loopback, to try a Caddyfile or a
// program against before it meets the real TaskNation.
//
//	go run ./cmd/tasknation-fake [-addr 127.0.0.1:8089] [-redirect-uri URL]... [-token-lifetime 1h] [-consent-page]
//
// It prints the token and authorization URLs, the API's base URL, the demo
// client's credentials (tasknationtest.DefaultClientID and
// DefaultClientSecret: constants of the fake, not secrets) and an
// oauth2_token block to paste into a Caddyfile, then serves until Ctrl-C.
//
// The fake serves its API under /api/ (the API's base, Server.APIURL(), is
// <URL>/api): a program calls <URL>/api/v1/categories with a token, and a
// gateway forwards /api/... requests to <URL> unchanged (reverse_proxy to
// the server's host:port, not to the /api URL).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "tasknation-fake:", err)
		}
		os.Exit(2)
	}
}

// redirectURIs is the repeatable -redirect-uri flag.
type redirectURIs []string

func (r *redirectURIs) String() string { return strings.Join(*r, " ") }

func (r *redirectURIs) Set(v string) error {
	u, err := url.Parse(v)
	if err != nil || !u.IsAbs() || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", v)
	}
	*r = append(*r, v)
	return nil
}

// run starts the fake as the flags in args say, writes its URLs to out and
// serves until ctx ends.
func run(ctx context.Context, args []string, out, errOut io.Writer) error {
	fs := flag.NewFlagSet("tasknation-fake", flag.ContinueOnError)
	fs.SetOutput(errOut)
	addr := fs.String("addr", "127.0.0.1:8089", "loopback `host:port` to listen on (port 0 picks a free one)")
	var redirects redirectURIs
	fs.Var(&redirects, "redirect-uri", "a redirect `URL` to register for the demo client, for the user context (repeatable)")
	lifetime := fs.Duration("token-lifetime", time.Hour, "access token lifetime")
	consent := fs.Bool("consent-page", false, "show a consent page at the authorization endpoint instead of approving at once")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *lifetime <= 0 {
		return fmt.Errorf("-token-lifetime: must be positive, got %v", *lifetime)
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-addr: %q is not a loopback address: the fake serves this host only", host)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("-addr: %w", err)
	}
	srv := tasknationtest.NewServer(tasknationtest.Options{
		Listener:      ln,
		TokenLifetime: *lifetime,
		ConsentPage:   *consent,
	})
	defer srv.Close()
	for _, uri := range redirects {
		srv.AddRedirectURI(tasknationtest.DefaultClientID, uri)
	}
	printURLs(out, srv, redirects)
	<-ctx.Done()
	return nil
}

func printURLs(out io.Writer, srv *tasknationtest.Server, redirects []string) {
	fmt.Fprintf(out, "fake TaskNation server on %s\n", srv.URL)
	fmt.Fprintf(out, "  token_url      %s\n", srv.TokenURL())
	fmt.Fprintf(out, "  auth_url       %s\n", srv.AuthURL())
	fmt.Fprintf(out, "  api            %s   (routes /api/v1/...; a gateway proxies to %s)\n", srv.APIURL(), srv.URL)
	fmt.Fprintf(out, "  client_id      %s\n", tasknationtest.DefaultClientID)
	fmt.Fprintf(out, "  client_secret  %s   (the fake's demo client)\n", tasknationtest.DefaultClientSecret)
	for _, uri := range redirects {
		fmt.Fprintf(out, "  redirect_uri   %s\n", uri)
	}
	u, _ := url.Parse(srv.URL)
	fmt.Fprintf(out, `
An oauth2_token block for a Caddyfile (application context):

	oauth2_token {
		token_url     %s
		client_id     %s
		client_secret %s
		scopes        demand::categories demand::search
	}
	reverse_proxy %s

Ctrl-C stops it.
`, srv.TokenURL(), tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret, u.Host)
}
