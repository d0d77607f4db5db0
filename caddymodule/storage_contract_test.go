package caddymodule

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
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

// TestStorage_Contract runs storetest.Run (the store contract,
// compare-and-set and pending connects) on Storage over each backend,
// plain and sealed. The instances of one store are Storages over one
// backend, as Caddy instances sharing a storage have. Plain and sealed
// run side by side: over the file storage, the race cases wait for lock
// polls.
func TestStorage_Contract(t *testing.T) {
	for _, b := range storageBackends {
		open := func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
			dir := t.TempDir()
			backend := b.open(t, dir)
			return func() tokenstore.Store { return newStorage(t, backend(), now) }, func() int { return storedSets(t, dir) }
		}
		opts := storetest.Options{ErrPrefix: "oauth2_token: caddy storage: ", Race: b.race, DeleteRace: b.deleteRace}
		t.Run(b.name, func(t *testing.T) {
			t.Run("plain", func(t *testing.T) {
				t.Parallel()
				storetest.Run(t, open, opts)
			})
			t.Run("sealed", func(t *testing.T) {
				t.Parallel()
				storetest.Run(t, storetest.SealedOpen(open, sealKey), opts)
			})
		})
	}
}
