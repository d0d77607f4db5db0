package tokenstore_test

import (
	"testing"

	"github.com/tasknation/tokengate/internal/storetest"
	"github.com/tasknation/tokengate/tokenstore"
)

// The contracts of package storetest on the memory and file stores, and
// compare-and-set on Sealed over the file store; redis_test.go runs them
// on RedisStore.

// casOptions are the CASContract options of this package's stores.
var casOptions = storetest.CASOptions{ErrPrefix: "tokenstore: "}

func TestMemoryStore_Contract(t *testing.T) {
	storetest.Contract(t, func(t *testing.T, c *clock) (tokenstore.Store, func() int) {
		m := newStore(t, c)
		return m, m.Len
	})
}

func TestFileStore_Contract(t *testing.T) {
	storetest.Contract(t, func(t *testing.T, c *clock) (tokenstore.Store, func() int) {
		dir := t.TempDir()
		return newFileStore(t, dir, c), func() int { return len(dirNames(t, dir)) }
	})
}

// The instances of one store are FileStores on one directory, as two
// processes would have.
func TestFileStore_CASContract(t *testing.T) {
	open := func(t *testing.T, c *clock) func() storetest.CASStore {
		dir := t.TempDir()
		return func() storetest.CASStore { return newFileStore(t, dir, c) }
	}
	storetest.CASContract(t, open, casOptions)
	t.Run("sealed", func(t *testing.T) { storetest.CASContract(t, storetest.Sealed(open, testKey("one")), casOptions) })
	t.Run("sealed, older keys", func(t *testing.T) {
		storetest.CASContract(t, storetest.Sealed(open, testKey("one"), testKey("two"), testKey("three")), casOptions)
	})
	t.Run("sealed, mid-rotation", func(t *testing.T) {
		storetest.CASContract(t, storetest.SealedRotation(open, testKey("one"), testKey("two")), casOptions)
	})
}
