package redistest_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/tasknation/tokengate/internal/redistest"
)

func init() {
	// go-redis logs each failed dial; the failover tests fail some on
	// purpose.
	redis.SetLogger(discardLogger{})
}

type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

func TestStart(t *testing.T) {
	s := redistest.Start(t)
	host, _, err := net.SplitHostPort(s.Addr())
	if err != nil || host != "127.0.0.1" {
		t.Fatalf("Addr() = %q, want 127.0.0.1:<port>", s.Addr())
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ param, want string }{
		{"bind", "127.0.0.1"},
		{"save", ""},
		{"appendonly", "no"},
		{"protected-mode", "yes"},
	} {
		if got := cfg[tt.param]; got != tt.want {
			t.Errorf("config %s = %q, want %q", tt.param, got, tt.want)
		}
	}
}

func TestStart_TwoServers(t *testing.T) {
	a, b := redistest.Start(t), redistest.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("both servers on %s", a.Addr())
	}
	ctx := context.Background()
	if err := a.Client(t).Set(ctx, "k", "a", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client(t).Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("the second server sees the first's key: %d, %v", n, err)
	}
}

func TestStopRestart(t *testing.T) {
	s := redistest.Start(t)
	addr := s.Addr()
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	s.Stop() // a no-op
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Stop", addr)
	}
	s.Restart(t)
	if s.Addr() != addr {
		t.Fatalf("restarted on %s, want %s", s.Addr(), addr)
	}
	// The old client reconnects; the data did not survive (no persistence).
	var n int64
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if n, err = c.Exists(ctx, "k").Result(); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil || n != 0 {
		t.Fatalf("after restart: EXISTS k = %d, %v; want 0, nil", n, err)
	}
	s.Restart(t) // restarting a running server stops it first
	if err := s.Client(t).Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

// TestStart_Missing runs Start, StartSentinel and StartCluster with no
// redis-server on PATH: outside CI the test is skipped, in CI it fails,
// and both say how to install it.
func TestStart_Missing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	starts := map[string]func(testing.TB){
		"Start":         func(t testing.TB) { redistest.Start(t) },
		"StartSentinel": func(t testing.TB) { redistest.StartSentinel(t) },
		"StartCluster":  func(t testing.TB) { redistest.StartCluster(t) },
	}
	for name, start := range starts {
		for _, tt := range []struct {
			ci   string
			want string // "skip" or "fatal"
		}{
			{"", "skip"},
			{"true", "fatal"},
		} {
			t.Run(name+"/CI="+tt.ci, func(t *testing.T) {
				t.Setenv("CI", tt.ci)
				r := &recorder{TB: t}
				var wg sync.WaitGroup
				wg.Go(func() { start(r) })
				wg.Wait()
				if r.how != tt.want || !strings.Contains(r.msg, "make redis-deps") {
					t.Fatalf("%s ended with %s(%q), want %s mentioning make redis-deps", name, r.how, r.msg, tt.want)
				}
			})
		}
	}
}

// recorder is a testing.TB whose Skip and Fatal are recorded and end the
// goroutine, as the real ones do, without ending the test.
type recorder struct {
	testing.TB
	how, msg string
}

func (r *recorder) Helper() {}

func (r *recorder) Skip(args ...any) {
	r.how, r.msg = "skip", fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatal(args ...any) {
	r.how, r.msg = "fatal", fmt.Sprint(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) { r.Fatal(fmt.Sprintf(format, args...)) }

func (r *recorder) Skipf(format string, args ...any) { r.Skip(fmt.Sprintf(format, args...)) }

// TestStartSentinel writes through a failover client, kills the primary
// and finds the write on the promoted replica, through the same client.
func TestStartSentinel(t *testing.T) {
	s := redistest.StartSentinel(t)
	if len(s.SentinelAddrs()) != 3 || len(s.Nodes()) != 2 {
		t.Fatalf("%d sentinels, %d data nodes; want 3 and 2", len(s.SentinelAddrs()), len(s.Nodes()))
	}
	for _, a := range append(s.SentinelAddrs(), s.Nodes()[0].Addr(), s.Nodes()[1].Addr()) {
		if host, _, _ := net.SplitHostPort(a); host != "127.0.0.1" {
			t.Fatalf("address %q is not on loopback", a)
		}
	}
	c := s.Client(t)
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := c.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT 1 = %d, %v; want the replica's acknowledgement", n, err)
	}
	old := s.KillPrimary(t)
	if old != s.Nodes()[0] {
		t.Fatal("the first primary was not the first node")
	}
	start := time.Now()
	p := s.WaitFailover(t, old)
	t.Logf("failover took %v", time.Since(start).Round(time.Millisecond))
	if p != s.Nodes()[1] {
		t.Fatalf("promoted %s, want the replica %s", p.Addr(), s.Nodes()[1].Addr())
	}
	var v string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if v, err = c.Get(ctx, "k").Result(); err == nil {
			break
		}
	}
	if err != nil || v != "v" {
		t.Fatalf("GET after the failover = %q, %v; want the acknowledged write", v, err)
	}
}

// TestStartCluster writes a key through a cluster client, kills the
// primary that owns it and reads it from the promoted replica.
func TestStartCluster(t *testing.T) {
	cl := redistest.StartCluster(t)
	if len(cl.Addrs()) != 6 {
		t.Fatalf("%d nodes, want 6", len(cl.Addrs()))
	}
	c := cl.Client(t)
	ctx := context.Background()
	owners := map[string]bool{}
	for i := range 30 {
		k := fmt.Sprintf("k%d", i)
		if err := c.Set(ctx, k, "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		owners[cl.PrimaryOf(t, k).Addr()] = true
	}
	if len(owners) != 3 {
		t.Fatalf("30 keys on %d primaries, want 3", len(owners))
	}
	old := cl.PrimaryOf(t, "k0")
	// The write reached the replica before the primary dies.
	if err := c.Watch(ctx, func(tx *redis.Tx) error {
		if n, err := tx.Wait(ctx, 1, 5*time.Second).Result(); err != nil || n != 1 {
			return fmt.Errorf("WAIT 1 = %d, %v", n, err)
		}
		return nil
	}, "k0"); err != nil {
		t.Fatal(err)
	}
	old.Stop()
	start := time.Now()
	cl.WaitFailover(t, old)
	t.Logf("failover took %v", time.Since(start).Round(time.Millisecond))
	if p := cl.PrimaryOf(t, "k0"); p == old {
		t.Fatal("k0 is still on the killed primary")
	}
	var v string
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if v, err = c.Get(ctx, "k0").Result(); err == nil {
			break
		}
		c.ReloadState(ctx) // else the client learns the new slot owner in a minute
	}
	if err != nil || v != "v" {
		t.Fatalf("GET after the failover = %q, %v; want the acknowledged write", v, err)
	}
}
