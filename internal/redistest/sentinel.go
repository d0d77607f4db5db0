package redistest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	// MasterName is the name the sentinels of StartSentinel monitor.
	MasterName = "tokengate"
	// sentinelDownAfter is how long a primary must not answer before a
	// sentinel holds it down: short, for fast failovers, but not so short
	// that a busy test machine fails over a live primary.
	sentinelDownAfter = time.Second
	// sentinelFailoverTimeout bounds one failover attempt; a failed one is
	// tried again after twice this.
	sentinelFailoverTimeout = 5 * time.Second
	// setupTimeout bounds how long a sentinel setup or a cluster takes to
	// form (replicas in sync, sentinels aware of each other).
	setupTimeout = 30 * time.Second
	// failoverTimeout bounds how long WaitFailover waits for a promotion.
	failoverTimeout = 30 * time.Second
)

// Sentinel is a Sentinel-managed Redis: a primary, one replica and three
// sentinels (quorum 2) monitoring it as MasterName, all on loopback.
type Sentinel struct {
	nodes     []*Server // data nodes: the first primary, its replica
	sentinels []*Server
}

// StartSentinel starts a primary, a replica of it and three sentinels, and
// returns once the replica is in sync and every sentinel knows the replica
// and the two other sentinels (a failover needs them). All are killed when
// the test ends.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	bin := lookPath(t)
	primary := &Server{bin: bin, dir: t.TempDir()}
	launch(t, primary)
	replica := &Server{bin: bin, dir: t.TempDir(), extra: []string{"--replicaof", "127.0.0.1", strconv.Itoa(primary.port)}}
	launch(t, replica)
	s := &Sentinel{nodes: []*Server{primary, replica}}
	conf := fmt.Sprintf("sentinel resolve-hostnames no\n"+
		"sentinel monitor %[1]s 127.0.0.1 %[2]d 2\n"+
		"sentinel down-after-milliseconds %[1]s %[3]d\n"+
		"sentinel failover-timeout %[1]s %[4]d\n"+
		"sentinel parallel-syncs %[1]s 1\n",
		MasterName, primary.port, sentinelDownAfter.Milliseconds(), sentinelFailoverTimeout.Milliseconds())
	for range 3 {
		dir := t.TempDir()
		sn := &Server{bin: bin, dir: dir, sentinel: filepath.Join(dir, "sentinel.conf"), sentinelCfg: conf}
		launch(t, sn)
		s.sentinels = append(s.sentinels, sn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	err := poll(ctx, func() error {
		if err := replicaInSync(ctx, replica); err != nil {
			return err
		}
		for _, sn := range s.sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
			replicas, err := c.Replicas(ctx, MasterName).Result()
			if err == nil && len(replicas) != 1 {
				err = fmt.Errorf("knows %d replicas", len(replicas))
			}
			var others []map[string]string
			if err == nil {
				others, err = c.Sentinels(ctx, MasterName).Result()
			}
			if err == nil && len(others) != 2 {
				err = fmt.Errorf("knows %d other sentinels", len(others))
			}
			_ = c.Close()
			if err != nil {
				return fmt.Errorf("sentinel %s: %w", sn.Addr(), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("redistest: the sentinel setup did not form within %v: %v", setupTimeout, err)
	}
	return s
}

// SentinelAddrs are the sentinels' host:port.
func (s *Sentinel) SentinelAddrs() []string {
	var addrs []string
	for _, sn := range s.sentinels {
		addrs = append(addrs, sn.Addr())
	}
	return addrs
}

// Nodes are the data nodes: the first primary and its replica.
func (s *Sentinel) Nodes() []*Server { return s.nodes }

// Client returns a failover client of the setup (redis.NewFailoverClient),
// closed when the test ends.
func (s *Sentinel) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: MasterName, SentinelAddrs: s.SentinelAddrs()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// Primary is the data node the sentinels name as primary now.
func (s *Sentinel) Primary(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var p *Server
	if err := poll(ctx, func() (err error) { p, err = s.primary(ctx); return err }); err != nil {
		t.Fatalf("redistest: no primary: %v", err)
	}
	return p
}

// primary asks the sentinels, in turn, which data node is the primary.
func (s *Sentinel) primary(ctx context.Context) (*Server, error) {
	var errs []error
	for _, sn := range s.sentinels {
		if !sn.Running() {
			continue
		}
		c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
		addr, err := c.GetMasterAddrByName(ctx, MasterName).Result()
		_ = c.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, n := range s.nodes {
			if n.Addr() == net.JoinHostPort(addr[0], addr[1]) {
				return n, nil
			}
		}
		errs = append(errs, fmt.Errorf("sentinel %s names %v, not a node of the setup", sn.Addr(), addr))
	}
	return nil, fmt.Errorf("no sentinel named the primary: %w", errors.Join(errs...))
}

// KillPrimary kills the current primary with SIGKILL, as a crash, and
// returns it (stopped: Restart brings it back, empty).
func (s *Sentinel) KillPrimary(t testing.TB) *Server {
	t.Helper()
	p := s.Primary(t)
	p.Stop()
	return p
}

// WaitFailover waits until the sentinels have promoted a node other than
// old and that node answers as a primary, and returns it.
func (s *Sentinel) WaitFailover(t testing.TB, old *Server) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout)
	defer cancel()
	var p *Server
	err := poll(ctx, func() error {
		for _, sn := range s.sentinels {
			c := redis.NewSentinelClient(&redis.Options{Addr: sn.Addr()})
			addr, err := c.GetMasterAddrByName(ctx, MasterName).Result()
			_ = c.Close()
			if err != nil {
				return err
			}
			if a := net.JoinHostPort(addr[0], addr[1]); a == old.Addr() {
				return fmt.Errorf("sentinel %s still names %s", sn.Addr(), a)
			}
		}
		var err error
		if p, err = s.primary(ctx); err != nil {
			return err
		}
		return role(ctx, p, "master")
	})
	if err != nil {
		t.Fatalf("redistest: no failover from %s within %v: %v", old.Addr(), failoverTimeout, err)
	}
	return p
}

// replicaInSync checks that n is a replica whose link to its primary is up.
func replicaInSync(ctx context.Context, n *Server) error {
	info, err := infoField(ctx, n, "replication", "master_link_status")
	if err != nil {
		return err
	}
	if info != "up" {
		return fmt.Errorf("replica %s: master_link_status %q", n.Addr(), info)
	}
	return nil
}

// role checks that n reports the role want ("master" or "slave").
func role(ctx context.Context, n *Server, want string) error {
	got, err := infoField(ctx, n, "replication", "role")
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s is a %s, want a %s", n.Addr(), got, want)
	}
	return nil
}

// infoField is one field of n's INFO section.
func infoField(ctx context.Context, n *Server, section, field string) (string, error) {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer c.Close()
	info, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", fmt.Errorf("%s: INFO %s: %w", n.Addr(), section, err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: INFO %s has no %s", n.Addr(), section, field)
}

// poll calls f until it succeeds or ctx is done, and then returns f's last
// error.
func poll(ctx context.Context, f func() error) error {
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
