package middleware_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// Across a session at debug level (fetch, refresh ahead, failure, error
// answer) no log entry holds a token or the client secret.
func TestLogs_NoSecrets(t *testing.T) {
	f := newFixture(t, nil)
	h := f.gate.Wrap(&recorder{})
	var tokens []string
	tokens = append(tokens, f.token(t))
	f.clock.Advance(55 * time.Minute)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	eventually(t, "refresh", func() bool { return f.ccRequests() == 2 })
	eventually(t, "new token", func() bool { return f.token(t) != tokens[0] })
	tokens = append(tokens, f.token(t))
	f.srv.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultStatus, Status: 500})
	f.clock.Advance(2 * time.Hour)
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	f.srv.ClearFaults()
	f.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"access_token":"tn_at_BADTYPE","token_type":"mac","expires_in":60}`))
	})
	f.clock.Advance(2 * time.Minute)
	f.gate.Token(context.Background())

	if f.logs.Len() < 3 {
		t.Fatalf("expected debug and warning entries, got %d", f.logs.Len())
	}
	secrets := append(tokens, tasknationtest.DefaultClientSecret, "tn_at_BADTYPE")
	for _, e := range f.logs.All() {
		line := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log entry holds a secret: %s", line)
			}
		}
	}
}

// With private_key_jwt, a token endpoint that quotes the client
// assertion it got (in error_description, as a careless server does)
// gets it into no log entry and no error; neither does the key.
func TestLogs_NoSecrets_ClientAssertion(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	a := newAuthSetup(t, tasknationtest.Options{}, tasknationtest.Client{
		AuthMethods: []string{tasknationtest.AuthPrivateKeyJWT}, PublicKey: key.Public(),
	})
	var mu sync.Mutex
	var sent []string
	a.srv.SetTokenResponder(func(w http.ResponseWriter, r *http.Request) {
		as := r.PostFormValue("client_assertion")
		mu.Lock()
		sent = append(sent, as)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":"assertion %s is not valid"}`, as)
	})
	g := a.gate(t, a.config(func(c *middleware.Config) { c.PrivateKeyJWT = &middleware.PrivateKeyJWT{Key: key, KeyID: "k1"} }))
	_, err1 := g.Token(context.Background())
	a.clock.Advance(time.Minute) // past the backoff
	_, err2 := g.Token(context.Background())
	wantRejected(t, err2, "invalid_client")
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	mu.Lock()
	secrets := append(slices.Clone(sent), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})), "PRIVATE KEY", "eyJ")
	n := len(sent)
	mu.Unlock()
	if n != 2 || a.logs.Len() == 0 {
		t.Fatalf("%d assertions sent, %d log entries; want 2 and some", n, a.logs.Len())
	}
	a.noSecrets(t, secrets, err1, err2)
	if !strings.Contains(err2.Error(), "assertion … is not valid") {
		t.Errorf("error %v: want the description, the assertion elided", err2)
	}
}
