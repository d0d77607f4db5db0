package tasknationtest_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// FaultRedirect answers a 3xx pointing at Location (the token endpoint by
// default) without processing the grant.
func TestFaultRedirect(t *testing.T) {
	for _, tt := range []struct {
		name     string
		status   int
		location string
		want     int // status
	}{
		{"default", 0, "", http.StatusTemporaryRedirect},
		{"301", http.StatusMovedPermanently, "https://elsewhere.example/token", http.StatusMovedPermanently},
		{"302", http.StatusFound, "https://elsewhere.example/token", http.StatusFound},
		{"303", http.StatusSeeOther, "https://elsewhere.example/token", http.StatusSeeOther},
		{"308", http.StatusPermanentRedirect, "http://127.0.0.1:9/token?x=1", http.StatusPermanentRedirect},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, clk := newServer(t, tasknationtest.Options{})
			first := login(t, s, "supply::leads offline_access")
			s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultRedirect, Status: tt.status, Location: tt.location, Count: 1})
			r := tokenCall(t, s, refreshForm(first.str("refresh_token")))
			wantLocation := tt.location
			if wantLocation == "" {
				wantLocation = s.TokenURL()
			}
			if r.status != tt.want || r.header.Get("Location") != wantLocation {
				t.Fatalf("got %d Location %q, want %d %q", r.status, r.header.Get("Location"), tt.want, wantLocation)
			}
			if !s.Active(first.str("access_token")) {
				t.Error("FaultRedirect processed the grant: old access token revoked")
			}
			clk.Advance(2 * time.Minute) // past the grace period: the refresh token was never used
			mustOK(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))))
		})
	}
}

// FaultReject answers an RFC 6749 error without processing the grant;
// with EchoCredentials its description quotes what the request carried.
func TestFaultReject(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{AcceptBasicAuth: true})
	first := login(t, s, "supply::leads offline_access")
	rt := first.str("refresh_token")
	verifier, challenge := pkce()
	code := authorize(t, s, authParams("supply::leads", challenge))
	basic := func(form url.Values) *http.Request {
		form.Del("client_secret")
		req := tokenRequest(t.Context(), t, s, form)
		req.SetBasicAuth(tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret)
		return req
	}
	tests := []struct {
		name   string
		fault  tasknationtest.Fault
		req    *http.Request
		status int
		code   string
		quotes []string // in error_description
	}{
		{"default", tasknationtest.Fault{}, tokenRequest(t.Context(), t, s, refreshForm(rt)), 400, "invalid_grant", nil},
		{"invalid_client", tasknationtest.Fault{Code: "invalid_client"}, tokenRequest(t.Context(), t, s, ccForm("")), 401, "invalid_client", nil},
		{"status given", tasknationtest.Fault{Code: "invalid_scope", Status: 403}, tokenRequest(t.Context(), t, s, ccForm("")), 403, "invalid_scope", nil},
		{"echo refresh", tasknationtest.Fault{EchoCredentials: true}, tokenRequest(t.Context(), t, s, refreshForm(rt)), 400, "invalid_grant",
			[]string{`client_secret "` + tasknationtest.DefaultClientSecret + `"`, `refresh_token "` + rt + `"`}},
		{"echo code", tasknationtest.Fault{EchoCredentials: true}, tokenRequest(t.Context(), t, s, codeForm(code, verifier)), 400, "invalid_grant",
			[]string{tasknationtest.DefaultClientSecret, `code "` + code + `"`, `code_verifier "` + verifier + `"`}},
		{"echo basic secret", tasknationtest.Fault{Code: "invalid_client", EchoCredentials: true}, basic(ccForm("")), 401, "invalid_client",
			[]string{`client_secret "` + tasknationtest.DefaultClientSecret + `"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fault.Kind, tt.fault.Count = tasknationtest.FaultReject, 1
			s.InjectFault(tt.fault)
			r := do(t, tt.req)
			wantError(t, r, tt.status, tt.code)
			desc := r.str("error_description")
			for _, q := range tt.quotes {
				if !strings.Contains(desc, q) {
					t.Errorf("error_description %q does not quote %q", desc, q)
				}
			}
			if tt.quotes == nil && (strings.Contains(desc, tasknationtest.DefaultClientSecret) || strings.Contains(desc, rt)) {
				t.Errorf("error_description %q quotes a credential without EchoCredentials", desc)
			}
		})
	}
	// Nothing was processed: the refresh token was never used, the code
	// is still good.
	clk.Advance(2 * time.Minute)
	mustOK(t, tokenCall(t, s, refreshForm(rt)))
	mustOK(t, tokenCall(t, s, codeForm(code, verifier)))
}

// Fault.RetryAfter is sent as is with FaultStatus and FaultReject answers.
func TestFaultRetryAfter(t *testing.T) {
	date := time.Date(2030, 1, 2, 3, 6, 5, 0, time.UTC).Format(http.TimeFormat)
	for _, tt := range []struct {
		name  string
		fault tasknationtest.Fault
		want  string
	}{
		{"503 seconds", tasknationtest.Fault{Kind: tasknationtest.FaultStatus, RetryAfter: "120"}, "120"},
		{"429 date", tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 429, RetryAfter: date}, date},
		{"garbage value", tasknationtest.Fault{Kind: tasknationtest.FaultStatus, RetryAfter: "soon"}, "soon"},
		{"reject", tasknationtest.Fault{Kind: tasknationtest.FaultReject, Code: "invalid_client", RetryAfter: "7"}, "7"},
		{"none", tasknationtest.Fault{Kind: tasknationtest.FaultStatus}, ""},
		{"not sent with a redirect", tasknationtest.Fault{Kind: tasknationtest.FaultRedirect, RetryAfter: "7"}, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newServer(t, tasknationtest.Options{})
			tt.fault.Count = 1
			s.InjectFault(tt.fault)
			r := tokenCall(t, s, ccForm(""))
			if got := r.header.Get("Retry-After"); got != tt.want {
				t.Errorf("Retry-After %q, want %q (status %d)", got, tt.want, r.status)
			}
			if r.status/100 == 2 {
				t.Errorf("status %d: the fault did not apply", r.status)
			}
		})
	}
}

func TestFaultKinds(t *testing.T) {
	for k, want := range map[tasknationtest.FaultKind]string{
		tasknationtest.FaultRedirect:          "FaultRedirect",
		tasknationtest.FaultReject:            "FaultReject",
		tasknationtest.FaultReject + 1:        "FaultKind(7)",
		tasknationtest.FaultNone:              "FaultNone",
		tasknationtest.FaultLostAfterRotation: "FaultLostAfterRotation",
	} {
		if got := k.String(); got != want {
			t.Errorf("String() = %q, want %q", got, want)
		}
	}
	s, _ := newServer(t, tasknationtest.Options{})
	for name, f := range map[string]tasknationtest.Fault{
		"unknown kind":        {Kind: tasknationtest.FaultReject + 1},
		"redirect status 200": {Kind: tasknationtest.FaultRedirect, Status: 200},
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: InjectFault did not panic", name)
				}
			}()
			s.InjectFault(f)
		}()
	}
}
