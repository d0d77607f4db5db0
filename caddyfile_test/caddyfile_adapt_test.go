// Package caddyfile_test holds the Caddyfile adapt fixtures of the
// oauth2_token directive and the tests that run a real Caddy with the
// module. The adapt runner follows Caddy's own
// (caddytest/integration/caddyfile_adapt_test.go) and mholt/caddy-l4's.
package caddyfile_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"iter"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/tasknation/tokengate/caddymodule"
)

// fixtureDir holds one file per case: a Caddyfile, a line of exactly ten
// dashes, then either the expected JSON (as `caddy adapt --pretty` prints
// it, keys sorted) or, when it does not start with "{", a substring of the
// error adapting must produce.
const fixtureDir = "caddyfile_adapt"

// minFixtures guards against a runner that silently finds nothing (a moved
// directory, a renamed extension).
const minFixtures = 12

var (
	separator   = regexp.MustCompile(`(?m)^----------\r?$`)
	winNewlines = regexp.MustCompile(`\r?\n`)
)

// fixtureSecrets are secrets some error fixtures write in clear: no
// error may quote them (Caddy prints adapt errors and returns them from
// its admin API).
var fixtureSecrets = []string{"s3cr3t", "part2-of-secret"}

type fixture struct {
	name      string
	caddyfile string
	expected  string // JSON, or an error substring
}

func (f fixture) wantsError() bool { return !strings.HasPrefix(f.expected, "{") }

// loadFixtures reads every *.caddyfiletest file of fixtureDir.
func loadFixtures(t *testing.T) []fixture {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(fixtureDir, "*.caddyfiletest"))
	if err != nil {
		t.Fatal(err)
	}
	var out []fixture
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		text := winNewlines.ReplaceAllString(string(data), "\n")
		parts := separator.Split(text, -1)
		if len(parts) != 2 {
			t.Fatalf("%s: want one line of ten dashes between the Caddyfile and the expected result, found %d", p, len(parts)-1)
		}
		f := fixture{
			name:      filepath.Base(p),
			caddyfile: strings.TrimSpace(parts[0]) + "\n",
			expected:  strings.TrimSpace(parts[1]),
		}
		if f.expected == "" {
			t.Fatalf("%s: the expected part is empty", p)
		}
		out = append(out, f)
	}
	if len(out) < minFixtures {
		t.Fatalf("found %d fixtures in %s, want at least %d", len(out), fixtureDir, minFixtures)
	}
	return out
}

// adapt runs the Caddyfile adapter as `caddy adapt` does.
func adapt(caddyfile string) ([]byte, []caddyconfig.Warning, error) {
	return caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
}

// normalizeJSON re-encodes a JSON document with sorted keys and tab
// indentation, so that comparisons ignore key order and spacing.
func normalizeJSON(data []byte) (string, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber() // keep durations in nanoseconds exact
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	out, err := json.MarshalIndent(v, "", "\t")
	if err != nil {
		return "", err
	}
	return string(out), nil
}

func TestCaddyfileAdaptToJSON(t *testing.T) {
	for _, f := range loadFixtures(t) {
		t.Run(f.name, func(t *testing.T) {
			if formatted := string(caddyfile.Format([]byte(f.caddyfile))); formatted != f.caddyfile {
				t.Errorf("the Caddyfile is not formatted as `caddy fmt` would (- fixture, + formatted):\n%s", lineDiff(f.caddyfile, formatted))
			}
			got, warnings, err := adapt(f.caddyfile)
			for _, w := range warnings {
				t.Logf("warning: %s:%d: %s: %s", w.File, w.Line, w.Directive, w.Message)
			}
			if f.wantsError() {
				if !strings.HasPrefix(f.name, "oauth2_token_error_") {
					t.Errorf("an error fixture must be named oauth2_token_error_<case>.caddyfiletest")
				}
				if err == nil {
					t.Fatalf("adapting succeeded, want an error containing %q; got:\n%s", f.expected, got)
				}
				msg := winNewlines.ReplaceAllString(err.Error(), "\n")
				if !strings.Contains(msg, f.expected) {
					t.Fatalf("error does not contain the expected text\nwant substring: %s\ngot:            %s", f.expected, msg)
				}
				for _, secret := range fixtureSecrets {
					if strings.Contains(msg, secret) {
						t.Errorf("the error shows %q, a secret the fixture writes in clear: %s", secret, msg)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("adapting: %v", err)
			}
			want, err := normalizeJSON([]byte(f.expected))
			if err != nil {
				t.Fatalf("the expected JSON does not parse: %v", err)
			}
			have, err := normalizeJSON(got)
			if err != nil {
				t.Fatalf("the adapted JSON does not parse: %v\n%s", err, got)
			}
			if have != want {
				t.Errorf("adapted JSON differs from the fixture (- expected, + adapted):\n%s", lineDiff(want, have))
			}
		})
	}
}

// TestCaddyfileAdapt_ErrorLines: an error found once the block is read
// (a rule between settings, or a value the rules refuse) is reported at
// the line of the subdirective at fault, not at the block's closing
// brace; a missing setting at the line of the subdirective that needs
// it, or of the directive.
func TestCaddyfileAdapt_ErrorLines(t *testing.T) {
	creds := []string{"client_id {env.TN_CLIENT_ID}", "client_secret {env.TN_CLIENT_SECRET}"} // lines 3 and 4
	user := []string{"grant authorization_code", "user {http.auth.user.id}"}                  // then 5 and 6
	with := func(lists ...[]string) []string { return slices.Concat(lists...) }
	id := []string{"client_id {env.TN_CLIENT_ID}"}                                                                   // line 3
	generic := []string{"client_id {env.TN_CLIENT_ID}", "provider generic", "token_url https://login.example.com/t"} // lines 3 to 5
	tests := []struct {
		name  string
		block []string // the lines of the oauth2_token block, from line 3
		line  int
		want  string
	}{
		{"unknown scope", with(creds, []string{"scopes demand::serach"}), 5, `scopes "demand::serach": unknown tasknation scope`},
		{"scope placeholder", with(creds, []string{"request_timeout 5s", "scopes {env.TN_SCOPES}"}), 6, `scopes "{env.TN_SCOPES}": placeholders are not resolved in scopes`},
		{"http token_url", with(creds, []string{"scopes demand::search", "token_url http://auth.example.com/t"}), 6, `token_url "http://auth.example.com/t"`},
		{"generic without token_url", with(creds, []string{"scopes a", "provider generic"}), 6, "token_url is required"},
		{"unknown provider", with(creds, []string{"provider okta"}), 5, `provider: unknown provider "okta"`},
		{"no client_id", []string{"client_secret {env.TN_CLIENT_SECRET}"}, 2, "client_id is required"},
		{"backoff upside down", with(creds, []string{"backoff 1m 1s"}), 5, "backoff needs 0 < min_backoff (1m0s) <= max_backoff (1s)"},
		{"refresh_window", with(creds, []string{"request_timeout 3s", "refresh_window 1.5"}), 6, "refresh_window must be between 0 and 1"},
		{"unknown store", with(creds, []string{"store reddis"}), 5, `store: unknown store "reddis"`},
		{"redis address", with(creds, []string{"store redis cache.internal"}), 5, `store: redis address: "cache.internal" is not host:port`},
		{"redis address and cluster", with(creds, []string{"store redis 127.0.0.1:6379", "redis_tls on", "redis_cluster 127.0.0.1:7000"}), 7,
			"redis_cluster: store redis has an address already"},
		{"redis sentinel before the address", with(creds, []string{"redis_sentinel m 127.0.0.1:26379", "store redis 127.0.0.1:6379"}), 5,
			"redis_sentinel: store redis has an address already"},
		{"redis sentinel and cluster", with(creds, []string{"store redis", "redis_cluster 127.0.0.1:7000", "redis_sentinel m 127.0.0.1:26379"}), 6,
			"redis_cluster: redis_sentinel is given already"},
		{"redis cluster address", with(creds, []string{"redis_cluster 127.0.0.1:7000 node2", "store redis"}), 5, `redis_cluster: "node2" is not host:port`},
		{"redis without a server", with(creds, []string{"scopes demand::search", "store redis"}), 6, "store: redis needs an address"},
		{"redis namespace", with(creds, []string{"store redis 127.0.0.1:6379", `redis_namespace "a b"`}), 6, `redis_namespace: "a b" has a space`},
		{"redis option with another store", with(creds, []string{"store caddy", "redis_tls on"}), 6, "redis_tls: only applies to store redis (the store is caddy)"},
		{"sentinel password without sentinel", with(creds, []string{"store redis 127.0.0.1:6379", "redis_sentinel_password {env.P}"}), 6,
			"redis_sentinel_password: only applies with redis_sentinel"},
		{"key with memory store", with(creds, []string{"store memory", "encryption_key {env.K}"}), 6, "encryption_key: only applies to a durable store"},
		{"key repeated", with(creds, []string{"store file /var/lib/tg", "encryption_key {env.K} {env.K}"}), 6, "encryption_key: key 2 of 2 (an older key) repeats key 1 of 2"},
		{"key invalid", with(creds, []string{"encryption_key c2hvcnQta2V5", "store file /var/lib/tg"}), 5, "encryption_key: encryption key decodes to 9 bytes"},
		{"user option with client_credentials", with(creds, []string{"scopes demand::search", "pkce off"}), 6,
			"pkce: only applies to grant authorization_code (the grant is client_credentials)"},
		{"user literal", with(creds, []string{"grant authorization_code", "redirect_uri https://gw.example.com/cb", "user alice"}), 7, `user "alice" has no placeholder`},
		{"no user", with(creds, []string{"redirect_uri https://gw.example.com/cb", "grant authorization_code"}), 6, "user is required for grant authorization_code"},
		{"no redirect_uri", with(creds, user), 5, "redirect_uri is required for the authorization_code grant"},
		{"relative redirect_uri", with(creds, user, []string{"redirect_uri /cb"}), 7, `redirect_uri "/cb": not an absolute http(s) URL`},
		{"redirect_uri without a path", with(creds, user, []string{"redirect_uri https://gw.example.com"}), 7, `redirect_uri "https://gw.example.com": has no path`},
		{"callback_path not in redirect_uri", with(creds, user, []string{"redirect_uri https://gw.example.com/gw/cb", "callback_path /oauth2/callback"}), 8,
			`callback_path "/oauth2/callback": redirect_uri's path "/gw/cb" must be the callback path`},
		{"callback path from redirect_uri taken", with(creds, user, []string{"connect_path /cb", "redirect_uri https://gw.example.com/cb"}), 8,
			`callback_path "/cb": the same path as connect_path`},
		{"status_path relative", with(creds, user, []string{"redirect_uri https://gw.example.com/cb", "status_path status"}), 8, `status_path "status": must start with /`},
		{"http auth_url", with(creds, user, []string{"redirect_uri https://gw.example.com/cb", "auth_url http://login.example.com/a"}), 8,
			`auth_url "http://login.example.com/a": http:// is only allowed on loopback hosts`},
		{"revocation_url with tasknation", with(creds, user, []string{"redirect_uri https://gw.example.com/cb", "revocation_url https://login.example.com/r"}), 8,
			"revocation_url does not apply to provider tasknation"},
		{"connected_redirect", with(creds, user, []string{"redirect_uri https://gw.example.com/cb", "connected_redirect //evil.example"}), 8,
			`connected_redirect "//evil.example": want an absolute URL or a path starting with /`},
		{"max_callback_query too small", with(creds, user, []string{"redirect_uri https://gw.example.com/cb", "max_callback_query 512"}), 8,
			"max_callback_query 512 is too small for a callback"},
		{"client_auth misspelt", with(creds, []string{"provider generic", "token_url https://login.example.com/t", "client_auth psot"}), 7,
			`client_auth: unknown method "psot" (want basic or post`},
		{"client_auth basic with tasknation", with(creds, []string{"scopes demand::search", "client_auth basic"}), 6,
			"client_auth does not apply to provider tasknation"},
		{"private_key_jwt with tasknation", with(id, []string{"scopes demand::search", "private_key_jwt /k.pem"}), 5,
			"private_key_jwt does not apply to provider tasknation"},
		{"private_key_jwt with a secret", with(generic, []string{"private_key_jwt /k.pem", "client_secret {env.S}"}), 7,
			"client_secret must be empty with private_key_jwt"},
		{"private_key_jwt and tls_client_auth", with(generic, []string{"tls_client_auth /c.pem /k.pem", "private_key_jwt /k.pem"}), 7,
			"private_key_jwt and tls_client_auth are two client authentication methods"},
		{"private_key_jwt with client_auth basic", with(generic, []string{"private_key_jwt /k.pem", "client_auth basic"}), 7,
			"client_auth basic does not apply with private_key_jwt"},
		{"private_key_jwt algorithm", with(generic, []string{"private_key_jwt /k.pem HS256"}), 6, `private_key_jwt: unknown algorithm "HS256"`},
		{"private_key_jwt lifetime", with(generic, []string{"private_key_jwt /k.pem {", "\tlifetime 2h", "}"}), 7,
			"private_key_jwt lifetime must be between 1s and 1h"},
		{"private_key_jwt option", with(generic, []string{"private_key_jwt /k.pem {", "\tkid k1", "}"}), 7, `private_key_jwt: unrecognized option "kid"`},
		{"tls_client_auth with client_auth basic", with(generic, []string{"client_auth basic", "tls_client_auth /c.pem /k.pem"}), 6,
			"client_auth basic does not apply with tls_client_auth"},
		{"tls_client_auth with tasknation", with(id, []string{"tls_client_auth /c.pem /k.pem"}), 4,
			"tls_client_auth does not apply to provider tasknation"},
		{"token_params reserved", with(creds, []string{"provider generic", "token_url https://login.example.com/t", "token_params resource r1",
			"token_params scope admin", "token_params resource r2"}), 8, `token_params "scope": is a parameter of the protocol itself`},
		{"token_params with tasknation", with(creds, []string{"scopes demand::search", "token_params audience a"}), 6,
			"token_params does not apply to provider tasknation"},
		{"issuer with tasknation", with(creds, []string{"issuer https://auth.tasknation.com"}), 5, "issuer does not apply to provider tasknation"},
		{"issuer http", with(creds, []string{"provider generic", "issuer http://login.example.com"}), 6,
			`issuer "http://login.example.com": http:// is only allowed on loopback hosts`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caddyfile := ":8080 {\n\toauth2_token {\n\t\t" + strings.Join(tt.block, "\n\t\t") + "\n\t}\n}\n"
			_, _, err := adapt(caddyfile)
			if err == nil {
				t.Fatalf("adapting succeeded, want an error at line %d", tt.line)
			}
			msg := err.Error()
			if !strings.Contains(msg, tt.want) {
				t.Errorf("error does not contain %q: %s", tt.want, msg)
			}
			if at := fmt.Sprintf(", at Caddyfile:%d", tt.line); !strings.HasSuffix(msg, at) {
				t.Errorf("error not at line %d (want it to end with %q):\n%s\nin\n%s", tt.line, at, msg, caddyfile)
			}
		})
	}
}

// TestCaddyfileAdapt_SecretsStayOutOfJSON adapts every fixture with the
// secrets set in the environment only: placeholders must come through as
// written ({env.X} is resolved at provision), never as their values.
func TestCaddyfileAdapt_SecretsStayOutOfJSON(t *testing.T) {
	secrets := map[string]string{
		"TN_CLIENT_ID":            "env-only-client-id-7c1f",
		"TN_CLIENT_SECRET":        "env-only-secret-3a9e51d2",
		"TN_TOKEN_URL":            "https://env-only-token-url.example/token",
		"TN_SUPPLY_CLIENT_SECRET": "env-only-supply-secret-b04d",
		"TN_DEMAND_CLIENT_SECRET": "env-only-demand-secret-e5c8",
		"TOKENGATE_KEY":           "ZW52LW9ubHktZW5jcnlwdGlvbi1rZXktMzItYnl0ZXM=",
		"TOKENGATE_OLD_KEY":       "ZW52LW9ubHktb2xkZXIta2V5LWtleS0zMi1ieXRlcyE=",
		"REDIS_PASSWORD":          "env-only-redis-password-61fa",
		"REDIS_ADDR":              "env-only-redis.example:6380",
		"TG_KEY_FILE":             "/env-only/client-key-9d2c.pem",
		"TG_CA_FILE":              "/env-only/auth-ca-41be.pem",
		"TG_EXTRA_RESOURCE":       "https://env-only-resource.example/",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	literal, key, olderKey, redisPassword, keyFile := 0, 0, 0, 0, 0
	for name, got := range adaptedFixtures(t) {
		// Key files are paths in the JSON, read at load: never what
		// they hold.
		for _, material := range []string{"-----BEGIN", "PRIVATE KEY", "CERTIFICATE"} {
			if bytes.Contains(got, []byte(material)) {
				t.Errorf("%s: the adapted JSON holds %q", name, material)
			}
		}
		if bytes.Contains(got, []byte(`"key_file":"{env.TG_KEY_FILE}"`)) {
			keyFile++
		}
		for k, v := range secrets {
			if bytes.Contains(got, []byte(v)) {
				t.Errorf("%s: the adapted JSON contains the value of $%s", name, k)
			}
		}
		if bytes.Contains(got, []byte(`"client_secret":"{env.TN_CLIENT_SECRET}"`)) {
			literal++
		}
		if bytes.Contains(got, []byte(`"encryption_keys":["{env.TOKENGATE_KEY}"`)) {
			key++
		}
		if bytes.Contains(got, []byte(`"encryption_keys":["{env.TOKENGATE_KEY}","{env.TOKENGATE_OLD_KEY}"`)) {
			olderKey++
		}
		if bytes.Contains(got, []byte(`"password":"{env.REDIS_PASSWORD}"`)) {
			redisPassword++
		}
	}
	// The check above is empty unless fixtures do use the placeholder.
	if literal == 0 {
		t.Errorf(`no adapted fixture has "client_secret":"{env.TN_CLIENT_SECRET}" literally`)
	}
	if key == 0 {
		t.Errorf(`no adapted fixture has "encryption_keys":["{env.TOKENGATE_KEY}",...] literally`)
	}
	if olderKey == 0 {
		t.Errorf(`no adapted fixture has "encryption_keys":["{env.TOKENGATE_KEY}","{env.TOKENGATE_OLD_KEY}",...] literally`)
	}
	if keyFile == 0 {
		t.Errorf(`no adapted fixture has "key_file":"{env.TG_KEY_FILE}" literally`)
	}
	if redisPassword == 0 {
		t.Errorf(`no adapted fixture has "password":"{env.REDIS_PASSWORD}" literally`)
	}
}

// adaptedFixtures yields the name and adapted JSON of every fixture that
// is expected to adapt; a failure to adapt is reported and skipped.
func adaptedFixtures(t *testing.T) iter.Seq2[string, []byte] {
	return func(yield func(string, []byte) bool) {
		for _, f := range loadFixtures(t) {
			if f.wantsError() {
				continue
			}
			got, _, err := adapt(f.caddyfile)
			if err != nil {
				t.Errorf("%s: adapting: %v", f.name, err)
				continue
			}
			if !yield(f.name, got) {
				return
			}
		}
	}
}

// TestCaddyfileAdapt_HandlerJSONDecodes decodes every adapted
// oauth2_token handler strictly into the module's type, as Caddy does when
// it loads the config: a field the Caddyfile sets and the JSON does not
// know would fail here before it fails a deployment.
func TestCaddyfileAdapt_HandlerJSONDecodes(t *testing.T) {
	handlers := 0
	for name, got := range adaptedFixtures(t) {
		var doc any
		if err := json.Unmarshal(got, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, raw := range findHandlers(doc, "oauth2_token") {
			handlers++
			delete(raw, "handler")
			b, _ := json.Marshal(raw)
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			var h caddymodule.Handler
			if err := dec.Decode(&h); err != nil {
				t.Errorf("%s: the adapted handler does not decode into caddymodule.Handler: %v", name, err)
			}
			keyed := h.ClientAuth != nil && (h.ClientAuth.PrivateKeyJWT != nil || h.ClientAuth.TLSClientAuth != nil)
			if h.ClientID == "" || (h.ClientSecret == "") == !keyed {
				t.Errorf("%s: the adapted handler lost client_id, client_secret or the key file: %s", name, b)
			}
		}
	}
	if handlers < minFixtures-2 {
		t.Errorf("found %d oauth2_token handlers in the adapted fixtures, want at least %d", handlers, minFixtures-2)
	}
}

// findHandlers returns every object in doc whose "handler" is name.
func findHandlers(doc any, name string) []map[string]any {
	var out []map[string]any
	switch v := doc.(type) {
	case map[string]any:
		if v["handler"] == name {
			out = append(out, v)
		}
		for _, c := range v {
			out = append(out, findHandlers(c, name)...)
		}
	case []any:
		for _, c := range v {
			out = append(out, findHandlers(c, name)...)
		}
	}
	return out
}

// lineDiff is a minimal line diff (longest common subsequence) of a and b,
// with "-" for lines only in a and "+" for lines only in b.
func lineDiff(a, b string) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var sb strings.Builder
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			sb.WriteString("  " + x[i] + "\n")
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			sb.WriteString("- " + x[i] + "\n")
			i++
		default:
			sb.WriteString("+ " + y[j] + "\n")
			j++
		}
	}
	return sb.String()
}
