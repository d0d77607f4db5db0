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

	"github.com/tasknation/tokengate/internal/redistest"
)

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

// TestStart_Missing runs Start with no redis-server on PATH: outside CI the
// test is skipped, in CI it fails, and both say how to install it.
func TestStart_Missing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, tt := range []struct {
		ci   string
		want string // "skip" or "fatal"
	}{
		{"", "skip"},
		{"true", "fatal"},
	} {
		t.Run("CI="+tt.ci, func(t *testing.T) {
			t.Setenv("CI", tt.ci)
			r := &recorder{TB: t}
			var wg sync.WaitGroup
			wg.Go(func() { redistest.Start(r) })
			wg.Wait()
			if r.how != tt.want || !strings.Contains(r.msg, "make redis-deps") {
				t.Fatalf("Start ended with %s(%q), want %s mentioning make redis-deps", r.how, r.msg, tt.want)
			}
		})
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
