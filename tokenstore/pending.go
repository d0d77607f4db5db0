package tokenstore

import (
	"context"
	"time"
)

// PendingStore is implemented by the shared stores that also keep the
// connects in progress of the user context (RedisStore, the Caddy storage
// adapter, and Sealed over either), so that a connect started on one
// instance of a fleet completes on any other.
//
// A pending record is opaque bytes (the middleware's state binding and
// PKCE verifier) filed under the subject key it was issued to and an id
// (a hash of the state: never the state itself). Implementations must be
// safe for concurrent use, across every process sharing the store.
type PendingStore interface {
	// PutPending stores rec under (subjectKey, id) for ttl and then drops
	// the oldest records of subjectKey beyond maxPerSubject (at least 1),
	// so that one subject's connects never evict another's.
	PutPending(ctx context.Context, subjectKey, id string, rec []byte, ttl time.Duration, maxPerSubject int) error
	// TakePending returns the record under (subjectKey, id) and deletes it,
	// atomically across the fleet: of any number of concurrent takes, one
	// gets it. It returns ErrNotFound when there is none (never stored,
	// stored for another subject, taken already, expired or evicted). An
	// error other than ErrNotFound leaves the record in place unless the
	// store could not tell (a reply lost after the delete).
	TakePending(ctx context.Context, subjectKey, id string) ([]byte, error)
}

// AsPendingStore returns s as a PendingStore when its connects in progress
// can live in it: s implements PendingStore and, for a Sealed, the store
// it wraps does too. The memory and file stores do not (a memory store is
// one process's; the file store's callers keep pending connects in
// memory).
func AsPendingStore(s Store) (PendingStore, bool) {
	if sl, ok := s.(*Sealed); ok {
		if _, ok := AsPendingStore(sl.inner); !ok {
			return nil, false
		}
		return sl, true
	}
	p, ok := s.(PendingStore)
	return p, ok
}
