package caddymodule

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/tasknation/tokengate/tokenstore"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testClock is a settable clock, safe for concurrent use.
type testClock struct{ ns atomic.Int64 }

func newTestClock(t time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(t.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// userSet is a user-context token set as the middleware stores it.
func userSet(now time.Time) *tokenstore.Token {
	return &tokenstore.Token{
		AccessToken:   "at-" + strings.Repeat("a", 40),
		TokenType:     "bearer",
		RefreshToken:  "rt-" + strings.Repeat("r", 40),
		Expiry:        now.Add(time.Hour),
		RefreshExpiry: now.Add(180 * 24 * time.Hour),
		Scopes:        []string{"supply::leads", "offline_access"},
		ObtainedAt:    now,
		Version:       7,
	}
}

func sameToken(a, b *tokenstore.Token) bool {
	return a.AccessToken == b.AccessToken && a.RefreshToken == b.RefreshToken && a.TokenType == b.TokenType &&
		a.Expiry.Equal(b.Expiry) && a.RefreshExpiry.Equal(b.RefreshExpiry) && a.ObtainedAt.Equal(b.ObtainedAt) &&
		a.Version == b.Version && strings.Join(a.Scopes, " ") == strings.Join(b.Scopes, " ")
}

func newTestStorage(t *testing.T, dir string, c *testClock) *Storage {
	t.Helper()
	s, err := NewStorage(&certmagic.FileStorage{Path: dir}, StorageOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStorage_GetSetDelete(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		tok     func() *tokenstore.Token
		advance time.Duration // between Set and Get
		wantErr error         // nil: the set comes back as stored
	}{
		{"full set", func() *tokenstore.Token { return userSet(t0) }, 0, nil},
		{"access expired, refresh token still good", func() *tokenstore.Token { return userSet(t0) }, 2 * time.Hour, nil},
		{"no refresh token (client credentials)", func() *tokenstore.Token {
			tok := userSet(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}, 0, nil},
		{"no scopes, zero times", func() *tokenstore.Token {
			return &tokenstore.Token{AccessToken: "at", TokenType: "Bearer", Expiry: t0.Add(time.Minute)}
		}, 0, nil},
		{"access expired, no refresh token", func() *tokenstore.Token {
			tok := userSet(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}, 2 * time.Hour, tokenstore.ErrExpired},
		{"refresh token ran out", func() *tokenstore.Token { return userSet(t0) }, 181 * 24 * time.Hour, tokenstore.ErrExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			c := newTestClock(t0)
			s := newTestStorage(t, dir, c)
			want := tt.tok()
			if err := s.Set(ctx, "user:k1", want); err != nil {
				t.Fatal(err)
			}
			c.Advance(tt.advance)
			got, err := s.Get(ctx, "user:k1")
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("Get = %v, %v; want an error wrapping %v and ErrNotFound", got, err, tt.wantErr)
				}
				// The dead set is gone from the storage.
				if _, err := (&certmagic.FileStorage{Path: dir}).Load(ctx, storagePrefix+keyHash("user:k1")); !errors.Is(err, os.ErrNotExist) {
					t.Fatalf("the expired set is still in the storage (Load: %v)", err)
				}
				if _, err := s.Get(ctx, "user:k1"); !errors.Is(err, tokenstore.ErrNotFound) || errors.Is(err, tokenstore.ErrExpired) {
					t.Fatalf("Get after the expired set was dropped = %v, want plain ErrNotFound", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !sameToken(got, want) {
				t.Fatalf("Get = %v, want %v", got, want)
			}
			if _, err := s.Get(ctx, "user:other"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("absent key: err = %v, want ErrNotFound", err)
			}
			next := tt.tok()
			next.Version++
			if err := s.Set(ctx, "user:k1", next); err != nil {
				t.Fatal(err)
			}
			if got, err := s.Get(ctx, "user:k1"); err != nil || got.Version != next.Version {
				t.Fatalf("after overwrite: %v, %v; want version %d", got, err, next.Version)
			}
			if err := s.Delete(ctx, "user:k1"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Get(ctx, "user:k1"); !errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("after delete: err = %v, want ErrNotFound", err)
			}
			if err := s.Delete(ctx, "user:k1"); err != nil {
				t.Fatalf("deleting an absent key: %v", err)
			}
		})
	}
}

// Keys stay one file under the prefix whatever their characters, and no
// key text shows in the storage.
func TestStorage_KeyLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStorage(t, dir, newTestClock(t0))
	const key = "user:../../escape/alice@example.com"
	if err := s.Set(ctx, key, userSet(t0)); err != nil {
		t.Fatal(err)
	}
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(dir, p)
			files = append(files, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := storagePrefix + keyHash(key); len(files) != 1 || files[0] != want {
		t.Fatalf("files in the storage: %v, want only %s", files, want)
	}
	if strings.Contains(files[0], "alice") || strings.Contains(files[0], "escape") {
		t.Fatalf("the storage key shows the key's text: %s", files[0])
	}
}

func TestStorage_DamagedRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fsys := &certmagic.FileStorage{Path: dir}
	s := newTestStorage(t, dir, newTestClock(t0))
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a token set at all")},
		{"truncated", func() []byte { b, _ := userSet(t0).MarshalBinary(); return b[:len(b)-3] }()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := fsys.Store(ctx, storagePrefix+keyHash("k"), tt.data); err != nil {
				t.Fatal(err)
			}
			tok, err := s.Get(ctx, "k")
			if err == nil || errors.Is(err, tokenstore.ErrNotFound) {
				t.Fatalf("Get = %v, %v; want an error other than not found", tok, err)
			}
			if !strings.Contains(err.Error(), "not a token set") {
				t.Fatalf("the error does not say what is wrong: %v", err)
			}
		})
	}
}

// A new store on the same storage, as after a restart, finds what the old
// one stored.
func TestStorage_SurvivesRestart(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	want := userSet(t0)
	if err := newTestStorage(t, dir, c).Set(ctx, "user:alice", want); err != nil {
		t.Fatal(err)
	}
	got, err := newTestStorage(t, dir, c).Get(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	if !sameToken(got, want) {
		t.Fatalf("after a restart: %v, want %v", got, want)
	}
}

func TestStorage_Sealed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	key1 := []byte(strings.Repeat("k", tokenstore.SealKeySize))
	key2 := []byte(strings.Repeat("K", tokenstore.SealKeySize))
	sealed := func(key []byte) *tokenstore.Sealed {
		s, err := tokenstore.NewSealed(newTestStorage(t, dir, c), key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := userSet(t0)
	if err := sealed(key1).Set(ctx, "user:alice", want); err != nil {
		t.Fatal(err)
	}
	raw, err := (&certmagic.FileStorage{Path: dir}).Load(ctx, storagePrefix+keyHash("user:alice"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), want.AccessToken) || strings.Contains(string(raw), want.RefreshToken) {
		t.Fatal("a credential is in clear in the storage")
	}
	got, err := sealed(key1).Get(ctx, "user:alice")
	if err != nil || !sameToken(got, want) {
		t.Fatalf("the same key after a restart: %v, %v", got, err)
	}
	got, err = sealed(key2).Get(ctx, "user:alice")
	if !errors.Is(err, tokenstore.ErrWrongKey) {
		t.Fatalf("another key: Get = %v, %v; want an error wrapping ErrWrongKey", got, err)
	}
	if strings.Contains(err.Error(), want.RefreshToken) || strings.Contains(err.Error(), string(key1)) {
		t.Fatalf("the error shows a credential or the key: %v", err)
	}
	if _, ok := any(sealed(key1)).(tokenstore.Locker); !ok {
		t.Fatal("Sealed over the Caddy storage is not a Locker")
	}
}

func TestStorage_LockExcludes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	a, b := newTestStorage(t, dir, c), newTestStorage(t, dir, c) // two instances, one storage

	unlockA, err := a.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	// Another key is free.
	unlockOther, err := b.Lock(ctx, "user:bob")
	if err != nil {
		t.Fatal(err)
	}
	unlockOther()

	// While a holds the lock, b's Lock waits: it gives up at its deadline.
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = b.Lock(short, "user:alice")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a second Lock while the first is held: err = %v, want the context's deadline", err)
	}

	var released atomic.Bool
	acquired := make(chan func(), 1)
	failed := make(chan error, 1)
	go func() {
		unlock, err := b.Lock(ctx, "user:alice")
		if err != nil {
			failed <- err
			return
		}
		if !released.Load() {
			failed <- errors.New("b took the lock while a held it")
			unlock()
			return
		}
		acquired <- unlock
	}()
	released.Store(true)
	unlockA()
	var unlockB func()
	select {
	case unlockB = <-acquired:
	case err := <-failed:
		t.Fatal(err)
	case <-time.After(15 * time.Second):
		t.Fatal("b did not get the lock after a released it")
	}

	// a's unlock again is a no-op: it must not release b's lock.
	unlockA()
	short, cancel = context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = a.Lock(short, "user:alice")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after a second unlock by a, Lock: err = %v, want b's lock still held", err)
	}
	unlockB()
	unlockC, err := a.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	unlockC()
}

// An unlock runs on its own context: a caller whose context is done by
// the time it unlocks still releases the lock.
func TestStorage_UnlockAfterCallerContextEnds(t *testing.T) {
	dir := t.TempDir()
	s := newTestStorage(t, dir, newTestClock(t0))
	ctx, cancel := context.WithCancel(context.Background())
	unlock, err := s.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	unlock()
	again, err := s.Lock(context.Background(), "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	again()
}

func TestNewStorage_Nil(t *testing.T) {
	if _, err := NewStorage(nil, StorageOptions{}); err == nil {
		t.Fatal("NewStorage(nil) succeeded")
	}
}

// lockingStorage is a certmagic.Storage other than the file system, as a
// storage module (Redis, S3, Consul, ...) provides it: its own Lock, which
// a waiter leaves when its context is done. It records the lock names.
type lockingStorage struct {
	certmagic.Storage // the data: a FileStorage
	mu                sync.Mutex
	locks             map[string]chan struct{} // a semaphore per lock name
	names             []string
}

func newLockingStorage(dir string) *lockingStorage {
	return &lockingStorage{Storage: &certmagic.FileStorage{Path: dir}, locks: map[string]chan struct{}{}}
}

func (s *lockingStorage) sem(name string) chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.locks[name] == nil {
		s.locks[name] = make(chan struct{}, 1)
	}
	s.names = append(s.names, name)
	return s.locks[name]
}

func (s *lockingStorage) Lock(ctx context.Context, name string) error {
	select {
	case s.sem(name) <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *lockingStorage) Unlock(_ context.Context, name string) error {
	select {
	case <-s.sem(name):
		return nil
	default:
		return errors.New("lockingStorage: unlock of a lock not held")
	}
}

// store caddy works over any storage module: reads and writes go through
// its Store/Load/Delete, refreshes of one key hold its own Lock (one lock
// name per key, a single path component of word characters), and a
// waiter gives up at its context's deadline.
func TestStorage_OtherBackendsLock(t *testing.T) {
	ctx := context.Background()
	backend := newLockingStorage(t.TempDir())
	c := newTestClock(t0)
	a, err := NewStorage(backend, StorageOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewStorage(backend, StorageOptions{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Set(ctx, "user:alice", userSet(t0)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "user:alice"); err != nil || !sameToken(got, userSet(t0)) {
		t.Fatalf("the other instance reads %v, %v; want the set stored", got, err)
	}

	unlock, err := a.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = b.Lock(short, "user:alice")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock while another instance holds it: err = %v, want the context's deadline", err)
	}
	unlockOther, err := b.Lock(ctx, "user:bob")
	if err != nil {
		t.Fatalf("another key's lock: %v", err)
	}
	unlockOther()
	unlock()
	unlock() // a no-op: the storage sees one Unlock
	unlockB, err := b.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatalf("Lock after the holder released it: %v", err)
	}
	unlockB()

	want := lockPrefix + keyHash("user:alice")
	for _, name := range backend.names {
		if name != want && name != lockPrefix+keyHash("user:bob") {
			t.Errorf("lock name %q, want %s<hex sha256 of the key>", name, lockPrefix)
		}
		if strings.ContainsAny(name, "/\\:") || strings.Contains(name, "alice") {
			t.Errorf("lock name %q is not one opaque path component", name)
		}
	}
}
