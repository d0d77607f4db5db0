package middleware_test

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// The crash tests run a gateway in a child process (this test binary,
// re-executed with crashChildEnv set) so that it can be SIGKILLed at an
// exact point of a refresh: from the fake server's OnTokenAnswer hook,
// right after the token endpoint answered or dropped its answer.
const crashChildEnv = "TOKENGATE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		crashChild()
		return
	}
	os.Exit(m.Run())
}

// offsetClock is the real clock plus an offset the parent sets through
// the child's /_clock endpoint, so that the parent can make the child's
// access token expire without waiting an hour.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *offsetClock) AfterFunc(d time.Duration, f func()) middleware.Timer {
	return time.AfterFunc(d, f)
}

// crashChild is the child's main: a gateway with a sealed file store (or,
// with CRASH_REDIS_ADDR, CRASH_REDIS_CLUSTER (addresses) or
// CRASH_REDIS_SENTINEL (the master name, then the sentinels' addresses),
// a sealed Redis store) in front of the fake's API. It prints its address
// and serves until killed.
func crashChild() {
	die := func(err error) { fmt.Fprintln(os.Stderr, "crash child:", err); os.Exit(2) }
	fakeURL, dir := os.Getenv("CRASH_FAKE_URL"), os.Getenv("CRASH_STORE_DIR")
	key, err := base64.StdEncoding.DecodeString(os.Getenv("CRASH_KEY"))
	if err != nil {
		die(err)
	}
	var rc redis.UniversalClient
	if addr := os.Getenv("CRASH_REDIS_ADDR"); addr != "" {
		rc = redis.NewClient(&redis.Options{Addr: addr})
	} else if addrs := os.Getenv("CRASH_REDIS_CLUSTER"); addrs != "" {
		rc = redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(addrs, ",")})
	} else if s := os.Getenv("CRASH_REDIS_SENTINEL"); s != "" {
		f := strings.Split(s, ",")
		rc = redis.NewFailoverClient(&redis.FailoverOptions{MasterName: f[0], SentinelAddrs: f[1:]})
	}
	var inner tokenstore.Store
	if rc != nil {
		lease, _ := time.ParseDuration(os.Getenv("CRASH_LEASE_TTL"))
		inner, err = tokenstore.NewRedisStore(rc, tokenstore.RedisOptions{Namespace: "fleet", LeaseTTL: lease})
	} else {
		inner, err = tokenstore.NewFileStore(dir, tokenstore.FileOptions{})
	}
	if err != nil {
		die(err)
	}
	store, err := tokenstore.NewSealed(inner, key)
	if err != nil {
		die(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		die(err)
	}
	clk := &offsetClock{}
	off, _ := time.ParseDuration(os.Getenv("CRASH_CLOCK_OFFSET"))
	clk.off.Store(int64(off))
	addr := "http://" + ln.Addr().String()
	gate, err := middleware.New(middleware.Config{
		Grant:        middleware.GrantAuthorizationCode,
		TokenURL:     fakeURL + "/oauth2/token",
		AuthURL:      fakeURL + "/oauth2/auth",
		RedirectURI:  addr + "/oauth2/callback",
		ClientID:     tasknationtest.DefaultClientID,
		ClientSecret: tasknationtest.DefaultClientSecret,
		Scopes:       userScopes,
		Subject:      basicUser,
		Store:        store,
		Clock:        clk,
		MinBackoff:   50 * time.Millisecond,
	})
	if err != nil {
		die(err)
	}
	api, _ := url.Parse(fakeURL)
	mux := http.NewServeMux()
	mux.HandleFunc("/_clock", func(w http.ResponseWriter, r *http.Request) {
		d, err := time.ParseDuration(r.URL.Query().Get("offset"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		clk.off.Store(int64(d))
	})
	mux.Handle("/", gate.Wrap(&httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) { r.SetURL(api) }}))
	fmt.Println("LISTEN", addr)
	die(http.Serve(ln, mux))
}

// child is a running crash child.
type child struct {
	cmd  *exec.Cmd
	url  string
	done chan error
}

func startChild(t *testing.T, env []string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append(env, crashChildEnv+"=1")...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	t.Cleanup(func() { c.kill() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "LISTEN ") {
		t.Fatalf("child did not start: %q %v", line, err)
	}
	c.url = strings.TrimSpace(strings.TrimPrefix(line, "LISTEN "))
	go func() { c.done <- cmd.Wait() }()
	return c
}

func (c *child) kill() { _ = c.cmd.Process.Signal(syscall.SIGKILL) }

// TestUser_CrashMidRefresh: a gateway holding a user's tokens is SIGKILLed
// while a refresh is in flight; a restarted gateway on the same store
// serves the user without re-authorization, and the fake never sees a
// rotated refresh token after its grace period.
func TestUser_CrashMidRefresh(t *testing.T) {
	for _, c := range []struct {
		name  string
		fault *tasknationtest.Fault
	}{
		{"answer lost after rotation", &tasknationtest.Fault{Kind: tasknationtest.FaultLostAfterRotation, Grant: tasknationtest.GrantRefreshToken, Count: 1}},
		{"killed right after the answer", nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := tasknationtest.NewServer(tasknationtest.Options{})
			defer srv.Close()
			key := make([]byte, 32)
			key[3] = 7
			env := []string{
				"CRASH_FAKE_URL=" + srv.URL,
				"CRASH_STORE_DIR=" + t.TempDir(),
				"CRASH_KEY=" + base64.StdEncoding.EncodeToString(key),
			}
			first := startChild(t, env)
			srv.AddRedirectURI(tasknationtest.DefaultClientID, first.url+"/oauth2/callback")
			f := &userFixture{srv: srv, base: first.url}
			alice := f.browser(t, "alice")
			alice.connect(f, "tn-alice")
			if a := alice.api(f); a.status != 200 || a.json["subject"] != "tn-alice" {
				t.Fatalf("before the crash: %d %s", a.status, a.body)
			}

			// Kill the child from inside the fake, right after the refresh
			// was processed (and its answer sent, or lost).
			killed := make(chan tasknationtest.TokenEvent, 1)
			srv.OnTokenAnswer(func(ev tasknationtest.TokenEvent) {
				if ev.Grant == tasknationtest.GrantRefreshToken && ev.Issued {
					first.kill()
					select {
					case killed <- ev:
					default:
					}
				}
			})
			if c.fault != nil {
				srv.InjectFault(*c.fault)
			}
			if a := alice.get(first.url + "/_clock?offset=2h"); a.status != 200 {
				t.Fatalf("setting the child's clock: %d", a.status)
			}
			req, _ := http.NewRequest(http.MethodGet, first.url+"/api/v1/businesses/me", nil)
			req.SetBasicAuth("alice", "pw")
			resp, err := alice.c.Do(req) // dies with the child
			if err == nil {
				resp.Body.Close()
			}
			ev := <-killed
			<-first.done
			t.Logf("refresh event %+v; the client saw err=%v", ev, err)
			srv.OnTokenAnswer(nil)
			if n := srv.TokenRequests(tasknationtest.GrantRefreshToken); n != 1 {
				t.Fatalf("refreshes before the crash = %d, want 1", n)
			}

			second := startChild(t, append(env, "CRASH_CLOCK_OFFSET=2h"))
			a := alice.get(second.url + "/api/v1/businesses/me")
			if a.status != 200 || a.json["subject"] != "tn-alice" {
				t.Fatalf("after the restart: %d %s, want 200 as tn-alice without reconnecting", a.status, a.body)
			}
			if n := srv.TokenRequests(tasknationtest.GrantAuthorizationCode); n != 1 {
				t.Errorf("code exchanges = %d, want 1: the user had to reconnect", n)
			}
			if n := srv.StaleRefreshReuses(); n != 0 {
				t.Errorf("the fake saw %d rotated refresh tokens after the grace period", n)
			}
			if c.fault != nil && srv.GraceRefreshReuses() != 1 {
				t.Errorf("grace reuses = %d, want 1 (the restarted gateway redeemed the old refresh token)", srv.GraceRefreshReuses())
			}
			// And the rotated set it now holds keeps working.
			if a := alice.get(second.url + "/api/v1/businesses/me"); a.status != 200 {
				t.Errorf("second call after restart: %d", a.status)
			}
		})
	}
}
