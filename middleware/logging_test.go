package middleware_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

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
