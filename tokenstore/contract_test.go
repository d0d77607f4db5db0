package tokenstore_test

import (
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// storetest.Run on the memory and file stores, plain and under Sealed,
// and compare-and-set on Sealed during a key rotation over the file
// store; redis_test.go runs it on RedisStore.

// casOptions are the storetest options of this package's stores.
var casOptions = storetest.Options{ErrPrefix: "tokenstore: "}

func TestMemoryStore_Contract(t *testing.T) {
	open := func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
		m := newStore(t, now)
		return func() tokenstore.Store { return m }, m.Len
	}
	storetest.Run(t, open, casOptions)
	t.Run("sealed", func(t *testing.T) { storetest.Run(t, storetest.SealedOpen(open, testKey("one")), casOptions) })
}

// The instances of one store are FileStores on one directory, as two
// processes would have.
func TestFileStore_Contract(t *testing.T) {
	open := func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
		dir := t.TempDir()
		return func() tokenstore.Store { return newFileStore(t, dir, now) }, func() int { return len(dirNames(t, dir)) }
	}
	storetest.Run(t, open, casOptions)
	t.Run("sealed", func(t *testing.T) { storetest.Run(t, storetest.SealedOpen(open, testKey("one")), casOptions) })
}

// Compare-and-set through Sealed with older keys and in the middle of a
// rotation; plain and sealed run in TestFileStore_Contract.
func TestFileStore_CASContract(t *testing.T) {
	open := func(t *testing.T, now func() time.Time) func() storetest.CASStore {
		dir := t.TempDir()
		return func() storetest.CASStore { return newFileStore(t, dir, now) }
	}
	t.Run("sealed, older keys", func(t *testing.T) {
		storetest.CASContract(t, storetest.Sealed(open, testKey("one"), testKey("two"), testKey("three")), casOptions)
	})
	t.Run("sealed, mid-rotation", func(t *testing.T) {
		storetest.CASContract(t, storetest.SealedRotation(open, testKey("one"), testKey("two")), casOptions)
	})
}
