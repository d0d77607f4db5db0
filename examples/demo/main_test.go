package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
)

// TestMain runs the demo's main instead of the tests when the test binary
// is started as the demo (TestMain_OneshotLogs).
func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

const runMainEnv = "TOKENGATE_DEMO_TEST_RUN_MAIN"

// secretsIn names the credentials of the fake that s shows.
func secretsIn(s string) []string {
	var found []string
	for what, v := range map[string]string{
		"an access token": tasknationtest.AccessTokenPrefix, "a refresh token": tasknationtest.RefreshTokenPrefix,
		"an authorization code": tasknationtest.CodePrefix, "the client secret": tasknationtest.DefaultClientSecret,
	} {
		if strings.Contains(s, v) {
			found = append(found, what)
		}
	}
	return found
}

// The demo runs end to end, Caddy and the fake server on free loopback
// ports: what `DEMO_ONESHOT=1 make demo` does. Both self-checks pass, the
// output shows no credential, afterwards Caddy no longer listens and the
// demo's token directory is gone.
func TestRun_Oneshot(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the demo makes its token directory
	env := map[string]string{"DEMO_ONESHOT": "1", "DEMO_PORT": "0", "DEMO_USER_PORT": "0", "DEMO_ADMIN_PORT": "0"}
	var out bytes.Buffer
	if err := run(context.Background(), func(k string) string { return env[k] }, &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"Fake TaskNation server", "curl -s http://127.0.0.1:", "/metrics", "Self-check passed",
		"curl -s -u alice:alice-demo-password http://127.0.0.1:", "curl -s -u bob:bob-demo-password http://127.0.0.1:",
		"/oauth2/connect in a browser",
		"1. alice calls /api/v1/businesses/me before connecting: 401 not_connected",
		"4. the callback exchanges the code: 200 connected",
		"5. alice calls /api/v1/businesses/me: 200, the API saw TaskNation user tn-alice's token",
		"6. bob, logged in but not connected: 401 not_connected",
		"User-context self-check passed",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if found := secretsIn(out.String()); found != nil {
		t.Errorf("output shows %v", found)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		t.Errorf("the demo left %d entries in the temporary directory (%s ...)", len(left), left[0].Name())
	}

	m := regexp.MustCompile(`listening on http://(127\.0\.0\.1:\d+)\b.*admin API on http://(127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output names no gateway and admin address:\n%s", out.String())
	}
	u := regexp.MustCompile(`User context \(authorization_code\) on http://(127\.0\.0\.1:\d+)\b`).FindStringSubmatch(out.String())
	if u == nil {
		t.Fatalf("output names no user-context address:\n%s", out.String())
	}
	addrs := []string{m[1], m[2], u[1]}
	if addrs[0] == addrs[2] {
		t.Errorf("both sites listen on %s", addrs[0])
	}
	for _, addr := range addrs {
		// The admin endpoint shuts down in the background: allow it a moment.
		deadline := time.Now().Add(5 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Errorf("%s still accepts connections after run returned", addr)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestPickPort(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	takenPort := taken.Addr().(*net.TCPAddr).Port

	tests := []struct {
		name, setting string
		preferred     int
		check         func(string) bool
		wantErr       bool
	}{
		{"explicit", "9123", 8080, func(p string) bool { return p == "9123" }, false},
		{"zero picks a free port", "0", 8080, func(p string) bool { return p != "0" && p != "8080" }, false},
		{"preferred taken falls back", "", takenPort, func(p string) bool { return p != "" && p != strconv.Itoa(takenPort) }, false},
		{"not a number", "http", 8080, nil, true},
		{"out of range", "70000", 8080, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := pickPort(tt.setting, tt.preferred)
			if (err != nil) != tt.wantErr {
				t.Fatalf("pickPort(%q) error = %v, want error %v", tt.setting, err, tt.wantErr)
			}
			if err == nil && !tt.check(got) {
				t.Errorf("pickPort(%q, %d) = %q", tt.setting, tt.preferred, got)
			}
		})
	}
}

// The demo as `DEMO_ONESHOT=1 go run ./examples/demo` runs it: main
// exits 0 after both self-checks, and what it writes to stderr (Caddy's
// log and the user site's access log) shows the callback without its code
// and state, and no credential.
func TestMain_OneshotLogs(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), runMainEnv+"=1", "TMPDIR="+t.TempDir(),
		"DEMO_ONESHOT=1", "DEMO_PORT=0", "DEMO_USER_PORT=0", "DEMO_ADMIN_PORT=0")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("the demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "User-context self-check passed") {
		t.Errorf("stdout lacks the user-context self-check:\n%s", stdout.String())
	}
	var callbacks, connects int
	for _, line := range strings.Split(stderr.String(), "\n") {
		var entry struct {
			Msg     string `json:"msg"`
			Request struct {
				URI string `json:"uri"`
			} `json:"request"`
			RespHeaders struct {
				Location []string `json:"Location"`
			} `json:"resp_headers"`
		}
		if json.Unmarshal([]byte(line), &entry) != nil || entry.Msg != "handled request" {
			continue
		}
		switch {
		case strings.HasPrefix(entry.Request.URI, "/oauth2/callback"):
			callbacks++
			if entry.Request.URI != "/oauth2/callback" {
				t.Errorf("the access log shows the callback as %q, want its code and state deleted", entry.Request.URI)
			}
		case entry.Request.URI == "/oauth2/connect":
			connects++
			if len(entry.RespHeaders.Location) != 1 || !strings.Contains(entry.RespHeaders.Location[0], "/oauth2/auth?") {
				t.Errorf("the access log shows the connect's redirect as %q", entry.RespHeaders.Location)
			}
		}
	}
	if callbacks != 1 || connects != 1 {
		t.Errorf("the access log has %d callbacks and %d connects, want 1 each:\n%s", callbacks, connects, stderr.String())
	}
	for _, what := range []string{"state=", "code="} {
		if strings.Contains(stderr.String(), what) {
			t.Errorf("stderr shows %q", what)
		}
	}
	if found := secretsIn(stderr.String() + stdout.String()); found != nil {
		t.Errorf("the demo's output shows %v", found)
	}
}

// Two sites cannot share a port: a port named twice is an error, one
// picked for an earlier setting is not picked again.
func TestPickPorts(t *testing.T) {
	settings := []portSetting{{"A", 8080}, {"B", 8081}, {"C", 2019}}
	_, err := pickPorts(func(k string) string { return map[string]string{"A": "9123", "B": "9123"}[k] }, settings)
	if err == nil || !strings.Contains(err.Error(), "B: port 9123 is A's") {
		t.Errorf("the same port twice: error %v, want B: port 9123 is A's", err)
	}
	// B prefers 8081, which A names: B gets another.
	ports, err := pickPorts(func(k string) string { return map[string]string{"A": "8081", "C": "0"}[k] }, settings)
	if err != nil {
		t.Fatal(err)
	}
	if ports[0] != "8081" || ports[1] == "8081" || ports[1] == ports[2] || ports[0] == ports[2] {
		t.Errorf("pickPorts = %v, want three different ports, A's 8081", ports)
	}
}

// The Caddyfile adapts and validates (every module provisioned) with no
// more than the environment `make caddy-check` gives it, as
// `./caddy adapt --validate` does there, except the token directory,
// whose default (for caddy adapt) would be created under /tmp.
func TestCaddyfile_ValidatesWithCaddyCheckEnv(t *testing.T) {
	for k, v := range map[string]string{
		"TASKNATION_CLIENT_ID": "caddy-check", "TASKNATION_CLIENT_SECRET": "caddy-check",
		"TASKNATION_TOKEN_URL": "http://127.0.0.1:9/oauth2/token", "TASKNATION_API_ADDR": "127.0.0.1:9",
		"TASKNATION_AUTH_URL": "http://127.0.0.1:9/oauth2/auth", "TOKENGATE_KEY": "Y2FkZHktY2hlY2stc3RhbmQtaW4ta2V5LTMyLWJ5dGU=",
		"DEMO_TOKEN_DIR": filepath.Join(t.TempDir(), "tokens"),
	} {
		t.Setenv(k, v)
	}
	cfgJSON, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(caddyfile, map[string]any{"filename": "Caddyfile"})
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	var cfg caddy.Config
	if err := caddy.StrictUnmarshalJSON(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("validate: %v", err)
	}
	for _, secret := range []string{"caddy-check", "Y2FkZHkt"} {
		if bytes.Contains(cfgJSON, []byte(secret)) {
			t.Errorf("the adapted JSON holds %q: a secret read at parse time", secret)
		}
	}
}
