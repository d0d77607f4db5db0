package tokenstore_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// storeFuzzSeeds are records for the store fuzz targets: plain ones,
// sealed ones (for store key "k" with testKey("one"), and one with another
// key), expired ones and broken ones.
func storeFuzzSeeds(f *testing.F) [][]byte {
	ctx := context.Background()
	enc := func(tok *tokenstore.Token) []byte { b, _ := tok.MarshalBinary(); return b }
	sealed := func(key []byte, tok *tokenstore.Token) []byte {
		inner := &mapStore{now: t0, m: map[string][]byte{}}
		if err := newSealed(f, inner, key).Set(ctx, "k", tok); err != nil {
			f.Fatal(err)
		}
		return inner.m["k"]
	}
	expired := sample(t0.Add(-400 * 24 * time.Hour))
	accessOnly := secretSample(t0)
	accessOnly.RefreshToken = ""
	good := enc(sample(t0))
	return [][]byte{
		good,
		enc(&tokenstore.Token{}),
		enc(versioned(77)),
		enc(expired),
		enc(&tokenstore.Token{AccessToken: "a", Expiry: t0.Add(time.Minute), Scopes: []string{"x", "", "y"}}),
		sealed(testKey("one"), secretSample(t0)),
		sealed(testKey("one"), accessOnly),
		sealed(testKey("one"), expired),
		sealed(testKey("two"), secretSample(t0)),
		good[:len(good)-1],
		append(good[:len(good):len(good)], 0),
		nil,
	}
}

// FuzzMemoryGet plants arbitrary entries in a MemoryStore's cache, as
// damage would, and reads them with MemoryStore.Get (its own decoder,
// which keeps the cache's copy instead of copying again) and through
// Sealed.Get. Each answer must agree with Token.UnmarshalBinary of the
// entry: the same token, ErrExpired for an unusable set, an error
// wrapping the corrupt-record error for one that does not decode; and for
// Sealed, an error wrapping ErrWrongKey, ErrTampered or ErrNotSealed for
// credentials that do not open.
func FuzzMemoryGet(f *testing.F) {
	for _, b := range storeFuzzSeeds(f) {
		f.Add(b)
	}
	ctx := context.Background()
	// A small cap: bigcache keeps an overwritten entry until it is
	// evicted, and each input overwrites one.
	m, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{Shards: 1, MaxSizeMB: 4, Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	s := newSealed(f, m, testKey("one"))
	junk := sample(t0)
	junk.AccessToken = "junk-junk-junk-junk"

	f.Fuzz(func(t *testing.T, b []byte) {
		if err := tokenstore.SetRawMemory(m, "k", b); err != nil {
			return // larger than a bigcache shard: not a token
		}
		var want tokenstore.Token
		decErr := want.UnmarshalBinary(b)

		got, err := m.Get(ctx, "k")
		checkStoreGet(t, "memory", got, err, &want, decErr)
		if err == nil {
			// The token must not share memory with the cache: replace
			// the entry and look again.
			if err := m.Set(ctx, "k", junk); err != nil {
				t.Fatal(err)
			}
			if !equal(got, &want) {
				t.Fatal("a token read from the store changed when the entry was replaced")
			}
		}
		if errors.Is(err, tokenstore.ErrExpired) {
			if _, err := m.Get(ctx, "k"); !errors.Is(err, tokenstore.ErrNotFound) || errors.Is(err, tokenstore.ErrExpired) {
				t.Fatalf("an expired entry was not deleted: second Get: %v", err)
			}
		}

		if err := tokenstore.SetRawMemory(m, "k", b); err != nil {
			t.Fatal(err)
		}
		got, err = s.Get(ctx, "k")
		checkSealedGet(t, s, got, err, &want, decErr)
	})
}

// FuzzFileGet writes arbitrary files where a FileStore keeps the record
// of a key, and reads them with FileStore.Get and through Sealed.Get:
// once as the whole file (the envelope), once as the token record inside
// a valid envelope (so that the record decoder is reached past the
// checksum). Each answer must agree with DecodeFileRecord and
// Token.UnmarshalBinary: the same token, ErrExpired (and the file gone)
// for an unusable set, ErrCorruptFile (and the file kept) for one that
// cannot be trusted.
func FuzzFileGet(f *testing.F) {
	owner := sha256.Sum256([]byte("k"))
	for _, b := range storeFuzzSeeds(f) {
		f.Add(b)
		f.Add(tokenstore.AppendFileRecord(nil, owner, b))
	}
	f.Add(tokenstore.AppendFileRecord(nil, sha256.Sum256([]byte("other")), storeFuzzSeeds(f)[0]))
	ctx := context.Background()
	fs, err := tokenstore.NewFileStore(f.TempDir(), tokenstore.FileOptions{Now: func() time.Time { return t0 }})
	if err != nil {
		f.Fatal(err)
	}
	s := newSealed(f, fs, testKey("one"))
	path := tokenstore.RecordPath(fs, "k")

	f.Fuzz(func(t *testing.T, b []byte) {
		for _, file := range [][]byte{b, tokenstore.AppendFileRecord(nil, owner, b)} {
			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			var want tokenstore.Token
			who, rec, envErr := tokenstore.DecodeFileRecord(file)
			decErr := envErr
			if decErr == nil && who != owner {
				decErr = errors.New("another key's record")
			}
			if decErr == nil && len(rec) > 1<<20 {
				decErr = errors.New("larger than any token record")
			}
			if decErr == nil {
				decErr = want.UnmarshalBinary(rec)
			}

			got, err := fs.Get(ctx, "k")
			_, statErr := os.Stat(path)
			switch {
			case err == nil:
				checkStoreGet(t, "file", got, err, &want, decErr)
			case errors.Is(err, tokenstore.ErrExpired):
				if decErr != nil || want.Usable(t0) {
					t.Fatalf("file: ErrExpired for a record that is not an unusable set (%v)", decErr)
				}
				if !os.IsNotExist(statErr) {
					t.Fatalf("file: an expired record was not removed: %v", statErr)
				}
			case errors.Is(err, tokenstore.ErrCorruptFile):
				if decErr == nil {
					t.Fatalf("file: %v, yet the record decodes", err)
				}
				if statErr != nil {
					t.Fatalf("file: a corrupt record was removed: %v", statErr)
				}
			default:
				t.Fatalf("file: unexpected error: %v", err)
			}

			if err := os.WriteFile(path, file, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err = s.Get(ctx, "k")
			if errors.Is(err, tokenstore.ErrCorruptFile) {
				if decErr == nil {
					t.Fatalf("sealed file: %v, yet the record decodes", err)
				}
				continue
			}
			checkSealedGet(t, s, got, err, &want, decErr)
		}
	})
}

// checkStoreGet checks the answer of a plain store's Get for an entry that
// Token.UnmarshalBinary decodes to want (decErr nil) or refuses.
func checkStoreGet(t *testing.T, store string, got *tokenstore.Token, err error, want *tokenstore.Token, decErr error) {
	t.Helper()
	switch {
	case err == nil:
		if decErr != nil {
			t.Fatalf("%s: Get decoded a record that UnmarshalBinary refuses (%v)", store, decErr)
		}
		if !equal(got, want) {
			t.Fatalf("%s: Get and UnmarshalBinary decode the record differently:\n %v %q %q\n %v %q %q",
				store, got, got.AccessToken, got.RefreshToken, want, want.AccessToken, want.RefreshToken)
		}
		if !got.Usable(t0) {
			t.Fatalf("%s: Get returned an unusable set: %v", store, got)
		}
	case errors.Is(err, tokenstore.ErrExpired):
		if decErr != nil || want.Usable(t0) {
			t.Fatalf("%s: ErrExpired for a record that is not an unusable set (%v)", store, decErr)
		}
	case errors.Is(err, tokenstore.ErrCorrupt):
		if decErr == nil {
			t.Fatalf("%s: %v, yet UnmarshalBinary decodes the record", store, err)
		}
	default:
		t.Fatalf("%s: unexpected error: %v", store, err)
	}
}

// checkSealedGet checks the answer of Sealed.Get for an entry of the inner
// store that Token.UnmarshalBinary decodes to want (decErr nil) or
// refuses: a set opens only when its credentials were sealed for it, and
// then round-trips.
func checkSealedGet(t *testing.T, s *tokenstore.Sealed, got *tokenstore.Token, err error, want *tokenstore.Token, decErr error) {
	t.Helper()
	ctx := context.Background()
	switch {
	case err == nil:
		if decErr != nil || !want.Usable(t0) {
			t.Fatalf("sealed: a set opened that the inner store should refuse (%v)", decErr)
		}
		meta, wantMeta := *got, *want
		meta.AccessToken, meta.RefreshToken, wantMeta.AccessToken, wantMeta.RefreshToken = "", "", "", ""
		if !equal(&meta, &wantMeta) {
			t.Fatalf("sealed: the clear fields changed on the way: %v, stored %v", got, want)
		}
		if (got.AccessToken == "") != (want.AccessToken == "") || (got.RefreshToken == "") != (want.RefreshToken == "") {
			t.Fatal("sealed: a credential appeared or vanished on the way")
		}
		if got.AccessToken != "" && got.AccessToken == want.AccessToken || got.RefreshToken != "" && got.RefreshToken == want.RefreshToken {
			t.Fatal("sealed: a credential came back as stored: it was never sealed")
		}
		if err := s.Set(ctx, "k2", got); err != nil {
			t.Fatal(err)
		}
		back, err := s.Get(ctx, "k2")
		if err != nil || !equal(back, got) {
			t.Fatalf("sealed: an opened set does not round-trip: %v", err)
		}
	case errors.Is(err, tokenstore.ErrExpired):
		if decErr != nil || want.Usable(t0) {
			t.Fatalf("sealed: ErrExpired for a record that is not an unusable set (%v)", decErr)
		}
	case errors.Is(err, tokenstore.ErrCorrupt):
		if decErr == nil {
			t.Fatalf("sealed: %v, yet UnmarshalBinary decodes the record", err)
		}
	case errors.Is(err, tokenstore.ErrWrongKey), errors.Is(err, tokenstore.ErrTampered), errors.Is(err, tokenstore.ErrNotSealed):
		if decErr != nil || !want.Usable(t0) || want.AccessToken == "" && want.RefreshToken == "" {
			t.Fatalf("sealed: %v for a set the inner store should not return (%v)", err, decErr)
		}
	default:
		t.Fatalf("sealed: unexpected error: %v", err)
	}
}
