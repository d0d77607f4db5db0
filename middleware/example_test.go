package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// get sends a GET through c and prints the status and what the fake API
// saw (the token's client, subject and scope: never the token).
func get(c *http.Client, rawURL string) {
	resp, err := c.Get(rawURL)
	if err != nil {
		fmt.Println("error:", err)
		return
	}
	defer resp.Body.Close()
	var a tasknationtest.APIResponse
	_ = json.NewDecoder(resp.Body).Decode(&a)
	fmt.Println(resp.StatusCode, a.ClientID, a.Subject, a.Scope)
}

func ExampleNew() {
	// New checks the configuration and names the field it refuses; it
	// makes no network request.
	_, err := middleware.New(middleware.Config{
		ClientID:     "my-client",
		ClientSecret: "my-secret",
		Scopes:       []string{"demand::serach"},
	})
	var ce *middleware.ConfigError
	fmt.Println(errors.As(err, &ce), ce.Field)

	gate, err := middleware.New(middleware.Config{
		ClientID:     "my-client",
		ClientSecret: "my-secret",
		Scopes:       []string{"demand::categories", "demand::search"},
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()
	fmt.Println("ready")
	// Output:
	// true scopes
	// ready
}

func ExampleGate_Wrap() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()

	gate, err := middleware.New(middleware.Config{
		TokenURL:     srv.TokenURL(), // the TaskNation preset's in production
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       []string{"demand::categories", "demand::search"},
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()

	// A gateway: a reverse proxy to the API behind the Gate.
	api, _ := url.Parse(srv.URL)
	proxy := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }}
	gw := httptest.NewServer(gate.Wrap(proxy))
	defer gw.Close()

	// The client sends no token (one it sends is dropped); the Gate sets its own.
	get(http.DefaultClient, gw.URL+"/api/v1/categories")
	get(http.DefaultClient, gw.URL+"/api/v1/search?q=plumber")
	fmt.Println("token requests:", srv.TokenRequests(tasknationtest.GrantClientCredentials))
	// Output:
	// 200 tn-test-client  demand::categories demand::search
	// 200 tn-test-client  demand::categories demand::search
	// token requests: 1
}

func ExampleGate_Transport() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	gate, err := middleware.New(middleware.Config{
		TokenURL:     srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       []string{"demand::search"},
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()

	// An outbound client: every request carries the Gate's token, and is
	// replayed once with a new one if the API refuses it.
	c := &http.Client{Transport: gate.Transport(nil)}
	get(c, srv.APIURL()+"/v1/search?q=roofer")
	// Output:
	// 200 tn-test-client  demand::search
}

func ExampleGate_Token() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	gate, err := middleware.New(middleware.Config{
		TokenURL:     srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       []string{"demand::categories"},
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()

	ctx := context.Background()
	for range 3 {
		tok, err := gate.Token(ctx) // fetched once, then served from the cache
		if err != nil {
			panic(err)
		}
		fmt.Println(tok.Scopes, strings.HasPrefix(tok.AccessToken, tasknationtest.AccessTokenPrefix))
	}
	fmt.Println("token requests:", srv.TokenRequests(tasknationtest.GrantClientCredentials))
	// Output:
	// [demand::categories] true
	// [demand::categories] true
	// [demand::categories] true
	// token requests: 1
}

func ExampleGate_TokenSource() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	gate, err := middleware.New(middleware.Config{
		TokenURL:     srv.TokenURL(),
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       []string{"demand::categories"},
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()

	// An SDK built on x/oauth2 gets the Gate's refresh engine.
	ctx := context.Background()
	c := oauth2.NewClient(ctx, gate.TokenSource(ctx))
	get(c, srv.APIURL()+"/v1/categories")

	tok, _ := gate.TokenSource(ctx).Token()
	fmt.Println(tok.Type(), tok.RefreshToken == "")
	// Output:
	// 200 tn-test-client  demand::categories
	// Bearer true
}

// The user context: a person connects their TaskNation account through
// the Gate's connect path once; then the gateway acts as them.
func ExampleGate_Wrap_userContext() {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	gw := httptest.NewUnstartedServer(nil)
	gw.Start()
	defer gw.Close()
	srv.AddRedirectURI(tasknationtest.DefaultClientID, gw.URL+"/oauth2/callback")

	gate, err := middleware.New(middleware.Config{
		Grant:        middleware.GrantAuthorizationCode,
		TokenURL:     srv.TokenURL(),
		AuthURL:      srv.AuthURL(),
		RedirectURI:  gw.URL + "/oauth2/callback",
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       []string{"supply::businesses", "supply::leads"},
		// The subject comes from your own authentication; here a header
		// a trusted front end would set.
		Subject: func(r *http.Request) string { return r.Header.Get("X-User") },
	})
	if err != nil {
		panic(err)
	}
	defer gate.Close()
	api, _ := url.Parse(srv.URL)
	gw.Config.Handler = gate.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }})

	// alice's browser: a cookie jar, redirects shown rather than followed.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	visit := func(u string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		if strings.HasPrefix(u, gw.URL) {
			req.Header.Set("X-User", "alice")
		}
		resp, err := browser.Do(req)
		if err != nil {
			panic(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	resp := visit(gw.URL + "/api/v1/businesses/me")
	fmt.Println("before connecting:", resp.StatusCode)

	resp = visit(gw.URL + "/oauth2/connect") // → the authorization server
	fmt.Println("connect:", resp.StatusCode)
	auth, _ := url.Parse(resp.Header.Get("Location"))
	q := auth.Query()
	q.Set("login_hint", "tn-alice") // the fake approves as this TaskNation user
	auth.RawQuery = q.Encode()
	resp = visit(auth.String()) // → back to the callback with a code
	fmt.Println("authorize:", resp.StatusCode)
	resp = visit(resp.Header.Get("Location"))
	fmt.Println("callback:", resp.StatusCode)

	req, _ := http.NewRequest(http.MethodGet, gw.URL+"/api/v1/businesses/me", nil)
	req.Header.Set("X-User", "alice")
	r2, err := http.DefaultClient.Do(req)
	if err != nil {
		panic(err)
	}
	defer r2.Body.Close()
	var a tasknationtest.APIResponse
	_ = json.NewDecoder(r2.Body).Decode(&a)
	fmt.Println("as alice:", r2.StatusCode, a.Subject)
	// Output:
	// before connecting: 401
	// connect: 302
	// authorize: 302
	// callback: 200
	// as alice: 200 tn-alice
}
