package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// PendingStore is a store that keeps pending connects, as PendingContract
// needs it.
type PendingStore interface {
	tokenstore.Store
	tokenstore.PendingStore
}

// PendingOpener makes one fresh, empty store that reads the time from now
// and returns the function that opens one more instance of it, as another
// process would.
type PendingOpener func(t *testing.T, now func() time.Time) (instance func() PendingStore)

// PendingContract checks what every tokenstore.PendingStore promises: a
// record put on one instance is taken once, on any instance; it is filed
// under its subject (another subject does not find it, nor consume it);
// the cap per subject drops that subject's oldest and no other's; expiry
// is checked on take with the store's clock; arguments out of range are
// errors that name neither the subject nor the record.
func PendingContract(t *testing.T, open PendingOpener, errPrefix string) {
	ctx := context.Background()
	const ttl = 10 * time.Minute
	mustPut := func(t *testing.T, s PendingStore, subject, id string, rec []byte, max int) {
		t.Helper()
		if err := s.PutPending(ctx, subject, id, rec, ttl, max); err != nil {
			t.Fatalf("PutPending(%s, %s): %v", subject, id, err)
		}
	}
	mustTake := func(t *testing.T, s PendingStore, subject, id string, want []byte) {
		t.Helper()
		got, err := s.TakePending(ctx, subject, id)
		if err != nil {
			t.Fatalf("TakePending(%s, %s): %v, want the record", subject, id, err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("TakePending(%s, %s) = %q, want %q", subject, id, got, want)
		}
	}
	mustMiss := func(t *testing.T, s PendingStore, subject, id, why string) {
		t.Helper()
		if got, err := s.TakePending(ctx, subject, id); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("TakePending(%s, %s) %s = %q, %v; want ErrNotFound", subject, id, why, got, err)
		}
	}
	// Every byte value, and a length a verifier and a subject key exceed.
	var rec []byte
	for i := range 300 {
		rec = append(rec, byte(i))
	}

	t.Run("taken once across instances", func(t *testing.T) {
		inst := open(t, newClock().Now)
		a, b := inst(), inst()
		mustPut(t, a, "user:alice", "id1", rec, 5)
		mustTake(t, b, "user:alice", "id1", rec)
		mustMiss(t, a, "user:alice", "id1", "after it was taken")
		mustMiss(t, b, "user:alice", "id1", "after it was taken")
		mustMiss(t, a, "user:alice", "never-put", "for an id never put")
	})
	t.Run("another subject neither finds nor consumes it", func(t *testing.T) {
		inst := open(t, newClock().Now)
		s := inst()
		mustPut(t, s, "user:alice", "id1", rec, 5)
		mustMiss(t, inst(), "user:mallory", "id1", "for another subject")
		mustTake(t, inst(), "user:alice", "id1", rec)
	})
	t.Run("the cap per subject drops that subject's oldest", func(t *testing.T) {
		inst := open(t, newClock().Now)
		a, b := inst(), inst()
		mustPut(t, a, "user:bob", "bob1", []byte("b1"), 3)
		for i := 1; i <= 5; i++ {
			mustPut(t, []PendingStore{a, b}[i%2], "user:alice", fmt.Sprintf("alice%d", i), []byte{byte(i)}, 3)
		}
		mustPut(t, b, "user:bob", "bob2", []byte("b2"), 3)
		mustMiss(t, a, "user:alice", "alice1", "beyond the cap")
		mustMiss(t, a, "user:alice", "alice2", "beyond the cap")
		for i := 3; i <= 5; i++ {
			mustTake(t, b, "user:alice", fmt.Sprintf("alice%d", i), []byte{byte(i)})
		}
		mustTake(t, a, "user:bob", "bob1", []byte("b1"))
		mustTake(t, a, "user:bob", "bob2", []byte("b2"))
	})
	t.Run("a taken record frees its place under the cap", func(t *testing.T) {
		inst := open(t, newClock().Now)
		s := inst()
		mustPut(t, s, "user:alice", "a1", []byte("1"), 2)
		mustPut(t, s, "user:alice", "a2", []byte("2"), 2)
		mustTake(t, s, "user:alice", "a2", []byte("2"))
		mustPut(t, s, "user:alice", "a3", []byte("3"), 2)
		mustTake(t, s, "user:alice", "a1", []byte("1"))
		mustTake(t, s, "user:alice", "a3", []byte("3"))
	})
	t.Run("expiry on take", func(t *testing.T) {
		c := newClock()
		inst := open(t, c.Now)
		s := inst()
		mustPut(t, s, "user:alice", "old", []byte("old"), 5)
		c.Advance(ttl - time.Second)
		mustPut(t, s, "user:alice", "young", []byte("young"), 5)
		c.Advance(time.Second)
		mustMiss(t, s, "user:alice", "old", "at its expiry")
		mustTake(t, inst(), "user:alice", "young", []byte("young"))
	})
	t.Run("concurrent takes: one wins", func(t *testing.T) {
		inst := open(t, newClock().Now)
		const takers = 8
		stores := make([]PendingStore, takers)
		for i := range stores {
			stores[i] = inst()
		}
		for round := range 3 {
			id := fmt.Sprintf("race%d", round)
			mustPut(t, stores[0], "user:alice", id, rec, 5)
			var won, missed atomic.Int64
			var wg sync.WaitGroup
			start := make(chan struct{})
			for _, s := range stores {
				wg.Go(func() {
					<-start
					got, err := s.TakePending(ctx, "user:alice", id)
					switch {
					case err == nil && bytes.Equal(got, rec):
						won.Add(1)
					case errors.Is(err, tokenstore.ErrNotFound):
						missed.Add(1)
					default:
						t.Errorf("TakePending = %q, %v", got, err)
					}
				})
			}
			close(start)
			wg.Wait()
			if won.Load() != 1 || missed.Load() != takers-1 {
				t.Fatalf("round %d: %d takes got the record, %d found nothing; want 1 and %d", round, won.Load(), missed.Load(), takers-1)
			}
		}
	})
	t.Run("bad arguments", func(t *testing.T) {
		s := open(t, newClock().Now)()
		for _, tt := range []struct {
			name string
			id   string
			ttl  time.Duration
			max  int
		}{
			{"empty id", "", ttl, 5},
			{"zero ttl", "id", 0, 5},
			{"zero cap", "id", ttl, 0},
		} {
			err := s.PutPending(ctx, "user:S3CRET-SUBJECT", tt.id, []byte("S3CRET-RECORD"), tt.ttl, tt.max)
			if err == nil {
				t.Fatalf("%s: PutPending succeeded", tt.name)
			}
			CheckError(t, err, errPrefix, "S3CRET")
		}
		if _, err := s.TakePending(ctx, "user:alice", ""); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("TakePending of an empty id: %v, want ErrNotFound", err)
		}
	})
}

// SealedPending is open with every instance it makes wrapped in
// tokenstore.Sealed under key: the contract holds through the encryption.
func SealedPending(open PendingOpener, key []byte, older ...[]byte) PendingOpener {
	return func(t *testing.T, now func() time.Time) func() PendingStore {
		inst := open(t, now)
		return func() PendingStore {
			s, err := tokenstore.NewSealed(inst(), key, older...)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}
}
