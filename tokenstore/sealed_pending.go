package tokenstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A sealed pending record is the record encrypted as a whole:
//
//	key id [4] | nonce [12] | AES-256-GCM ciphertext+tag
//
// with the additional authenticated data
//
//	"tokengate/sealed/pending/v1\x00" | uvarint(len(subject key)) | subject key | id
//
// so a record moved to another subject or another id fails to open.
const sealPendingAADTag = "tokengate/sealed/pending/v1\x00"

// PutPending seals rec, bound to subjectKey and id, and stores it in the
// inner store (see PendingStore). When the inner store keeps no pending
// records the error wraps errors.ErrUnsupported (see AsPendingStore).
func (s *Sealed) PutPending(ctx context.Context, subjectKey, id string, rec []byte, ttl time.Duration, maxPerSubject int) error {
	p, err := s.pendingInner("put pending")
	if err != nil {
		return err
	}
	aad := pendingAAD(subjectKey, id)
	k := &s.keys[0]
	blob := make([]byte, sealKeyIDLen+sealNonceLen, sealMinBlob+len(rec))
	copy(blob, k.id[:])
	rand.Read(blob[sealKeyIDLen:]) // never returns an error (Go 1.24+)
	blob = k.aead.Seal(blob, blob[sealKeyIDLen:], rec, aad)
	return p.PutPending(ctx, subjectKey, id, blob, ttl, maxPerSubject)
}

// TakePending takes the record from the inner store and opens it. The
// record is consumed even when it does not open: an error wrapping
// ErrWrongKey or ErrTampered.
func (s *Sealed) TakePending(ctx context.Context, subjectKey, id string) ([]byte, error) {
	p, err := s.pendingInner("take pending")
	if err != nil {
		return nil, err
	}
	blob, err := p.TakePending(ctx, subjectKey, id)
	if err != nil {
		return nil, err
	}
	if len(blob) < sealMinBlob {
		return nil, fmt.Errorf("%w: pending record: %d bytes, want at least %d", ErrTampered, len(blob), sealMinBlob)
	}
	k := s.key(blob[:sealKeyIDLen])
	if k == nil {
		return nil, fmt.Errorf("%w: pending record", ErrWrongKey)
	}
	nonce, ct := blob[sealKeyIDLen:sealKeyIDLen+sealNonceLen], blob[sealKeyIDLen+sealNonceLen:]
	rec, err := k.aead.Open(ct[:0], nonce, ct, pendingAAD(subjectKey, id))
	if err != nil {
		return nil, fmt.Errorf("%w: pending record", ErrTampered)
	}
	return rec, nil
}

func (s *Sealed) pendingInner(op string) (PendingStore, error) {
	if _, ok := AsPendingStore(s.inner); !ok {
		return nil, fmt.Errorf("tokenstore: sealed %s: the inner store (%T) keeps no pending records: %w", op, s.inner, errors.ErrUnsupported)
	}
	return s.inner.(PendingStore), nil
}

func pendingAAD(subjectKey, id string) []byte {
	b := make([]byte, 0, len(sealPendingAADTag)+binary.MaxVarintLen64+len(subjectKey)+len(id))
	b = append(b, sealPendingAADTag...)
	b = binary.AppendUvarint(b, uint64(len(subjectKey)))
	b = append(b, subjectKey...)
	return append(b, id...)
}

var _ PendingStore = (*Sealed)(nil)
