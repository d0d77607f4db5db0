package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// started runs the command with args and returns what it printed, by
// label ("token_url", "api", ...), once it is serving; the command stops
// when the test ends.
func started(t *testing.T, args ...string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := run(ctx, args, pw, io.Discard)
		pw.Close()
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run did not return after its context ended")
		}
	})
	printed := map[string]string{}
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		line := sc.Text()
		if line == "Ctrl-C stops it." {
			go io.Copy(io.Discard, pr)
			return printed
		}
		if f := strings.Fields(line); len(f) >= 2 && strings.HasPrefix(line, "  ") {
			printed[f[0]] = f[1]
		}
		printed["block"] += line + "\n"
	}
	t.Fatalf("the command ended before serving: %v", <-done)
	return nil
}

func TestRunServesPrintedURLs(t *testing.T) {
	const redirect = "http://127.0.0.1:9999/oauth2/callback"
	p := started(t, "-addr", "127.0.0.1:0", "-redirect-uri", redirect, "-token-lifetime", "10m")

	resp, err := http.PostForm(p["token_url"], url.Values{
		"grant_type":    {"client_credentials"},
		"client_id":     {p["client_id"]},
		"client_secret": {p["client_secret"]},
		"scope":         {"demand::categories"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string  `json:"access_token"`
		ExpiresIn   float64 `json:"expires_in"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || tok.AccessToken == "" {
		t.Fatalf("token request with the printed credentials: %d, %v", resp.StatusCode, err)
	}
	if tok.ExpiresIn > 600 || tok.ExpiresIn < 590 {
		t.Errorf("expires_in %v, want about 600 (-token-lifetime 10m)", tok.ExpiresIn)
	}

	req, _ := http.NewRequest(http.MethodGet, p["api"]+"/v1/categories", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API at the printed base: %d, want 200", resp.StatusCode)
	}

	// The redirect URI is registered: the authorization endpoint sends the
	// browser back to it with a code.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	q := url.Values{"client_id": {p["client_id"]}, "response_type": {"code"}, "redirect_uri": {redirect},
		"scope": {"supply::businesses offline_access"}, "state": {"state-0123456789abcdef"}}
	resp, err = noFollow.Get(p["auth_url"] + "?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, redirect+"?") || !strings.Contains(loc, "code=") {
		t.Fatalf("authorize: %d to %q, want 302 to the registered redirect URI with a code", resp.StatusCode, loc)
	}

	// The Caddyfile block names the printed token URL and proxies to the
	// server's host:port.
	u, _ := url.Parse(p["token_url"])
	for _, want := range []string{"token_url     " + p["token_url"], "reverse_proxy " + u.Host} {
		if !strings.Contains(p["block"], want) {
			t.Errorf("printed Caddyfile block lacks %q:\n%s", want, p["block"])
		}
	}
}

func TestRunRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-addr", "0.0.0.0:0"}, "-addr"},
		{[]string{"-addr", "no-port"}, "-addr"},
		{[]string{"-redirect-uri", "/relative"}, "redirect-uri"},
		{[]string{"-token-lifetime", "0s"}, "-token-lifetime"},
		{[]string{"extra"}, "unexpected argument"},
	} {
		err := run(context.Background(), tc.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("run(%q) = %v, want an error naming %s", tc.args, err, tc.want)
		}
	}
}
