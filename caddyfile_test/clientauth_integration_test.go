package caddyfile_test

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// The client authentication methods and token-request options of a
// generic authorization server, through a real Caddy: each test's fake
// registers the client (with the default client ID, which the fake API
// reports) for one method only, so that a 200 from the API means the
// token came through that method, and the fake's counters say so.

// withFake replaces g's fake TaskNation server with one of opts.
func (g *gateway) withFake(opts tasknationtest.Options) {
	g.t.Helper()
	fake := tasknationtest.NewServer(opts)
	g.t.Cleanup(fake.Close)
	g.fake = fake
}

// loadSite loads a site that proxies to g's fake through oauth2_token
// with the lines of block (tab-indented twice, each ending in a
// newline); with proxyCA, reverse_proxy trusts that PEM file (a fake
// serving https). Caddy's default log goes to logFile at DEBUG, or to
// the test's t.Log when it is "".
func (g *gateway) loadSite(block, proxyCA, logFile string) {
	g.t.Helper()
	proxy := "\treverse_proxy " + g.fake.URL + "\n"
	if proxyCA != "" {
		proxy = fmt.Sprintf("\treverse_proxy %s {\n\t\ttransport http {\n\t\t\ttls_trust_pool file %s\n\t\t}\n\t}\n", g.fake.URL, proxyCA)
	}
	var level string
	if logFile != "" {
		level = "DEBUG"
	}
	g.loadCaddyfile(testCaddyfile(g.global(logFile, level), g.httpPort,
		proxy+"\toauth2_token {\n\t\tprovider generic\n\t\tclient_id {env.TN_CLIENT_ID}\n\t\tscopes demand::categories\n"+block+"\t}\n"))
}

// authenticated checks that the fake authenticated the client with
// method, n times, and with no other method.
func authenticated(t *testing.T, fake *tasknationtest.Server, method string, n int64) {
	t.Helper()
	for _, m := range []string{tasknationtest.AuthSecretPost, tasknationtest.AuthSecretBasic, tasknationtest.AuthPrivateKeyJWT, tasknationtest.AuthTLSClient} {
		want := int64(0)
		if m == method {
			want = n
		}
		if got := fake.ClientAuthentications(m); got != want {
			t.Errorf("%s authentications at the fake = %d, want %d", m, got, want)
		}
	}
}

// TestClientAuth_PostThroughCaddy: a generic server that refuses HTTP
// Basic (the generic provider's default) gets the secret in the form
// body with client_auth post.
func TestClientAuth_PostThroughCaddy(t *testing.T) {
	g := newGateway(t)
	g.withFake(tasknationtest.Options{Clients: []tasknationtest.Client{{
		ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret,
		AuthMethods: []string{tasknationtest.AuthSecretPost},
	}}})
	g.loadSite("\t\ttoken_url "+g.fake.TokenURL()+"\n\t\tclient_secret {env.TN_CLIENT_SECRET}\n\t\tclient_auth post\n", "", "")
	api, r := g.mustGetAPI("/api/v1/categories")
	if api.Scope != "demand::categories" {
		t.Errorf("the token's scope is %q, want demand::categories", api.Scope)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("the client saw an access token or the secret in %v", where)
	}
	authenticated(t, g.fake, tasknationtest.AuthSecretPost, 1)
}

// TestClientAuth_PrivateKeyJWTThroughCaddy: the user context with
// private_key_jwt (a key id, PS256 asked for by the server): alice
// connects (the code exchange signs an assertion), calls the API, and
// her token is refreshed twice through Caddy, each time with a new
// assertion and the rotated refresh token of the time before. No log
// line, at DEBUG, holds the key, an assertion or a token.
func TestClientAuth_PrivateKeyJWTThroughCaddy(t *testing.T) {
	s := newUserSite(t)
	rsaKey := testkit.RSAKey(t)
	keyFile := testkit.WriteKey(t, s.dir, "client-key.pem", rsaKey)
	s.withFake(tasknationtest.Options{Clients: []tasknationtest.Client{{
		ID: tasknationtest.DefaultClientID, RedirectURIs: []string{s.callbackURL()},
		AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT},
		PublicKey:   rsaKey.Public(), KeyID: "tg-2026-12", AssertionAlgorithm: "PS256",
	}}})
	logFile := filepath.Join(s.dir, "caddy.log")
	s.start(userOptions{log: logFile, logLevel: "DEBUG", extra: "\t\tprovider generic\n",
		auth: "\t\tprivate_key_jwt " + keyFile + " PS256 tg-2026-12 {\n\t\t\tlifetime 30s\n\t\t}\n"})
	alice := s.user(t, "alice")
	alice.connect(t, "tn-alice")
	alice.mustCallAPIAs(t, "tn-alice")
	authenticated(t, s.fake, tasknationtest.AuthPrivateKeyJWT, 1)

	for i := int64(1); i <= 2; i++ {
		tokenAgePasses()
		if n := s.fake.RevokeAllAccessTokens(); n != 1 {
			t.Fatalf("refresh %d: revoked %d access tokens, want alice's one", i, n)
		}
		alice.mustCallAPIAs(t, "tn-alice")
		if n := s.fake.TokenRequests(tasknationtest.GrantRefreshToken); n != i {
			t.Fatalf("refresh token requests = %d, want %d", n, i)
		}
	}
	authenticated(t, s.fake, tasknationtest.AuthPrivateKeyJWT, 3)
	if n, m := s.fake.StaleRefreshReuses(), s.fake.GraceRefreshReuses(); n != 0 || m != 0 {
		t.Errorf("rotated refresh tokens presented again: %d after and %d within the grace period, want none", n, m)
	}
	if n := s.fake.ReplayedAssertions(); n != 0 {
		t.Errorf("assertions replayed: %d, want a new jti each time", n)
	}

	logs := stoppedLog(t, logFile)
	for what, v := range secretsOf(t, keyFile) {
		if bytes.Contains(logs, []byte(v)) {
			t.Errorf("the log holds %s (%q)", what, v)
		}
	}
}

// secretsOf is what no log or config may show: the lines of keyFile's
// PEM (the key itself), the start of a JWT (an assertion: its header
// `{"alg":`), and the marks of the fake's tokens and codes.
func secretsOf(t *testing.T, keyFile string) map[string]string {
	t.Helper()
	raw, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{
		"a JWT":           "eyJhbGciOi",
		"an access token": tasknationtest.AccessTokenPrefix,
		"a refresh token": tasknationtest.RefreshTokenPrefix,
		"a code":          tasknationtest.CodePrefix,
		"PEM":             "PRIVATE KEY",
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatalf("%s holds no PEM", keyFile)
	}
	for i, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		if !strings.HasPrefix(line, "-----") {
			out[fmt.Sprintf("line %d of the key file", i+1)] = line
		}
	}
	return out
}

// TestClientAuth_TLSClientAuthThroughCaddy: mutual TLS with a client
// certificate at a server whose certificate only trusted_ca trusts.
func TestClientAuth_TLSClientAuthThroughCaddy(t *testing.T) {
	g := newGateway(t)
	cert, certFile, keyFile := testkit.ClientCertificate(t, g.dir, "client")
	g.withFake(tasknationtest.Options{TLS: true, Clients: []tasknationtest.Client{{
		ID: tasknationtest.DefaultClientID, AuthMethods: []string{tasknationtest.AuthTLSClient}, Certificate: cert,
	}}})
	if !strings.HasPrefix(g.fake.URL, "https://") {
		t.Fatalf("the fake serves %s, want https", g.fake.URL)
	}
	ca := testkit.WritePEM(t, g.dir, "auth-server.pem", "CERTIFICATE", g.fake.Certificate().Raw)
	g.loadSite(fmt.Sprintf("\t\ttoken_url %s\n\t\ttls_client_auth %s %s\n\t\ttrusted_ca %s\n", g.fake.TokenURL(), certFile, keyFile, ca), ca, "")
	api, _ := g.mustGetAPI("/api/v1/categories")
	if api.Scope != "demand::categories" {
		t.Errorf("the token's scope is %q, want demand::categories", api.Scope)
	}
	authenticated(t, g.fake, tasknationtest.AuthTLSClient, 1)
}

// TestTokenParamsThroughCaddy: token_params go with the token request,
// resource twice (RFC 8707), at a server that refuses a request without
// a resource it knows.
func TestTokenParamsThroughCaddy(t *testing.T) {
	g := newGateway(t)
	g.withFake(tasknationtest.Options{Clients: []tasknationtest.Client{{
		ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret,
		AuthMethods: []string{tasknationtest.AuthSecretBasic},
		Resources:   []string{"https://api.example.com/", "https://files.example.com/"},
	}}})
	t.Setenv("TG_AUDIENCE", "partner-api")
	g.loadSite("\t\ttoken_url "+g.fake.TokenURL()+"\n\t\tclient_secret {env.TN_CLIENT_SECRET}\n"+
		"\t\ttoken_params resource https://api.example.com/\n\t\ttoken_params audience {env.TG_AUDIENCE}\n"+
		"\t\ttoken_params resource https://files.example.com/\n", "", "")
	g.mustGetAPI("/api/v1/categories")
	form := g.fake.LastTokenRequest()
	if got := strings.Join(form["resource"], " "); got != "https://api.example.com/ https://files.example.com/" {
		t.Errorf("the token request's resource = %q, want both, in order", got)
	}
	if got := form.Get("audience"); got != "partner-api" {
		t.Errorf("the token request's audience = %q, want partner-api (from the environment)", got)
	}
	if got := form.Get("grant_type"); got != tasknationtest.GrantClientCredentials {
		t.Errorf("the last token request's grant_type = %q", got)
	}
	authenticated(t, g.fake, tasknationtest.AuthSecretBasic, 1)
}

// TestIssuerThroughCaddy: with issuer and no token_url, the token
// endpoint comes from the server's discovery document (here the OpenID
// one only, the RFC 8414 one answering 404).
func TestIssuerThroughCaddy(t *testing.T) {
	g := newGateway(t)
	g.withFake(tasknationtest.Options{OpenIDDiscoveryOnly: true, Clients: []tasknationtest.Client{{
		ID: tasknationtest.DefaultClientID, Secret: tasknationtest.DefaultClientSecret,
		AuthMethods: []string{tasknationtest.AuthSecretBasic},
	}}})
	g.loadSite("\t\tissuer "+g.fake.URL+"\n\t\tclient_secret {env.TN_CLIENT_SECRET}\n", "", "")
	g.mustGetAPI("/api/v1/categories")
	if n := g.tokenRequests(); n != 1 {
		t.Errorf("token requests at the discovered endpoint = %d, want 1", n)
	}
	authenticated(t, g.fake, tasknationtest.AuthSecretBasic, 1)
}
