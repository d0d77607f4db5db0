package caddymodule

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/caddyserver/certmagic"

	"github.com/tasknation/tokengate/internal/storetest"
	"github.com/tasknation/tokengate/tokenstore"
)

// storageBackends are the certmagic storages the contracts run Storage
// over. Caddy's file system storage polls a lock it waits for every
// second, so its race cases are small (one round of three writers, the
// Delete race left out); over lockingStorage, a storage module whose
// locks pass at once, they run at full size.
var storageBackends = []struct {
	name string
	// open makes an empty backend keeping its data in dir, and checks
	// when the test ends that it holds no lock any more. instance is one
	// more Caddy instance's handle on it.
	open             func(t *testing.T, dir string) (instance func() certmagic.Storage)
	race, deleteRace storetest.Race
}{
	{"file", func(t *testing.T, dir string) func() certmagic.Storage {
		t.Cleanup(func() {
			locks, err := os.ReadDir(filepath.Join(dir, "locks"))
			if err != nil && !errors.Is(err, fs.ErrNotExist) {
				t.Fatal(err)
			}
			if len(locks) != 0 {
				t.Errorf("%d lock files left", len(locks))
			}
		})
		return func() certmagic.Storage { return &certmagic.FileStorage{Path: dir} }
	}, storetest.Race{Rounds: 1, Writers: 3}, storetest.Race{Skip: true}},
	{"locking", func(t *testing.T, dir string) func() certmagic.Storage {
		backend := newLockingStorage(dir)
		t.Cleanup(func() {
			if held := backend.held(); len(held) != 0 {
				t.Errorf("locks left held: %v", held)
			}
		})
		return func() certmagic.Storage { return backend }
	}, storetest.Race{}, storetest.Race{}},
}

// storedSets counts the token sets kept in the storage in dir.
func storedSets(t *testing.T, dir string) int {
	t.Helper()
	sets, err := os.ReadDir(filepath.Join(dir, filepath.FromSlash(storagePrefix)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return len(sets)
}

// sealedOpener is open with the store it makes wrapped in
// tokenstore.Sealed.
func sealedOpener(open storetest.Opener) storetest.Opener {
	return func(t *testing.T, c *storetest.Clock) (tokenstore.Store, func() int) {
		inner, held := open(t, c)
		s, err := tokenstore.NewSealed(inner, sealKey)
		if err != nil {
			t.Fatal(err)
		}
		return s, held
	}
}

func TestStorage_Contract(t *testing.T) {
	for _, b := range storageBackends {
		open := func(t *testing.T, c *storetest.Clock) (tokenstore.Store, func() int) {
			dir := t.TempDir()
			return newStorage(t, b.open(t, dir)(), c), func() int { return storedSets(t, dir) }
		}
		t.Run(b.name, func(t *testing.T) {
			t.Run("plain", func(t *testing.T) { storetest.Contract(t, open) })
			t.Run("sealed", func(t *testing.T) { storetest.Contract(t, sealedOpener(open)) })
		})
	}
}

// The instances of one store are Storages over one backend, as Caddy
// instances sharing a storage have. Plain and sealed run side by side:
// over the file storage, their race cases wait for lock polls.
func TestStorage_CASContract(t *testing.T) {
	for _, b := range storageBackends {
		open := func(t *testing.T, c *storetest.Clock) func() storetest.CASStore {
			backend := b.open(t, t.TempDir())
			return func() storetest.CASStore { return newStorage(t, backend(), c) }
		}
		opts := storetest.CASOptions{ErrPrefix: "oauth2_token: caddy storage: ", Race: b.race, DeleteRace: b.deleteRace}
		t.Run(b.name, func(t *testing.T) {
			t.Run("plain", func(t *testing.T) {
				t.Parallel()
				storetest.CASContract(t, open, opts)
			})
			t.Run("sealed", func(t *testing.T) {
				t.Parallel()
				storetest.CASContract(t, storetest.Sealed(open, sealKey), opts)
			})
		})
	}
}
