package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// 1,000 concurrent requests on a cold cache: one token request, and every
// request reaches the next handler with that token and without the header
// the client sent.
func TestWrap_ColdCacheOneTokenRequest(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetLatency(50 * time.Millisecond) // keep the first fetch in flight while the herd arrives
	rec := &recorder{}
	front := httptest.NewServer(f.gate.Wrap(rec))
	defer front.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1000}}
	defer client.CloseIdleConnections()

	const n = 1000
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			req, _ := http.NewRequest("GET", front.URL+"/api/v1/categories", nil)
			req.Header.Set("Authorization", "Bearer client-supplied")
			resp, err := client.Do(req)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNoContent {
				errs <- errors.New("status " + resp.Status)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.ccRequests(); got != 1 {
		t.Fatalf("token requests = %d, want exactly 1", got)
	}
	if rec.count() != n {
		t.Fatalf("next handler called %d times, want %d", rec.count(), n)
	}
	want := "Bearer " + f.token(t)
	if !strings.HasPrefix(want, "Bearer "+tasknationtest.AccessTokenPrefix) || !f.srv.Active(strings.TrimPrefix(want, "Bearer ")) {
		t.Fatalf("token %q is not an active token of the server", want)
	}
	for i, got := range rec.seen {
		if got != want {
			t.Fatalf("request %d reached next with Authorization %q, want the gate's token", i, got)
		}
	}
}

// A token inside its refresh window is refreshed once, in the background;
// with the endpoint at 500 ms no request waits for it.
func TestWrap_RefreshAheadNeverBlocks(t *testing.T) {
	f := newFixture(t, nil)
	h := f.gate.Wrap(&recorder{})
	old := f.token(t)
	f.clock.Advance(55 * time.Minute) // 1h token: refresh window starts at 48 min at the latest
	f.srv.SetLatency(500 * time.Millisecond)

	var slowest time.Duration
	requests := 0
	eventually(t, "the background refresh", func() bool {
		req := httptest.NewRequest("GET", "/api/v1/search", nil)
		w := httptest.NewRecorder()
		began := time.Now()
		h.ServeHTTP(w, req)
		slowest = max(slowest, time.Since(began))
		requests++
		if w.Code != http.StatusNoContent {
			t.Fatalf("status %d during refresh", w.Code)
		}
		return f.token(t) != old
	})
	if got := f.ccRequests(); got != 2 {
		t.Fatalf("token requests = %d, want 2 (initial + one refresh)", got)
	}
	if slowest > 100*time.Millisecond {
		t.Fatalf("slowest of %d requests during the refresh took %v, want < 100ms", requests, slowest)
	}
	if requests < 2 {
		t.Fatalf("only %d requests ran during a 500 ms refresh", requests)
	}
	if cur := f.token(t); !f.srv.Active(cur) {
		t.Fatal("the refreshed token is not active at the server")
	}
}

// The endpoint fails while a token is valid (all served), then past expiry
// (503 JSON with Retry-After, next never called), then recovers.
func TestWrap_EndpointFailureThenRecovery(t *testing.T) {
	ev := &events{}
	f := newFixture(t, func(c *middleware.Config) {
		c.MinBackoff = 2 * time.Second
		c.MaxBackoff = 8 * time.Second
		c.Observer = ev
	})
	rec := &recorder{}
	h := f.gate.Wrap(rec)
	serve := func() *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/search", nil))
		return w
	}
	if w := serve(); w.Code != http.StatusNoContent {
		t.Fatalf("first request: %d", w.Code)
	}
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 503})

	// Inside the refresh window: the background refresh fails, requests
	// are still served with the valid token.
	f.clock.Advance(55 * time.Minute)
	for i := 0; i < 50; i++ {
		if w := serve(); w.Code != http.StatusNoContent {
			t.Fatalf("request %d with a valid token: status %d", i, w.Code)
		}
	}
	// Wait for the refresh to have failed, not just reached the server:
	// its backoff step must be recorded before the clock jumps.
	eventually(t, "the failed background refresh", func() bool {
		return slices.Contains(ev.snapshot(), "token client_credentials status")
	})
	for i := 0; i < 50; i++ {
		serve()
	}
	if got := f.ccRequests(); got != 2 {
		t.Fatalf("token requests during one backoff step = %d, want 2", got)
	}
	if rec.count() != 101 {
		t.Fatalf("next called %d times, want 101", rec.count())
	}

	// Past expiry: fail closed.
	f.clock.Advance(10 * time.Minute)
	calls := rec.count()
	w := serve()
	if w.Code != http.StatusServiceUnavailable {
		t.Fatalf("expired token and failing endpoint: status %d, want 503", w.Code)
	}
	if rec.count() != calls {
		t.Fatal("next handler called without a token")
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q", ct)
	}
	ra, err := strconv.Atoi(w.Header().Get("Retry-After"))
	if err != nil || ra < 1 || ra > 8 {
		t.Fatalf("Retry-After %q, want 1..8 seconds", w.Header().Get("Retry-After"))
	}
	var body struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
		t.Fatal(err)
	}
	if body.Error != "token_unavailable" || !strings.Contains(body.ErrorDescription, "503") {
		t.Fatalf("body %s", w.Body)
	}
	// Still inside the backoff: no new token request.
	before := f.ccRequests()
	for i := 0; i < 20; i++ {
		if w := serve(); w.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d", w.Code)
		}
	}
	if got := f.ccRequests(); got != before {
		t.Fatalf("token requests while backing off: %d more, want none", got-before)
	}

	// Recovery: once the backoff step has passed, the next request fetches.
	f.srv.ClearFaults()
	f.clock.Advance(9 * time.Second)
	if w := serve(); w.Code != http.StatusNoContent {
		t.Fatalf("after recovery: status %d: %s", w.Code, w.Body)
	}
	if !f.srv.Active(f.token(t)) {
		t.Fatal("token after recovery is not active")
	}
}

// A caller that gives up does not fail the shared fetch for the others.
func TestToken_CallerCancelDoesNotFailOthers(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.SetLatency(300 * time.Millisecond)
	ctx, cancel := context.WithCancel(context.Background())
	quitter := make(chan error, 1)
	go func() {
		_, err := f.gate.Token(ctx)
		quitter <- err
	}()
	eventually(t, "the token request to arrive", func() bool { return f.ccRequests() == 1 })
	stayer := make(chan error, 1)
	go func() {
		_, err := f.gate.Token(context.Background())
		stayer <- err
	}()
	cancel()
	if err := <-quitter; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled caller: err = %v, want context.Canceled", err)
	}
	if err := <-stayer; err != nil {
		t.Fatalf("the other caller failed: %v", err)
	}
	if got := f.ccRequests(); got != 1 {
		t.Fatalf("token requests = %d, want 1", got)
	}
}

// The endpoint answering 503 to a crowd: one request per backoff step.
func TestToken_BackoffSharedByAllCallers(t *testing.T) {
	f := newFixture(t, func(c *middleware.Config) {
		c.MinBackoff = time.Second
		c.MaxBackoff = 4 * time.Second
	})
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 503})
	steps := 0
	for step := 0; step < 4; step++ {
		var wg sync.WaitGroup
		var failed atomic.Int64
		for i := 0; i < 100; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := f.gate.Token(context.Background())
				var ue *middleware.UnavailableError
				if errors.As(err, &ue) && ue.RetryAfter >= time.Second {
					failed.Add(1)
				}
			}()
		}
		wg.Wait()
		steps++
		if failed.Load() != 100 {
			t.Fatalf("step %d: %d of 100 callers got UnavailableError with Retry-After", step, failed.Load())
		}
		if got := f.ccRequests(); got != int64(steps) {
			t.Fatalf("after %d backoff steps: %d token requests, want %d", steps, got, steps)
		}
		f.clock.Advance(4 * time.Second) // past the longest step
	}
}

// A panic inside the refresh (here in the HTTP transport) is an error for
// the callers, not a crash.
func TestToken_PanicInRefreshIsAnError(t *testing.T) {
	f := newFixture(t, func(c *middleware.Config) {
		c.HTTPClient = &http.Client{Transport: panicky{}}
	})
	_, err := f.gate.Token(context.Background())
	if err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("err = %v, want a panic turned into an error", err)
	}
}

type panicky struct{}

func (panicky) RoundTrip(*http.Request) (*http.Response, error) { panic("transport bug") }

// Transport injects the token and leaves the caller's request alone.
func TestTransport_InjectsWithoutMutating(t *testing.T) {
	f := newFixture(t, nil)
	client := &http.Client{Transport: f.gate.Transport(nil)}
	req, _ := http.NewRequest("GET", f.srv.APIURL()+"/v1/categories", nil)
	req.Header.Set("Authorization", "Basic c29tZW9uZTplbHNl")
	req.Header.Set("X-Keep", "yes")
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API answered %d: %s", resp.StatusCode, body)
	}
	var api tasknationtest.APIResponse
	if err := json.Unmarshal(body, &api); err != nil || api.ClientID != tasknationtest.DefaultClientID {
		t.Fatalf("API response %s (%v)", body, err)
	}
	if got := req.Header.Get("Authorization"); got != "Basic c29tZW9uZTplbHNl" {
		t.Fatalf("caller's request mutated: Authorization = %q", got)
	}
	if len(req.Header) != 2 {
		t.Fatalf("caller's request mutated: %v keys", len(req.Header))
	}
}

// Without a token the Transport fails and closes the request body.
func TestTransport_ErrorClosesBody(t *testing.T) {
	f := newFixture(t, nil)
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 502})
	body := &closeTracker{Reader: strings.NewReader("payload")}
	req, _ := http.NewRequest("POST", f.srv.APIURL()+"/v1/requests", body)
	_, err := f.gate.Transport(nil).RoundTrip(req)
	var ue *middleware.UnavailableError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want *UnavailableError", err)
	}
	if !body.closed {
		t.Fatal("request body not closed")
	}
	if f.srv.APIRequests() != 0 {
		t.Fatal("request forwarded without a token")
	}
}

type closeTracker struct {
	io.Reader
	closed bool
}

func (c *closeTracker) Close() error { c.closed = true; return nil }

// With the token endpoint held (it answers only when released), 1,000
// callers whose token is inside its refresh window all return at once with
// the current token: none waits for the refresh.
func TestToken_HerdInRefreshWindowBlocksNobody(t *testing.T) {
	f := newFixture(t, nil)
	old := f.token(t)
	release := make(chan struct{})
	f.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
		<-release
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"tn_at_new","token_type":"bearer","expires_in":3600}`))
	})
	f.clock.Advance(time.Hour - 5*time.Second)
	var wg sync.WaitGroup
	var gotOld atomic.Int64
	for i := 0; i < 1000; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if tok, err := f.gate.Token(context.Background()); err == nil && tok.AccessToken == old {
				gotOld.Add(1)
			}
		}()
	}
	wg.Wait() // would hang here if any caller waited for the held endpoint
	if gotOld.Load() != 1000 {
		t.Fatalf("%d of 1000 callers got the current token", gotOld.Load())
	}
	eventually(t, "the background refresh to reach the endpoint", func() bool { return f.ccRequests() == 2 })
	close(release)
	eventually(t, "the new token", func() bool { return f.token(t) == "tn_at_new" })
	if got := f.ccRequests(); got != 2 {
		t.Fatalf("token requests = %d, want 2", got)
	}
}

// A hand-built request without a header map still gets the token.
func TestWrap_NilHeader(t *testing.T) {
	f := newFixture(t, nil)
	rec := &recorder{}
	req := &http.Request{Method: "GET", URL: &url.URL{Path: "/"}}
	req = req.WithContext(context.Background())
	f.gate.Wrap(rec).ServeHTTP(httptest.NewRecorder(), req)
	if rec.count() != 1 || !strings.HasPrefix(rec.seen[0], "Bearer tn_at_") {
		t.Fatalf("next saw %v", rec.seen)
	}
}

// TestAppToken_WallClockJump: the phase timers run on the monotonic clock,
// which stands still while the machine is suspended. On the real clock
// the hot path also checks the coarse wall clock, so a machine that wakes
// past the token's expiry asks for a new token at the first request
// instead of serving the expired one until the timers catch up.
func TestAppToken_WallClockJump(t *testing.T) {
	clk := &offsetClock{} // the real clock and real timers, plus a jump
	f := newFixture(t, func(c *middleware.Config) { c.Clock = clk })
	read := middleware.UseAppCoarseClock(f.gate, clk.Now, time.Millisecond)
	rec := &recorder{}
	h := f.gate.Wrap(rec)
	get := func() {
		t.Helper()
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/categories", nil))
		if w.Code != http.StatusNoContent {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
	}
	get()
	get()
	if n := f.ccRequests(); n != 1 {
		t.Fatalf("token requests before the jump = %d, want 1", n)
	}
	// The machine sleeps for two hours: the wall clock jumps past the
	// token's hour, the monotonic clock (and so every timer) does not.
	clk.off.Store(int64(2 * time.Hour))
	eventually(t, "the coarse clock to follow the wall clock", func() bool {
		return !read().Before(time.Now().Add(time.Hour))
	})
	get()
	if n := f.ccRequests(); n != 2 {
		t.Fatalf("token requests after the jump = %d, want 2: the expired token was served", n)
	}
	rec.mu.Lock()
	seen := slices.Clone(rec.seen)
	rec.mu.Unlock()
	if seen[2] == seen[0] {
		t.Fatal("the request after the jump carried the expired token")
	}
}

// TestGate_WrongContextNeverGetsTheAppToken: a Gate used against its
// grant fails where it is used and sends no token: a subject handed to an
// application-context Gate (Serve, AuthorizeSubject, a Transport request
// with WithSubject) would otherwise get the application's token, and
// Authorize on a user-context Gate without Config.Subject says so instead
// of answering unauthenticated. The client's own Authorization is dropped
// either way, and WriteError answers 500.
func TestGate_WrongContextNeverGetsTheAppToken(t *testing.T) {
	app := newFixture(t, nil)
	app.token(t)
	clientReq := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/api/v1/search", nil)
		r.Header.Set("Authorization", "Basic client-secret")
		return r
	}
	wantRefused := func(t *testing.T, what string, err error, r *http.Request) {
		t.Helper()
		if err == nil {
			t.Fatalf("%s: no error", what)
		}
		if got := r.Header.Get("Authorization"); got != "" {
			t.Errorf("%s: the request still has Authorization %q", what, got)
		}
		rec := httptest.NewRecorder()
		middleware.WriteError(rec, err)
		if rec.Code != http.StatusInternalServerError || !strings.Contains(rec.Body.String(), `"server_error"`) {
			t.Errorf("%s: WriteError answered %d %s, want 500 server_error", what, rec.Code, rec.Body)
		}
	}

	t.Run("Serve with a subject", func(t *testing.T) {
		r, rec, called := clientReq(), httptest.NewRecorder(), false
		err := app.gate.Serve(rec, r, "alice", func(http.ResponseWriter, *http.Request) error { called = true; return nil })
		wantRefused(t, "Serve", err, r)
		if called || rec.Code != http.StatusInternalServerError {
			t.Errorf("next called %v, answer %d; want not called, 500", called, rec.Code)
		}
	})
	t.Run("AuthorizeSubject", func(t *testing.T) {
		r := clientReq()
		wantRefused(t, "AuthorizeSubject", app.gate.AuthorizeSubject(r, "alice"), r)
	})
	t.Run("Transport with a subject", func(t *testing.T) {
		var sent atomic.Int64
		api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { sent.Add(1) }))
		defer api.Close()
		c := &http.Client{Transport: app.gate.Transport(nil)}
		req, _ := http.NewRequestWithContext(middleware.WithSubject(context.Background(), "alice"), http.MethodGet, api.URL, nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a subject's request through an application Transport answered %d, want an error", resp.StatusCode)
		}
		if sent.Load() != 0 {
			t.Errorf("the API got %d requests, want none", sent.Load())
		}
		// Without a subject it goes out with the application token.
		resp, err = c.Get(api.URL)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("an application request: %v", err)
		}
		resp.Body.Close()
	})
	t.Run("Authorize on a user Gate without Subject", func(t *testing.T) {
		g, err := middleware.New(middleware.Config{
			ClientID: "id", ClientSecret: "secret", Scopes: []string{"supply::leads"},
			Grant: middleware.GrantAuthorizationCode, RedirectURI: "https://gw.example.com/oauth2/callback",
		})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		r := clientReq()
		err = g.Authorize(r)
		wantRefused(t, "Authorize", err, r)
		if !strings.Contains(err.Error(), "Config.Subject") {
			t.Errorf("error %q does not name Config.Subject", err)
		}
	})
}
