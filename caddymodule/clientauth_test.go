package caddymodule

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// jwtHandler is a generic-provider client of srv that authenticates with
// the private_key_jwt key of keyFile.
func jwtHandler(srv *tasknationtest.Server, keyFile string) *Handler {
	return &Handler{
		Provider:   "generic",
		TokenURL:   srv.TokenURL(),
		ClientID:   "jwt-client",
		ClientAuth: &ClientAuth{PrivateKeyJWT: &PrivateKeyJWT{KeyFile: keyFile}},
	}
}

// The key, certificate and CA files are read at load: a file that is
// missing, unreadable or not what it should be fails the load with an
// error that names the subdirective and the file, never what the file
// holds; a key that does not fit the algorithm is the middleware's
// error, worded as the module's.
func TestProvision_ClientAuthFiles(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	dir := t.TempDir()
	key := testkit.WriteKey(t, dir, "key.pem", testkit.ECKey(t))
	_, certFile, certKey := testkit.ClientCertificate(t, dir, "client")
	_, _, otherKey := testkit.ClientCertificate(t, dir, "other")
	const junk = "not-a-key-but-a-secret-7d41"
	notPEM := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(notPEM, []byte(junk), 0o600); err != nil {
		t.Fatal(err)
	}
	badDER := testkit.WritePEM(t, dir, "bad.pem", "PRIVATE KEY", []byte(junk))
	encrypted := testkit.WritePEM(t, dir, "encrypted.pem", "ENCRYPTED PRIVATE KEY", []byte(junk))
	unreadable := filepath.Join(dir, "unreadable.pem")
	if err := os.WriteFile(unreadable, []byte(junk), 0o000); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")
	mtls := func(cert, key string) func(h *Handler) {
		return func(h *Handler) {
			h.ClientAuth = &ClientAuth{TLSClientAuth: &TLSClientAuth{CertFile: cert, KeyFile: key}}
		}
	}
	tests := []struct {
		name   string
		change func(h *Handler)
		want   string
	}{
		{"missing key file", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = missing },
			"oauth2_token: private_key_jwt: reading the key file: open " + missing + ": no such file or directory"},
		{"key file not PEM", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = notPEM },
			"oauth2_token: private_key_jwt: key file " + notPEM + ": middleware: no PEM private key block found"},
		{"key file not a key", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = badDER },
			"oauth2_token: private_key_jwt: key file " + badDER + ": middleware: PRIVATE KEY block:"},
		{"encrypted key", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = encrypted },
			"oauth2_token: private_key_jwt: key file " + encrypted + ": middleware: encrypted private keys are not supported"},
		{"key file placeholder unset", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = "{env.TG_TEST_UNSET_FILE}" },
			"oauth2_token: private_key_jwt: placeholder {env.TG_TEST_UNSET_FILE} is unset or empty"},
		{"algorithm does not fit the key", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.Algorithm = "RS256" },
			`oauth2_token: private_key_jwt: algorithm "RS256" does not fit the key (want one of ES256)`},
		{"missing certificate", mtls(missing, certKey), "oauth2_token: tls_client_auth: certificate " + missing + ", key " + certKey + ":"},
		{"certificate not PEM", mtls(notPEM, certKey), "oauth2_token: tls_client_auth: certificate " + notPEM},
		{"key of another certificate", mtls(certFile, otherKey), "private key does not match public key"},
		{"missing CA file", func(h *Handler) { h.TrustedCA = missing }, "oauth2_token: trusted_ca: reading the CA file: open " + missing},
		{"CA file without a certificate", func(h *Handler) { h.TrustedCA = notPEM }, "oauth2_token: trusted_ca: no PEM certificate in " + notPEM},
	}
	if os.Geteuid() != 0 { // root reads a file of mode 0
		tests = append(tests, struct {
			name   string
			change func(h *Handler)
			want   string
		}{"unreadable key file", func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyFile = unreadable },
			"oauth2_token: private_key_jwt: reading the key file: open " + unreadable + ": permission denied"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := jwtHandler(srv, key)
			tt.change(h)
			if err := h.Validate(); err != nil {
				t.Fatalf("Validate (adapt time, no file read): %v", err)
			}
			ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
			defer cancel()
			err := h.Provision(ctx)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), junk) {
				t.Fatalf("the error shows the file's contents: %v", err)
			}
		})
	}
}

// Two configs that differ in any client authentication setting, token
// parameter, issuer or trusted CA do not share a Gate; a key,
// certificate or CA file replaced in place gives another one.
func TestPoolKey_ClientAuth(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{})
	defer srv.Close()
	dir := t.TempDir()
	keyFile := testkit.WriteKey(t, dir, "rsa.pem", testkit.RSAKey(t))
	caFile := filepath.Join(dir, "ca.pem")
	ca1, _, _ := testkit.ClientCertificate(t, dir, "ca1")
	ca2, _, _ := testkit.ClientCertificate(t, dir, "ca2")
	testkit.WritePEM(t, dir, "ca.pem", "CERTIFICATE", ca1.Raw)
	_, certFile, certKey := testkit.ClientCertificate(t, dir, "client")
	_, otherCert, otherKey := testkit.ClientCertificate(t, dir, "other")

	base := jwtHandler(srv, keyFile)
	base.TokenParams = map[string][]string{"resource": {"https://api.example.com/"}}
	base.TrustedCA = caFile
	mtlsBase := &Handler{Provider: "generic", TokenURL: srv.TokenURL(), ClientID: "mtls",
		ClientAuth: &ClientAuth{TLSClientAuth: &TLSClientAuth{CertFile: certFile, KeyFile: certKey}}}
	secretBase := &Handler{Provider: "generic", TokenURL: srv.TokenURL(), ClientID: "id", ClientSecret: "{env.TG_TEST_CLIENT_SECRET}"}
	t.Setenv("TG_TEST_CLIENT_SECRET", tasknationtest.DefaultClientSecret)
	key := func(h *Handler) string { return poolKeyOf(t, h) }
	for _, b := range []*Handler{base, mtlsBase, secretBase} {
		if key(clone(t, b)) != key(b) {
			t.Fatal("the same configuration has two pool keys")
		}
	}
	k0, m0, s0 := key(base), key(mtlsBase), key(secretBase)

	changes := map[string]struct {
		base   *Handler
		k0     string
		change func(h *Handler)
	}{
		"client_auth post":  {secretBase, s0, func(h *Handler) { h.ClientAuth = &ClientAuth{Method: "post"} }},
		"client_auth basic": {secretBase, s0, func(h *Handler) { h.ClientAuth = &ClientAuth{Method: "basic"} }},
		"algorithm":         {base, k0, func(h *Handler) { h.ClientAuth.PrivateKeyJWT.Algorithm = "PS256" }},
		"key_id":            {base, k0, func(h *Handler) { h.ClientAuth.PrivateKeyJWT.KeyID = "k2" }},
		"audience":          {base, k0, func(h *Handler) { h.ClientAuth.PrivateKeyJWT.Audience = srv.URL }},
		"lifetime":          {base, k0, func(h *Handler) { h.ClientAuth.PrivateKeyJWT.Lifetime = caddy.Duration(2 * time.Minute) }},
		"another key file": {base, k0, func(h *Handler) {
			h.ClientAuth.PrivateKeyJWT.KeyFile = testkit.WriteKey(t, t.TempDir(), "key.pem", testkit.ECKey(t))
		}},
		"token_params value":  {base, k0, func(h *Handler) { h.TokenParams["resource"] = []string{"https://other.example.com/"} }},
		"token_params more":   {base, k0, func(h *Handler) { h.TokenParams["audience"] = []string{"a"} }},
		"no token_params":     {base, k0, func(h *Handler) { h.TokenParams = nil }},
		"issuer":              {base, k0, func(h *Handler) { h.Issuer = srv.URL }},
		"no trusted_ca":       {base, k0, func(h *Handler) { h.TrustedCA = "" }},
		"another certificate": {mtlsBase, m0, func(h *Handler) { h.ClientAuth.TLSClientAuth = &TLSClientAuth{CertFile: otherCert, KeyFile: otherKey} }},
	}
	for name, c := range changes {
		h := clone(t, c.base)
		c.change(h)
		if key(h) == c.k0 {
			t.Errorf("changing %s keeps the pool key", name)
		}
	}

	// The same paths, other contents: a reload takes the new files.
	testkit.WriteKey(t, dir, "rsa.pem", testkit.ECKey(t))
	if key(base) == k0 {
		t.Error("a key replaced in its file keeps the pool key")
	}
	k1 := key(base)
	testkit.WritePEM(t, dir, "ca.pem", "CERTIFICATE", ca2.Raw)
	if key(base) == k1 {
		t.Error("a CA replaced in its file keeps the pool key")
	}
	os.Rename(otherCert, certFile)
	os.Rename(otherKey, certKey)
	if key(mtlsBase) == m0 {
		t.Error("a certificate replaced in its files keeps the pool key")
	}
}

// With issuer and no token_url, Provision discovers the endpoints, and
// the discovery is cached across configs (reloads): once provisioned, the
// metadata is there without the network.
func TestProvision_Issuer(t *testing.T) {
	srv := tasknationtest.NewServer(tasknationtest.Options{AcceptBasicAuth: true})
	defer srv.Close()
	t.Setenv("TG_TEST_CLIENT_SECRET", tasknationtest.DefaultClientSecret)
	h := &Handler{Provider: "generic", Issuer: srv.URL, ClientID: tasknationtest.DefaultClientID,
		ClientSecret: "{env.TG_TEST_CLIENT_SECRET}", Scopes: []string{"demand::search"}}
	if err := h.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	_, cancel := provision(t, h)
	defer cancel()
	defer h.Cleanup()
	done, stop := context.WithCancel(context.Background())
	stop()
	if m, err := discoveries.Discover(done, srv.URL, nil); err != nil || m.TokenURL != srv.TokenURL() {
		t.Fatalf("the discovery is not cached for the next config: %v, %+v", err, m)
	}
	w := httptest.NewRecorder()
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		if !srv.Active(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")) {
			t.Errorf("next saw Authorization %q, not a token of the discovered server", r.Header.Get("Authorization"))
		}
		return nil
	})
	if err := h.ServeHTTP(w, httptest.NewRequest("GET", "/", nil), next); err != nil {
		t.Fatal(err)
	}
	if n := srv.TokenRequests(tasknationtest.GrantClientCredentials); n != 1 {
		t.Errorf("token requests at the discovered endpoint = %d, want 1", n)
	}

	// An issuer that is not there fails the load, naming issuer.
	bad := &Handler{Provider: "generic", Issuer: srv.URL + "/nowhere", ClientID: "id", ClientSecret: "{env.TG_TEST_CLIENT_SECRET}"}
	ctx, cancelBad := caddy.NewContext(caddy.Context{Context: context.Background()})
	defer cancelBad()
	if err := bad.Provision(ctx); err == nil || !strings.HasPrefix(err.Error(), `oauth2_token: issuer "`+srv.URL+`/nowhere": no metadata`) {
		t.Fatalf("err = %v, want the issuer's discovery error", err)
	}
}
