package tasknationtest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

func TestClientCredentials(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	tests := []struct {
		name, scope, wantScope string
	}{
		{"scopes", "demand::categories demand::search", "demand::categories demand::search"},
		{"no scope gives no scope", "", ""},
		{"offline_access not granted", "demand::search offline_access", "demand::search"},
		{"duplicates collapsed", "demand::search demand::search", "demand::search"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustOK(t, tokenCall(t, s, ccForm(tc.scope)))
			if got := r.str("token_type"); got != "bearer" {
				t.Errorf("token_type = %q, want lower-case bearer", got)
			}
			if at := r.str("access_token"); !strings.HasPrefix(at, tasknationtest.AccessTokenPrefix) || len(at) < len(tasknationtest.AccessTokenPrefix)+43 {
				t.Errorf("access_token %q: want tn_at_ + 32 random bytes", at)
			}
			if r.json["expires_in"] != float64(3600) {
				t.Errorf("expires_in = %v, want 3600 on a frozen clock", r.json["expires_in"])
			}
			if r.has("refresh_token") {
				t.Errorf("client_credentials answer has a refresh_token")
			}
			if tc.wantScope == "" && r.has("scope") {
				t.Errorf("scope = %q, want absent", r.str("scope"))
			}
			if got := r.str("scope"); got != tc.wantScope {
				t.Errorf("scope = %q, want %q", got, tc.wantScope)
			}
			if cc := r.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q", cc)
			}
			if !s.Active(r.str("access_token")) {
				t.Errorf("issued token is not active")
			}
		})
	}
}

func TestTokenEndpointErrors(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret},
		{ID: "cc-only", Secret: "cc-secret", Grants: []string{"client_credentials"}, Scopes: []string{"demand::search"}},
	}})
	ccOnly := func(grant, scope string) url.Values {
		return url.Values{"grant_type": {grant}, "client_id": {"cc-only"}, "client_secret": {"cc-secret"}, "scope": {scope}}
	}
	tests := []struct {
		name   string
		method string
		form   url.Values
		modify func(*http.Request)
		status int
		code   string
	}{
		{name: "wrong secret", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {tasknationtest.DefaultClientID}, "client_secret": {"nope"}}, status: 401, code: "invalid_client"},
		{name: "unknown client", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {"ghost"}, "client_secret": {"x"}}, status: 401, code: "invalid_client"},
		{name: "missing secret", form: url.Values{"grant_type": {"client_credentials"}, "client_id": {tasknationtest.DefaultClientID}}, status: 401, code: "invalid_client"},
		{name: "basic auth refused", form: url.Values{"grant_type": {"client_credentials"}}, modify: func(r *http.Request) {
			r.SetBasicAuth(tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret)
		}, status: 401, code: "invalid_client"},
		{name: "basic auth refused even with body credentials", form: ccForm(""), modify: func(r *http.Request) {
			r.SetBasicAuth(tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret)
		}, status: 401, code: "invalid_client"},
		{name: "missing grant_type", form: withClient(url.Values{}), status: 400, code: "invalid_request"},
		{name: "unknown grant", form: withClient(url.Values{"grant_type": {"password"}}), status: 400, code: "unsupported_grant_type"},
		{name: "grant not allowed for client", form: ccOnly("refresh_token", ""), status: 400, code: "unauthorized_client"},
		{name: "unknown scope", form: ccForm("demand::everything"), status: 400, code: "invalid_scope"},
		{name: "scope not allowed for client", form: ccOnly("client_credentials", "demand::categories"), status: 400, code: "invalid_scope"},
		{name: "repeated parameter", form: withClient(url.Values{"grant_type": {"client_credentials", "client_credentials"}}), status: 400, code: "invalid_request"},
		{name: "json body", form: ccForm(""), modify: func(r *http.Request) { r.Header.Set("Content-Type", "application/json") }, status: 400, code: "invalid_request"},
		{name: "GET", method: http.MethodGet, status: 405, code: "invalid_request"},
		{name: "missing code", form: withClient(url.Values{"grant_type": {"authorization_code"}}), status: 400, code: "invalid_request"},
		{name: "missing refresh_token", form: withClient(url.Values{"grant_type": {"refresh_token"}}), status: 400, code: "invalid_request"},
		{name: "unknown refresh_token", form: refreshForm("tn_rt_nope"), status: 400, code: "invalid_grant"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := tokenRequest(context.Background(), t, s, tc.form)
			if tc.method != "" {
				req.Method = tc.method
			}
			if tc.modify != nil {
				tc.modify(req)
			}
			r := do(t, req)
			wantError(t, r, tc.status, tc.code)
			if tc.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("401 without WWW-Authenticate: %q", r.header.Get("WWW-Authenticate"))
			}
			if strings.Contains(string(r.body), tasknationtest.DefaultClientSecret) || strings.Contains(string(r.body), "cc-secret") {
				t.Errorf("error body echoes a secret: %s", r.body)
			}
		})
	}
}

func TestBasicAuthAccepted(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{AcceptBasicAuth: true})
	for _, tc := range []struct {
		secret string
		status int
	}{{tasknationtest.DefaultClientSecret, 200}, {"wrong", 401}} {
		req := tokenRequest(context.Background(), t, s, url.Values{"grant_type": {"client_credentials"}})
		req.SetBasicAuth(tasknationtest.DefaultClientID, tc.secret)
		if r := do(t, req); r.status != tc.status {
			t.Errorf("secret %q: status %d, want %d (%s)", tc.secret, r.status, tc.status, r.body)
		}
	}
}

func TestExpiresInRoundedDownWhenWritten(t *testing.T) {
	for _, tc := range []struct {
		name string
		step time.Duration
		want float64
	}{
		{"frozen clock", 0, 10},
		{"clock moves while answering", time.Millisecond, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			clk.SetStep(tc.step)
			s, _ := newServer(t, tasknationtest.Options{TokenLifetime: 10 * time.Second, Now: clk.Now})
			r := mustOK(t, tokenCall(t, s, ccForm("")))
			if r.json["expires_in"] != tc.want {
				t.Errorf("expires_in = %v, want %v", r.json["expires_in"], tc.want)
			}
		})
	}
}

func TestAuthorizationCodeSuccess(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	t.Run("pkce and offline_access", func(t *testing.T) {
		verifier, challenge := pkce()
		params := authParams("supply::leads offline_access", challenge)
		q := redirectQuery(t, authGet(t, s, params), testRedirect)
		if q.Get("state") != "state-0123456789" {
			t.Errorf("state = %q", q.Get("state"))
		}
		code := q.Get("code")
		if !strings.HasPrefix(code, tasknationtest.CodePrefix) {
			t.Fatalf("code %q lacks prefix", code)
		}
		r := mustOK(t, tokenCall(t, s, codeForm(code, verifier)))
		if r.str("token_type") != "bearer" {
			t.Errorf("token_type = %q", r.str("token_type"))
		}
		if !strings.HasPrefix(r.str("refresh_token"), tasknationtest.RefreshTokenPrefix) {
			t.Errorf("refresh_token = %q, want tn_rt_ prefix", r.str("refresh_token"))
		}
		if r.str("scope") != "supply::leads offline_access" {
			t.Errorf("scope = %q", r.str("scope"))
		}
		if !s.RefreshActive(r.str("refresh_token")) {
			t.Errorf("refresh token not active")
		}
		a := apiCall(t, s, http.MethodGet, "/api/v1/leads", r.str("access_token"), nil)
		if a.status != 200 || a.str("subject") != tasknationtest.DefaultUser {
			t.Errorf("API: %d %s, want subject %s", a.status, a.body, tasknationtest.DefaultUser)
		}
	})
	t.Run("no offline_access, no refresh token", func(t *testing.T) {
		r := login(t, s, "supply::leads")
		if r.has("refresh_token") {
			t.Errorf("refresh_token issued without offline_access")
		}
	})
	t.Run("without pkce and with login_hint", func(t *testing.T) {
		params := authParams("supply::businesses", "")
		params.Set("login_hint", "pro-42")
		code := authorize(t, s, params)
		r := mustOK(t, tokenCall(t, s, codeForm(code, "")))
		a := apiCall(t, s, http.MethodGet, "/api/v1/businesses", r.str("access_token"), nil)
		if a.str("subject") != "pro-42" {
			t.Errorf("subject = %q, want login_hint pro-42", a.str("subject"))
		}
	})
}

func TestAuthorizationCodeErrorsBurnTheCode(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret, RedirectURIs: []string{testRedirect}},
		{ID: "other", Secret: "other-secret"},
	}})
	tests := []struct {
		name   string
		noPKCE bool
		before func()
		form   func(code, verifier string) url.Values
	}{
		{name: "wrong verifier", form: func(code, _ string) url.Values { v, _ := pkce(); return codeForm(code, v) }},
		{name: "missing verifier", form: func(code, _ string) url.Values { return codeForm(code, "") }},
		{name: "verifier without challenge", noPKCE: true, form: func(code, _ string) url.Values { v, _ := pkce(); return codeForm(code, v) }},
		{name: "wrong redirect_uri", form: func(code, v string) url.Values {
			f := codeForm(code, v)
			f.Set("redirect_uri", "http://127.0.0.1:9/other")
			return f
		}},
		{name: "missing redirect_uri", form: func(code, v string) url.Values {
			f := codeForm(code, v)
			f.Del("redirect_uri")
			return f
		}},
		{name: "other client", form: func(code, v string) url.Values {
			f := codeForm(code, v)
			f.Set("client_id", "other")
			f.Set("client_secret", "other-secret")
			return f
		}},
		{name: "expired", before: func() { clk.Advance(10*time.Minute + time.Second) }, form: codeForm},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			verifier, challenge := pkce()
			if tc.noPKCE {
				verifier, challenge = "", ""
			}
			code := authorize(t, s, authParams("supply::leads offline_access", challenge))
			if tc.before != nil {
				tc.before()
			}
			wantError(t, tokenCall(t, s, tc.form(code, verifier)), 400, "invalid_grant")
			// Single use even though the exchange failed.
			wantError(t, tokenCall(t, s, codeForm(code, verifier)), 400, "invalid_grant")
		})
	}
	t.Run("unknown code", func(t *testing.T) {
		wantError(t, tokenCall(t, s, codeForm("tn_code_unknown", "")), 400, "invalid_grant")
	})
}

func TestCodeReuseRevokesFirstTokens(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	verifier, challenge := pkce()
	code := authorize(t, s, authParams("supply::leads offline_access", challenge))
	first := mustOK(t, tokenCall(t, s, codeForm(code, verifier)))
	at, rt := first.str("access_token"), first.str("refresh_token")
	if !s.Active(at) {
		t.Fatal("first access token not active")
	}
	wantError(t, tokenCall(t, s, codeForm(code, verifier)), 400, "invalid_grant")
	if s.Active(at) {
		t.Error("access token of the first exchange still active after code reuse")
	}
	if a := apiCall(t, s, http.MethodGet, "/api/v1/leads", at, nil); a.status != 401 {
		t.Errorf("API with revoked token: %d", a.status)
	}
	wantError(t, tokenCall(t, s, refreshForm(rt)), 400, "invalid_grant")
}

func TestRefreshRotation(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	first := login(t, s, "supply::leads offline_access")
	at0, rt0 := first.str("access_token"), first.str("refresh_token")
	r := mustOK(t, tokenCall(t, s, refreshForm(rt0)))
	at1, rt1 := r.str("access_token"), r.str("refresh_token")
	if at1 == at0 || rt1 == rt0 || !strings.HasPrefix(rt1, tasknationtest.RefreshTokenPrefix) {
		t.Fatalf("refresh did not rotate: at %v rt %v", at1 != at0, rt1 != rt0)
	}
	if r.str("token_type") != "bearer" || r.str("scope") != "supply::leads offline_access" {
		t.Errorf("token_type %q scope %q", r.str("token_type"), r.str("scope"))
	}
	if s.Active(at0) {
		t.Error("old access token still active after refresh")
	}
	if a := apiCall(t, s, http.MethodGet, "/api/v1/leads", at0, nil); a.status != 401 {
		t.Errorf("API with old token: %d, want 401", a.status)
	}
	if a := apiCall(t, s, http.MethodGet, "/api/v1/leads", at1, nil); a.status != 200 {
		t.Errorf("API with new token: %d, want 200", a.status)
	}
	mustOK(t, tokenCall(t, s, refreshForm(rt1)))
}

func TestRefreshReuseGraceWindow(t *testing.T) {
	tests := []struct {
		name    string
		grace   time.Duration // Options.GracePeriod
		advance time.Duration
		inGrace bool
	}{
		{"immediately", 0, 0, true},
		{"30s later", 0, 30 * time.Second, true},
		{"at the 60s boundary", 0, 60 * time.Second, true},
		{"61s later", 0, 61 * time.Second, false},
		{"custom 5s grace, 6s later", 5 * time.Second, 6 * time.Second, false},
		{"grace disabled", -1, time.Millisecond, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, clk := newServer(t, tasknationtest.Options{GracePeriod: tc.grace})
			rt0 := login(t, s, "supply::leads offline_access").str("refresh_token")
			succ := mustOK(t, tokenCall(t, s, refreshForm(rt0)))
			clk.Advance(tc.advance)
			reuse := tokenCall(t, s, refreshForm(rt0))
			if tc.inGrace {
				mustOK(t, reuse)
				if reuse.str("refresh_token") == succ.str("refresh_token") || reuse.str("access_token") == succ.str("access_token") {
					t.Error("grace reuse returned the same pair, want a fresh one")
				}
				if !s.Active(succ.str("access_token")) {
					t.Error("successor access token revoked by grace reuse")
				}
				// The successor issued earlier still works.
				mustOK(t, tokenCall(t, s, refreshForm(succ.str("refresh_token"))))
				return
			}
			wantError(t, reuse, 400, "invalid_grant")
			// The whole family is revoked: successor refresh and access tokens too.
			if s.Active(succ.str("access_token")) {
				t.Error("successor access token still active")
			}
			if s.RefreshActive(succ.str("refresh_token")) {
				t.Error("successor refresh token still active")
			}
			wantError(t, tokenCall(t, s, refreshForm(succ.str("refresh_token"))), 400, "invalid_grant")
		})
	}
}

func TestRefreshLifetime(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{RefreshLifetime: time.Hour, TokenLifetime: 10 * time.Minute})
	rt0 := login(t, s, "supply::leads offline_access").str("refresh_token")
	clk.Advance(30 * time.Minute)
	rt1 := mustOK(t, tokenCall(t, s, refreshForm(rt0))).str("refresh_token")
	if !s.RefreshActive(rt1) {
		t.Fatal("new refresh token not active")
	}
	// The lifetime counts from the original grant, not from the rotation.
	clk.Advance(30*time.Minute + time.Second)
	if s.RefreshActive(rt1) {
		t.Error("refresh token active past its lifetime")
	}
	wantError(t, tokenCall(t, s, refreshForm(rt1)), 400, "invalid_grant")
}

func TestRefreshTokenOfAnotherClient(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret, RedirectURIs: []string{testRedirect}},
		{ID: "other", Secret: "other-secret"},
	}})
	rt := login(t, s, "supply::leads offline_access").str("refresh_token")
	f := refreshForm(rt)
	f.Set("client_id", "other")
	f.Set("client_secret", "other-secret")
	wantError(t, tokenCall(t, s, f), 400, "invalid_grant")
	mustOK(t, tokenCall(t, s, refreshForm(rt)))
}

func TestRefreshScope(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{})
	rt0 := login(t, s, "supply::leads supply::reviews offline_access").str("refresh_token")

	wider := refreshForm(rt0)
	wider.Set("scope", "supply::leads demand::search")
	wantError(t, tokenCall(t, s, wider), 400, "invalid_scope")

	narrower := refreshForm(rt0)
	narrower.Set("scope", "supply::leads")
	// The invalid_scope attempt must not have rotated rt0: past the grace
	// window it still works.
	clk.Advance(2 * time.Minute)
	r := mustOK(t, tokenCall(t, s, narrower))
	if r.str("scope") != "supply::leads" {
		t.Errorf("scope = %q, want supply::leads", r.str("scope"))
	}
	if a := apiCall(t, s, http.MethodGet, "/api/v1/reviews", r.str("access_token"), nil); a.status != 403 {
		t.Errorf("narrowed token on reviews: %d, want 403", a.status)
	}
	// The original scope remains available to the next refresh.
	r2 := mustOK(t, tokenCall(t, s, refreshForm(r.str("refresh_token"))))
	if r2.str("scope") != "supply::leads supply::reviews offline_access" {
		t.Errorf("scope after narrowed refresh = %q", r2.str("scope"))
	}
}

func TestAuthorizeErrors(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret, RedirectURIs: []string{testRedirect}},
		{ID: "limited", Secret: "x", RedirectURIs: []string{testRedirect}, Scopes: []string{"demand::search"}},
		{ID: "cc-only", Secret: "x", RedirectURIs: []string{testRedirect}, Grants: []string{"client_credentials"}},
	}})
	_, challenge := pkce()
	tests := []struct {
		name      string
		change    func(url.Values)
		wantError string // "" = a 400 page without redirect
		wantState string
	}{
		{name: "unknown client", change: func(v url.Values) { v.Set("client_id", "ghost") }},
		{name: "missing client", change: func(v url.Values) { v.Del("client_id") }},
		{name: "unregistered redirect", change: func(v url.Values) { v.Set("redirect_uri", "http://127.0.0.1:9/evil") }},
		{name: "redirect prefix is not a match", change: func(v url.Values) { v.Set("redirect_uri", testRedirect+"/x") }},
		{name: "missing redirect", change: func(v url.Values) { v.Del("redirect_uri") }},
		{name: "short state", change: func(v url.Values) { v.Set("state", "short") }, wantError: "invalid_request", wantState: "short"},
		{name: "missing state", change: func(v url.Values) { v.Del("state") }, wantError: "invalid_request"},
		{name: "response_type token", change: func(v url.Values) { v.Set("response_type", "token") }, wantError: "unsupported_response_type", wantState: "state-0123456789"},
		{name: "unknown scope", change: func(v url.Values) { v.Set("scope", "supply::leads supply::everything") }, wantError: "invalid_scope", wantState: "state-0123456789"},
		{name: "scope not allowed", change: func(v url.Values) { v.Set("client_id", "limited") }, wantError: "invalid_scope", wantState: "state-0123456789"},
		{name: "grant not allowed", change: func(v url.Values) { v.Set("client_id", "cc-only") }, wantError: "unauthorized_client", wantState: "state-0123456789"},
		{name: "plain pkce", change: func(v url.Values) { v.Set("code_challenge_method", "plain") }, wantError: "invalid_request", wantState: "state-0123456789"},
		{name: "challenge without method", change: func(v url.Values) { v.Del("code_challenge_method") }, wantError: "invalid_request", wantState: "state-0123456789"},
		{name: "malformed challenge", change: func(v url.Values) { v.Set("code_challenge", "abc") }, wantError: "invalid_request", wantState: "state-0123456789"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params := authParams("supply::leads", challenge)
			tc.change(params)
			r := authGet(t, s, params)
			if tc.wantError == "" {
				if r.status != http.StatusBadRequest || r.header.Get("Location") != "" {
					t.Fatalf("status %d Location %q, want a 400 page without redirect", r.status, r.header.Get("Location"))
				}
				if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
					t.Errorf("Content-Type = %q", r.header.Get("Content-Type"))
				}
				return
			}
			q := redirectQuery(t, r, testRedirect)
			if q.Get("error") != tc.wantError || q.Get("state") != tc.wantState || q.Has("code") {
				t.Errorf("redirect query %v, want error=%s state=%q and no code", q, tc.wantError, tc.wantState)
			}
		})
	}
}

func TestAddRedirectURIAfterStart(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	late := "http://127.0.0.1:9/late?tenant=7"
	params := authParams("supply::leads", "")
	params.Set("redirect_uri", late)
	if r := authGet(t, s, params); r.status != http.StatusBadRequest {
		t.Fatalf("before registration: %d, want 400", r.status)
	}
	s.AddRedirectURI(tasknationtest.DefaultClientID, late)
	q := redirectQuery(t, authGet(t, s, params), late)
	if q.Get("code") == "" || q.Get("tenant") != "7" {
		t.Errorf("redirect query %v, want code and the registered tenant=7 kept", q)
	}
}

var formTokenRE = regexp.MustCompile(`name="form_token" value="([^"]+)"`)

func consentForm(t *testing.T, s *tasknationtest.Server, scope string) string {
	t.Helper()
	r := authGet(t, s, authParams(scope, ""))
	if r.status != http.StatusOK || r.header.Get("Location") != "" {
		t.Fatalf("consent page: %d Location %q", r.status, r.header.Get("Location"))
	}
	body := string(r.body)
	for _, want := range []string{"<title>Authorize " + tasknationtest.DefaultClientID + "</title>", `id="approve"`, `id="deny"`, "supply::leads", `method="post" action="/oauth2/auth"`} {
		if !strings.Contains(body, want) {
			t.Errorf("consent page lacks %q", want)
		}
	}
	m := formTokenRE.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no form_token in consent page")
	}
	return m[1]
}

func postConsent(t *testing.T, s *tasknationtest.Server, token, decision string) result {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.AuthURL(), strings.NewReader(url.Values{"form_token": {token}, "decision": {decision}}.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return do(t, req)
}

func TestConsentPage(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{ConsentPage: true})
	t.Run("approve", func(t *testing.T) {
		tok := consentForm(t, s, "supply::leads offline_access")
		q := redirectQuery(t, postConsent(t, s, tok, "approve"), testRedirect)
		if q.Get("code") == "" || q.Get("state") != "state-0123456789" {
			t.Fatalf("approve redirect %v, want code and state", q)
		}
		r := mustOK(t, tokenCall(t, s, codeForm(q.Get("code"), "")))
		if r.str("refresh_token") == "" {
			t.Error("no refresh token after approved offline_access")
		}
		// The form token is single use.
		if r := postConsent(t, s, tok, "approve"); r.status != http.StatusBadRequest || r.header.Get("Location") != "" {
			t.Errorf("replayed form token: %d %q, want 400 page", r.status, r.header.Get("Location"))
		}
	})
	t.Run("deny", func(t *testing.T) {
		tok := consentForm(t, s, "supply::leads")
		q := redirectQuery(t, postConsent(t, s, tok, "deny"), testRedirect)
		if q.Get("error") != "access_denied" || q.Get("state") != "state-0123456789" || q.Has("code") {
			t.Errorf("deny redirect %v, want error=access_denied with state and no code", q)
		}
	})
	t.Run("expired form", func(t *testing.T) {
		tok := consentForm(t, s, "supply::leads")
		clk.Advance(11 * time.Minute)
		if r := postConsent(t, s, tok, "approve"); r.status != http.StatusBadRequest {
			t.Errorf("expired form token: %d, want 400", r.status)
		}
	})
}

func TestFaultStatus(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{})
	first := login(t, s, "supply::leads offline_access")
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1})
	wantError(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))), 503, "server_error")
	if !s.Active(first.str("access_token")) {
		t.Error("FaultStatus rotated: old access token revoked")
	}
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 502, Count: 1})
	wantError(t, tokenCall(t, s, ccForm("")), 502, "server_error")
	// Not rotated: past the grace window the refresh token is still fresh.
	clk.Advance(2 * time.Minute)
	mustOK(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))))
}

func TestFaultGarbage(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultGarbage, Count: 1})
	r := tokenCall(t, s, ccForm(""))
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "<html") {
		t.Errorf("got %d %q %q, want 200 text/html page", r.status, r.header.Get("Content-Type"), r.body)
	}
	mustOK(t, tokenCall(t, s, ccForm("")))
}

func TestFaultDrop(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{})
	first := login(t, s, "supply::leads offline_access")
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Count: 1})
	if err := tokenCallErr(t, s, refreshForm(first.str("refresh_token"))); err == nil {
		t.Fatal("FaultDrop: got an answer, want a transport error")
	}
	if got := s.TokenRequests("refresh_token"); got != 1 {
		t.Errorf("dropped request not counted: %d", got)
	}
	if !s.Active(first.str("access_token")) {
		t.Error("FaultDrop processed the grant: old access token revoked")
	}
	clk.Advance(2 * time.Minute)
	mustOK(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))))
}

func TestFaultLostAfterRotation(t *testing.T) {
	t.Run("retry within grace", func(t *testing.T) {
		s, clk := newServer(t, tasknationtest.Options{})
		first := login(t, s, "supply::leads offline_access")
		rt := first.str("refresh_token")
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Count: 1, Grant: "refresh_token"})
		if err := tokenCallErr(t, s, refreshForm(rt)); err == nil {
			t.Fatal("got an answer, want a transport error")
		}
		if s.Active(first.str("access_token")) {
			t.Error("server did not rotate: old access token still active")
		}
		clk.Advance(59 * time.Second)
		r := mustOK(t, tokenCall(t, s, refreshForm(rt)))
		if r.str("refresh_token") == rt {
			t.Error("retry returned the old refresh token")
		}
	})
	t.Run("retry after grace", func(t *testing.T) {
		s, clk := newServer(t, tasknationtest.Options{})
		rt := login(t, s, "supply::leads offline_access").str("refresh_token")
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Count: 1})
		if err := tokenCallErr(t, s, refreshForm(rt)); err == nil {
			t.Fatal("got an answer, want a transport error")
		}
		clk.Advance(61 * time.Second)
		wantError(t, tokenCall(t, s, refreshForm(rt)), 400, "invalid_grant")
	})
	t.Run("code burned", func(t *testing.T) {
		s, _ := newServer(t, tasknationtest.Options{})
		verifier, challenge := pkce()
		code := authorize(t, s, authParams("supply::leads", challenge))
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Count: 1})
		if err := tokenCallErr(t, s, codeForm(code, verifier)); err == nil {
			t.Fatal("got an answer, want a transport error")
		}
		wantError(t, tokenCall(t, s, codeForm(code, verifier)), 400, "invalid_grant")
	})
}

func TestFaultCountAndQueue(t *testing.T) {
	status := func(t *testing.T, s *tasknationtest.Server, form url.Values) int {
		t.Helper()
		return tokenCall(t, s, form).status
	}
	t.Run("count", func(t *testing.T) {
		s, _ := newServer(t, tasknationtest.Options{})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 2})
		got := []int{status(t, s, ccForm("")), status(t, s, ccForm("")), status(t, s, ccForm(""))}
		if got[0] != 503 || got[1] != 503 || got[2] != 200 {
			t.Errorf("statuses %v, want [503 503 200]", got)
		}
	})
	t.Run("count 0 lasts until ClearFaults", func(t *testing.T) {
		s, _ := newServer(t, tasknationtest.Options{})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 500})
		for i := range 5 {
			if st := status(t, s, ccForm("")); st != 500 {
				t.Fatalf("request %d: %d, want 500", i, st)
			}
		}
		s.ClearFaults()
		if st := status(t, s, ccForm("")); st != 200 {
			t.Errorf("after ClearFaults: %d", st)
		}
	})
	t.Run("grant filter", func(t *testing.T) {
		s, _ := newServer(t, tasknationtest.Options{})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1, Grant: "refresh_token"})
		if st := status(t, s, ccForm("")); st != 200 {
			t.Errorf("client_credentials hit by a refresh_token fault: %d", st)
		}
		if st := status(t, s, refreshForm("tn_rt_whatever")); st != 503 {
			t.Errorf("refresh: %d, want 503", st)
		}
		if st := status(t, s, refreshForm("tn_rt_whatever")); st != 400 {
			t.Errorf("refresh after the fault is used up: %d, want 400 invalid_grant", st)
		}
	})
	t.Run("first matching fault applies", func(t *testing.T) {
		s, _ := newServer(t, tasknationtest.Options{})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultNone, Count: 1})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 502, Count: 1})
		s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultGarbage, Count: 1})
		r := []result{tokenCall(t, s, ccForm("")), tokenCall(t, s, ccForm("")), tokenCall(t, s, ccForm("")), tokenCall(t, s, ccForm(""))}
		if r[0].status != 200 || r[0].str("access_token") == "" {
			t.Errorf("1st: %d %s, want a token", r[0].status, r[0].body)
		}
		if r[1].status != 502 {
			t.Errorf("2nd: %d, want 502", r[1].status)
		}
		if !strings.HasPrefix(r[2].header.Get("Content-Type"), "text/html") {
			t.Errorf("3rd: %q, want garbage html", r[2].header.Get("Content-Type"))
		}
		if r[3].str("access_token") == "" {
			t.Errorf("4th: %s, want a token", r[3].body)
		}
	})
}

func TestLatencyRespectsClientContext(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{})
	first := login(t, s, "supply::leads offline_access")
	events := make(chan string, 10)
	tasknationtest.SetTestHook(s, func(e string) { events <- e })
	wait := func(want string) {
		t.Helper()
		select {
		case e := <-events:
			if e != want {
				t.Fatalf("event %q, want %q", e, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %q event", want)
		}
	}
	s.SetLatency(time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		resp, err := httpClient.Do(tokenRequest(ctx, t, s, refreshForm(first.str("refresh_token"))))
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	wait("latency-wait")
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client error = %v, want context.Canceled", err)
	}
	wait("latency-abort") // the server stopped waiting once the client left
	s.SetLatency(0)
	tasknationtest.SetTestHook(s, nil)
	if !s.Active(first.str("access_token")) {
		t.Error("abandoned request rotated the token")
	}
	clk.Advance(2 * time.Minute) // past the grace window: works only if never rotated
	mustOK(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))))
}

func TestLatencyDelaysAnswer(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	const d = 50 * time.Millisecond
	s.SetLatency(d)
	start := time.Now()
	mustOK(t, tokenCall(t, s, ccForm("")))
	if el := time.Since(start); el < d {
		t.Errorf("answer after %v, want at least %v", el, d)
	}
}

func TestSetTokenResponder(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	const raw = `{"access_token":"x","token_type":"mac","expires_in":-5}`
	s.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(raw + r.PostForm.Get("grant_type")))
	})
	// A queued fault is not consumed while the responder answers.
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Count: 1})
	req := tokenRequest(context.Background(), t, s, ccForm(""))
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(got) != raw+"client_credentials" {
		t.Errorf("body %q, want the responder's verbatim", got)
	}
	if s.TokenRequests("client_credentials") != 1 {
		t.Errorf("responder request not counted")
	}
	s.SetTokenResponder(nil)
	wantError(t, tokenCall(t, s, ccForm("")), 503, "server_error")
	mustOK(t, tokenCall(t, s, ccForm("")))
}

func TestAPI(t *testing.T) {
	s, clk := newServer(t, tasknationtest.Options{})
	cc := mustOK(t, tokenCall(t, s, ccForm("demand::search demand::categories"))).str("access_token")
	tests := []struct {
		name, method, path, token string
		status                    int
		wantAuth                  string // substring of WWW-Authenticate
	}{
		{"no token", "GET", "/api/v1/search", "", 401, `error="invalid_token"`},
		{"unknown token", "GET", "/api/v1/search", "tn_at_bogus", 401, `error="invalid_token"`},
		{"scoped route", "GET", "/api/v1/search", cc, 200, ""},
		{"scoped subpath", "POST", "/api/v1/categories/12", cc, 200, ""},
		{"missing scope", "GET", "/api/v1/leads", cc, 403, `error="insufficient_scope", scope="supply::leads"`},
		{"missing scope on subpath", "GET", "/api/v1/businesses/9", cc, 403, `scope="supply::businesses"`},
		{"similar prefix is not the route", "GET", "/api/v1/leadsx", cc, 200, ""},
		{"unscoped route", "DELETE", "/api/v2/anything", cc, 200, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := apiCall(t, s, tc.method, tc.path, tc.token, nil)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if !strings.Contains(r.header.Get("WWW-Authenticate"), tc.wantAuth) {
				t.Errorf("WWW-Authenticate = %q, want %q", r.header.Get("WWW-Authenticate"), tc.wantAuth)
			}
			if r.json == nil {
				t.Fatalf("body is not JSON: %s", r.body)
			}
			if tc.token != "" && strings.Contains(string(r.body), tc.token) {
				t.Error("body echoes the token")
			}
			if tc.status == 200 {
				if r.json["ok"] != true || r.str("path") != tc.path || r.str("method") != tc.method ||
					r.str("client_id") != tasknationtest.DefaultClientID || r.str("subject") != "" ||
					r.str("scope") != "demand::search demand::categories" {
					t.Errorf("body %s", r.body)
				}
			}
		})
	}
	t.Run("last header", func(t *testing.T) {
		req, err := http.NewRequest("GET", s.URL+"/api/v1/search", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+cc)
		req.Header.Set("X-Probe", "seen")
		if r := do(t, req); r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		h := s.LastAPIHeader()
		if h.Get("X-Probe") != "seen" || h.Get("Authorization") != "" {
			t.Errorf("LastAPIHeader = %v, want X-Probe and no Authorization", h)
		}
	})
	t.Run("body length", func(t *testing.T) {
		r := apiCall(t, s, "POST", "/api/v1/search", cc, strings.NewReader("hello"))
		if r.json["body_bytes"] != float64(5) {
			t.Errorf("body_bytes = %v, want 5", r.json["body_bytes"])
		}
	})
	t.Run("revoke", func(t *testing.T) {
		tok := mustOK(t, tokenCall(t, s, ccForm("demand::search"))).str("access_token")
		s.Revoke(tok)
		if s.Active(tok) {
			t.Error("revoked token active")
		}
		r := apiCall(t, s, "GET", "/api/v1/search", tok, nil)
		if r.status != 401 || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) || r.str("error") != "invalid_token" {
			t.Errorf("revoked token: %d %q %s", r.status, r.header.Get("WWW-Authenticate"), r.body)
		}
	})
	t.Run("expired", func(t *testing.T) {
		tok := mustOK(t, tokenCall(t, s, ccForm("demand::search"))).str("access_token")
		clk.Advance(time.Hour)
		if s.Active(tok) {
			t.Error("expired token active")
		}
		if r := apiCall(t, s, "GET", "/api/v1/search", tok, nil); r.status != 401 {
			t.Errorf("expired token: %d, want 401", r.status)
		}
	})
}

func TestCounters(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	tokenCall(t, s, ccForm(""))
	tokenCall(t, s, ccForm(""))
	tokenCall(t, s, refreshForm("tn_rt_nope"))
	tokenCall(t, s, withClient(url.Values{"grant_type": {"password"}}))
	req := tokenRequest(context.Background(), t, s, nil)
	req.Method = http.MethodGet
	do(t, req)
	s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultDrop, Count: 1})
	if err := tokenCallErr(t, s, ccForm("")); err == nil {
		t.Fatal("FaultDrop answered")
	}
	apiCall(t, s, "GET", "/api/x", "", nil)
	apiCall(t, s, "GET", "/api/y", "", nil)
	for grant, want := range map[string]int64{"": 6, "client_credentials": 3, "refresh_token": 1, "password": 1, "authorization_code": 0} {
		if got := s.TokenRequests(grant); got != want {
			t.Errorf("TokenRequests(%q) = %d, want %d", grant, got, want)
		}
	}
	if got := s.APIRequests(); got != 2 {
		t.Errorf("APIRequests = %d, want 2", got)
	}
	s.ResetCounters()
	if s.TokenRequests("") != 0 || s.TokenRequests("client_credentials") != 0 || s.APIRequests() != 0 {
		t.Error("ResetCounters left counts")
	}
}

func TestIntrospect(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret, RedirectURIs: []string{testRedirect}},
		{ID: "other", Secret: "other-secret"},
	}})
	first := login(t, s, "supply::leads offline_access")
	introspect := func(token, id, secret string) result {
		form := url.Values{"token": {token}, "client_id": {id}, "client_secret": {secret}}
		req, _ := http.NewRequest(http.MethodPost, s.IntrospectURL(), strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		return do(t, req)
	}
	own := func(token string) result {
		return introspect(token, tasknationtest.DefaultClientID, tasknationtest.DefaultClientSecret)
	}
	at := first.str("access_token")
	if r := own(at); r.json["active"] != true || r.str("sub") != tasknationtest.DefaultUser || r.str("scope") != "supply::leads offline_access" {
		t.Errorf("active token: %s", r.body)
	}
	if r := own(first.str("refresh_token")); r.json["active"] != true || r.str("token_type") != "refresh_token" {
		t.Errorf("refresh token: %s", r.body)
	}
	if r := introspect(at, "other", "other-secret"); r.json["active"] != false {
		t.Errorf("other client sees the token: %s", r.body)
	}
	wantError(t, introspect(at, tasknationtest.DefaultClientID, "wrong"), 401, "invalid_client")
	mustOK(t, tokenCall(t, s, refreshForm(first.str("refresh_token"))))
	if r := own(at); r.json["active"] != false || len(r.json) != 1 {
		t.Errorf("rotated-out token: %s, want only active=false", r.body)
	}
}

func TestMetadata(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	req, _ := http.NewRequest(http.MethodGet, s.URL+"/.well-known/oauth-authorization-server", nil)
	r := do(t, req)
	if r.status != 200 || r.str("token_endpoint") != s.TokenURL() || r.str("authorization_endpoint") != s.AuthURL() || r.str("issuer") != s.URL {
		t.Errorf("metadata: %d %s", r.status, r.body)
	}
}

func TestListenerOptionAndURLs(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := tasknationtest.NewServer(tasknationtest.Options{Listener: ln})
	defer s.Close()
	if want := "http://" + ln.Addr().String(); s.URL != want {
		t.Errorf("URL = %q, want %q", s.URL, want)
	}
	if s.TokenURL() != s.URL+"/oauth2/token" || s.AuthURL() != s.URL+"/oauth2/auth" || s.APIURL() != s.URL+"/api" {
		t.Errorf("endpoint URLs: %s %s %s", s.TokenURL(), s.AuthURL(), s.APIURL())
	}
	mustOK(t, tokenCall(t, s, ccForm("")))
}

func TestScopesCatalog(t *testing.T) {
	want := map[string]string{
		"supply::businesses": "supply", "supply::leads": "supply", "supply::messages": "supply", "supply::reviews": "supply",
		"demand::requests": "demand", "demand::categories": "demand", "demand::search": "demand", "offline_access": "both",
	}
	if len(tasknationtest.Scopes) != len(want) {
		t.Errorf("%d scopes, want %d", len(tasknationtest.Scopes), len(want))
	}
	for sc, typ := range want {
		if tasknationtest.Scopes[sc] != typ {
			t.Errorf("Scopes[%q] = %q, want %q", sc, tasknationtest.Scopes[sc], typ)
		}
	}
}

// TestConcurrentUse exercises the locks under -race: many refreshes of one
// token inside the grace window, API calls and knob changes at once.
func TestConcurrentUse(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{})
	first := login(t, s, "supply::leads offline_access")
	rt, at := first.str("refresh_token"), first.str("access_token")
	const n = 16
	var wg sync.WaitGroup
	results := make([]string, n)
	errs := make(chan string, 3*n)
	for i := range n {
		wg.Go(func() {
			var body struct {
				RefreshToken string `json:"refresh_token"`
			}
			resp, err := httpClient.PostForm(s.TokenURL(), refreshForm(rt))
			if err != nil {
				errs <- err.Error()
				return
			}
			defer resp.Body.Close()
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
				errs <- fmt.Sprintf("status %d, decode error %v", resp.StatusCode, err)
				return
			}
			results[i] = body.RefreshToken
		})
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, s.APIURL()+"/v1/leads", nil)
			req.Header.Set("Authorization", "Bearer "+at)
			if resp, err := httpClient.Do(req); err == nil {
				resp.Body.Close()
			}
			s.Active(at)
			s.TokenRequests("refresh_token")
		})
		wg.Go(func() {
			s.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultNone, Count: 1, Grant: "password"})
			s.SetLatency(0)
			s.SetTokenResponder(nil)
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Errorf("concurrent refresh inside grace failed: %s", e)
	}
	seen := map[string]bool{}
	for _, r := range results {
		if r == "" || seen[r] {
			t.Errorf("refresh tokens not all fresh and distinct: %q", r)
		}
		seen[r] = true
	}
	if s.Active(at) {
		t.Error("original access token still active after rotation")
	}
}
