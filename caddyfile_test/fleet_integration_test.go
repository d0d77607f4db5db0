package caddyfile_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	"github.com/tasknation/tokengate/internal/redistest"
)

// childConfigEnv, when set, makes the test binary a Caddy: `caddy run`
// with the Caddyfile it names, and this module in it. A test starts one
// so that two real Caddy instances (this process's and the child) share
// a store, as a fleet does: Caddy's running config is global, one per
// process.
const childConfigEnv = "TOKENGATE_TEST_CADDY_CONFIG"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childConfigEnv); cfg != "" {
		os.Args = []string{"caddy", "run", "--config", cfg, "--adapter", "caddyfile"}
		caddycmd.Main() // runs until killed
		return
	}
	os.Exit(m.Run())
}

// secondInstance starts another Caddy, in a process of its own, with s's
// site on fresh ports (the same redirect_uri: the fleet's public one, s's)
// and returns the site as a siteUser of it would reach it. shareStorage
// gives it s's Caddy storage directory; else it has its own.
func (s *userSite) secondInstance(t *testing.T, o userOptions, shareStorage bool) *userSite {
	t.Helper()
	ports := freePorts(t, 3)
	g := *s.gateway
	g.adminAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	g.httpPort, g.httpsPort = ports[1], ports[2]
	g.dir = filepath.Join(s.dir, "second")
	if err := os.MkdirAll(g.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	b := &userSite{gateway: &g, base: s.base, logFile: filepath.Join(g.dir, "access.log"), hashes: s.hashes}
	cfg := b.caddyfile(o)
	if shareStorage {
		cfg = strings.Replace(cfg, "storage file_system "+b.storageDir(), "storage file_system "+s.storageDir(), 1)
	}
	path := filepath.Join(g.dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childConfigEnv+"="+path,
		"XDG_DATA_HOME="+filepath.Join(g.dir, "data"), "XDG_CONFIG_HOME="+filepath.Join(g.dir, "config"))
	out, err := os.Create(filepath.Join(g.dir, "caddy.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
		if t.Failed() {
			log, _ := os.ReadFile(out.Name())
			t.Logf("the second Caddy's log:\n%s", log)
		}
	})
	b.base = fmt.Sprintf("http://127.0.0.1:%d", g.httpPort)
	eventually(t, "the second Caddy serves", func() error {
		resp, err := g.client.Get(b.base + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return b
}

// on is u as the same browser uses it on site b.
func (u *siteUser) on(b *userSite) *siteUser {
	v := *u
	v.site = b
	return &v
}

// connectAcross starts u's connect on its site, has the fake approve it as
// tnUser, and sends the callback to site b (a load balancer without
// sticky sessions). public is the fleet's callback URL (its redirect_uri).
// It returns the callback URL, as the browser had it.
func (u *siteUser) connectAcross(t *testing.T, b *userSite, tnUser, public string) *url.URL {
	t.Helper()
	r := u.mustDo(t, http.MethodGet, "/oauth2/connect", nil)
	if r.status != http.StatusFound {
		t.Fatalf("connect as %s: %d %s", u.name, r.status, r.body)
	}
	auth := mustParse(t, r.header.Get("Location"))
	q := auth.Query()
	q.Set("login_hint", tnUser)
	auth.RawQuery = q.Encode()
	r = u.mustDo(t, http.MethodGet, auth.String(), nil)
	if r.status != http.StatusFound {
		t.Fatalf("the fake's authorization endpoint: %d %s", r.status, r.body)
	}
	back := mustParse(t, r.header.Get("Location"))
	if !strings.HasPrefix(back.String(), public+"?") {
		t.Fatalf("the fake redirects to %s, want the fleet's callback %s", back, public)
	}
	r = u.on(b).mustDo(t, http.MethodGet, b.base+back.Path+"?"+back.RawQuery, nil)
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"connected"`) {
		t.Fatalf("callback on the second instance as %s: %d %s, want 200 connected", u.name, r.status, r.body)
	}
	return back
}

// replayRefused sends callback cb again to site b, with its state cookie
// set back as a browser that kept it would: refused, 400 invalid_state.
func (u *siteUser) replayRefused(t *testing.T, b *userSite, cb *url.URL) {
	t.Helper()
	target := b.base + cb.Path + "?" + cb.RawQuery
	u.client.Jar.SetCookies(mustParse(t, target), []*http.Cookie{{Name: "tokengate_state", Value: cb.Query().Get("state"), Path: "/oauth2/callback"}})
	r := u.on(b).mustDo(t, http.MethodGet, target, nil)
	var e jsonError
	if r.status != http.StatusBadRequest || json.Unmarshal(r.body, &e) != nil || e.Error != "invalid_state" || !strings.Contains(e.Description, "already used") {
		t.Fatalf("the callback replayed on %s: %d %s, want 400 invalid_state (already used)", b.base, r.status, r.body)
	}
}

// fleetAcross runs the scenario on two instances a (this process) and b
// (a child): alice connects on a and completes on b, bob the other way;
// each user's API calls go out as their TaskNation user through both;
// each callback replayed on the instance that did not complete it is
// refused, and so is it on the one that did.
func fleetAcross(t *testing.T, a *userSite, o userOptions, shareStorage bool) {
	a.start(o)
	b := a.secondInstance(t, o, shareStorage)
	alice, bob := a.user(t, "alice"), a.user(t, "bob")
	cb := alice.connectAcross(t, b, "tn-alice", a.callbackURL())
	bobCB := bob.on(b).connectAcross(t, a, "tn-bob", a.callbackURL())
	for _, site := range []*userSite{a, b} {
		alice.on(site).mustCallAPIAs(t, "tn-alice")
		bob.on(site).mustCallAPIAs(t, "tn-bob")
	}
	alice.replayRefused(t, a, cb)
	alice.replayRefused(t, b, cb)
	bob.replayRefused(t, b, bobCB)
}

// TestFleet_PendingConnectInRedis: two Caddy instances on one Redis, no
// sticky sessions: a connect started on one completes on the other.
func TestFleet_PendingConnectInRedis(t *testing.T) {
	rs := redistest.Start(t)
	a := newUserSite(t)
	t.Setenv("TOKENGATE_KEY", keyOne)
	fleetAcross(t, a, userOptions{extra: fmt.Sprintf("\t\tstore redis %s\n\t\tencryption_key {env.TOKENGATE_KEY}\n", rs.Addr())}, false)
}

// TestFleet_PendingConnectInCaddyStorage: the same with the two instances
// sharing one `storage file_system` directory and `store caddy`.
func TestFleet_PendingConnectInCaddyStorage(t *testing.T) {
	a := newUserSite(t)
	t.Setenv("TOKENGATE_KEY", keyOne)
	fleetAcross(t, a, userOptions{extra: "\t\tstore caddy\n\t\tencryption_key {env.TOKENGATE_KEY}\n"}, true)
}
