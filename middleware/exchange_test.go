package middleware_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// Every bad answer of the token endpoint is a clear error naming the
// problem, never a panic, never a credential or the body in the text.
func TestToken_BadEndpointAnswers(t *testing.T) {
	const leak = "tn_at_LEAKED_IN_BODY"
	reply := func(status int, ctype, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if ctype != "" {
				w.Header().Set("Content-Type", ctype)
			}
			w.WriteHeader(status)
			w.Write([]byte(body))
		}
	}
	const js = "application/json"
	tests := []struct {
		name      string
		responder http.HandlerFunc
		kind      middleware.ErrorKind
		want      string // in the error text
	}{
		{"HTML page", reply(200, "text/html", "<html><body>Maintenance "+leak+"</body></html>"), middleware.KindInvalidResponse, "HTML page"},
		{"HTML without content type", reply(200, "", "<!DOCTYPE html><p>"+leak), middleware.KindInvalidResponse, "HTML page"},
		{"empty body", reply(200, js, ""), middleware.KindInvalidResponse, "empty response body"},
		{"not JSON", reply(200, js, "access_token="+leak), middleware.KindInvalidResponse, "cannot parse json"},
		{"truncated JSON", reply(200, js, `{"access_token":"`+leak+`","token_type":"bea`), middleware.KindInvalidResponse, "cannot parse json"},
		{"no access_token", reply(200, js, `{"token_type":"bearer","expires_in":3600}`), middleware.KindInvalidResponse, "missing access_token"},
		{"token_type mac", reply(200, js, `{"access_token":"`+leak+`","token_type":"mac","expires_in":3600}`), middleware.KindInvalidResponse, `token_type "mac" is not Bearer`},
		{"no token_type", reply(200, js, `{"access_token":"`+leak+`","expires_in":3600}`), middleware.KindInvalidResponse, "no token_type"},
		{"expires_in zero", reply(200, js, `{"access_token":"`+leak+`","token_type":"bearer","expires_in":0}`), middleware.KindInvalidResponse, "expires_in 0 is not positive"},
		{"expires_in negative", reply(200, js, `{"access_token":"`+leak+`","token_type":"bearer","expires_in":-5}`), middleware.KindInvalidResponse, "is not positive"},
		{"expires_in above a year", reply(200, js, `{"access_token":"`+leak+`","token_type":"bearer","expires_in":40000000}`), middleware.KindInvalidResponse, "more than a year"},
		{"expires_in missing", reply(200, js, `{"access_token":"`+leak+`","token_type":"bearer"}`), middleware.KindInvalidResponse, "no expires_in"},
		{"expires_in not a number", reply(200, js, `{"access_token":"`+leak+`","token_type":"bearer","expires_in":"soon"}`), middleware.KindInvalidResponse, "cannot parse json"},
		{"body over 1 MiB", reply(200, js, `{"access_token":"`+strings.Repeat("a", 1<<20)+`"}`), middleware.KindInvalidResponse, "exceeds 1 MiB"},
		{"500 with HTML", reply(500, "text/html", "<html>"+leak+"</html>"), middleware.KindStatus, "HTTP 500"},
		{"400 invalid_client", reply(401, js, `{"error":"invalid_client","error_description":"client authentication failed"}`), middleware.KindRejected, `"invalid_client"`},
		{"200 carrying an error", reply(200, js, `{"error":"invalid_scope"}`), middleware.KindRejected, `"invalid_scope"`},
		{"server never answers", func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }, middleware.KindTimeout, "did not answer in time"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *middleware.Config) { c.RequestTimeout = 300 * time.Millisecond })
			f.srv.SetTokenResponder(tt.responder)
			_, err := f.gate.Token(context.Background())
			var ee *middleware.EndpointError
			if !errors.As(err, &ee) {
				t.Fatalf("err = %v, want an *EndpointError", err)
			}
			if ee.Kind != tt.kind {
				t.Errorf("Kind = %q, want %q (%v)", ee.Kind, tt.kind, err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error %q does not say %q", msg, tt.want)
			}
			for _, secret := range []string{leak, tasknationtest.DefaultClientSecret, f.srv.TokenURL()} {
				if strings.Contains(msg, secret) {
					t.Errorf("error text holds %q: %s", secret, msg)
				}
			}
			if len(msg) > 300 {
				t.Errorf("error text is %d bytes: the body leaked into it", len(msg))
			}
		})
	}
}

// A token_type in any case is Bearer; a good answer is taken as is.
func TestToken_GoodAnswerVariants(t *testing.T) {
	for _, tt := range []string{"bearer", "Bearer", "BEARER"} {
		t.Run(tt, func(t *testing.T) {
			f := newFixture(t, nil)
			f.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"access_token":"tn_at_x","token_type":"` + tt + `","expires_in":9}`))
			})
			before := f.clock.Now()
			tok, err := f.gate.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.AccessToken != "tn_at_x" || tok.TokenType != "Bearer" {
				t.Fatalf("token %v", tok)
			}
			if got := tok.Expiry.Sub(before); got != 9*time.Second {
				t.Fatalf("expiry %v after the request, want 9s", got)
			}
			if strings.Join(tok.Scopes, " ") != strings.Join(appScopes, " ") {
				t.Fatalf("no scope in the answer: scopes %v, want the requested ones", tok.Scopes)
			}
		})
	}
}

// Network failures: refused port and dropped connection.
func TestToken_NetworkFailures(t *testing.T) {
	t.Run("refused port", func(t *testing.T) {
		f := newFixture(t, func(c *middleware.Config) { c.TokenURL = "http://127.0.0.1:1/oauth2/token" })
		_, err := f.gate.Token(context.Background())
		var ee *middleware.EndpointError
		if !errors.As(err, &ee) || ee.Kind != middleware.KindNetwork || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("err = %v, want a network error saying refused", err)
		}
	})
	t.Run("connection dropped", func(t *testing.T) {
		f := newFixture(t, nil)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Count: 1})
		_, err := f.gate.Token(context.Background())
		var ee *middleware.EndpointError
		if !errors.As(err, &ee) || ee.Kind != middleware.KindNetwork {
			t.Fatalf("err = %v, want a network error", err)
		}
		if strings.Contains(err.Error(), f.srv.URL) {
			t.Fatalf("error names the URL: %v", err)
		}
	})
}

// TaskNation takes client credentials in the form body only (the fake
// refuses HTTP Basic): a token proves the preset sends them there. The
// generic provider sends HTTP Basic.
func TestProvider_AuthStyle(t *testing.T) {
	f := newFixture(t, nil)
	f.token(t)
	srv := tasknationtest.NewServer(tasknationtest.Options{AcceptBasicAuth: true})
	defer srv.Close()
	g, err := middleware.New(middleware.Config{
		Provider: middleware.Generic, TokenURL: srv.TokenURL(),
		ClientID: tasknationtest.DefaultClientID, ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes: []string{"demand::search"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if _, err := g.Token(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// The kinds' values are the Observer's outcome labels and the Caddy
// metrics' label values: they must not change.
func TestErrorKind_Labels(t *testing.T) {
	for kind, label := range map[middleware.ErrorKind]string{
		middleware.KindNetwork:         "network",
		middleware.KindTimeout:         "timeout",
		middleware.KindStatus:          "status",
		middleware.KindRejected:        "rejected",
		middleware.KindInvalidResponse: "invalid_response",
		middleware.KindRedirect:        "redirect",
	} {
		if string(kind) != label {
			t.Errorf("kind %q, want %q", kind, label)
		}
	}
}

// The token request never follows a redirect: a 3xx is an error of kind
// redirect naming the status and the origin it pointed to (not its path
// or query), and nothing reaches that origin, whatever the status. The
// caller's http.Client is left as it was.
func TestToken_RedirectNotFollowed(t *testing.T) {
	for _, status := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(status), func(t *testing.T) {
			var arrived atomic.Int64
			elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				w.Header().Set("Content-Type", "application/json")
				w.Write([]byte(`{"access_token":"tn_at_elsewhere","token_type":"bearer","expires_in":3600}`))
			}))
			defer elsewhere.Close()
			ev := &events{}
			hc := &http.Client{Timeout: 10 * time.Second}
			f := newFixture(t, func(c *middleware.Config) { c.HTTPClient, c.Observer = hc, ev })
			f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultRedirect, Status: status,
				Location: elsewhere.URL + "/oauth2/token?client_secret=in-the-query"})

			_, err := f.gate.Token(context.Background())
			var ee *middleware.EndpointError
			if !errors.As(err, &ee) || ee.Kind != middleware.KindRedirect || ee.Status != status {
				t.Fatalf("err = %v, want an EndpointError of kind redirect, status %d", err, status)
			}
			if n := arrived.Load(); n != 0 {
				t.Fatalf("%d requests reached the redirect's target", n)
			}
			msg := err.Error()
			want := fmt.Sprintf("token endpoint answered HTTP %d, a redirect to %s; redirects are not followed", status, elsewhere.URL)
			if !strings.Contains(msg, want) {
				t.Errorf("error %q does not say %q", msg, want)
			}
			if strings.Contains(msg, "/oauth2/token") || strings.Contains(msg, "in-the-query") {
				t.Errorf("error %q shows the Location's path or query", msg)
			}
			if !ev.has("token client_credentials redirect") {
				t.Errorf("observer outcomes %v, want a redirect", ev.snapshot())
			}
			if hc.CheckRedirect != nil || hc.Transport != nil {
				t.Error("the caller's http.Client was changed")
			}
			w := httptest.NewRecorder()
			f.gate.Wrap(&recorder{}).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
			body := w.Body.String()
			if w.Code != http.StatusServiceUnavailable || !strings.Contains(body, fmt.Sprintf("answered with a redirect (HTTP %d), which is not followed", status)) ||
				strings.Contains(body, elsewhere.URL) {
				t.Errorf("client saw %d %s", w.Code, body)
			}
			if n := arrived.Load(); n != 0 {
				t.Fatalf("%d requests reached the redirect's target", n)
			}
		})
	}
}

// A refresh answered 307 is not posted again elsewhere either: the
// refresh token stays between the Gate and the token endpoint.
func TestUser_RefreshRedirectNotFollowed(t *testing.T) {
	var arrived atomic.Int64
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived.Add(1)
		w.WriteHeader(http.StatusBadRequest)
	}))
	defer elsewhere.Close()
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	tok, _ := f.gate.UserToken(context.Background(), "alice")
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultRedirect, Grant: tasknationtest.GrantRefreshToken, Location: elsewhere.URL + "/token"})
	f.clock.Advance(time.Hour + time.Minute)

	wantUserError(t, alice.api(f), http.StatusServiceUnavailable, "token_unavailable")
	_, err := f.gate.UserToken(context.Background(), "alice")
	var ee *middleware.EndpointError
	if !errors.As(err, &ee) || ee.Kind != middleware.KindRedirect {
		t.Fatalf("err = %v, want a redirect EndpointError", err)
	}
	if n := arrived.Load(); n != 0 {
		t.Fatalf("%d requests reached the redirect's target", n)
	}
	if n := f.srv.TokenRequests(tasknationtest.GrantRefreshToken); n < 1 {
		t.Fatalf("%d refresh requests: the test proved nothing", n)
	}
	for _, e := range f.logs.All() {
		if line := fmt.Sprintf("%s %v", e.Message, e.ContextMap()); strings.Contains(line, tok.RefreshToken) {
			t.Errorf("log line holds the refresh token: %s", line)
		}
	}
}

// The server's error_description is kept only as printable ASCII, cut
// at about 100 bytes, with runs that look like tokens and the client
// secret replaced by "…"; an error code that quotes the secret loses it.
func TestToken_ErrorDescriptionScrubbed(t *testing.T) {
	rt := "tn_rt_" + strings.Repeat("Ab9-_", 8)
	const secret = "s3cr+t/#1" // shorter than a token run, changed by query escaping
	tests := []struct {
		name        string
		code, desc  string
		wantCode    string
		wantDesc    string
		wantInError string
	}{
		{"plain words kept", "invalid_client", "client authentication failed", "invalid_client", "client authentication failed",
			`HTTP 401 with error "invalid_client" (client authentication failed)`},
		{"client secret quoted", "invalid_client", `client_secret "` + secret + `" is wrong`, "invalid_client", `client_secret "…" is wrong`, ""},
		{"client secret query-escaped", "invalid_client", "got client_secret=" + url.QueryEscape(secret) + " in the body", "invalid_client", "got client_secret=… in the body", ""},
		{"a token", "invalid_client", "refresh token " + rt + " was revoked", "invalid_client", "refresh token … was revoked", ""},
		{"a JWT", "invalid_client", "assertion eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln is expired", "invalid_client", "assertion … is expired", ""},
		{"15 token characters kept", "invalid_client", "id 0123456789abcde", "invalid_client", "id 0123456789abcde", ""},
		{"control and non-ASCII bytes", "invalid_client", "bad\r\nrequest\x00\x1b[31m for müller", "invalid_client", "bad request [31m for m ller", ""},
		{"long text cut", "invalid_client", strings.Repeat("too long ", 40), "invalid_client", strings.Repeat("too long ", 11) + "t…", ""},
		{"cut does not keep a token's start", "invalid_client", strings.Repeat("x ", 48) + rt, "invalid_client", strings.Repeat("x ", 48) + "…", ""},
		{"code quoting the secret", "bad_" + secret, "", "bad_…", "", `with error "bad_…"`},
		{"code with control bytes", "invalid\x1b_client", "", "invalid?_client", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, func(c *middleware.Config) { c.ClientSecret = secret }) // the responder takes any
			f.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
				b, _ := json.Marshal(map[string]string{"error": tt.code, "error_description": tt.desc})
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusUnauthorized)
				w.Write(b)
			})
			_, err := f.gate.Token(context.Background())
			var ee *middleware.EndpointError
			if !errors.As(err, &ee) || ee.Kind != middleware.KindRejected {
				t.Fatalf("err = %v, want a rejected EndpointError", err)
			}
			if ee.Code != tt.wantCode || ee.Description != tt.wantDesc {
				t.Errorf("Code %q, Description %q;\nwant %q, %q", ee.Code, ee.Description, tt.wantCode, tt.wantDesc)
			}
			if len(ee.Description) > 100+len("…") {
				t.Errorf("Description is %d bytes", len(ee.Description))
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.wantInError) {
				t.Errorf("error %q does not say %q", msg, tt.wantInError)
			}
			for _, s := range []string{secret, url.QueryEscape(secret), rt, rt[:16], "\x1b", "\x00", "eyJhbGciOiJSUzI1NiJ9"} {
				if strings.Contains(msg, s) {
					t.Errorf("error %q holds %q", msg, s)
				}
			}
		})
	}
}

// A server that quotes the credentials it refused (the fake's FaultReject
// with EchoCredentials) gets none of them into an error, a log line at
// debug level or a client's answer: not the client secret, not the
// refresh token.
func TestLogs_ServerQuotesCredentials(t *testing.T) {
	check := func(t *testing.T, logs []string, err error, body string, secrets ...string) {
		t.Helper()
		texts := append(logs, err.Error(), body)
		for _, s := range secrets {
			for _, text := range texts {
				if strings.Contains(text, s) {
					t.Errorf("%q is in %s", s, text)
				}
			}
		}
		// What is left of the description is logged: the check above
		// looked at the right lines.
		if !strings.Contains(strings.Join(logs, "\n"), `the request was refused: client_secret "…"`) {
			t.Errorf("no log line with the refusal; logs:\n%s", strings.Join(logs, "\n"))
		}
	}
	lines := func(logs *observer.ObservedLogs) []string {
		var out []string
		for _, e := range logs.All() {
			out = append(out, fmt.Sprintf("%s %v", e.Message, e.ContextMap()))
		}
		return out
	}

	t.Run("client_credentials", func(t *testing.T) {
		f := newFixture(t, nil)
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_client", EchoCredentials: true})
		w := httptest.NewRecorder()
		f.gate.Wrap(&recorder{}).ServeHTTP(w, httptest.NewRequest("GET", "/", nil))
		_, err := f.gate.Token(context.Background())
		if err == nil || w.Code != http.StatusServiceUnavailable {
			t.Fatalf("answer %d, err %v: want a refusal", w.Code, err)
		}
		check(t, lines(f.logs), err, w.Body.String(), tasknationtest.DefaultClientSecret)
	})
	t.Run("refresh_token", func(t *testing.T) {
		f := newUserFixture(t, tasknationtest.Options{}, nil)
		alice := f.browser(t, "alice")
		alice.connect(f, "tn-alice")
		tok, _ := f.gate.UserToken(context.Background(), "alice")
		f.clock.Advance(time.Hour + time.Minute)
		// A refusal the Gate retries later (invalid_client), then one
		// that ends the connection (invalid_grant).
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_client", EchoCredentials: true, Count: 1})
		a := alice.api(f)
		wantUserError(t, a, http.StatusServiceUnavailable, "token_unavailable")
		_, err := f.gate.UserToken(context.Background(), "alice")
		if err == nil {
			t.Fatal("UserToken: no error")
		}
		f.clock.Advance(time.Hour) // past the backoff
		f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_grant", EchoCredentials: true, Count: 1})
		b := alice.api(f)
		wantUserError(t, b, http.StatusUnauthorized, "reauthorization_required")
		check(t, lines(f.logs), err, a.body+b.body, tasknationtest.DefaultClientSecret, tok.RefreshToken, tok.AccessToken)
	})
}

// Retry-After on a 429 or 5xx answer becomes EndpointError.RetryAfter:
// delta-seconds or an HTTP-date read against the Gate's clock, at most an
// hour; 0 when absent, unparsable, in the past, or on another status.
func TestToken_RetryAfter(t *testing.T) {
	type when func(now time.Time) string
	secs := func(s string) when { return func(time.Time) string { return s } }
	date := func(d time.Duration, layout string) when {
		return func(now time.Time) string { return now.Add(d).UTC().Format(layout) }
	}
	const rfc850 = "Monday, 02-Jan-06 15:04:05 GMT"
	tests := []struct {
		name   string
		fault  tasknationtest.Fault
		header when
		want   time.Duration
		kind   middleware.ErrorKind
	}{
		{"503 seconds", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("120"), 2 * time.Minute, middleware.KindStatus},
		{"429 seconds", tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 429}, secs("120"), 2 * time.Minute, middleware.KindStatus},
		{"500 zero", tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 500}, secs("0"), 0, middleware.KindStatus},
		{"an hour", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("3600"), time.Hour, middleware.KindStatus},
		{"capped at an hour", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("3601"), time.Hour, middleware.KindStatus},
		{"too many digits", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("99999999999999999999999"), time.Hour, middleware.KindStatus},
		{"negative", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("-5"), 0, middleware.KindStatus},
		{"fraction", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("1.5"), 0, middleware.KindStatus},
		{"words", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs("soon"), 0, middleware.KindStatus},
		{"absent", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, secs(""), 0, middleware.KindStatus},
		{"HTTP-date", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, date(90*time.Second, http.TimeFormat), 90 * time.Second, middleware.KindStatus},
		{"RFC 850 date", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, date(30*time.Second, rfc850), 30 * time.Second, middleware.KindStatus},
		{"asctime date", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, date(30*time.Second, time.ANSIC), 30 * time.Second, middleware.KindStatus},
		{"date in the past", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, date(-10*time.Second, http.TimeFormat), 0, middleware.KindStatus},
		{"date past an hour", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, date(2*time.Hour, http.TimeFormat), time.Hour, middleware.KindStatus},
		{"not on a 400", tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_request"}, secs("120"), 0, middleware.KindRejected},
		{"not on a 401", tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_client"}, secs("120"), 0, middleware.KindRejected},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, nil)
			now := f.clock.Now()
			f.clock.Advance(now.Truncate(time.Second).Add(time.Second).Sub(now)) // HTTP-dates have whole seconds
			tt.fault.RetryAfter = tt.header(f.clock.Now())
			f.srv.InjectFault(tt.fault)
			_, err := f.gate.Token(context.Background())
			var ee *middleware.EndpointError
			if !errors.As(err, &ee) || ee.Kind != tt.kind {
				t.Fatalf("err = %v, want an EndpointError of kind %s", err, tt.kind)
			}
			if ee.RetryAfter != tt.want {
				t.Errorf("RetryAfter %v for %q, want %v", ee.RetryAfter, tt.fault.RetryAfter, tt.want)
			}
			if tt.want > 0 && !strings.Contains(err.Error(), "(Retry-After "+tt.want.String()+")") {
				t.Errorf("error %q does not say Retry-After %v", err, tt.want)
			}
		})
	}
}

// A redirect's error names where it pointed as scheme and host only, so an
// operator can fix token_url; a relative Location names nothing.
func TestToken_RedirectNamesTheOrigin(t *testing.T) {
	for _, tt := range []struct{ location, want string }{
		{"https://login.auth-provider.example.com/oauth2/token?code=x#y", "HTTP 307, a redirect to https://login.auth-provider.example.com; redirects are not followed"},
		{"https://user:pa55word@auth.example.com:8443/t", "a redirect to https://auth.example.com:8443; redirects"},
		{"/oauth2/v2/token?client_secret=x", "HTTP 307, a redirect; redirects are not followed"},
		{"https://" + tasknationtest.DefaultClientSecret + ".example.com/", "a redirect to https://….example.com;"},
	} {
		t.Run(tt.location, func(t *testing.T) {
			f := newFixture(t, nil)
			f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultRedirect, Location: tt.location})
			_, err := f.gate.Token(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want it to say %q", err, tt.want)
			}
			for _, s := range []string{"pa55word", "code=x", "client_secret=", "/oauth2/", tasknationtest.DefaultClientSecret} {
				if strings.Contains(err.Error(), s) {
					t.Errorf("error %q holds %q", err, s)
				}
			}
		})
	}
}
