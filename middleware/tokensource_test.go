package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// x/oauth2's ReuseTokenSource, which oauth2.NewClient wraps every source
// in, compares a token's Expiry with the real clock. The tests of the
// refresh engine behind it run the fake clock a day behind the real one,
// so that ReuseTokenSource asks the Gate on every request and the fake
// clock alone decides when a token expires.
func dayBehind() *clock { return testkit.NewClockAt(time.Now().Add(-24 * time.Hour)) }

// newSourceFixture is a fake server and an application-token Gate on clk.
func newSourceFixture(t *testing.T, clk *clock) (*tasknationtest.Server, *middleware.Gate) {
	t.Helper()
	srv := tasknationtest.NewServer(tasknationtest.Options{Now: clk.Now})
	t.Cleanup(srv.Close)
	g, err := middleware.New(middleware.Config{
		TokenURL:     srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       appScopes,
		Logger:       zap.NewNop(),
		Clock:        clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return srv, g
}

// burst sends n concurrent GETs of url through c and returns the API's
// answers; a transport error fails the test.
func burst(t *testing.T, c *http.Client, n int, url string) []tasknationtest.APIResponse {
	t.Helper()
	out := make([]tasknationtest.APIResponse, n)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			resp, err := c.Get(url)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				body, _ := io.ReadAll(resp.Body)
				errs <- errors.New(resp.Status + ": " + string(body))
				return
			}
			if err := json.NewDecoder(resp.Body).Decode(&out[i]); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("GET %s: %v", url, err)
	}
	return out
}

func TestTokenSourceNewClientOneRequestPerRefresh(t *testing.T) {
	clk := dayBehind()
	srv, g := newSourceFixture(t, clk)
	ctx := context.Background()
	c := oauth2.NewClient(ctx, g.TokenSource(ctx))
	url := srv.APIURL() + "/v1/categories"

	for _, a := range burst(t, c, 64, url) {
		if a.ClientID != tasknationtest.DefaultClientID || a.Subject != "" {
			t.Fatalf("API saw client %q subject %q, want the application token", a.ClientID, a.Subject)
		}
	}
	if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != 1 {
		t.Fatalf("token requests after a cold burst = %d, want 1", n)
	}

	for round := 2; round <= 3; round++ {
		clk.Advance(2 * time.Hour) // past the 1 h token's expiry
		burst(t, c, 64, url)
		if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != int64(round) {
			t.Fatalf("token requests after expiry %d = %d, want %d", round-1, n, round)
		}
	}
}

func TestTokenSourceTokenFields(t *testing.T) {
	clk := dayBehind()
	_, g := newSourceFixture(t, clk)
	ctx := context.Background()
	got, err := g.TokenSource(ctx).Token()
	if err != nil {
		t.Fatal(err)
	}
	want, err := g.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.AccessToken != want.AccessToken || !got.Expiry.Equal(want.Expiry) {
		t.Fatal("the oauth2.Token is not the Gate's token (access token or expiry differ)")
	}
	if got.TokenType != "Bearer" || got.Type() != "Bearer" {
		t.Fatalf("TokenType %q, want Bearer", got.TokenType)
	}
	if got.RefreshToken != "" {
		t.Fatal("the oauth2.Token carries a refresh token: x/oauth2 would redeem it itself")
	}
}

// A token the API refuses is replaced on the next request after
// Invalidate when the client asks the Gate on every request
// (oauth2.Transport without ReuseTokenSource). x/oauth2 does not replay
// the refused request: its caller gets the 401.
func TestTokenSourceInvalidateNextRequest(t *testing.T) {
	clk := dayBehind()
	srv, g := newSourceFixture(t, clk)
	ctx := context.Background()
	c := &http.Client{Transport: &oauth2.Transport{Source: g.TokenSource(ctx)}}
	url := srv.APIURL() + "/v1/categories"

	burst(t, c, 1, url)
	tok, err := g.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv.Revoke(tok.AccessToken)
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("revoked token: status %d, want the API's 401", resp.StatusCode)
	}
	clk.Advance(10 * time.Second) // a token seconds old is never rejected
	g.Invalidate("", tok.Version)
	burst(t, c, 16, url)
	if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != 2 {
		t.Fatalf("token requests = %d, want 2 (one after the Invalidate)", n)
	}
}

// The trap the TokenSource documentation warns about: oauth2.NewClient's
// ReuseTokenSource keeps a token the Gate replaced until its Expiry (by
// the real clock), without asking the Gate.
func TestTokenSourceNewClientReusesUntilExpiry(t *testing.T) {
	clk := newClock() // the real time: ReuseTokenSource holds the 1 h token
	srv, g := newSourceFixture(t, clk)
	ctx := context.Background()
	c := oauth2.NewClient(ctx, g.TokenSource(ctx))
	url := srv.APIURL() + "/v1/categories"

	burst(t, c, 1, url)
	tok, err := g.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	srv.Revoke(tok.AccessToken)
	clk.Advance(10 * time.Second)
	g.Invalidate("", tok.Version)
	if _, err := g.Token(ctx); err != nil { // the Gate moves on ...
		t.Fatal(err)
	}
	if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != 2 {
		t.Fatalf("token requests = %d, want 2", n)
	}
	resp, err := c.Get(url) // ... the NewClient does not
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status %d, want 401: x/oauth2's ReuseTokenSource no longer holds tokens until expiry; update the TokenSource docs", resp.StatusCode)
	}
}

func TestUserTokenSourceNewClientOneRefreshPerExpiry(t *testing.T) {
	clk := dayBehind()
	f := newUserFixture(t, tasknationtest.Options{Now: clk.Now}, func(c *middleware.Config) { c.Clock = clk })
	f.browser(t, "alice").connect(f, "tn-alice")
	ctx := context.Background()
	c := oauth2.NewClient(ctx, f.gate.UserTokenSource(ctx, "alice"))
	url := f.srv.APIURL() + "/v1/businesses/me"

	for _, a := range burst(t, c, 64, url) {
		if a.Subject != "tn-alice" {
			t.Fatalf("API saw subject %q, want tn-alice", a.Subject)
		}
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 0 {
		t.Fatalf("refresh requests with a fresh token = %d, want 0", n)
	}
	for round := 1; round <= 2; round++ {
		clk.Advance(2 * time.Hour)
		burst(t, c, 64, url)
		if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != int64(round) {
			t.Fatalf("refresh requests after expiry %d = %d, want %d", round, n, round)
		}
	}
	if n := f.srv.StaleRefreshReuses(); n != 0 {
		t.Fatalf("stale refresh-token reuses = %d, want 0", n)
	}
}

func TestUserTokenSourceNotConnected(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	ctx := context.Background()
	c := oauth2.NewClient(ctx, f.gate.UserTokenSource(ctx, "bob"))
	resp, err := c.Get(f.srv.APIURL() + "/v1/businesses/me")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("status %d, want an error before any request", resp.StatusCode)
	}
	var ue *middleware.UserError
	if !errors.As(err, &ue) || ue.Code != middleware.CodeNotConnected || ue.ConnectURL == "" {
		t.Fatalf("error %v, want a *UserError not_connected with the connect URL", err)
	}
	if n := f.srv.APIRequests(); n != 0 {
		t.Fatalf("API requests = %d, want 0: nothing goes out without a token", n)
	}
}

func TestUserTokenSourceClientCredentialsGate(t *testing.T) {
	_, g := newSourceFixture(t, dayBehind())
	if _, err := g.UserTokenSource(context.Background(), "alice").Token(); err == nil {
		t.Fatal("a client_credentials Gate gave a user token")
	}
}
