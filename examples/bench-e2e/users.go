package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// connectUsers connects every subject through the site at base with the
// real flow, as a browser would, workers at a time, and returns how long it
// took. Subject user-N is TaskNation's tn-user-N.
func connectUsers(ctx context.Context, base string, users []string, workers int) (time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range min(workers, len(users)) {
		wg.Go(func() {
			tr := &http.Transport{MaxIdleConnsPerHost: 2}
			defer tr.CloseIdleConnections()
			c := &http.Client{
				Transport:     tr,
				Timeout:       10 * time.Second,
				CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			}
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(users) {
					return
				}
				if err := connectOne(ctx, c, base, users[i], "tn-"+users[i]); err != nil {
					cancel(fmt.Errorf("%s: %w", users[i], err))
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// connectOne runs one connect: the connect path redirects to the
// authorization server and sets the state cookie; the authorization server
// (approving as login) redirects to the callback; the callback, with the
// cookie, exchanges the code and answers {"status":"connected"}.
func connectOne(ctx context.Context, c *http.Client, base, subject, login string) error {
	a, err := fetch(ctx, c, base+"/oauth2/connect", subject, nil)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if a.status != http.StatusFound {
		return fmt.Errorf("connect: status %d, want 302: %s", a.status, a.body)
	}
	auth, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	q := auth.Query()
	q.Set("login_hint", login)
	auth.RawQuery = q.Encode()
	cookies := a.cookies

	a, err = fetch(ctx, c, auth.String(), "", nil)
	if err != nil {
		return fmt.Errorf("authorize: %w", err)
	}
	if a.status != http.StatusFound {
		return fmt.Errorf("authorize: status %d, want 302: %s", a.status, a.body)
	}
	cb, err := url.Parse(a.header.Get("Location"))
	if err != nil {
		return fmt.Errorf("authorize: %w", err)
	}

	a, err = fetch(ctx, c, auth.ResolveReference(cb).String(), subject, cookies)
	if err != nil {
		return fmt.Errorf("callback: %w", err)
	}
	var js struct{ Status string }
	if a.status != http.StatusOK || json.Unmarshal(a.body, &js) != nil || js.Status != "connected" {
		return fmt.Errorf("callback: status %d %s, want 200 {\"status\":\"connected\"}", a.status, a.body)
	}
	return nil
}

type answer struct {
	status  int
	header  http.Header
	cookies []*http.Cookie
	body    []byte
}

// fetch GETs rawURL as subject (none if ""), with cookies, and reads the
// whole answer.
func fetch(ctx context.Context, c *http.Client, rawURL, subject string, cookies []*http.Cookie) (answer, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return answer{}, err
	}
	if subject != "" {
		req.Header.Set(subjectHeader, subject)
	}
	for _, ck := range cookies {
		req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return answer{}, err
	}
	return answer{status: resp.StatusCode, header: resp.Header, cookies: resp.Cookies(), body: body}, nil
}

// spotCheck sends one request through site s as three of the connected
// subjects, each of which must reach the upstream with a token of the
// site's kind, and one as a subject that never connected, which must not
// reach it: the subject decides the token.
func spotCheck(s *site, up *upstream, users []string) error {
	c := &http.Client{Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	stranger := "user-" + strconv.Itoa(len(users)) // never connected
	for _, u := range []string{users[0], users[len(users)/2], users[len(users)-1], stranger} {
		connected := u != stranger
		up.reset()
		a, err := fetch(context.Background(), c, s.url, u, nil)
		if err != nil {
			return fmt.Errorf("spot check as %s: %w", u, err)
		}
		up.settle()
		seen := up.counts()
		switch {
		case connected && (a.status != http.StatusOK || seen[s.kind] != 1 || seen.total() != 1):
			return fmt.Errorf("spot check as %s: status %d, the upstream saw %v; want 200 and one %s token", u, a.status, seen, s.kind)
		case !connected && (a.status == http.StatusOK || seen.total() != 0):
			return fmt.Errorf("spot check as %s, never connected: status %d, the upstream saw %v; want a refusal", u, a.status, seen)
		}
	}
	return nil
}
