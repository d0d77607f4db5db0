package tokenstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

func FuzzUnmarshalBinary(f *testing.F) {
	connected := sample(t0)
	connected.ConnectedAt = t0.Add(-time.Hour)
	for _, tok := range []*tokenstore.Token{sample(t0), {}, versioned(77), {AccessToken: "a", Scopes: []string{"x", "", "y"}}, connected} {
		b, _ := tok.MarshalBinary()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var tok tokenstore.Token
		if err := tok.UnmarshalBinary(b); err != nil {
			return
		}
		again, err := tok.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		// One encoding per token: a record that decodes is exactly what
		// the encoder writes (the seed nonminimal-uvarint-length once
		// decoded: lengths in more bytes than needed).
		if !bytes.Equal(again, b) {
			t.Fatalf("decoded record re-encodes differently:\n in  %x\n out %x", b, again)
		}
	})
}

func FuzzFileRecord(f *testing.F) {
	rec, _ := sample(t0).MarshalBinary()
	f.Add(tokenstore.AppendFileRecord(nil, sha256.Sum256([]byte("k")), rec))
	f.Add(tokenstore.AppendFileRecord(nil, sha256.Sum256(nil), nil))
	f.Add([]byte("TGF1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		owner, rec, err := tokenstore.DecodeFileRecord(b)
		if err != nil {
			if owner != ([32]byte{}) || rec != nil {
				t.Fatal("a failed decode returned data")
			}
			return
		}
		if again := tokenstore.AppendFileRecord(nil, owner, rec); !bytes.Equal(again, b) {
			t.Fatalf("decoded envelope re-encodes differently:\n in  %x\n out %x", b, again)
		}
		var tok tokenstore.Token
		_ = tok.UnmarshalBinary(rec) // must not panic
	})
}

// FuzzSealedOpen hands Sealed.Get arbitrary credential fields, as a store
// someone tampered with would. The store seals with testKey("one") and
// also opens with testKey("two"); seeds include values sealed for key "k"
// of sealFuzzMeta with each.
func FuzzSealedOpen(f *testing.F) {
	ctx := context.Background()
	// Not a MemoryStore: bigcache keeps every overwritten entry until its
	// life window ends, and millions of Sets would fill the memory.
	inner := &mapStore{now: t0, m: map[string][]byte{}}
	s := newSealed(f, inner, testKey("one"), testKey("two"))

	for _, seal := range []*tokenstore.Sealed{s, newSealed(f, inner, testKey("two"))} {
		if err := seal.Set(ctx, "k", sealFuzzMeta(secretAccess, secretRefresh)); err != nil {
			f.Fatal(err)
		}
		raw, err := inner.Get(ctx, "k")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw.AccessToken, raw.RefreshToken)
		f.Add(raw.AccessToken, "")
	}
	f.Add("tgs1.", "tgs1.AAAA")
	f.Add("plain", "")

	f.Fuzz(func(t *testing.T, access, refresh string) {
		if err := inner.Set(ctx, "k", sealFuzzMeta(access, refresh)); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "k")
		switch {
		case err == nil:
			// Only genuine sealed values open: they must round-trip.
			if err := s.Set(ctx, "k2", got); err != nil {
				t.Fatal(err)
			}
			back, err := s.Get(ctx, "k2")
			if err != nil || !equal(back, got) {
				t.Fatalf("an opened token does not round-trip: %v", err)
			}
		case errors.Is(err, tokenstore.ErrNotFound):
			if access != "" || refresh != "" {
				t.Fatalf("ErrNotFound for a usable set: %v", err)
			}
		case errors.Is(err, tokenstore.ErrTampered), errors.Is(err, tokenstore.ErrWrongKey), errors.Is(err, tokenstore.ErrNotSealed):
		default:
			t.Fatalf("unexpected error: %v", err)
		}
	})
}

// sealFuzzMeta is the set FuzzSealedOpen stores, with the given (sealed or
// not) credentials.
func sealFuzzMeta(access, refresh string) *tokenstore.Token {
	tok := sample(t0)
	tok.AccessToken, tok.RefreshToken = access, refresh
	return tok
}

// mapStore is a minimal Store with MemoryStore's semantics (records kept
// encoded, expiry checked on read) and none of its memory behaviour.
type mapStore struct {
	now time.Time
	mu  sync.Mutex
	m   map[string][]byte
}

func (m *mapStore) Get(_ context.Context, key string) (*tokenstore.Token, error) {
	m.mu.Lock()
	b, ok := m.m[key]
	m.mu.Unlock()
	if !ok {
		return nil, tokenstore.ErrNotFound
	}
	tok := new(tokenstore.Token)
	if err := tok.UnmarshalBinary(b); err != nil {
		return nil, err
	}
	if !tok.Usable(m.now) {
		return nil, tokenstore.ErrNotFound
	}
	return tok, nil
}

func (m *mapStore) Set(_ context.Context, key string, tok *tokenstore.Token) error {
	b, _ := tok.MarshalBinary()
	m.mu.Lock()
	m.m[key] = b
	m.mu.Unlock()
	return nil
}

func (m *mapStore) Delete(_ context.Context, key string) error {
	m.mu.Lock()
	delete(m.m, key)
	m.mu.Unlock()
	return nil
}
