package middleware_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// authSetup is a fake generic authorization server (revocation endpoint
// on) with the default client registered to authenticate as client
// says, and Gates of the generic provider in front of it, sharing its
// clock and logging at debug level.
type authSetup struct {
	srv   *tasknationtest.Server
	clock *clock
	core  zapcore.Core
	logs  *observer.ObservedLogs
}

func newAuthSetup(t testing.TB, opts tasknationtest.Options, client tasknationtest.Client) *authSetup {
	t.Helper()
	a := &authSetup{clock: newClock()}
	opts.Now = a.clock.Now
	opts.RevocationEndpoint = true
	client.ID = tasknationtest.DefaultClientID
	opts.Clients = []tasknationtest.Client{client}
	a.srv = tasknationtest.NewServer(opts)
	t.Cleanup(a.srv.Close)
	a.core, a.logs = observer.New(zapcore.DebugLevel)
	return a
}

// config is a generic-provider Config for the fake's default client,
// client_credentials, changed by mod.
func (a *authSetup) config(mod func(*middleware.Config)) middleware.Config {
	cfg := middleware.Config{
		Provider: middleware.Generic,
		TokenURL: a.srv.TokenURL(),
		ClientID: tasknationtest.DefaultClientID,
		Scopes:   appScopes,
		Logger:   zap.New(a.core),
		Clock:    a.clock,
	}
	if mod != nil {
		mod(&cfg)
	}
	return cfg
}

func (a *authSetup) gate(t testing.TB, cfg middleware.Config) *middleware.Gate {
	t.Helper()
	g, err := middleware.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// app runs the client_credentials grant through Wrap and Transport and
// fails the test unless both carry a token the fake issued; it returns
// the token.
func (a *authSetup) app(t testing.TB, mod func(*middleware.Config)) string {
	t.Helper()
	g := a.gate(t, a.config(mod))
	defer g.Close() // no refresh of its own while the test goes on
	rec := &recorder{}
	w := httptest.NewRecorder()
	g.Wrap(rec).ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
	if rec.count() != 1 {
		t.Fatalf("Wrap: %d %s, the handler was not called", w.Code, w.Body)
	}
	tok := strings.TrimPrefix(rec.seen[0], "Bearer ")
	if !a.srv.Active(tok) {
		t.Fatalf("Wrap injected %q, not an active token of the fake", rec.seen[0])
	}
	c := &http.Client{Transport: g.Transport(a.srv.Client().Transport)}
	resp, err := c.Get(a.srv.APIURL() + "/v1/categories")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("Transport: API answered %d", resp.StatusCode)
	}
	return tok
}

// user runs the authorization_code grant through a gateway: connect,
// an API call, the token's expiry, a refresh that rotates the refresh
// token, and a disconnect that revokes it.
func (a *authSetup) user(t testing.TB, mod func(*middleware.Config)) {
	t.Helper()
	hs := httptest.NewServer(nil)
	t.Cleanup(hs.Close)
	a.srv.AddRedirectURI(tasknationtest.DefaultClientID, hs.URL+"/oauth2/callback")
	cfg := a.config(func(c *middleware.Config) {
		c.Grant = middleware.GrantAuthorizationCode
		c.AuthURL = a.srv.AuthURL()
		c.RevocationURL = a.srv.RevocationURL()
		c.RedirectURI = hs.URL + "/oauth2/callback"
		c.Scopes = userScopes
		c.Subject = basicUser
		if mod != nil {
			mod(c)
		}
	})
	g := a.gate(t, cfg)
	api, _ := url.Parse(a.srv.URL)
	hs.Config.Handler = g.Wrap(&httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.SetURL(api) },
		Transport: a.srv.Client().Transport, // trusts the fake's certificate when it serves TLS
	})
	f := &userFixture{srv: a.srv, gate: g, gw: hs, base: hs.URL, clock: a.clock, logs: a.logs}
	alice := f.browser(t, "alice")
	jar, _ := cookiejar.New(nil)
	alice.c = &http.Client{Jar: jar, Transport: a.srv.Client().Transport,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	alice.connect(f, "tn-alice")
	if r := alice.api(f); r.status != http.StatusOK {
		t.Fatalf("API after connect: %d %s", r.status, r.body)
	}
	first, err := g.UserToken(context.Background(), "alice")
	if err != nil {
		t.Fatal(err)
	}
	a.clock.Advance(2 * time.Hour) // past the access token's hour
	if r := alice.api(f); r.status != http.StatusOK {
		t.Fatalf("API after expiry: %d %s", r.status, r.body)
	}
	second, _ := g.UserToken(context.Background(), "alice")
	if n := a.srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 || second.RefreshToken == first.RefreshToken ||
		!a.srv.RefreshActive(second.RefreshToken) {
		t.Fatalf("refresh: %d requests, rotated %v, successor active %v", n, second.RefreshToken != first.RefreshToken, a.srv.RefreshActive(second.RefreshToken))
	}
	if err := g.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if a.srv.RefreshActive(second.RefreshToken) || a.srv.RevokedRefreshTokens() != 1 {
		t.Fatalf("disconnect: refresh token still active, %d revoked", a.srv.RevokedRefreshTokens())
	}
}

// noSecrets fails the test when a log entry of a, or one of errs, holds
// one of secrets.
func (a *authSetup) noSecrets(t testing.TB, secrets []string, errs ...error) {
	t.Helper()
	var texts []string
	for _, e := range a.logs.All() {
		line, _ := json.Marshal(e.ContextMap())
		texts = append(texts, e.Message+" "+string(line))
	}
	for _, err := range errs {
		if err != nil {
			texts = append(texts, err.Error())
		}
	}
	for _, s := range secrets {
		for _, text := range texts {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%q shows a secret (%.12s…)", text, s)
			}
		}
	}
}

// wantRejected fails the test unless err is the token endpoint's RFC
// 6749 error code.
func wantRejected(t testing.TB, err error, code string) {
	t.Helper()
	var ee *middleware.EndpointError
	if !errors.As(err, &ee) || ee.Kind != middleware.KindRejected || ee.Code != code {
		t.Fatalf("error %v, want the token endpoint's %s", err, code)
	}
}

func writePEM(t testing.TB, blockType string, der []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestClientAuth_BasicAndPost(t *testing.T) {
	for _, tc := range []struct {
		name, method string
		style        oauth2.AuthStyle
	}{
		{"basic", tasknationtest.AuthSecretBasic, oauth2.AuthStyleInHeader},
		{"post", tasknationtest.AuthSecretPost, oauth2.AuthStyleInParams},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
				Secret: tasknationtest.DefaultClientSecret, AuthMethods: []string{tc.method},
			})
			mod := func(c *middleware.Config) {
				c.ClientSecret = tasknationtest.DefaultClientSecret
				c.AuthStyle = tc.style
			}
			a.app(t, mod)
			a.user(t, mod)
			// client_credentials, the code exchange, the refresh and the
			// revocation, each with the method.
			if n := a.srv.ClientAuthentications(tc.method); n != 4 {
				t.Errorf("%s authentications = %d, want 4", tc.method, n)
			}
			// The other style is refused: 401 invalid_client.
			other := oauth2.AuthStyleInParams + oauth2.AuthStyleInHeader - tc.style
			_, err := a.gate(t, a.config(func(c *middleware.Config) { mod(c); c.AuthStyle = other })).Token(context.Background())
			wantRejected(t, err, "invalid_client")
			a.noSecrets(t, []string{tasknationtest.DefaultClientSecret}, err)
		})
	}
}

func TestClientAuth_PrivateKeyJWT(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k crypto.Signer) []byte { b, _ := x509.MarshalPKCS8PrivateKey(k); return b }
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	for _, tc := range []struct {
		name       string
		key        crypto.Signer
		pemType    string
		der        []byte
		alg, kid   string // of the Gate's config
		registered string // the only algorithm the fake accepts
	}{
		{"RSA PKCS#1 default RS256", rsaKey, "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey), "", "k1", "RS256"},
		{"RSA PKCS#8 PS256", rsaKey, "PRIVATE KEY", pkcs8(rsaKey), "PS256", "", "PS256"},
		{"ECDSA SEC1 ES256", ecKey, "EC PRIVATE KEY", sec1, "", "", "ES256"},
		{"Ed25519 PKCS#8 EdDSA", edKey, "PRIVATE KEY", pkcs8(edKey), "EdDSA", "k2", "EdDSA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key, err := middleware.LoadPrivateKey(writePEM(t, tc.pemType, tc.der))
			if err != nil {
				t.Fatal(err)
			}
			a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
				AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: tc.key.Public(), KeyID: tc.kid,
				AssertionAlgorithm: tc.registered,
			})
			mod := func(c *middleware.Config) {
				c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: key, Algorithm: tc.alg, KeyID: tc.kid}
			}
			a.app(t, mod)
			a.user(t, mod)
			if n := a.srv.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT); n != 4 {
				t.Errorf("private_key_jwt authentications = %d, want 4", n)
			}
		})
	}

	a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
		AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: ecKey.Public(),
	})
	t.Run("a fresh jti per request", func(t *testing.T) {
		// Two Gates of one client at the same instant: same iat, same
		// exp, and still two different assertions.
		for range 2 {
			if _, err := a.gate(t, a.config(func(c *middleware.Config) {
				c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey}
			})).Token(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		if a.srv.ReplayedAssertions() != 0 || a.srv.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT) != 2 {
			t.Fatalf("replays %d, authentications %d", a.srv.ReplayedAssertions(), a.srv.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT))
		}
	})
	t.Run("audience", func(t *testing.T) {
		for aud, ok := range map[string]bool{a.srv.URL: true, "https://elsewhere.example/token": false} {
			_, err := a.gate(t, a.config(func(c *middleware.Config) {
				c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey, Audience: aud}
			})).Token(context.Background())
			if ok && err != nil {
				t.Fatalf("audience %s: %v", aud, err)
			}
			if !ok {
				wantRejected(t, err, "invalid_client")
			}
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		_, err := a.gate(t, a.config(func(c *middleware.Config) {
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: other}
		})).Token(context.Background())
		wantRejected(t, err, "invalid_client")
	})
}

// replayTransport sends every token request twice, the second time with
// the first one's body: what a replayed assertion looks like to the
// server.
type replayTransport struct{ base http.RoundTripper }

func (rt replayTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.GetBody == nil {
		return rt.base.RoundTrip(req)
	}
	body, _ := req.GetBody()
	first, err := rt.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	first.Body.Close()
	again := req.Clone(req.Context())
	again.Body = body
	return rt.base.RoundTrip(again)
}

func TestClientAuth_PrivateKeyJWTReplayRefused(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
		AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: ecKey.Public(),
	})
	g := a.gate(t, a.config(func(c *middleware.Config) {
		c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey}
		c.HTTPClient = &http.Client{Transport: replayTransport{base: http.DefaultTransport}}
	}))
	_, err := g.Token(context.Background())
	wantRejected(t, err, "invalid_client")
	if a.srv.ReplayedAssertions() != 1 || a.srv.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT) != 1 {
		t.Fatalf("replays %d, authentications %d; want 1 and 1", a.srv.ReplayedAssertions(), a.srv.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT))
	}
}

// selfSignedCert makes a self-signed ECDSA client certificate, and its
// files.
func selfSignedCert(t testing.TB) (cert *tls.Certificate, certFile, keyFile string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: tasknationtest.DefaultClientID},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, err = middleware.LoadClientCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return cert, certFile, keyFile
}

func TestClientAuth_TLSClient(t *testing.T) {
	cert, _, keyFile := selfSignedCert(t)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	a := newAuthSetup(t, tasknationtest.Options{TLS: true}, tasknationtest.Client{
		AuthMethods: []string{tasknationtest.AuthTLSClient}, Certificate: leaf,
	})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: a.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	roots, err := middleware.LoadCertPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	mod := func(c *middleware.Config) {
		c.ClientCertificate = cert
		c.RootCAs = roots
	}
	a.app(t, mod)
	a.user(t, mod)
	if n := a.srv.ClientAuthentications(tasknationtest.AuthTLSClient); n != 4 {
		t.Errorf("tls_client_auth authentications = %d, want 4", n)
	}

	t.Run("another certificate", func(t *testing.T) {
		other, _, _ := selfSignedCert(t)
		_, err := a.gate(t, a.config(func(c *middleware.Config) { c.ClientCertificate, c.RootCAs = other, roots })).Token(context.Background())
		wantRejected(t, err, "invalid_client")
	})
	t.Run("the server's certificate not trusted", func(t *testing.T) {
		_, err := a.gate(t, a.config(func(c *middleware.Config) { c.ClientCertificate = cert })).Token(context.Background())
		var ee *middleware.EndpointError
		if !errors.As(err, &ee) || ee.Kind != middleware.KindNetwork || !strings.Contains(err.Error(), "certificate") {
			t.Fatalf("error %v, want a TLS verification failure", err)
		}
	})
	key, _ := os.ReadFile(keyFile)
	a.noSecrets(t, []string{string(key), "PRIVATE KEY"})
}

func TestTokenParams(t *testing.T) {
	const resA, resB = "https://api.example/a", "https://api.example/b"
	a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
		Secret: tasknationtest.DefaultClientSecret, AuthMethods: []string{tasknationtest.AuthSecretPost},
		Resources: []string{resA, resB},
	})
	want := func(grant string) {
		t.Helper()
		got := a.srv.LastTokenRequest()
		if got.Get("grant_type") != grant || !slices.Equal(got["resource"], []string{resA, resB}) || got.Get("audience") != "partner-api" {
			t.Errorf("%s request: %v", grant, got)
		}
	}
	mod := func(c *middleware.Config) {
		c.ClientSecret = tasknationtest.DefaultClientSecret
		c.AuthStyle = oauth2.AuthStyleInParams
		c.TokenParams = url.Values{"resource": {resA, resB}, "audience": {"partner-api"}}
	}
	a.app(t, mod)
	want(tasknationtest.GrantClientCredentials)
	a.user(t, mod) // the last token request of the flow is the refresh
	want(tasknationtest.GrantRefreshToken)
	if n := a.srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
		t.Fatalf("code exchanges: %d", n)
	}

	t.Run("a resource missing", func(t *testing.T) {
		_, err := a.gate(t, a.config(func(c *middleware.Config) {
			mod(c)
			c.TokenParams = url.Values{"audience": {"partner-api"}}
		})).Token(context.Background())
		wantRejected(t, err, "invalid_target")
	})
}

// The code exchange carries the parameters too (the flow above checks
// the refresh, the last request).
func TestTokenParams_CodeExchange(t *testing.T) {
	a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
		Secret: tasknationtest.DefaultClientSecret, AuthMethods: []string{tasknationtest.AuthSecretPost},
		Resources: []string{"https://api.example/a"},
	})
	var exchange url.Values
	a.srv.OnTokenAnswer(func(ev tasknationtest.TokenEvent) {
		if ev.Grant == tasknationtest.GrantAuthorizationCode && exchange == nil {
			exchange = a.srv.LastTokenRequest()
		}
	})
	a.user(t, func(c *middleware.Config) {
		c.ClientSecret = tasknationtest.DefaultClientSecret
		c.AuthStyle = oauth2.AuthStyleInParams
		c.TokenParams = url.Values{"resource": {"https://api.example/a"}}
	})
	if exchange.Get("grant_type") != "authorization_code" || exchange.Get("resource") != "https://api.example/a" {
		t.Fatalf("code exchange: %v", exchange)
	}
}

func TestClientAuth_ConfigErrors(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	cert := &tls.Certificate{}
	generic := func(c *middleware.Config) {
		c.Provider = middleware.Generic
		c.TokenURL = "https://auth.example.com/token"
		c.ClientSecret = ""
	}
	for _, tc := range []struct {
		name, field string
		mod         func(*middleware.Config)
		want        string
	}{
		{"tasknation client_auth basic", "client_auth", func(c *middleware.Config) { c.AuthStyle = oauth2.AuthStyleInHeader }, "does not apply to provider tasknation"},
		{"tasknation private_key_jwt", "private_key_jwt", func(c *middleware.Config) { c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey} }, "does not apply to provider tasknation"},
		{"tasknation tls_client_auth", "tls_client_auth", func(c *middleware.Config) { c.ClientCertificate = cert }, "does not apply to provider tasknation"},
		{"tasknation token_params", "token_params", func(c *middleware.Config) { c.TokenParams = url.Values{"audience": {"x"}} }, "does not apply to provider tasknation"},
		{"tasknation issuer", "issuer", func(c *middleware.Config) { c.Issuer = "https://auth.tasknation.com" }, "does not apply to provider tasknation"},
		{"jwt with a secret", "client_secret", func(c *middleware.Config) {
			generic(c)
			c.ClientSecret = "s3cret-value"
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey}
		}, "must be empty with private_key_jwt"},
		{"jwt and tls", "private_key_jwt", func(c *middleware.Config) {
			generic(c)
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey}
			c.ClientCertificate = cert
		}, "choose one"},
		{"tls with basic", "client_auth", func(c *middleware.Config) {
			generic(c)
			c.ClientCertificate = cert
			c.AuthStyle = oauth2.AuthStyleInHeader
		}, "basic does not apply with tls_client_auth"},
		{"jwt without a key", "private_key_jwt", func(c *middleware.Config) { generic(c); c.PrivateKeyJWT = &middleware.PrivateKeyJWT{} }, "needs a key"},
		{"jwt algorithm of another key type", "private_key_jwt", func(c *middleware.Config) {
			generic(c)
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey, Algorithm: "RS256"}
		}, `algorithm "RS256" does not fit the key (want one of ES256)`},
		{"jwt unknown algorithm", "private_key_jwt", func(c *middleware.Config) {
			generic(c)
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey, Algorithm: "HS256"}
		}, `algorithm "HS256" does not fit the key`},
		{"jwt short RSA key", "private_key_jwt", func(c *middleware.Config) {
			generic(c)
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: smallRSA}
		}, "1024 bits is too short"},
		{"jwt lifetime", "private_key_jwt", func(c *middleware.Config) {
			generic(c)
			c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: ecKey, Lifetime: 2 * time.Hour}
		}, "lifetime must be between 1s and 1h"},
		{"tls on a custom transport", "tls_client_auth", func(c *middleware.Config) {
			generic(c)
			c.ClientCertificate = cert
			c.HTTPClient = &http.Client{Transport: replayTransport{}}
		}, "needs HTTPClient.Transport to be nil or an *http.Transport"},
		{"secret still required", "client_secret", generic, "is required"},
		{"issuer over http", "issuer", func(c *middleware.Config) {
			generic(c)
			c.TokenURL = ""
			c.ClientSecret = "s3cret-value"
			c.Issuer = "http://auth.example.com"
		}, "http:// is only allowed on loopback hosts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := middleware.Config{ClientID: "id", ClientSecret: "s3cret-value"}
			tc.mod(&cfg)
			err := cfg.Validate()
			var ce *middleware.ConfigError
			if !errors.As(err, &ce) || ce.Field != tc.field || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a ConfigError of %s saying %q", err, tc.field, tc.want)
			}
			if strings.Contains(err.Error(), "s3cret-value") {
				t.Fatalf("error shows the secret: %v", err)
			}
		})
	}
}

// Validate checks a Config whose endpoints come from its issuer without
// discovering them; New needs them discovered.
func TestValidate_IssuerNotDiscovered(t *testing.T) {
	cfg := middleware.Config{
		Provider: middleware.Generic, Issuer: "https://auth.example.com", ClientID: "id", ClientSecret: "secret",
		Grant: middleware.GrantAuthorizationCode, RedirectURI: "https://app.example.com/oauth2/callback",
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	cfg.ConnectPath = "connect"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "connect_path") {
		t.Fatalf("Validate with a bad connect_path: %v", err)
	}
	cfg.ConnectPath = ""
	_, err := middleware.New(cfg)
	var ce *middleware.ConfigError
	if !errors.As(err, &ce) || ce.Field != "issuer" || !strings.Contains(err.Error(), "run Config.Discover before New") {
		t.Fatalf("New: %v, want a ConfigError of issuer", err)
	}
}

func TestTokenParams_Reserved(t *testing.T) {
	for _, name := range []string{"grant_type", "client_id", "client_secret", "code", "refresh_token", "redirect_uri",
		"code_verifier", "scope", "client_assertion", "client_assertion_type", "Scope", ""} {
		cfg := middleware.Config{Provider: middleware.Generic, TokenURL: "https://auth.example.com/token", ClientID: "id",
			ClientSecret: "secret", TokenParams: url.Values{name: {"x"}}}
		err := cfg.Validate()
		var ce *middleware.ConfigError
		if !errors.As(err, &ce) || ce.Field != "token_params" || ce.Value != name {
			t.Errorf("token_params %q: %v, want a ConfigError naming it", name, err)
		}
	}
	cfg := middleware.Config{Provider: middleware.Generic, TokenURL: "https://auth.example.com/token", ClientID: "id",
		ClientSecret: "secret", TokenParams: url.Values{"resource": {"https://a", "https://b"}, "audience": {"x"}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestParsePrivateKey(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ecKey)
	certThenKey := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not read")}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})...)
	if k, err := middleware.ParsePrivateKey(certThenKey); err != nil || !k.Public().(*ecdsa.PublicKey).Equal(ecKey.Public()) {
		t.Fatalf("a key after a certificate: %v", err)
	}
	for name, in := range map[string][]byte{
		"empty":     nil,
		"not PEM":   []byte("-----BEGIN NOTHING"),
		"encrypted": pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1, 2, 3}}),
		"garbage":   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("0123456789abcdef0123456789")}),
	} {
		_, err := middleware.ParsePrivateKey(in)
		if err == nil || strings.Contains(err.Error(), "0123456789abcdef") {
			t.Errorf("%s: %v, want an error that does not quote the input", name, err)
		}
	}
	if _, err := middleware.LoadPrivateKey(filepath.Join(t.TempDir(), "missing.pem")); err == nil {
		t.Error("a missing file: no error")
	}
}
