package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// ECKey returns a new ECDSA P-256 key, the quickest to make.
func ECKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// RSAKey returns a new 2048-bit RSA key (for the PS* and RS*
// algorithms; slower to make than ECKey).
func RSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// WriteKey writes key as PKCS #8 PEM to the file name in dir (mode 0600)
// and returns its path: the key file of private_key_jwt or
// tls_client_auth.
func WriteKey(t testing.TB, dir, name string, key crypto.Signer) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return WritePEM(t, dir, name, "PRIVATE KEY", der)
}

// WritePEM writes one PEM block of typ to the file name in dir (mode
// 0600) and returns its path.
func WritePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// ClientCertificate makes a self-signed certificate of a new P-256 key
// for TLS client authentication, valid for an hour either side of now,
// and writes it and its key as PEM in dir (name.crt, name.key). It
// returns the certificate (what a server registers) and the two paths.
func ClientCertificate(t testing.TB, dir, name string) (cert *x509.Certificate, certFile, keyFile string) {
	t.Helper()
	key := ECKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	if cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	return cert, WritePEM(t, dir, name+".crt", "CERTIFICATE", der), WriteKey(t, dir, name+".key", key)
}
