package middleware_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
)

// The fleet scenarios of internal/fleettest on the shared stores the
// middleware offers: a file store (one directory, a FileStore per
// gateway) and Redis (one redis-server, a client per gateway), each also
// sealed, and Redis under Sentinel and as a cluster, sealed (one setup
// for the three scenarios, a namespace each). The Caddy module runs them
// on Caddy storage.

func fileStores(t *testing.T, sealed bool) fleettest.NewStore {
	dir := t.TempDir()
	return func(t testing.TB) tokenstore.Store {
		s, err := tokenstore.NewFileStore(dir, tokenstore.FileOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return seal(t, s, sealed)
	}
}

func redisStores(t *testing.T, sealed bool) fleettest.NewStore {
	rs := redistest.Start(t)
	return func(t testing.TB) tokenstore.Store {
		s, err := tokenstore.NewRedisStore(rs.Client(t), tokenstore.RedisOptions{Namespace: "fleet"})
		if err != nil {
			t.Fatal(err)
		}
		return seal(t, s, sealed)
	}
}

// haStores starts the setup once for the scenarios of a variant; each
// scenario gets a namespace of its own on it.
func haStores(start func(*testing.T) fleetRedis) func(*testing.T) func(*testing.T, bool) fleettest.NewStore {
	return func(t *testing.T) func(*testing.T, bool) fleettest.NewStore {
		r := start(t)
		var n atomic.Int64
		return func(_ *testing.T, sealed bool) fleettest.NewStore {
			ns := fmt.Sprintf("fleet%d", n.Add(1))
			return func(t testing.TB) tokenstore.Store {
				s, err := tokenstore.NewRedisStore(r.client(t), tokenstore.RedisOptions{Namespace: ns})
				if err != nil {
					t.Fatal(err)
				}
				return seal(t, s, sealed)
			}
		}
	}
}

func seal(t testing.TB, s tokenstore.Store, sealed bool) tokenstore.Store {
	if !sealed {
		return s
	}
	ss, err := tokenstore.NewSealed(s, fleetKey)
	if err != nil {
		t.Fatal(err)
	}
	return ss
}

func TestFleetContract(t *testing.T) {
	each := func(mk func(*testing.T, bool) fleettest.NewStore) func(*testing.T) func(*testing.T, bool) fleettest.NewStore {
		return func(*testing.T) func(*testing.T, bool) fleettest.NewStore { return mk }
	}
	both, sealedOnly := []bool{false, true}, []bool{true}
	stores := []struct {
		name   string
		sealed []bool
		// start runs once per variant and returns what makes the
		// stores of each scenario.
		start func(*testing.T) func(*testing.T, bool) fleettest.NewStore
	}{
		{"file", both, each(fileStores)},
		{"redis", both, each(redisStores)},
		{"sentinel", sealedOnly, haStores(func(t *testing.T) fleetRedis { return sentinelRedis(redistest.StartSentinel(t)) })},
		{"cluster", sealedOnly, haStores(func(t *testing.T) fleetRedis { return clusterRedis(redistest.StartCluster(t)) })},
	}
	for _, st := range stores {
		for _, sealed := range st.sealed {
			name := st.name
			if sealed {
				name += "+sealed"
			}
			t.Run(name, func(t *testing.T) {
				mk := st.start(t)
				t.Run("DisconnectRacingRefresh", func(t *testing.T) { fleettest.DisconnectRacingRefresh(t, mk(t, sealed)) })
				t.Run("SkewedRotations", func(t *testing.T) { fleettest.SkewedRotations(t, mk(t, sealed)) })
				t.Run("ColdBurstOneToken", func(t *testing.T) { fleettest.ColdBurstOneToken(t, mk(t, sealed), 3, 300) })
			})
		}
	}
}
