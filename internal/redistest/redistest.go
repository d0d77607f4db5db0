// Package redistest runs a real redis-server for tests, like net/http/httptest
// runs an HTTP server: on a free loopback port, with no persistence, stopped
// when the test ends. StartSentinel runs a primary, a replica and three
// sentinels, StartCluster a cluster of three primaries with a replica
// each: the production setups, to be failed over by killing a primary.
//
// The servers are Debian's redis-server from PATH (make redis-deps
// installs it; a sentinel is redis-server --sentinel). When it is missing,
// the Start functions skip the test, or fail it when the CI environment
// variable is set: CI must not pass by skipping.
package redistest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// startTimeout bounds how long a server may take to answer PING.
	startTimeout = 10 * time.Second
	// portTries is how many free ports Start tries: another process may
	// take the port between the probe and redis-server's bind.
	portTries = 5
)

// Server is a redis-server process on 127.0.0.1. Its methods are safe for
// concurrent use.
type Server struct {
	bin     string
	dir     string
	port    int
	persist bool // append-only file, fsynced on every write
	// sentinel is the config file of a sentinel ("": a data node), made
	// from sentinelCfg; cluster makes a cluster node, its bus on busPort;
	// extra are more arguments (a replica's --replicaof).
	sentinel    string
	sentinelCfg string
	cluster     bool
	busPort     int
	extra       []string

	mu   sync.Mutex
	proc *process // nil while stopped
}

// process is one run of redis-server.
type process struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{} // closed when the process has exited
}

// Start starts a redis-server on a free loopback port and stops it when the
// test ends. It returns once the server answers PING.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, false)
}

// StartPersistent is Start with the data kept across Stop and Restart, as
// a production Redis keeps it: an append-only file in the test's temp dir,
// fsynced on every write, so even a kill loses nothing acknowledged.
func StartPersistent(t testing.TB) *Server {
	t.Helper()
	return start(t, true)
}

func start(t testing.TB, persist bool) *Server {
	t.Helper()
	s := &Server{bin: lookPath(t), dir: t.TempDir(), persist: persist}
	launch(t, s)
	return s
}

// lookPath finds redis-server, or skips (fails, in CI) the test.
func lookPath(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("redistest: redis-server not installed (CI must run the Redis tests): make redis-deps")
		}
		t.Skip("redis-server not installed: make redis-deps")
	}
	return bin
}

// launch starts s on a free port (and a free bus port, for a cluster
// node), stopped when the test ends.
func launch(t testing.TB, s *Server) {
	t.Helper()
	var errs []error
	for range portTries {
		port, err := freePort()
		if err != nil {
			t.Fatalf("redistest: %v", err)
		}
		s.port = port
		if s.cluster {
			if s.busPort, err = freePort(); err != nil {
				t.Fatalf("redistest: %v", err)
			}
		}
		if s.sentinel != "" {
			// A sentinel rewrites its file: each try starts from the
			// config it was made with.
			if err := os.WriteFile(s.sentinel, []byte(s.sentinelCfg), 0o600); err != nil {
				t.Fatalf("redistest: %v", err)
			}
		}
		if err := s.start(); err != nil {
			errs = append(errs, err)
			continue
		}
		t.Cleanup(s.Stop)
		return
	}
	t.Fatalf("redistest: redis-server did not start: %v", errors.Join(errs...))
}

// Addr is the server's host:port.
func (s *Server) Addr() string {
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port))
}

// Client returns a client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: s.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Stop kills the server (SIGKILL, as a crash: the server and any child it
// forked, such as one sending a snapshot to a replica) and waits for it to
// exit. Stopping a stopped server does nothing. Its data is gone, unless
// it was started with StartPersistent.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	kill(s.proc.cmd)
	<-s.proc.done
	s.proc = nil
}

// Running reports whether the server is running (not stopped).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc != nil
}

// Restart starts the server again on the same port (after Stop, or
// stopping it first), empty (or, StartPersistent, with its data), and
// returns once it answers PING.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	if err := s.start(); err != nil {
		t.Fatalf("redistest: restart on %s: %v", s.Addr(), err)
	}
}

// start runs redis-server on s.port and waits until it answers PING.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return errors.New("already running")
	}
	var args []string
	if s.sentinel != "" {
		args = append(args, s.sentinel, "--sentinel")
	}
	args = append(args,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--protected-mode", "yes",
		"--daemonize", "no",
		"--dir", s.dir,
		"--logfile", "",
	)
	if s.sentinel == "" {
		// A replica syncs at once, not after the default 5s wait for
		// more replicas to share the snapshot.
		args = append(args, "--repl-diskless-sync-delay", "0")
	}
	if s.persist {
		args = append(args, "--appendonly", "yes", "--appendfsync", "always") // the last one counts
	}
	if s.cluster {
		args = append(args,
			"--cluster-enabled", "yes",
			"--cluster-port", strconv.Itoa(s.busPort),
			"--cluster-config-file", filepath.Join(s.dir, "nodes.conf"),
			"--cluster-node-timeout", strconv.Itoa(int(clusterNodeTimeout/time.Millisecond)),
		)
	}
	args = append(args, s.extra...)
	cmd := exec.Command(s.bin, args...)
	setProcAttr(cmd)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	p := &process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for wait := time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		if ping(ctx, s.Addr()) == nil {
			s.proc = p
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("port %d: redis-server exited: %s", s.port, lastLines(out.String(), 5))
		case <-ctx.Done():
			kill(cmd)
			<-p.done
			return fmt.Errorf("port %d: no answer to PING within %v: %s", s.port, startTimeout, lastLines(out.String(), 5))
		case <-time.After(wait):
		}
	}
}

// ping sends one PING in RESP and wants +PONG.
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", strings.TrimSpace(line))
	}
	return nil
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	if err := l.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// lockedBuffer collects the server's output, written by exec's copying
// goroutine and read on failure.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	// Keep the tail only: a long test must not grow the buffer for good.
	if b.buf.Len() > 64<<10 {
		tail := append([]byte(nil), b.buf.Bytes()[b.buf.Len()-16<<10:]...)
		b.buf.Reset()
		b.buf.Write(tail)
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Keys lists the keys of c matching pattern (SCAN, not KEYS); on a
// cluster, those of every primary.
func Keys(t testing.TB, c redis.UniversalClient, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	scan := func(c redis.Cmdable) ([]string, error) {
		var keys []string
		iter := c.Scan(ctx, 0, pattern, 100).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		return keys, iter.Err()
	}
	cc, ok := c.(*redis.ClusterClient)
	if !ok {
		keys, err := scan(c)
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	var mu sync.Mutex
	var keys []string
	err := cc.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
		k, err := scan(n)
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, k...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}
