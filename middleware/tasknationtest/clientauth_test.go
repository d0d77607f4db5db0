package tasknationtest_test

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
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// signAssertion signs claims with key as a client would.
func signAssertion(t *testing.T, key crypto.Signer, alg jose.SignatureAlgorithm, kid string, cl jwt.Claims) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if kid != "" {
		opts = opts.WithHeader("kid", kid)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, opts)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(sig).Claims(cl).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func assertionForm(assertion string) url.Values {
	return url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {tasknationtest.ClientAssertionType},
		"client_assertion":      {assertion},
	}
}

func TestClientAuth_PerClientMethods(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: "basic-only", Secret: "basic-secret", AuthMethods: []string{tasknationtest.AuthSecretBasic}},
		{ID: "post-only", Secret: "post-secret"},
	}})
	basic := func(id, secret string) result {
		req := tokenRequest(context.Background(), t, s, url.Values{"grant_type": {"client_credentials"}})
		req.SetBasicAuth(id, secret)
		return do(t, req)
	}
	post := func(id, secret string) result {
		return tokenCall(t, s, url.Values{"grant_type": {"client_credentials"}, "client_id": {id}, "client_secret": {secret}})
	}
	mustOK(t, basic("basic-only", "basic-secret"))
	mustOK(t, post("post-only", "post-secret"))
	for name, r := range map[string]result{
		"post for a basic client":   post("basic-only", "basic-secret"),
		"basic for a post client":   basic("post-only", "post-secret"),
		"basic with a wrong secret": basic("basic-only", "wrong"),
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, r, http.StatusUnauthorized, "invalid_client")
			if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
				t.Errorf("WWW-Authenticate = %q", r.header.Get("WWW-Authenticate"))
			}
		})
	}
	if n := s.ClientAuthentications(tasknationtest.AuthSecretBasic); n != 1 {
		t.Errorf("basic authentications = %d, want 1", n)
	}
}

func TestClientAuth_PrivateKeyJWT(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	s, clk := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: "rsa", AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: rsaKey.Public(), KeyID: "k1", AssertionAlgorithm: "PS256"},
		{ID: "ec", AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: ecKey.Public()},
		{ID: "ed", AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: edKey.Public()},
	}})
	claims := func(id string) jwt.Claims {
		now := clk.Now()
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return jwt.Claims{
			Issuer: id, Subject: id, Audience: jwt.Audience{s.TokenURL()},
			ID: new(big.Int).SetBytes(b).String(), IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Minute)),
		}
	}
	call := func(id, assertion string) result {
		f := assertionForm(assertion)
		if id != "" {
			f.Set("client_id", id)
		}
		return tokenCall(t, s, f)
	}
	mustOK(t, call("rsa", signAssertion(t, rsaKey, jose.PS256, "k1", claims("rsa"))))
	mustOK(t, call("ec", signAssertion(t, ecKey, jose.ES256, "", claims("ec"))))
	mustOK(t, call("", signAssertion(t, edKey, jose.EdDSA, "", claims("ed")))) // the subject names the client
	issuerAud := claims("ec")
	issuerAud.Audience = jwt.Audience{s.URL}
	mustOK(t, call("ec", signAssertion(t, ecKey, jose.ES256, "", issuerAud)))

	replayed := signAssertion(t, ecKey, jose.ES256, "", claims("ec"))
	mustOK(t, call("ec", replayed))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	// In order: "expired" moves the clock, and goes last.
	cases := []struct {
		name string
		call func() result
	}{
		{"replayed jti", func() result { return call("ec", replayed) }},
		{"wrong key", func() result { return call("ec", signAssertion(t, otherKey, jose.ES256, "", claims("ec"))) }},
		{"wrong alg", func() result { return call("rsa", signAssertion(t, rsaKey, jose.RS256, "k1", claims("rsa"))) }},
		{"wrong kid", func() result { return call("rsa", signAssertion(t, rsaKey, jose.PS256, "k2", claims("rsa"))) }},
		{"wrong audience", func() result {
			c := claims("ec")
			c.Audience = jwt.Audience{"https://elsewhere.example/token"}
			return call("ec", signAssertion(t, ecKey, jose.ES256, "", c))
		}},
		{"issuer is not the client", func() result {
			c := claims("ec")
			c.Issuer = "rsa"
			return call("ec", signAssertion(t, ecKey, jose.ES256, "", c))
		}},
		{"exp too far", func() result {
			c := claims("ec")
			c.Expiry = jwt.NewNumericDate(clk.Now().Add(time.Hour))
			return call("ec", signAssertion(t, ecKey, jose.ES256, "", c))
		}},
		{"no jti", func() result {
			c := claims("ec")
			c.ID = ""
			return call("ec", signAssertion(t, ecKey, jose.ES256, "", c))
		}},
		{"another client's assertion", func() result { return call("ec", signAssertion(t, edKey, jose.EdDSA, "", claims("ed"))) }},
		{"wrong assertion type", func() result {
			f := assertionForm(signAssertion(t, ecKey, jose.ES256, "", claims("ec")))
			f.Set("client_assertion_type", "urn:example:other")
			f.Set("client_id", "ec")
			return tokenCall(t, s, f)
		}},
		{"not a JWT", func() result { return call("ec", "not.a.jwt") }},
		{"expired", func() result {
			c := claims("ec")
			clk.Advance(2 * time.Minute)
			return call("ec", signAssertion(t, ecKey, jose.ES256, "", c))
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { wantError(t, c.call(), http.StatusUnauthorized, "invalid_client") })
	}
	if n := s.ReplayedAssertions(); n != 1 {
		t.Errorf("ReplayedAssertions = %d, want 1", n)
	}
	t.Run("with a secret too", func(t *testing.T) {
		f := assertionForm(signAssertion(t, ecKey, jose.ES256, "", claims("ec")))
		f.Set("client_id", "ec")
		f.Set("client_secret", "x")
		wantError(t, tokenCall(t, s, f), http.StatusBadRequest, "invalid_request")
	})
	if n := s.ClientAuthentications(tasknationtest.AuthPrivateKeyJWT); n != 5 {
		t.Errorf("private_key_jwt authentications = %d, want 5", n)
	}
}

// selfSigned makes a self-signed ECDSA certificate for cn.
func selfSigned(t *testing.T, cn string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func TestClientAuth_TLSClient(t *testing.T) {
	mine, other := selfSigned(t, "client"), selfSigned(t, "client")
	s, _ := newServer(t, tasknationtest.Options{TLS: true, Clients: []tasknationtest.Client{
		{ID: "mtls", AuthMethods: []string{tasknationtest.AuthTLSClient}, Certificate: mine.Leaf},
	}})
	if !strings.HasPrefix(s.URL, "https://") || s.Certificate() == nil {
		t.Fatalf("URL %s, certificate %v: want https", s.URL, s.Certificate())
	}
	call := func(cert *tls.Certificate, form url.Values) result {
		c := s.Client()
		tr := c.Transport.(*http.Transport).Clone()
		if cert != nil {
			tr.TLSClientConfig.Certificates = []tls.Certificate{*cert}
		}
		defer tr.CloseIdleConnections()
		req := tokenRequest(context.Background(), t, s, form)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return result{status: resp.StatusCode, header: resp.Header}
	}
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"mtls"}}
	if r := call(&mine, form); r.status != http.StatusOK {
		t.Fatalf("registered certificate: %d", r.status)
	}
	for name, cert := range map[string]*tls.Certificate{"another certificate": &other, "no certificate": nil} {
		if r := call(cert, form); r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("%s: %d %q, want 401 with WWW-Authenticate", name, r.status, r.header.Get("WWW-Authenticate"))
		}
	}
	if n := s.ClientAuthentications(tasknationtest.AuthTLSClient); n != 1 {
		t.Errorf("tls_client_auth authentications = %d, want 1", n)
	}
}

func TestResourceIndicators(t *testing.T) {
	s, _ := newServer(t, tasknationtest.Options{Clients: []tasknationtest.Client{
		{ID: "res", Secret: "res-secret", Resources: []string{"https://api.example/a", "https://api.example/b"}},
	}})
	form := func(resources ...string) url.Values {
		return url.Values{"grant_type": {"client_credentials"}, "client_id": {"res"}, "client_secret": {"res-secret"},
			"resource": resources, "audience": {"aud-1"}}
	}
	wantError(t, tokenCall(t, s, form()), http.StatusBadRequest, "invalid_target")
	wantError(t, tokenCall(t, s, form("https://api.example/c")), http.StatusBadRequest, "invalid_target")
	mustOK(t, tokenCall(t, s, form("https://api.example/a", "https://api.example/b")))
	got := s.LastTokenRequest()
	if !slices.Equal(got["resource"], []string{"https://api.example/a", "https://api.example/b"}) || got.Get("audience") != "aud-1" {
		t.Errorf("LastTokenRequest = %v", got)
	}
	if got.Has("client_secret") {
		t.Errorf("LastTokenRequest keeps the secret")
	}
	// Other parameters still may not repeat.
	f := form("https://api.example/a")
	f["scope"] = []string{"demand::search", "demand::search"}
	wantError(t, tokenCall(t, s, f), http.StatusBadRequest, "invalid_request")
}

func TestMetadata_BothDocuments(t *testing.T) {
	get := func(s *tasknationtest.Server, path string) result {
		req, _ := http.NewRequest(http.MethodGet, s.URL+path, nil)
		return do(t, req)
	}
	s, _ := newServer(t, tasknationtest.Options{RevocationEndpoint: true})
	for _, p := range []string{"/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"} {
		r := get(s, p)
		if r.status != 200 || r.str("issuer") != s.URL || r.str("token_endpoint") != s.TokenURL() || r.str("revocation_endpoint") != s.RevocationURL() {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	o, _ := newServer(t, tasknationtest.Options{OpenIDDiscoveryOnly: true})
	if r := get(o, "/.well-known/oauth-authorization-server"); r.status != http.StatusNotFound {
		t.Errorf("RFC 8414 document with OpenIDDiscoveryOnly: %d", r.status)
	}
	if r := get(o, "/.well-known/openid-configuration"); r.status != 200 {
		t.Errorf("OpenID document: %d", r.status)
	}
}
