package storetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// Open makes one fresh, empty store that reads the time from now, and
// returns the function that opens one more instance of it, as another
// process would (another FileStore on the directory, another client of the
// Redis; a store that lives in one process returns the same value each
// time), and held, which counts the entries the store keeps (a dead set
// included, until a Get drops it), or nil to leave that check out.
type Open func(t *testing.T, now func() time.Time) (instance func() tokenstore.Store, held func() int)

// Run checks every contract the store open makes takes on, each as a
// subtest: Contract always; CASContract when the store is a
// tokenstore.CASStore whose CompareAndSet is supported (a Sealed over a
// store without one is not); PendingContract when
// tokenstore.AsPendingStore finds pending records in it. opts.ErrPrefix is
// required.
func Run(t *testing.T, open Open, opts Options) {
	t.Helper()
	if opts.ErrPrefix == "" {
		t.Fatal("storetest: Options.ErrPrefix is required")
	}
	probe, _ := open(t, newClock().Now)
	s := probe()
	t.Run("Contract", func(t *testing.T) {
		Contract(t, func(t *testing.T, now func() time.Time) (tokenstore.Store, func() int) {
			inst, held := open(t, now)
			return inst(), held
		})
	})
	if hasCAS(t, s) {
		t.Run("CASContract", func(t *testing.T) {
			CASContract(t, func(t *testing.T, now func() time.Time) func() CASStore {
				inst, _ := open(t, now)
				return func() CASStore { return inst().(CASStore) }
			}, opts)
		})
	}
	if _, ok := tokenstore.AsPendingStore(s); ok {
		t.Run("PendingContract", func(t *testing.T) {
			PendingContract(t, func(t *testing.T, now func() time.Time) func() PendingStore {
				inst, _ := open(t, now)
				return func() PendingStore { return inst().(PendingStore) }
			}, opts.ErrPrefix)
		})
	}
}

// hasCAS reports whether s has a compare-and-set that works: one
// CompareAndSet on a fresh store, which an unsupported one refuses with
// errors.ErrUnsupported.
func hasCAS(t *testing.T, s tokenstore.Store) bool {
	t.Helper()
	if _, ok := s.(CASStore); !ok {
		return false
	}
	err := s.(CASStore).CompareAndSet(context.Background(), "storetest:probe", 0, Sample(t0))
	switch {
	case errors.Is(err, errors.ErrUnsupported):
		return false
	case err != nil:
		t.Fatalf("storetest: the first CompareAndSet on a fresh store: %v", err)
	}
	return true
}

// SealedOpen is open with every instance it makes wrapped in
// tokenstore.Sealed under key (and the older keys, which only open): the
// contracts hold through the encryption.
func SealedOpen(open Open, key []byte, older ...[]byte) Open {
	return func(t *testing.T, now func() time.Time) (func() tokenstore.Store, func() int) {
		inst, held := open(t, now)
		return func() tokenstore.Store {
			s, err := tokenstore.NewSealed(inst(), key, older...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}, held
	}
}
