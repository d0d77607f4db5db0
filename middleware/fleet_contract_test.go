package middleware_test

import (
	"testing"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/internal/redistest"
	"github.com/tasknation/tokengate/tokenstore"
)

// The fleet scenarios of internal/fleettest on the shared stores the
// middleware offers: a file store (one directory, a FileStore per
// gateway) and Redis (one redis-server, a client per gateway), each also
// sealed. The Caddy module runs them on Caddy storage.

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
	stores := []struct {
		name string
		make func(*testing.T, bool) fleettest.NewStore
	}{{"file", fileStores}, {"redis", redisStores}}
	for _, st := range stores {
		for _, sealed := range []bool{false, true} {
			name := st.name
			if sealed {
				name += "+sealed"
			}
			t.Run(name, func(t *testing.T) {
				t.Run("DisconnectRacingRefresh", func(t *testing.T) { fleettest.DisconnectRacingRefresh(t, st.make(t, sealed)) })
				t.Run("SkewedRotations", func(t *testing.T) { fleettest.SkewedRotations(t, st.make(t, sealed)) })
				t.Run("ColdBurstOneToken", func(t *testing.T) { fleettest.ColdBurstOneToken(t, st.make(t, sealed), 3, 300) })
			})
		}
	}
}
