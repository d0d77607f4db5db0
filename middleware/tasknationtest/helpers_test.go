package tasknationtest_test

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

const testRedirect = "http://127.0.0.1:9/oauth2/callback"

// httpClient never follows redirects so tests can inspect them.
var httpClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// clock is the test kit's settable clock; SetStep makes every reading
// advance it.
type clock = testkit.Clock

func newClock() *clock { return testkit.NewClockAt(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)) }

// newServer starts a server on an injected clock with testRedirect
// registered for the default client (when there is one).
func newServer(t *testing.T, opts tasknationtest.Options) (*tasknationtest.Server, *clock) {
	t.Helper()
	clk := newClock()
	if opts.Now == nil {
		opts.Now = clk.Now
	}
	s := tasknationtest.NewServer(opts)
	t.Cleanup(s.Close)
	if opts.Clients == nil {
		s.AddRedirectURI(tasknationtest.DefaultClientID, testRedirect)
	}
	return s, clk
}

// result is a decoded HTTP answer.
type result struct {
	status int
	header http.Header
	body   []byte
	json   map[string]any
}

func (r result) str(key string) string {
	s, _ := r.json[key].(string)
	return s
}

func (r result) has(key string) bool {
	_, ok := r.json[key]
	return ok
}

func do(t *testing.T, req *http.Request) result {
	t.Helper()
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	r := result{status: resp.StatusCode, header: resp.Header, body: body}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &r.json); err != nil {
			t.Fatalf("invalid JSON %q: %v", body, err)
		}
	}
	return r
}

func tokenRequest(ctx context.Context, t *testing.T, s *tasknationtest.Server, form url.Values) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.TokenURL(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return req
}

// tokenCall posts form to the token endpoint.
func tokenCall(t *testing.T, s *tasknationtest.Server, form url.Values) result {
	t.Helper()
	return do(t, tokenRequest(context.Background(), t, s, form))
}

// tokenCallErr posts form and returns the transport error, which the caller expects.
func tokenCallErr(t *testing.T, s *tasknationtest.Server, form url.Values) error {
	t.Helper()
	resp, err := httpClient.Do(tokenRequest(context.Background(), t, s, form))
	if err == nil {
		resp.Body.Close()
	}
	return err
}

func withClient(form url.Values) url.Values {
	form.Set("client_id", tasknationtest.DefaultClientID)
	form.Set("client_secret", tasknationtest.DefaultClientSecret)
	return form
}

func ccForm(scope string) url.Values {
	f := withClient(url.Values{"grant_type": {"client_credentials"}})
	if scope != "" {
		f.Set("scope", scope)
	}
	return f
}

func refreshForm(rt string) url.Values {
	return withClient(url.Values{"grant_type": {"refresh_token"}, "refresh_token": {rt}})
}

func codeForm(code, verifier string) url.Values {
	f := withClient(url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {testRedirect}})
	if verifier != "" {
		f.Set("code_verifier", verifier)
	}
	return f
}

func pkce() (verifier, challenge string) {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	verifier = base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(verifier))
	return verifier, base64.RawURLEncoding.EncodeToString(sum[:])
}

func authParams(scope, challenge string) url.Values {
	v := url.Values{
		"client_id":     {tasknationtest.DefaultClientID},
		"response_type": {"code"},
		"redirect_uri":  {testRedirect},
		"scope":         {scope},
		"state":         {"state-0123456789"},
	}
	if challenge != "" {
		v.Set("code_challenge", challenge)
		v.Set("code_challenge_method", "S256")
	}
	return v
}

func authGet(t *testing.T, s *tasknationtest.Server, params url.Values) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.AuthURL()+"?"+params.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// redirectQuery checks that r redirects to testRedirect and returns its query.
func redirectQuery(t *testing.T, r result, base string) url.Values {
	t.Helper()
	if r.status != http.StatusFound {
		t.Fatalf("status = %d, want 302; body %s", r.status, r.body)
	}
	loc, err := url.Parse(r.header.Get("Location"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := url.Parse(base)
	if loc.Scheme != b.Scheme || loc.Host != b.Host || loc.Path != b.Path {
		t.Fatalf("redirect to %s, want %s", loc, base)
	}
	return loc.Query()
}

// authorize runs /oauth2/auth and returns the code.
func authorize(t *testing.T, s *tasknationtest.Server, params url.Values) string {
	t.Helper()
	q := redirectQuery(t, authGet(t, s, params), testRedirect)
	if q.Get("error") != "" {
		t.Fatalf("authorization error %s: %s", q.Get("error"), q.Get("error_description"))
	}
	return q.Get("code")
}

// login runs the authorization_code flow with PKCE and returns the answer.
func login(t *testing.T, s *tasknationtest.Server, scope string) result {
	t.Helper()
	verifier, challenge := pkce()
	code := authorize(t, s, authParams(scope, challenge))
	r := tokenCall(t, s, codeForm(code, verifier))
	if r.status != http.StatusOK {
		t.Fatalf("code exchange: %d %s", r.status, r.body)
	}
	return r
}

// mustOK fails unless r is a 200 token answer.
func mustOK(t *testing.T, r result) result {
	t.Helper()
	if r.status != http.StatusOK || r.str("access_token") == "" {
		t.Fatalf("status = %d, body %s; want a token", r.status, r.body)
	}
	return r
}

// wantError checks an RFC 6749 JSON error answer.
func wantError(t *testing.T, r result, status int, code string) {
	t.Helper()
	if r.status != status || r.str("error") != code {
		t.Fatalf("got %d %s, want %d error %q", r.status, r.body, status, code)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if r.str("error_description") == "" {
		t.Errorf("error_description is empty")
	}
}

func apiCall(t *testing.T, s *tasknationtest.Server, method, path, token string, body io.Reader) result {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	return do(t, req)
}
