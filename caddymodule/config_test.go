package caddymodule

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The JSON config, decoded strictly as Caddy loads it, is checked by
// Validate with the same rules as a Caddyfile: what the nested objects
// cannot express is refused, and the flat names of before are unknown.
func TestValidate_JSON(t *testing.T) {
	const creds = `"client_id": "{env.ID}", "client_secret": "{env.SECRET}"`
	tests := []struct {
		name, json string
		want       string // "" for valid
		check      func(t *testing.T, h *Handler)
	}{
		{"minimal", `{` + creds + `}`, "", nil},
		{"durations as strings", `{` + creds + `, "request_timeout": "1m30s", "min_backoff": "250ms", "max_backoff": "1d"}`, "",
			func(t *testing.T, h *Handler) {
				if h.RequestTimeout != caddy.Duration(90*time.Second) || h.MaxBackoff != caddy.Duration(24*time.Hour) {
					t.Errorf("request_timeout %v, max_backoff %v", h.RequestTimeout, h.MaxBackoff)
				}
			}},
		{"durations in nanoseconds", `{` + creds + `, "request_timeout": 5000000000}`, "", nil},
		{"kind from dir", `{` + creds + `, "store": {"dir": "/var/lib/tg", "encryption_keys": ["{env.K}"]}}`, "", nil},
		{"kind from redis", `{` + creds + `, "store": {"redis": {"addr": "127.0.0.1:6379"}}}`, "", nil},
		{"user context", `{` + creds + `, "authorization_code": {"user": "{http.auth.user.id}", "redirect_uri": "https://gw.example.com/cb", "state_lifetime": "5m"}}`, "", nil},
		{"authorization_code without user", `{` + creds + `, "authorization_code": {"redirect_uri": "https://gw.example.com/cb"}}`,
			"oauth2_token: user is required for grant authorization_code", nil},
		{"authorization_code without redirect_uri", `{` + creds + `, "authorization_code": {"user": "{http.auth.user.id}"}}`,
			"oauth2_token: redirect_uri is required for the authorization_code grant", nil},
		{"dir with kind caddy", `{` + creds + `, "store": {"kind": "caddy", "dir": "/x"}}`,
			"oauth2_token: store: a directory only applies to store file (the store is caddy)", nil},
		{"kind file without dir", `{` + creds + `, "store": {"kind": "file"}}`, "oauth2_token: store: file needs a directory", nil},
		{"kind redis without redis", `{` + creds + `, "store": {"kind": "redis"}}`, "oauth2_token: store: redis needs an address", nil},
		{"keys with the default store", `{` + creds + `, "store": {"encryption_keys": ["{env.K}"]}}`,
			"oauth2_token: encryption_key: only applies to a durable store (file, caddy or redis); the store is memory", nil},
		{"keys with the default user store", `{` + creds + `, "store": {"encryption_keys": ["{env.K}"]}, "authorization_code": {"user": "{http.auth.user.id}", "redirect_uri": "https://gw.example.com/cb"}}`,
			"", nil},
		{"sentinel without addrs", `{` + creds + `, "store": {"redis": {"sentinel": {"master": "m"}}}}`,
			"oauth2_token: redis_sentinel: want the master name and the sentinels", nil},
		{"misspelt kind", `{` + creds + `, "store": {"kind": "fiel", "dir": "/x"}}`, `store: unknown store "fiel"`, nil},
		{"misspelt provider", `{` + creds + `, "provider": "tasknatoin"}`,
			`oauth2_token: provider: unknown provider "tasknatoin" (want tasknation or generic); did you mean "tasknation"?`, nil},
		{"backoff upside down", `{` + creds + `, "min_backoff": "1m", "max_backoff": "1s"}`,
			"oauth2_token: backoff needs 0 < min_backoff (1m0s) <= max_backoff (1s)", nil},
		{"client_auth post", `{` + creds + `, "client_auth": {"method": "post"}}`, "", nil},
		{"client_auth method misspelt", `{` + creds + `, "provider": "generic", "token_url": "https://a.example/t", "client_auth": {"method": "Basic"}}`,
			`oauth2_token: client_auth: unknown method "Basic" (want basic or post;`, nil},
		{"client_auth method private_key_jwt", `{` + creds + `, "client_auth": {"method": "private_key_jwt"}}`,
			"private_key_jwt and tls_client_auth are subdirectives of their own, objects of client_auth in JSON", nil},
		{"private_key_jwt object", `{"client_id": "id", "provider": "generic", "issuer": "https://a.example", "client_auth": {"private_key_jwt": {"key_file": "/k.pem", "algorithm": "PS256", "key_id": "k1", "audience": "https://a.example", "lifetime": "30s"}}}`,
			"", nil},
		{"private_key_jwt without key_file", `{"client_id": "id", "provider": "generic", "token_url": "https://a.example/t", "client_auth": {"private_key_jwt": {}}}`,
			"oauth2_token: private_key_jwt: needs a key file", nil},
		{"private_key_jwt with a secret", `{` + creds + `, "provider": "generic", "token_url": "https://a.example/t", "client_auth": {"private_key_jwt": {"key_file": "/k.pem"}}}`,
			"oauth2_token: client_secret must be empty with private_key_jwt (no secret is sent)", nil},
		{"tls_client_auth without key_file", `{"client_id": "id", "provider": "generic", "token_url": "https://a.example/t", "client_auth": {"tls_client_auth": {"cert_file": "/c.pem"}}}`,
			"oauth2_token: tls_client_auth: needs the certificate and its key", nil},
		{"both key methods", `{"client_id": "id", "provider": "generic", "token_url": "https://a.example/t", "client_auth": {"private_key_jwt": {"key_file": "/k.pem"}, "tls_client_auth": {"cert_file": "/c.pem", "key_file": "/k.pem"}}}`,
			"oauth2_token: private_key_jwt and tls_client_auth are two client authentication methods: choose one", nil},
		{"token_params", `{` + creds + `, "provider": "generic", "token_url": "https://a.example/t", "token_params": {"resource": ["https://a.example/", "{env.R}"]}}`, "", nil},
		{"token_params without a value", `{` + creds + `, "provider": "generic", "token_url": "https://a.example/t", "token_params": {"audience": []}}`,
			`oauth2_token: token_params "audience": has no value`, nil},
		{"trusted_ca with tasknation", `{` + creds + `, "trusted_ca": "{env.CA_FILE}"}`, "", nil},
		{"flat grant of before", `{` + creds + `, "grant": "authorization_code"}`, `unknown field "grant"`, nil},
		{"flat store_dir of before", `{` + creds + `, "store": "file", "store_dir": "/x"}`, `cannot unmarshal string`, nil},
		{"flat redis_addr of before", `{` + creds + `, "store": {"kind": "redis", "redis_addr": "127.0.0.1:6379"}}`, `unknown field "redis_addr"`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h Handler
			err := caddy.StrictUnmarshalJSON([]byte(tt.json), &h)
			if err == nil {
				err = h.Validate()
			}
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("err = %v, want none", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
			if tt.check != nil {
				tt.check(t, &h)
			}
		})
	}
}

// Every subdirective the lists name is one the parser reads, and one
// of the authorization_code object's is refused with client_credentials
// at its line: the lists behind "did you mean" and "only applies to"
// cannot drift from the parser.
func TestSubdirectiveLists(t *testing.T) {
	const head = "oauth2_token {\n\tclient_id id\n\tclient_secret {env.S}\n\t"
	for _, sub := range subdirectives {
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(head + sub + " 1\n}"))
		if err != nil && strings.Contains(err.Error(), "unrecognized subdirective") {
			t.Errorf("%s is listed but not parsed: %v", sub, err)
		}
	}
	args := map[string]string{"pkce": "on", "events_include_subject": "off", "state_lifetime": "1m", "grace_period": "1m",
		"refresh_token_warning": "1d", "redirect_uri": "https://gw.example.com/cb", "user": "{http.auth.user.id}"}
	for _, sub := range userSubdirectives {
		arg := args[sub]
		if arg == "" {
			arg = "5"
			if strings.HasSuffix(sub, "_path") || strings.HasSuffix(sub, "_url") || sub == "connected_redirect" {
				arg = "/x"
			}
		}
		err := new(Handler).UnmarshalCaddyfile(caddyfile.NewTestDispenser(head + sub + " " + arg + "\n}"))
		want := "oauth2_token: " + sub + ": only applies to grant authorization_code (the grant is client_credentials), at Testfile:4"
		if err == nil || err.Error() != want {
			t.Errorf("%s with client_credentials: err = %v\nwant %s", sub, err, want)
		}
	}
}

func TestDidYouMean(t *testing.T) {
	tests := []struct {
		v       string
		choices []string
		want    string
	}{
		{"client_secrte", subdirectives, `; did you mean "client_secret"?`},
		{"redis_cluser", subdirectives, `; did you mean "redis_cluster"?`},
		{"scope", subdirectives, `; did you mean "scopes"?`},
		{"callback", subdirectives, ""}, // too far from callback_path
		{"xyz", subdirectives, ""},
		{"", subdirectives, ""},
		{"reddis", storeKinds, `; did you mean "redis"?`},
		{"authorisation_code", grants, `; did you mean "authorization_code"?`},
	}
	for _, tt := range tests {
		if got := didYouMean(tt.v, tt.choices); got != tt.want {
			t.Errorf("didYouMean(%q) = %q, want %q", tt.v, got, tt.want)
		}
	}
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"", "", 0}, {"a", "", 1}, {"kitten", "sitting", 3}, {"redis", "reddis", 1}, {"abc", "acb", 2}} {
		if d := editDistance(tt.a, tt.b); d != tt.d || editDistance(tt.b, tt.a) != tt.d {
			t.Errorf("editDistance(%q, %q) = %d, want %d both ways", tt.a, tt.b, d, tt.d)
		}
	}
}

// The README's JSON examples of the handler load: they decode strictly,
// as Caddy decodes them, and pass Validate.
func TestReadmeJSON(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllStringSubmatch(string(b), -1)
	n := 0
	for _, m := range blocks {
		var doc map[string]json.RawMessage
		if json.Unmarshal([]byte(m[1]), &doc) != nil || string(doc["handler"]) != `"oauth2_token"` {
			continue
		}
		n++
		delete(doc, "handler")
		raw, _ := json.Marshal(doc)
		var h Handler
		if err := caddy.StrictUnmarshalJSON(raw, &h); err != nil {
			t.Errorf("README example %d does not decode: %v\n%s", n, err, m[1])
			continue
		}
		if err := h.Validate(); err != nil {
			t.Errorf("README example %d does not validate: %v\n%s", n, err, m[1])
		}
	}
	if n < 2 {
		t.Errorf("found %d JSON examples of the handler in the README, want at least 2", n)
	}
}
