package caddyfile_test

import (
	"context"
	"encoding/json"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// captureHandler is a test-only Caddy event handler,
// events.handlers.tokengate_test_capture: it records the events it is
// bound to in captured, as an operator's handler (exec, a webhook) would
// receive them.
type captureHandler struct{}

// capturedEvent is one event a captureHandler received.
type capturedEvent struct {
	name, origin string
	data         map[string]any
}

var captured = make(chan capturedEvent, 64)

func init() { caddy.RegisterModule(captureHandler{}) }

func (captureHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.tokengate_test_capture", New: func() caddy.Module { return new(captureHandler) }}
}

func (*captureHandler) Handle(_ context.Context, e caddy.Event) error {
	var origin string
	if o := e.Origin(); o != nil {
		origin = string(o.CaddyModule().ID)
	}
	captured <- capturedEvent{name: e.Name(), origin: origin, data: maps.Clone(e.Data)}
	return nil
}

func (*captureHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the handler's name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// lifecycleEvents binds the four events of oauth2_token to the capture
// handler, as an operator binds them to theirs.
const lifecycleEvents = `	events {
		on oauth2_token.connected tokengate_test_capture
		on oauth2_token.disconnected tokengate_test_capture
		on oauth2_token.reauthorization_required tokengate_test_capture
		on oauth2_token.refresh_token_expiring tokengate_test_capture
	}
`

// drainEvents forgets events captured before.
func drainEvents() {
	for {
		select {
		case <-captured:
		default:
			return
		}
	}
}

// nextEvent waits for the next captured event, which must be name: with
// a subject_key, the subject when withSubject, and no token, code or
// secret. It returns its data.
func nextEvent(t *testing.T, name string, withSubject bool) map[string]any {
	t.Helper()
	var ev capturedEvent
	select {
	case ev = <-captured:
	case <-time.After(waitFor):
		t.Fatalf("no %s event within %v", name, waitFor)
	}
	if ev.name != name || ev.origin != "http.handlers.oauth2_token" {
		t.Fatalf("event %s from %q, want %s from http.handlers.oauth2_token (data %v)", ev.name, ev.origin, name, ev.data)
	}
	if k, _ := ev.data["subject_key"].(string); !strings.HasPrefix(k, "user:") {
		t.Errorf("%s: subject_key %v", name, ev.data["subject_key"])
	}
	if s, has := ev.data["subject"]; has != withSubject || (withSubject && s != "alice") {
		t.Errorf("%s: subject %v (present %v), want alice present %v", name, s, has, withSubject)
	}
	raw, _ := json.Marshal(ev.data)
	for _, secret := range []string{tasknationtest.AccessTokenPrefix, tasknationtest.RefreshTokenPrefix, tasknationtest.CodePrefix, tasknationtest.DefaultClientSecret} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("%s: the event's data holds a credential: %s", name, raw)
		}
	}
	return ev.data
}

// status reads the status path as u.
func (u *siteUser) status(t *testing.T) map[string]any {
	t.Helper()
	r := u.mustDo(t, http.MethodGet, "/oauth2/status", nil)
	var st map[string]any
	if r.status != http.StatusOK || json.Unmarshal(r.body, &st) != nil {
		t.Fatalf("status as %s: %d %s", u.name, r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" || r.header.Get("Content-Type") != "application/json" {
		t.Errorf("status headers %v", r.header)
	}
	if where := r.leaks(); len(where) > 0 {
		t.Errorf("the status shows a token or the secret in %v", where)
	}
	return st
}

// revocationSite is a user site on a generic provider that offers RFC
// 7009 revocation (and HTTP Basic client authentication, the generic
// provider's default).
func revocationSite(t *testing.T) *userSite {
	t.Helper()
	s := newUserSite(t)
	fake := tasknationtest.NewServer(tasknationtest.Options{RevocationEndpoint: true, AcceptBasicAuth: true})
	t.Cleanup(fake.Close)
	fake.AddRedirectURI(tasknationtest.DefaultClientID, s.callbackURL())
	s.fake = fake
	return s
}

// TestUserContext_StatusEventsRevocation: through a real Caddy, the status
// path follows alice's connection (not connected, connected, must
// reauthorize, disconnected), each change arrives as a Caddy event at the
// handler the global events option binds, with her subject_key and
// subject, and her disconnect revokes her refresh token at the provider.
func TestUserContext_StatusEventsRevocation(t *testing.T) {
	s := revocationSite(t)
	drainEvents()
	s.start(userOptions{global: lifecycleEvents, extra: `		provider generic
		revocation_url ` + s.fake.RevocationURL() + `
		refresh_token_warning 4400h
		events_include_subject on
`})
	alice := s.user(t, "alice")

	st := alice.status(t)
	if st["state"] != "not_connected" || st["connected"] != false || st["connect_url"] != s.connectURL() {
		t.Fatalf("status before connecting: %v", st)
	}
	if r := alice.mustDo(t, http.MethodPost, "/oauth2/status", nil); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST status: %d, want 405", r.status)
	}

	alice.connect(t, "tn-alice")
	connected := nextEvent(t, "oauth2_token.connected", true)
	key := connected["subject_key"]
	if _, ok := connected["refresh_token_expires_at"].(time.Time); !ok {
		t.Errorf("connected: refresh_token_expires_at %v", connected["refresh_token_expires_at"])
	}
	st = alice.status(t)
	if st["state"] != "connected" || st["connected"] != true || st["connected_at"] == nil || st["refresh_token_expires_at"] == nil {
		t.Fatalf("status after connecting: %v", st)
	}
	if scopes, _ := st["scopes"].([]any); len(scopes) == 0 {
		t.Errorf("status scopes %v", st["scopes"])
	}
	alice.mustCallAPIAs(t, "tn-alice")

	// The API refuses her token, and TaskNation her refresh token: the
	// refresh (inside refresh_token_warning) reports the expiry ahead,
	// then the reauthorization.
	tokenAgePasses()
	s.fake.RevokeAllAccessTokens()
	s.fake.InjectFault(tasknationtest.Fault{Kind: tasknationtest.FaultReject, Grant: tasknationtest.GrantRefreshToken, Count: 1})
	alice.mustDo(t, http.MethodGet, leadsPath, nil)
	if ev := nextEvent(t, "oauth2_token.refresh_token_expiring", true); ev["subject_key"] != key {
		t.Errorf("expiring: subject_key %v, want %v", ev["subject_key"], key)
	}
	if ev := nextEvent(t, "oauth2_token.reauthorization_required", true); ev["subject_key"] != key {
		t.Errorf("reauthorization: subject_key %v, want %v", ev["subject_key"], key)
	}
	alice.mustBeRefused(t, http.StatusUnauthorized, "reauthorization_required")
	if st = alice.status(t); st["state"] != "reauthorization_required" || st["connected"] != false {
		t.Fatalf("status after the refusal: %v", st)
	}

	// Connect again, then disconnect: revoked at the provider.
	alice.connect(t, "tn-alice")
	nextEvent(t, "oauth2_token.connected", true)
	if r := alice.mustDo(t, http.MethodPost, "/oauth2/disconnect", nil); r.status != http.StatusOK {
		t.Fatalf("disconnect: %d %s", r.status, r.body)
	}
	if ev := nextEvent(t, "oauth2_token.disconnected", true); ev["subject_key"] != key {
		t.Errorf("disconnected: subject_key %v, want %v", ev["subject_key"], key)
	}
	if n := s.fake.RevokedRefreshTokens(); n != 1 {
		t.Errorf("refresh tokens revoked at the provider: %d, want 1", n)
	}
	if st = alice.status(t); st["state"] != "not_connected" {
		t.Errorf("status after disconnecting: %v", st)
	}
	select {
	case ev := <-captured:
		t.Errorf("an extra event: %s %v", ev.name, ev.data)
	default:
	}
}

// TestUserContext_EventsWithoutSubject: without events_include_subject the
// events carry the hashed subject_key only.
func TestUserContext_EventsWithoutSubject(t *testing.T) {
	s := newUserSite(t)
	drainEvents()
	s.start(userOptions{global: lifecycleEvents})
	alice := s.user(t, "alice")
	alice.connect(t, "tn-alice")
	nextEvent(t, "oauth2_token.connected", false)
	if r := alice.mustDo(t, http.MethodPost, "/oauth2/disconnect", nil); r.status != http.StatusOK {
		t.Fatal(r.status)
	}
	nextEvent(t, "oauth2_token.disconnected", false)
}
