package middleware

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt
// (RFC 7523 §2.2).
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// DefaultAssertionLifetime is how long a client assertion is valid.
const DefaultAssertionLifetime = time.Minute

// The bounds of PrivateKeyJWT.Lifetime: 1s and 1h.
const (
	MinAssertionLifetime = time.Second
	MaxAssertionLifetime = time.Hour
)

// PrivateKeyJWT configures private_key_jwt client authentication (RFC 7523
// §2.2, OpenID Connect Core §9): each token request (and revocation
// request) carries a fresh JWT signed with Key, with iss and sub the
// client ID, aud Audience, a random jti, and iat and exp from the Gate's
// Clock. No client secret is sent.
type PrivateKeyJWT struct {
	// Key signs the assertions: an *rsa.PrivateKey, *ecdsa.PrivateKey,
	// ed25519.PrivateKey, or any crypto.Signer of those key types (a key
	// in an HSM or a KMS). LoadPrivateKey reads one from a PEM file.
	// Required.
	Key crypto.Signer
	// Algorithm is the JWS algorithm: RS256, RS384, RS512, PS256, PS384,
	// PS512 (RSA keys), ES256, ES384, ES512 (ECDSA keys on P-256, P-384,
	// P-521) or EdDSA (Ed25519 keys). Default: RS256 for RSA keys, the
	// curve's algorithm for ECDSA keys, EdDSA for Ed25519 keys.
	Algorithm string
	// KeyID is the kid header, naming the key among those the client
	// registered. Default: none (no kid header).
	KeyID string
	// Audience is the aud claim. Default: the token endpoint URL (what
	// OpenID Connect Core §9 asks for; RFC 7523 §3 allows it).
	Audience string
	// Lifetime is how long an assertion is valid (exp - iat).
	// Default: 1m.
	Lifetime time.Duration
}

// assertionSigner makes the client assertions of one client.
type assertionSigner struct {
	signer   jose.Signer
	clientID string
	audience string
	lifetime time.Duration
	now      func() time.Time
}

// newAssertionSigner checks p and returns its signer. Errors are
// *ConfigError of the field private_key_jwt.
func newAssertionSigner(p *PrivateKeyJWT, clientID, tokenURL string, now func() time.Time) (*assertionSigner, error) {
	bad := func(reason string, err error) error {
		return &ConfigError{Field: "private_key_jwt", Reason: reason, Err: err}
	}
	if p.Key == nil {
		return nil, bad("needs a key", nil)
	}
	alg, err := assertionAlgorithm(p.Key.Public(), p.Algorithm)
	if err != nil {
		return nil, bad("", err)
	}
	aud := p.Audience
	if aud == "" {
		aud = tokenURL
	}
	lifetime := p.Lifetime
	if lifetime == 0 {
		lifetime = DefaultAssertionLifetime
	}
	if lifetime < MinAssertionLifetime || lifetime > MaxAssertionLifetime {
		return nil, bad(fmt.Sprintf("lifetime must be between 1s and 1h, got %v", lifetime), nil)
	}
	opts := (&jose.SignerOptions{}).WithType("JWT")
	if p.KeyID != "" {
		opts = opts.WithHeader(jose.HeaderKey("kid"), p.KeyID)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: cryptosigner.Opaque(p.Key)}, opts)
	if err != nil {
		return nil, bad("", err)
	}
	return &assertionSigner{signer: sig, clientID: clientID, audience: aud, lifetime: lifetime, now: now}, nil
}

// assertionAlgorithm returns alg (or the default for the key type), once
// it is known to fit the key.
func assertionAlgorithm(pub crypto.PublicKey, alg string) (jose.SignatureAlgorithm, error) {
	var fits []jose.SignatureAlgorithm
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("an RSA key of %d bits is too short (want at least 2048)", k.N.BitLen())
		}
		fits = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			fits = []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			fits = []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			fits = []jose.SignatureAlgorithm{jose.ES512}
		}
	case ed25519.PublicKey:
		fits = []jose.SignatureAlgorithm{jose.EdDSA}
	}
	if fits == nil {
		return "", fmt.Errorf("unsupported key type %T (want RSA, ECDSA on P-256/P-384/P-521 or Ed25519)", pub)
	}
	if alg == "" {
		return fits[0], nil
	}
	if !slices.Contains(fits, jose.SignatureAlgorithm(alg)) {
		names := make([]string, len(fits))
		for i, a := range fits {
			names[i] = string(a)
		}
		return "", fmt.Errorf("algorithm %q does not fit the key (want one of %s)", truncate(alg, 20), strings.Join(names, ", "))
	}
	return jose.SignatureAlgorithm(alg), nil
}

// assertion returns a new client assertion: a fresh jti, iat now.
func (a *assertionSigner) assertion() (string, error) {
	jti := make([]byte, 24)
	_, _ = rand.Read(jti) // never fails (crypto/rand panics instead)
	now := a.now()
	claims := jwt.Claims{
		Issuer:   a.clientID,
		Subject:  a.clientID,
		Audience: jwt.Audience{a.audience},
		ID:       base64.RawURLEncoding.EncodeToString(jti),
		IssuedAt: jwt.NewNumericDate(now),
		Expiry:   jwt.NewNumericDate(now.Add(a.lifetime)),
	}
	s, err := jwt.Signed(a.signer).Claims(claims).Serialize()
	if err != nil {
		// The error of a crypto.Signer (an HSM) says why it failed; it
		// holds no key material.
		return "", fmt.Errorf("middleware: signing the client assertion: %w", err)
	}
	return s, nil
}

// ParsePrivateKey reads a private key from PEM: PKCS #8 ("PRIVATE KEY"),
// PKCS #1 ("RSA PRIVATE KEY") or SEC 1 ("EC PRIVATE KEY"). The first
// private key block counts; others (a certificate) are skipped. Errors
// never quote the input.
func ParsePrivateKey(pemBytes []byte) (crypto.Signer, error) {
	rest := pemBytes
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, errors.New("middleware: no PEM private key block found")
		}
		var key any
		var err error
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("middleware: encrypted private keys are not supported; decrypt the key first")
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("middleware: %s block: %w", b.Type, err)
		}
		s, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("middleware: a %T cannot sign", key)
		}
		return s, nil
	}
}

// LoadPrivateKey reads a private key from a PEM file (see
// ParsePrivateKey).
func LoadPrivateKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("middleware: reading the private key: %w", err)
	}
	k, err := ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w (in %s)", err, path)
	}
	return k, nil
}

// LoadClientCertificate reads a client certificate (PEM, with its chain)
// and its private key (PEM) for tls_client_auth.
func LoadClientCertificate(certFile, keyFile string) (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("middleware: loading the client certificate: %w", err)
	}
	return &c, nil
}

// LoadCertPool reads PEM certificates into a pool, for Config.RootCAs.
func LoadCertPool(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("middleware: reading the CA certificates: %w", err)
	}
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("middleware: no PEM certificate in %s", path)
	}
	return p, nil
}

// reservedParams are the token-request parameters of the protocol itself,
// which TokenParams must not set.
var reservedParams = []string{
	"grant_type", "client_id", "client_secret", "code", "refresh_token", "redirect_uri",
	"code_verifier", "scope", "client_assertion", "client_assertion_type",
}

// checkTokenParams refuses parameters that would override the protocol's.
func checkTokenParams(p url.Values) error {
	for name, vs := range p {
		if name == "" {
			return &ConfigError{Field: "token_params", Reason: "has a parameter without a name"}
		}
		if slices.Contains(reservedParams, strings.ToLower(name)) || strings.HasPrefix(strings.ToLower(name), "client_assertion") {
			return &ConfigError{Field: "token_params", Value: name, Reason: "is a parameter of the protocol itself and cannot be set"}
		}
		if len(vs) == 0 {
			return &ConfigError{Field: "token_params", Value: name, Reason: "has no value"}
		}
	}
	return nil
}

// clientAuth is how the client authenticates at the token and revocation
// endpoints.
type clientAuth struct {
	id, secret string
	style      oauth2.AuthStyle
	assertion  *assertionSigner // private_key_jwt; nil otherwise
}

// apply adds the client authentication to a form request to an endpoint
// other than the token endpoint (revocation): what x/oauth2 and
// formTransport do for token requests.
func (a *clientAuth) apply(req *http.Request, form url.Values) error {
	switch {
	case a.assertion != nil:
		s, err := a.assertion.assertion()
		if err != nil {
			return err
		}
		form.Set("client_id", a.id)
		form.Set("client_assertion_type", ClientAssertionType)
		form.Set("client_assertion", s)
	case a.style == oauth2.AuthStyleInParams:
		form.Set("client_id", a.id)
		if a.secret != "" {
			form.Set("client_secret", a.secret)
		}
	default:
		// RFC 6749 §2.3.1: form-encoded before Basic, as x/oauth2 does.
		req.SetBasicAuth(url.QueryEscape(a.id), url.QueryEscape(a.secret))
	}
	return nil
}

// formTransport adds fields to the form body of each POST to the token
// endpoint: TokenParams, and the client assertion of private_key_jwt.
// x/oauth2's refresh path (TokenSource) takes no extra parameters, so the
// three grants share this one place rather than two of them using
// EndpointParams and AuthCodeOptions. The caller's request is not
// changed: a clone carries the new body, with its Content-Length.
type formTransport struct {
	base      http.RoundTripper
	tokenURL  *url.URL
	params    url.Values
	assertion *assertionSigner
}

func (t formTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodPost || req.URL.Scheme != t.tokenURL.Scheme || req.URL.Host != t.tokenURL.Host ||
		req.URL.Path != t.tokenURL.Path || req.Body == nil {
		return t.base.RoundTrip(req)
	}
	raw, err := io.ReadAll(io.LimitReader(req.Body, maxBody+1))
	req.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("reading the token request: %w", err)
	}
	if len(raw) > maxBody {
		return nil, errors.New("token request body exceeds 1 MiB")
	}
	form, err := url.ParseQuery(string(raw))
	if err != nil {
		return nil, errors.New("token request body is not a form")
	}
	for name, vs := range t.params {
		form[name] = slices.Clone(vs)
	}
	if t.assertion != nil {
		s, err := t.assertion.assertion()
		if err != nil {
			return nil, err
		}
		form.Set("client_assertion_type", ClientAssertionType)
		form.Set("client_assertion", s)
	}
	body := []byte(form.Encode())
	r2 := req.Clone(req.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r2.ContentLength = int64(len(body))
	return t.base.RoundTrip(r2)
}

// tlsTransport returns base (nil: http.DefaultTransport) with the client
// certificate and root CAs set, as a new *http.Transport. It fails for a
// base that is not an *http.Transport, which has no TLS configuration to
// set.
func tlsTransport(base http.RoundTripper, cert *tls.Certificate, roots *x509.CertPool) (*http.Transport, error) {
	if base == nil {
		base = http.DefaultTransport
	}
	ht, ok := base.(*http.Transport)
	if !ok {
		field := "root_cas"
		if cert != nil {
			field = "tls_client_auth"
		}
		return nil, &ConfigError{Field: field, Reason: fmt.Sprintf("needs HTTPClient.Transport to be nil or an *http.Transport, not a %T", base)}
	}
	ht = ht.Clone()
	tc := ht.TLSClientConfig
	if tc == nil {
		tc = &tls.Config{}
	}
	tc = tc.Clone()
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	if roots != nil {
		tc.RootCAs = roots
	}
	ht.TLSClientConfig = tc
	return ht, nil
}
