package tasknationtest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Client authentication methods (the token_endpoint_auth_method values of
// RFC 7591 §2), for Client.AuthMethods.
const (
	// AuthSecretPost: client_id and client_secret in the form body
	// (RFC 6749 §2.3.1), TaskNation's method.
	AuthSecretPost = "client_secret_post"
	// AuthSecretBasic: client_id and client_secret in an HTTP Basic
	// header, each form-encoded first (RFC 6749 §2.3.1).
	AuthSecretBasic = "client_secret_basic"
	// AuthPrivateKeyJWT: a JWT signed with the client's private key
	// (RFC 7523 §2.2), checked against Client.PublicKey.
	AuthPrivateKeyJWT = "private_key_jwt"
	// AuthTLSClient: mutual TLS (RFC 8705 §2) with the certificate of
	// Client.Certificate, and client_id in the form body. Served with
	// Options.TLS only.
	AuthTLSClient = "tls_client_auth"
)

// ClientAssertionType is the client_assertion_type of private_key_jwt.
const ClientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// maxAssertionLifetime is the longest exp - now an assertion may have.
const maxAssertionLifetime = 10 * time.Minute

var allAuthMethods = []string{AuthSecretPost, AuthSecretBasic, AuthPrivateKeyJWT, AuthTLSClient}

// authMethodsFor returns what a client registered with methods accepts.
func (s *Server) authMethodsFor(methods []string) []string {
	if methods != nil {
		return slices.Clone(methods)
	}
	if s.opts.AcceptBasicAuth {
		return []string{AuthSecretPost, AuthSecretBasic}
	}
	return []string{AuthSecretPost}
}

// assertionAlgs are the JWS algorithms that fit a public key.
func assertionAlgs(pub crypto.PublicKey) []jose.SignatureAlgorithm {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512}
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return []jose.SignatureAlgorithm{jose.ES256}
		case elliptic.P384():
			return []jose.SignatureAlgorithm{jose.ES384}
		case elliptic.P521():
			return []jose.SignatureAlgorithm{jose.ES512}
		}
	case ed25519.PublicKey:
		return []jose.SignatureAlgorithm{jose.EdDSA}
	}
	return nil
}

// authenticateClient checks the client authentication of a token,
// introspection or revocation request: exactly one method (RFC 6749
// §2.3), one the client registered, with valid credentials. A failure is
// 401 invalid_client (with WWW-Authenticate, written by writeOAuthError);
// more than one method is 400 invalid_request.
func (s *Server) authenticateClient(r *http.Request) (*clientState, *oauthError) {
	fail := errf(http.StatusUnauthorized, "invalid_client", "client authentication failed")
	form := r.PostForm
	basic := r.Header.Get("Authorization") != ""
	secret := form.Has("client_secret")
	assertion := form.Has("client_assertion") || form.Has("client_assertion_type")
	n := 0
	for _, used := range []bool{basic, secret, assertion} {
		if used {
			n++
		}
	}
	if n > 1 {
		if basic && !s.basicAllowed(r) {
			// As a server without Basic does: the header is refused
			// before anything else is looked at.
			return nil, errNoBasic
		}
		return nil, errf(http.StatusBadRequest, "invalid_request", "more than one client authentication method used")
	}
	id := form.Get("client_id")
	var method string
	switch {
	case basic:
		method = AuthSecretBasic
		bid, _, ok := r.BasicAuth()
		if !ok {
			return nil, fail
		}
		bid, err := url.QueryUnescape(bid)
		if err != nil || (id != "" && id != bid) {
			return nil, fail
		}
		id = bid
	case secret:
		method = AuthSecretPost
	case assertion:
		method = AuthPrivateKeyJWT
		if id == "" {
			// client_id is optional with an assertion (RFC 7523 §3):
			// the subject names the client; checked with the signature.
			if tok, err := jwt.ParseSigned(form.Get("client_assertion"), allAlgs); err == nil {
				var cl jwt.Claims
				if tok.UnsafeClaimsWithoutVerification(&cl) == nil {
					id = cl.Subject
				}
			}
		}
	case r.TLS != nil && len(r.TLS.PeerCertificates) > 0:
		method = AuthTLSClient
	}
	if id == "" || method == "" {
		return nil, fail
	}
	s.mu.Lock()
	c := s.clients[id]
	s.mu.Unlock()
	if c == nil {
		return nil, fail
	}
	if !slices.Contains(c.authMethods, method) {
		if method == AuthSecretBasic && slices.Equal(c.authMethods, []string{AuthSecretPost}) {
			return nil, errNoBasic
		}
		return nil, errf(http.StatusUnauthorized, "invalid_client", "client authentication failed: the client is not registered for %s", method)
	}
	var e *oauthError
	switch method {
	case AuthSecretBasic:
		_, bsecret, _ := r.BasicAuth()
		bsecret, err := url.QueryUnescape(bsecret)
		if err != nil || !c.secretMatches(bsecret) {
			e = fail
		}
	case AuthSecretPost:
		if !c.secretMatches(form.Get("client_secret")) {
			e = fail
		}
	case AuthPrivateKeyJWT:
		e = s.checkAssertion(c, form)
	case AuthTLSClient:
		sum := sha256.Sum256(r.TLS.PeerCertificates[0].Raw)
		if c.certSHA256 == nil || subtle.ConstantTimeCompare(sum[:], c.certSHA256) != 1 {
			e = errf(http.StatusUnauthorized, "invalid_client", "client authentication failed: the TLS client certificate is not the client's")
		}
	}
	if e != nil {
		return nil, e
	}
	s.authMu.Lock()
	s.authCount[method]++
	s.authMu.Unlock()
	return c, nil
}

var errNoBasic = errf(http.StatusUnauthorized, "invalid_client",
	"client authentication failed: send client_id and client_secret in the request body, HTTP Basic is not supported")

// basicAllowed reports whether the client the Basic header of r names
// may authenticate with it.
func (s *Server) basicAllowed(r *http.Request) bool {
	id, _, _ := r.BasicAuth()
	id, _ = url.QueryUnescape(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.clients[id]
	return c != nil && slices.Contains(c.authMethods, AuthSecretBasic)
}

var allAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

func (c *clientState) secretMatches(secret string) bool {
	return secret != "" && c.secret != "" && subtle.ConstantTimeCompare([]byte(secret), []byte(c.secret)) == 1
}

// checkAssertion verifies a private_key_jwt client assertion (RFC 7523
// §3): its type, signature (with an algorithm that fits the registered
// key, and the registered one if any), kid when the client registered
// one, iss = sub = client ID, aud the token endpoint or the issuer, an
// exp no further than 10 minutes away, and a jti not seen before.
func (s *Server) checkAssertion(c *clientState, form url.Values) *oauthError {
	fail := func(why string) *oauthError {
		return errf(http.StatusUnauthorized, "invalid_client", "client authentication failed: %s", why)
	}
	if form.Get("client_assertion_type") != ClientAssertionType {
		return fail("unsupported client_assertion_type")
	}
	if c.publicKey == nil {
		return fail("the client has no registered key")
	}
	algs := assertionAlgs(c.publicKey)
	if c.assertionAlg != "" {
		algs = []jose.SignatureAlgorithm{jose.SignatureAlgorithm(c.assertionAlg)}
	}
	tok, err := jwt.ParseSigned(form.Get("client_assertion"), algs)
	if err != nil {
		return fail("the assertion is not a JWT signed with an accepted algorithm")
	}
	if c.keyID != "" && (len(tok.Headers) != 1 || tok.Headers[0].KeyID != c.keyID) {
		return fail("unknown kid")
	}
	var cl jwt.Claims
	if err := tok.Claims(c.publicKey, &cl); err != nil {
		return fail("bad signature")
	}
	now := s.now()
	if cl.Expiry == nil || cl.ID == "" {
		return fail("the assertion needs exp and jti")
	}
	if err := cl.ValidateWithLeeway(jwt.Expected{
		Issuer: c.id, Subject: c.id, AnyAudience: jwt.Audience{s.TokenURL(), s.URL}, Time: now,
	}, 0); err != nil {
		return fail(err.Error())
	}
	exp := cl.Expiry.Time()
	if exp.Sub(now) > maxAssertionLifetime {
		return fail("exp is too far in the future")
	}
	key := c.id + "\x00" + cl.ID
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, until := range s.jtis {
		if !now.Before(until) {
			delete(s.jtis, k)
		}
	}
	if _, seen := s.jtis[key]; seen {
		s.jtiReplays.Add(1)
		return fail("jti already used")
	}
	s.jtis[key] = exp
	return nil
}

// ClientAuthentications counts the successful client authentications
// with method (AuthSecretPost, ...), at every endpoint that authenticates
// clients.
func (s *Server) ClientAuthentications(method string) int64 {
	s.authMu.Lock()
	defer s.authMu.Unlock()
	return s.authCount[method]
}

// ReplayedAssertions counts the client assertions refused because their
// jti had been used before.
func (s *Server) ReplayedAssertions() int64 { return s.jtiReplays.Load() }

// registerAuth checks and copies the authentication fields of c.
func (cs *clientState) registerAuth(s *Server, c Client) {
	cs.authMethods = s.authMethodsFor(c.AuthMethods)
	for _, m := range cs.authMethods {
		if !slices.Contains(allAuthMethods, m) {
			panic(fmt.Sprintf("tasknationtest: client %q: unknown auth method %q", c.ID, m))
		}
	}
	if (slices.Contains(cs.authMethods, AuthSecretPost) || slices.Contains(cs.authMethods, AuthSecretBasic)) && c.Secret == "" {
		panic(fmt.Sprintf("tasknationtest: client %q: a secret method without a Secret", c.ID))
	}
	if slices.Contains(cs.authMethods, AuthPrivateKeyJWT) {
		if assertionAlgs(c.PublicKey) == nil {
			panic(fmt.Sprintf("tasknationtest: client %q: private_key_jwt needs an RSA, ECDSA or Ed25519 PublicKey, got %T", c.ID, c.PublicKey))
		}
		if c.AssertionAlgorithm != "" && !slices.Contains(assertionAlgs(c.PublicKey), jose.SignatureAlgorithm(c.AssertionAlgorithm)) {
			panic(fmt.Sprintf("tasknationtest: client %q: algorithm %q does not fit the key", c.ID, c.AssertionAlgorithm))
		}
	}
	if slices.Contains(cs.authMethods, AuthTLSClient) {
		if c.Certificate == nil {
			panic(fmt.Sprintf("tasknationtest: client %q: tls_client_auth needs a Certificate", c.ID))
		}
		sum := sha256.Sum256(c.Certificate.Raw)
		cs.certSHA256 = sum[:]
	}
	cs.publicKey, cs.keyID, cs.assertionAlg = c.PublicKey, c.KeyID, c.AssertionAlgorithm
}
