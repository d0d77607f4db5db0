package middleware_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/tokenstore"
)

// Client credentials of the fuzzed Gate: neither may reach an error or a
// log line unless the answer itself carried it.
const (
	fuzzClientSecret = "fuzz-client-secret-Qx7vP2"
	fuzzTokenURL     = "https://tn.invalid/oauth2/token"
)

// echoLimit is the longest run of answer bytes an error or log line may
// repeat outside the RFC 6749 error and error_description fields (which
// are quoted, truncated to 64 and 200 bytes): room for the 20-byte
// excerpts of a bad token_type or expires_in, never for a token.
const echoLimit = 24

// FuzzTokenResponse answers a Gate's client_credentials request with an
// arbitrary status, Content-Type and body, through an in-memory
// RoundTripper, and checks what Gate.Token makes of it: a usable Bearer
// token, or an *UnavailableError wrapping an *EndpointError of an answer
// (never "network" or "timeout": an answer arrived) whose text repeats
// nothing of the body beyond the RFC 6749 error fields. A well-formed
// answer must give its token. Nothing may panic.
//
// What it found is in testdata/fuzz/FuzzTokenResponse: form-encoded
// answers refused (expires_in came as an int64), an expires_in that
// overflowed the Duration or rounded to nothing giving an expired token
// (or a panic in the refresh), and parse errors quoting the body.
func FuzzTokenResponse(f *testing.F) {
	const js, form = "application/json", "application/x-www-form-urlencoded"
	long := strings.Repeat("tn_at_", 8)
	for _, s := range []struct {
		status int
		ctype  string
		body   string
	}{
		{200, js, `{"access_token":"tn_at_ok","token_type":"bearer","expires_in":3600}`},
		{200, js + "; charset=utf-8", `{"access_token":"tn_at_ok","token_type":"Bearer","expires_in":9,"scope":"supply::leads offline_access","refresh_token":"tn_rt_x"}`},
		{200, js, `{"access_token":"tn_at_ok","token_type":"BEARER","expires_in":"3600"}`},
		{200, form, "access_token=tn_at_ok&token_type=bearer&expires_in=1.5"},
		{200, js, `{"access_token":"tn_at_ok","token_type":"bearer","expires_in":40000000}`},
		{200, js, `{"access_token":"tn_at_ok","token_type":"bearer","expires_in":0}`},
		{200, js, `{"access_token":"tn_at_ok","token_type":"bearer","expires_in":-5}`},
		{200, js, `{"access_token":"` + long + `","token_type":"mac","expires_in":3600}`},
		{200, js, `{"access_token":"` + long + `","expires_in":3600}`},
		{200, js, `{"access_token":"` + long + `","token_type":"bearer"}`},
		{200, js, `{"token_type":"bearer","expires_in":3600}`},
		{200, js, `{"access_token":"` + long + `","token_type":"bea`},
		{200, js, `{"access_token":` + strconv.Quote(long) + `,"token_type":{"x":1},"expires_in":3600}`},
		{200, js, ""},
		{200, js, " \r\n\t"},
		{200, js, "null"},
		{200, js, "[]"},
		{200, js, "access_token=" + long},
		{200, "text/html", "<html><body>Maintenance " + long + "</body></html>"},
		{200, "", "<!DOCTYPE html><p>" + long},
		{200, js, `{"error":"invalid_scope"}`},
		{400, js, `{"error":"invalid_request","error_description":"grant_type is missing"}`},
		{401, js, `{"error":"invalid_client","error_description":"client authentication failed"}`},
		{400, js, `{"error":"` + strings.Repeat("e", 100) + `","error_description":"` + strings.Repeat("d", 300) + `"}`},
		{400, form, "error=invalid_grant&error_description=refresh+token+revoked"},
		{400, form, "error=%zz"},
		{200, form, "a=b;c=d"},
		{500, "text/html", "<html>" + long + "</html>"},
		{503, js, `{"error":"temporarily_unavailable"}`},
		{302, "", ""},
		{204, "", ""},
	} {
		f.Add(s.status, s.ctype, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, status int, ctype string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		checkTokenResponse(t, status, ctype, body)
	})
}

func checkTokenResponse(t *testing.T, status int, ctype string, body []byte) {
	core, logs := observer.New(zapcore.DebugLevel)
	g, err := middleware.New(middleware.Config{
		Provider:     middleware.Generic,
		TokenURL:     fuzzTokenURL,
		ClientID:     "fuzz-client",
		ClientSecret: fuzzClientSecret,
		HTTPClient:   &http.Client{Transport: fuzzAnswer{status, ctype, body}},
		Store:        fuzzStore{},
		Logger:       zap.New(core),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()

	before := time.Now()
	tok, err := g.Token(context.Background())
	after := time.Now()
	want, wellFormed := fuzzWellFormed(status, ctype, body)

	var texts []string // what the Gate said: its error and its logs
	if err != nil {
		texts = append(texts, err.Error())
	}
	for _, e := range logs.All() {
		texts = append(texts, e.Message+" "+fmt.Sprint(e.ContextMap()))
	}

	if err == nil {
		if tok.AccessToken == "" || tok.TokenType != "Bearer" || tok.Version == 0 {
			t.Fatalf("unusable token: %v (access token %d bytes, version %d)", tok, len(tok.AccessToken), tok.Version)
		}
		if !tok.Valid(after) {
			t.Fatalf("token already expired when returned: expiry %v, now %v", tok.Expiry, after)
		}
		if tok.Expiry.After(after.Add(365 * 24 * time.Hour)) {
			t.Fatalf("token valid for more than a year: expiry %v", tok.Expiry)
		}
		if wellFormed {
			if tok.AccessToken != want.access {
				t.Fatalf("access token %q, the answer said %q", tok.AccessToken, want.access)
			}
			d := time.Duration(want.expiresIn) * time.Second
			if tok.Expiry.Before(before.Add(d)) || tok.Expiry.After(after.Add(d)) {
				t.Fatalf("expiry %v, want %v after the request", tok.Expiry.Sub(before), d)
			}
		}
		// Only the access token is checked in the logs: it is the
		// credential, and a success is logged with the granted scopes.
		if len(tok.AccessToken) > 20 {
			for _, s := range texts {
				if strings.Contains(s, tok.AccessToken) {
					t.Fatalf("the access token is in a log line: %s", s)
				}
			}
		}
		return
	}

	if wellFormed {
		t.Fatalf("a well-formed answer was refused: %v", err)
	}
	var ue *middleware.UnavailableError
	var ee *middleware.EndpointError
	if !errors.As(err, &ue) || !errors.As(err, &ee) {
		t.Fatalf("err = %T %v, want an *UnavailableError wrapping an *EndpointError", err, err)
	}
	switch ee.Kind {
	case middleware.KindStatus, middleware.KindRejected, middleware.KindInvalidResponse, middleware.KindRedirect:
	default:
		t.Fatalf("Kind %q for an answer that arrived: %v", ee.Kind, err)
	}
	if ee.Kind != middleware.KindInvalidResponse && ee.Status != status {
		t.Fatalf("Status %d, the answer was %d: %v", ee.Status, status, err)
	}
	if len(ee.Code) > 64+len("…") || len(ee.Description) > 100+len("…") {
		t.Fatalf("RFC 6749 fields not truncated: code %d bytes, description %d bytes", len(ee.Code), len(ee.Description))
	}

	// The error and log texts with the quoted RFC 6749 fields taken out
	// must repeat nothing of the body.
	var quoted []string
	if ee.Kind == middleware.KindRejected {
		quoted = append(quoted, " with error "+strconv.Quote(ee.Code))
		if ee.Description != "" {
			quoted = append(quoted, " ("+ee.Description+")")
		}
	}
	access := fuzzField(ctype, body, "access_token")
	for _, s := range texts {
		for _, q := range quoted {
			s = strings.ReplaceAll(s, q, "")
		}
		if e := fuzzEcho(s, body); e != "" {
			t.Fatalf("the answer's bytes %q are repeated in: %s", e, s)
		}
		if len(access) > 20 && strings.Contains(s, access) && !fuzzFixed(access) {
			t.Fatalf("the answer's access_token is repeated in: %s", s)
		}
		for _, secret := range []string{fuzzClientSecret, fuzzTokenURL} {
			if strings.Contains(s, secret) && !bytes.Contains(body, []byte(secret)) {
				t.Fatalf("%q is in: %s", secret, s)
			}
		}
	}
}

// fuzzAnswer is a token endpoint in memory: every request gets the same
// answer.
type fuzzAnswer struct {
	status int
	ctype  string
	body   []byte
}

func (a fuzzAnswer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Body != nil {
		req.Body.Close()
	}
	h := http.Header{}
	if a.ctype != "" {
		h.Set("Content-Type", a.ctype)
	}
	return &http.Response{
		Status:        strconv.Itoa(a.status) + " " + http.StatusText(a.status),
		StatusCode:    a.status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        h,
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)),
		Request:       req,
	}, nil
}

// fuzzStore holds nothing: each fuzzed Gate asks the endpoint, and
// nothing is allocated for a cache that is thrown away.
type fuzzStore struct{}

func (fuzzStore) Get(context.Context, string) (*tokenstore.Token, error) {
	return nil, tokenstore.ErrNotFound
}
func (fuzzStore) Set(context.Context, string, *tokenstore.Token) error { return nil }
func (fuzzStore) Delete(context.Context, string) error                 { return nil }

// fuzzToken is the token a well-formed answer carries.
type fuzzToken struct {
	access    string
	expiresIn int64
}

// fuzzWellFormed reports whether the answer is a token as RFC 6749
// section 5.1 writes it, in JSON or form encoding, with nothing a
// decoder could read two ways: HTTP 200, only the fields access_token
// (non-empty), token_type (bearer in any case), expires_in (a whole
// number of seconds, 1 to a year), refresh_token and scope, each once in
// a form, and no error.
func fuzzWellFormed(status int, ctype string, body []byte) (fuzzToken, bool) {
	if status != http.StatusOK || len(body) > 1<<20 {
		return fuzzToken{}, false
	}
	mt, _, _ := mime.ParseMediaType(ctype)
	fields := map[string]string{}
	switch mt {
	case "application/x-www-form-urlencoded", "text/plain":
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return fuzzToken{}, false
		}
		for k, v := range vals {
			if len(v) != 1 {
				return fuzzToken{}, false
			}
			fields[k] = v[0]
		}
		if n := fields["expires_in"]; n == "" || n[0] < '1' || n[0] > '9' || strings.Trim(n, "0123456789") != "" {
			return fuzzToken{}, false
		}
	case "text/html":
		return fuzzToken{}, false
	default: // what x/oauth2 decodes as JSON
		var raw map[string]json.RawMessage
		if json.Unmarshal(body, &raw) != nil {
			return fuzzToken{}, false
		}
		for k, v := range raw {
			if k == "expires_in" {
				n := string(v)
				if n == "" || n[0] < '1' || n[0] > '9' || strings.Trim(n, "0123456789") != "" {
					return fuzzToken{}, false
				}
				fields[k] = n
				continue
			}
			var s string
			if json.Unmarshal(v, &s) != nil {
				return fuzzToken{}, false
			}
			fields[k] = s
		}
	}
	for k := range fields {
		switch k {
		case "access_token", "token_type", "expires_in", "refresh_token", "scope":
		default:
			return fuzzToken{}, false
		}
	}
	secs, err := strconv.ParseInt(fields["expires_in"], 10, 64)
	if err != nil || secs < 1 || secs > 365*24*3600 ||
		fields["access_token"] == "" || !strings.EqualFold(fields["token_type"], "bearer") {
		return fuzzToken{}, false
	}
	return fuzzToken{access: fields["access_token"], expiresIn: secs}, true
}

// fuzzField is the string field name of a JSON or form answer, or "".
func fuzzField(ctype string, body []byte, name string) string {
	mt, _, _ := mime.ParseMediaType(ctype)
	if mt == "application/x-www-form-urlencoded" || mt == "text/plain" {
		vals, _ := url.ParseQuery(string(body))
		return vals.Get(name)
	}
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	s, _ := m[name].(string)
	return s
}

// fuzzEcho returns the first run of more than echoLimit bytes of s that body
// holds too, unless it is the Gate's own wording.
func fuzzEcho(s string, body []byte) string {
	for i := 0; i+echoLimit < len(s); i++ {
		w := s[i : i+echoLimit+1]
		if bytes.Contains(body, []byte(w)) && !fuzzFixed(w) {
			return w
		}
	}
	return ""
}

// fuzzPhrases are the fixed parts of the Gate's errors and log lines, which
// an answer may happen to contain.
var fuzzPhrases = []string{
	"middleware: no valid token: middleware: client_credentials token request failed: token endpoint answered HTTP ",
	" with error ", "invalid_response: ", "token request failed",
	"response body exceeds 1 MiB", "empty response body", "response is an HTML page, not a token",
	"no access_token in the answer", "no token_type in the answer", "is not Bearer",
	"is not positive", "is more than a year", "is less than a second", "no expires_in in the answer", "is not a number",
	"cannot parse json: json: cannot unmarshal ", " into Go struct field tokenJSON.", " of type ", "cannot parse response: ",
	"server response missing access_token",
}

func fuzzFixed(w string) bool {
	for _, p := range fuzzPhrases {
		if strings.Contains(p, w) {
			return true
		}
	}
	return false
}
