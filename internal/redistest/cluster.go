package redistest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// clusterNodeTimeout is how long a cluster node may not answer before the
// others hold it failed and its replica is promoted.
const clusterNodeTimeout = 1500 * time.Millisecond

// clusterSlots is the number of hash slots of a Redis Cluster.
const clusterSlots = 16384

// Cluster is a Redis Cluster on loopback: three primaries, each with one
// replica that takes over when its primary fails.
type Cluster struct {
	nodes []*Server // nodes[i] for i < 3 the primaries, nodes[i+3] their replicas
	ids   []string  // the nodes' cluster ids, by index
}

// StartCluster starts a three-primary cluster with a replica per primary,
// made with CLUSTER MEET, ADDSLOTSRANGE and REPLICATE (no redis-cli), and
// returns once every node reports cluster_state:ok and every replica is in
// sync. All nodes are killed when the test ends.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := lookPath(t)
	c := &Cluster{}
	for range 6 {
		n := &Server{bin: bin, dir: t.TempDir(), cluster: true}
		launch(t, n)
		c.nodes = append(c.nodes, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	if err := c.form(ctx); err != nil {
		t.Fatalf("redistest: the cluster did not form within %v: %v", setupTimeout, err)
	}
	return c
}

// form joins the nodes into a cluster, as redis-cli --cluster create does.
func (c *Cluster) form(ctx context.Context) error {
	clients := make([]*redis.Client, len(c.nodes))
	for i, n := range c.nodes {
		clients[i] = redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer clients[i].Close()
		id, err := clients[i].Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			return fmt.Errorf("%s: CLUSTER MYID: %w", n.Addr(), err)
		}
		c.ids = append(c.ids, id)
		// Distinct epochs, so that the primaries need not settle a
		// collision before the cluster is ok.
		if err := clients[i].Do(ctx, "CLUSTER", "SET-CONFIG-EPOCH", i+1).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER SET-CONFIG-EPOCH: %w", n.Addr(), err)
		}
	}
	for i := range 3 {
		first, last := i*clusterSlots/3, (i+1)*clusterSlots/3-1
		if err := clients[i].Do(ctx, "CLUSTER", "ADDSLOTSRANGE", first, last).Err(); err != nil {
			return fmt.Errorf("%s: CLUSTER ADDSLOTSRANGE: %w", c.nodes[i].Addr(), err)
		}
	}
	for _, n := range c.nodes[1:] {
		if err := clients[0].Do(ctx, "CLUSTER", "MEET", "127.0.0.1", n.port, n.busPort).Err(); err != nil {
			return fmt.Errorf("CLUSTER MEET %s: %w", n.Addr(), err)
		}
	}
	// A replica can follow its primary once it knows it.
	for i := 3; i < 6; i++ {
		err := poll(ctx, func() error { return clients[i].Do(ctx, "CLUSTER", "REPLICATE", c.ids[i-3]).Err() })
		if err != nil {
			return fmt.Errorf("%s: CLUSTER REPLICATE: %w", c.nodes[i].Addr(), err)
		}
	}
	return poll(ctx, func() error { return c.healthy(ctx, nil) })
}

// healthy checks that every running node but skip reports cluster_state:ok
// and knows all the others, that every replica whose primary runs is in
// sync, and that no slot is served by skip.
func (c *Cluster) healthy(ctx context.Context, skip *Server) error {
	for i, n := range c.nodes {
		if n == skip || !n.Running() {
			continue
		}
		state, err := clusterInfoField(ctx, n, "cluster_state")
		if err != nil {
			return err
		}
		if state != "ok" {
			return fmt.Errorf("%s: cluster_state %s", n.Addr(), state)
		}
		known, err := clusterInfoField(ctx, n, "cluster_known_nodes")
		if err != nil {
			return err
		}
		if known != strconv.Itoa(len(c.nodes)) {
			return fmt.Errorf("%s knows %s nodes, want %d", n.Addr(), known, len(c.nodes))
		}
		if i >= 3 && c.nodes[i-3].Running() && c.nodes[i-3] != skip {
			if err := replicaInSync(ctx, n); err != nil {
				return err
			}
		}
	}
	if skip == nil {
		return nil
	}
	slots, err := c.slots(ctx)
	if err != nil {
		return err
	}
	for _, s := range slots {
		if s.Nodes[0].Addr == skip.Addr() {
			return fmt.Errorf("slots %d-%d are still served by %s", s.Start, s.End, skip.Addr())
		}
	}
	return nil
}

// Addrs are the host:port of every node.
func (c *Cluster) Addrs() []string {
	var addrs []string
	for _, n := range c.nodes {
		addrs = append(addrs, n.Addr())
	}
	return addrs
}

// Nodes are the cluster's nodes: the three first primaries, then their
// replicas.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Client returns a cluster client (redis.NewClusterClient) of the nodes,
// closed when the test ends.
func (c *Cluster) Client(t testing.TB) *redis.ClusterClient {
	t.Helper()
	cc := redis.NewClusterClient(&redis.ClusterOptions{Addrs: c.Addrs()})
	t.Cleanup(func() { _ = cc.Close() })
	return cc
}

// PrimaryOf is the node that serves key's slot now.
func (c *Cluster) PrimaryOf(t testing.TB, key string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	var owner *Server
	err := poll(ctx, func() error {
		n := c.anyRunning()
		if n == nil {
			return errors.New("no node runs")
		}
		rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
		defer rc.Close()
		slot, err := rc.ClusterKeySlot(ctx, key).Result()
		if err != nil {
			return err
		}
		slots, err := c.slots(ctx)
		if err != nil {
			return err
		}
		for _, s := range slots {
			if int64(s.Start) <= slot && slot <= int64(s.End) {
				for _, n := range c.nodes {
					if n.Addr() == s.Nodes[0].Addr {
						owner = n
						return nil
					}
				}
			}
		}
		return fmt.Errorf("no node serves slot %d", slot)
	})
	if err != nil {
		t.Fatalf("redistest: the primary of a key: %v", err)
	}
	return owner
}

// WaitFailover waits until old's slots are served by another node (its
// replica, promoted) and every other node reports cluster_state:ok.
func (c *Cluster) WaitFailover(t testing.TB, old *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), failoverTimeout)
	defer cancel()
	if err := poll(ctx, func() error { return c.healthy(ctx, old) }); err != nil {
		t.Fatalf("redistest: no failover from %s within %v: %v", old.Addr(), failoverTimeout, err)
	}
}

// slots is CLUSTER SLOTS as a running node sees it.
func (c *Cluster) slots(ctx context.Context) ([]redis.ClusterSlot, error) {
	n := c.anyRunning()
	if n == nil {
		return nil, errors.New("no node runs")
	}
	rc := redis.NewClient(&redis.Options{Addr: n.Addr()})
	defer rc.Close()
	return rc.ClusterSlots(ctx).Result()
}

func (c *Cluster) anyRunning() *Server {
	for _, n := range c.nodes {
		if n.Running() {
			return n
		}
	}
	return nil
}

// clusterInfoField is one field of n's CLUSTER INFO.
func clusterInfoField(ctx context.Context, n *Server, field string) (string, error) {
	rc := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer rc.Close()
	info, err := rc.ClusterInfo(ctx).Result()
	if err != nil {
		return "", fmt.Errorf("%s: CLUSTER INFO: %w", n.Addr(), err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			return v, nil
		}
	}
	return "", fmt.Errorf("%s: CLUSTER INFO has no %s", n.Addr(), field)
}
