package caddymodule

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/tasknation/tokengate/middleware"
)

// The values of client_auth's method.
const (
	clientAuthBasic = "basic"
	clientAuthPost  = "post"
)

var clientAuthMethods = []string{clientAuthBasic, clientAuthPost}

// jwsAlgorithms are the algorithms of private_key_jwt, for errors and
// suggestions; which of them fits the key is the middleware's check.
var jwsAlgorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}

// clientAuth sets how c's client authenticates (client_auth's method,
// private_key_jwt's key, tls_client_auth's certificate), the roots of
// trusted_ca and the token_params, and returns the SHA-256 of the
// trusted_ca file (nil without one). The files are read at load only:
// at adapt time (the config may be adapted on another machine) stand-ins
// take the place of what they hold, so that the middleware's checks of
// how the methods combine still run. Errors name the subdirective and
// the file, never what a file holds.
func (h *Handler) clientAuth(c *middleware.Config, r resolver) ([]byte, error) {
	var err error
	if ca := h.ClientAuth; ca != nil {
		switch ca.Method {
		case "":
		case clientAuthBasic:
			c.AuthStyle = oauth2.AuthStyleInHeader
		case clientAuthPost:
			c.AuthStyle = oauth2.AuthStyleInParams
		default:
			return nil, refuse("client_auth", "client_auth: unknown method %q (want basic or post; private_key_jwt and tls_client_auth are subdirectives of their own, objects of client_auth in JSON)%s",
				ca.Method, didYouMean(ca.Method, clientAuthMethods))
		}
		if p := ca.PrivateKeyJWT; p != nil {
			if c.PrivateKeyJWT, err = p.config(r); err != nil {
				return nil, err
			}
		}
		if t := ca.TLSClientAuth; t != nil {
			if c.ClientCertificate, err = t.certificate(r); err != nil {
				return nil, err
			}
		}
	}
	if len(h.TokenParams) > 0 {
		c.TokenParams = make(url.Values, len(h.TokenParams))
		for name, vs := range h.TokenParams {
			c.TokenParams[name] = make([]string, len(vs)) // none: the middleware says it has no value
			for i, v := range vs {
				if c.TokenParams[name][i], err = r.resolve("token_params", v); err != nil {
					return nil, err
				}
			}
		}
	}
	if h.TrustedCA == "" {
		return nil, nil
	}
	if !r.loading() {
		c.RootCAs = x509.NewCertPool()
		return nil, nil
	}
	path, err := r.resolve("trusted_ca", h.TrustedCA)
	if err != nil {
		return nil, err
	}
	// Read once, for the pool and for the pool key alike (what
	// middleware.LoadCertPool does, with the contents kept).
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, &moduleError{field: "trusted_ca", msg: fmt.Sprintf("oauth2_token: trusted_ca: reading the CA file: %v", err), err: err}
	}
	c.RootCAs = x509.NewCertPool()
	if !c.RootCAs.AppendCertsFromPEM(raw) {
		return nil, refuse("trusted_ca", "trusted_ca: no PEM certificate in %s", path)
	}
	sum := sha256.Sum256(raw)
	return sum[:], nil
}

// config checks p and returns the middleware's PrivateKeyJWT, its key
// read from key_file at load, a stand-in at adapt time.
func (p *PrivateKeyJWT) config(r resolver) (*middleware.PrivateKeyJWT, error) {
	if p.KeyFile == "" {
		return nil, refuse("private_key_jwt", "private_key_jwt: needs a key file: private_key_jwt <key_file> (client_auth.private_key_jwt.key_file in JSON)")
	}
	if p.Algorithm != "" && !slices.Contains(jwsAlgorithms, p.Algorithm) {
		return nil, refuse("private_key_jwt", "private_key_jwt: unknown algorithm %q (want one of %s)%s",
			p.Algorithm, strings.Join(jwsAlgorithms, ", "), didYouMean(p.Algorithm, jwsAlgorithms))
	}
	out := &middleware.PrivateKeyJWT{Algorithm: p.Algorithm, KeyID: p.KeyID, Lifetime: time.Duration(p.Lifetime)}
	var err error
	if out.Audience, err = r.resolve("private_key_jwt", p.Audience); err != nil {
		return nil, err
	}
	if !r.loading() {
		out.Key = standInKey(p.Algorithm)
		return out, nil
	}
	path, err := r.resolve("private_key_jwt", p.KeyFile)
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, &moduleError{field: "private_key_jwt", msg: fmt.Sprintf("oauth2_token: private_key_jwt: reading the key file: %v", err), err: err}
	}
	if out.Key, err = middleware.ParsePrivateKey(raw); err != nil {
		// ParsePrivateKey never quotes the input.
		return nil, &moduleError{field: "private_key_jwt", msg: fmt.Sprintf("oauth2_token: private_key_jwt: key file %s: %v", path, err), err: err}
	}
	return out, nil
}

// certificate checks t and returns the client certificate, read from its
// files at load, a stand-in at adapt time.
func (t *TLSClientAuth) certificate(r resolver) (*tls.Certificate, error) {
	if t.CertFile == "" || t.KeyFile == "" {
		return nil, refuse("tls_client_auth", "tls_client_auth: needs the certificate and its key: tls_client_auth <cert_file> <key_file> (client_auth.tls_client_auth.cert_file and key_file in JSON)")
	}
	if !r.loading() {
		return &tls.Certificate{}, nil
	}
	certFile, err := r.resolve("tls_client_auth", t.CertFile)
	if err != nil {
		return nil, err
	}
	keyFile, err := r.resolve("tls_client_auth", t.KeyFile)
	if err != nil {
		return nil, err
	}
	cert, err := middleware.LoadClientCertificate(certFile, keyFile)
	if err != nil {
		// crypto/tls's errors name what is wrong, never the PEM.
		return nil, &moduleError{field: "tls_client_auth", msg: fmt.Sprintf("oauth2_token: tls_client_auth: certificate %s, key %s: %v", certFile, keyFile, err), err: err}
	}
	return cert, nil
}

// standIn is a public key of the type an algorithm needs, for the checks
// of adapt time, which do not read the key file. It never signs.
type standIn struct{ pub crypto.PublicKey }

func (k standIn) Public() crypto.PublicKey { return k.pub }

func (standIn) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("oauth2_token: a stand-in key does not sign")
}

// standInKey returns a stand-in for a key of alg ("": any key, an
// Ed25519 one).
func standInKey(alg string) crypto.Signer {
	var curve elliptic.Curve
	switch alg {
	case "ES256":
		curve = elliptic.P256()
	case "ES384":
		curve = elliptic.P384()
	case "ES512":
		curve = elliptic.P521()
	case "", "EdDSA":
		pub, _, _ := ed25519.GenerateKey(rand.Reader) // never fails (crypto/rand panics instead)
		return standIn{pub}
	default: // RS*, PS*: a 2048-bit modulus, which is all the checks look at
		return standIn{&rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 2047), E: 65537}}
	}
	k, _ := ecdsa.GenerateKey(curve, rand.Reader) // never fails for these curves
	return standIn{k.Public()}
}
