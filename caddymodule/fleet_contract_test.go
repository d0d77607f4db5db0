package caddymodule

import (
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/tasknation/tokengate/internal/fleettest"
	"github.com/tasknation/tokengate/tokenstore"
)

// TestFleetContract_CaddyStorage runs the fleet scenarios every shared
// store must pass on Caddy's file-system storage: one directory, a
// Storage per gateway (as Caddy instances sharing a storage have), plain
// and sealed.
func TestFleetContract_CaddyStorage(t *testing.T) {
	stores := func(t *testing.T, sealed bool) fleettest.NewStore {
		dir := t.TempDir()
		return func(t testing.TB) tokenstore.Store {
			s, err := NewStorage(&certmagic.FileStorage{Path: dir}, StorageOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if !sealed {
				return s
			}
			ss, err := tokenstore.NewSealed(s, []byte("caddy-fleet-key-0123456789abcdef"))
			if err != nil {
				t.Fatal(err)
			}
			return ss
		}
	}
	for _, sealed := range []bool{false, true} {
		name := "plain"
		if sealed {
			name = "sealed"
		}
		t.Run(name, func(t *testing.T) {
			t.Run("DisconnectRacingRefresh", func(t *testing.T) { fleettest.DisconnectRacingRefresh(t, stores(t, sealed)) })
			t.Run("SkewedRotations", func(t *testing.T) { fleettest.SkewedRotations(t, stores(t, sealed)) })
			t.Run("ColdBurstOneToken", func(t *testing.T) { fleettest.ColdBurstOneToken(t, stores(t, sealed), 3, 300) })
		})
	}
}
