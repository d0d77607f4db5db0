package caddymodule

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
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

	// Compare-and-set passes through, sealed.
	var cas tokenstore.CASStore = sealed(key1)
	next := casSet(t0, want.Version+1)
	checkCASError(t, cas.CompareAndSet(ctx, "user:alice", want.Version-1, next))
	if err := cas.CompareAndSet(ctx, "user:alice", want.Version, next); err != nil {
		t.Fatalf("CompareAndSet through Sealed: %v", err)
	}
	if got, err := sealed(key1).Get(ctx, "user:alice"); err != nil || !sameToken(got, next) {
		t.Fatalf("after CompareAndSet through Sealed: %v, %v", got, err)
	}
	raw, err = (&certmagic.FileStorage{Path: dir}).Load(ctx, storagePrefix+keyHash("user:alice"))
	if err != nil || strings.Contains(string(raw), "S3CRET") {
		t.Fatalf("CompareAndSet through Sealed stored a credential in clear (Load: %v)", err)
	}
	if err := sealed(key1).Delete(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	checkCASError(t, cas.CompareAndSet(ctx, "user:alice", next.Version, casSet(t0, next.Version+1)))
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

	refresh := map[string]bool{lockPrefix + keyHash("user:alice"): true, lockPrefix + keyHash("user:bob"): true}
	write := writeLockPrefix + keyHash("user:alice")
	wordChars := regexp.MustCompile(`^\w+$`)
	sawWrite := false
	for _, name := range backend.names {
		switch {
		case refresh[name]:
		case name == write:
			sawWrite = true
		default:
			t.Errorf("lock name %q, want %s<hex sha256 of the key> (Lock) or %s<hex sha256 of the key> (writes)", name, lockPrefix, writeLockPrefix)
		}
		if !wordChars.MatchString(name) || strings.Contains(name, "alice") {
			t.Errorf("lock name %q is not one opaque path component of word characters", name)
		}
	}
	if !sawWrite {
		t.Error("Set took no write lock")
	}
}

// casSet is a user set of the given version whose credentials say it.
func casSet(now time.Time, v uint64) *tokenstore.Token {
	tok := userSet(now)
	tok.Version = v
	tok.AccessToken = fmt.Sprintf("at-S3CRET-%d", v)
	return tok
}

// checkCASError fails unless err is a conflict, with the package prefix and
// without a credential or the key's text.
func checkCASError(t *testing.T, err error) {
	t.Helper()
	if !errors.Is(err, tokenstore.ErrConflict) {
		t.Fatalf("err = %v, want ErrConflict", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "oauth2_token: caddy storage: ") || strings.Contains(msg, "S3CRET") || strings.Contains(msg, "alice") {
		t.Fatalf("bad conflict error: %s", msg)
	}
}

// CompareAndSet has the semantics of tokenstore.RedisStore's.
func TestStorage_CompareAndSet(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		stored  *tokenstore.Token // nil: nothing stored
		advance time.Duration     // before the CompareAndSet
		old     uint64
		ok      bool
	}{
		{"absent, old 0: stored", nil, 0, 0, true},
		{"absent, old 5: conflict", nil, 0, 5, false},
		{"matching version: replaced", casSet(t0, 5), 0, 5, true},
		{"stale version: conflict", casSet(t0, 5), 0, 4, false},
		{"newer version expected: conflict", casSet(t0, 5), 0, 6, false},
		{"usable set, old 0: conflict", casSet(t0, 5), 0, 0, false},
		{"access expired, refresh token good, old 0: conflict", casSet(t0, 5), 2 * time.Hour, 0, false},
		{"dead set, old 0: stored", casSet(t0, 5), 181 * 24 * time.Hour, 0, true},
		{"dead set, its own version: replaced", casSet(t0, 5), 181 * 24 * time.Hour, 5, true},
		{"dead set, another version: conflict", casSet(t0, 5), 181 * 24 * time.Hour, 4, false},
		{"uint64 versions compared exactly", casSet(t0, 1<<63+1), 0, 1 << 63, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newTestClock(t0)
			s := newTestStorage(t, t.TempDir(), c)
			if tt.stored != nil {
				if err := s.Set(ctx, "user:alice", tt.stored); err != nil {
					t.Fatal(err)
				}
			}
			c.Advance(tt.advance)
			next := casSet(c.Now(), 77)
			err := s.CompareAndSet(ctx, "user:alice", tt.old, next)
			if tt.ok {
				if err != nil {
					t.Fatalf("CompareAndSet(old %d) = %v, want success", tt.old, err)
				}
				if got, err := s.Get(ctx, "user:alice"); err != nil || !sameToken(got, next) {
					t.Fatalf("after: Get = %v, %v; want %v", got, err, next)
				}
				return
			}
			checkCASError(t, err)
			t.Log(err)
			got, err := s.Get(ctx, "user:alice")
			if tt.stored == nil || !tt.stored.Usable(c.Now()) {
				if !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("a refused CompareAndSet stored something: Get = %v, %v", got, err)
				}
				return
			}
			if err != nil || !sameToken(got, tt.stored) {
				t.Fatalf("after a refused CompareAndSet: Get = %v, %v; want the set stored before", got, err)
			}
		})
	}
	t.Run("nil token", func(t *testing.T) {
		s := newTestStorage(t, t.TempDir(), newTestClock(t0))
		if err := s.CompareAndSet(ctx, "user:alice", 0, nil); err == nil || errors.Is(err, tokenstore.ErrConflict) {
			t.Fatalf("CompareAndSet of nil = %v, want an error other than a conflict", err)
		}
	})
	t.Run("damaged value", func(t *testing.T) {
		dir := t.TempDir()
		s := newTestStorage(t, dir, newTestClock(t0))
		if err := (&certmagic.FileStorage{Path: dir}).Store(ctx, storagePrefix+keyHash("user:alice"), []byte("garbage")); err != nil {
			t.Fatal(err)
		}
		err := s.CompareAndSet(ctx, "user:alice", 0, casSet(t0, 1))
		if err == nil || errors.Is(err, tokenstore.ErrConflict) || !strings.Contains(err.Error(), "not a token set") {
			t.Fatalf("CompareAndSet over a damaged value = %v, want an error saying so", err)
		}
	})
}

// A disconnect (Delete) on one instance is not undone by a refresh on
// another storing its rotated set.
func TestStorage_CompareAndSetAfterDelete(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	refresher, disconnecter := newTestStorage(t, dir, c), newTestStorage(t, dir, c)
	if err := refresher.Set(ctx, "user:alice", casSet(t0, 5)); err != nil {
		t.Fatal(err)
	}
	if err := disconnecter.Delete(ctx, "user:alice"); err != nil {
		t.Fatal(err)
	}
	checkCASError(t, refresher.CompareAndSet(ctx, "user:alice", 5, casSet(t0, 6)))
	if got, err := disconnecter.Get(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrNotFound) {
		t.Fatalf("after Delete and a refused CompareAndSet: Get = %v, %v; want ErrNotFound", got, err)
	}
	// A new connect is not refused.
	if err := refresher.CompareAndSet(ctx, "user:alice", 0, casSet(t0, 1)); err != nil {
		t.Fatalf("CompareAndSet(old 0) after Delete = %v", err)
	}
}

// The middleware stores the set it refreshed while holding the refresh
// lock: the writes take another lock, and do not wait for that one.
func TestStorage_WritesUnderRefreshLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	a, b := newTestStorage(t, dir, c), newTestStorage(t, dir, c)
	unlock, err := a.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.CompareAndSet(short, "user:alice", 0, casSet(t0, 1)); err != nil {
		t.Fatalf("CompareAndSet under the refresh lock: %v", err)
	}
	if err := b.Set(short, "user:alice", casSet(t0, 2)); err != nil {
		t.Fatalf("Set by another instance under the refresh lock: %v", err)
	}
	if err := b.Delete(short, "user:alice"); err != nil {
		t.Fatalf("Delete by another instance under the refresh lock: %v", err)
	}
}

// Set, CompareAndSet, Delete and the removal of a dead set all wait for
// the key's write lock: while another instance holds it, none of them
// writes.
func TestStorage_WritesHoldTheWriteLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fsys := &certmagic.FileStorage{Path: dir}
	c := newTestClock(t0)
	s := newTestStorage(t, dir, c)
	if err := s.Set(ctx, "user:alice", casSet(t0, 5)); err != nil {
		t.Fatal(err)
	}
	lock := writeLockPrefix + keyHash("user:alice")
	if err := fsys.Lock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	held := true
	defer func() {
		if held {
			fsys.Unlock(ctx, lock)
		}
	}()
	writes := map[string]func(context.Context) error{
		"Set":           func(ctx context.Context) error { return s.Set(ctx, "user:alice", casSet(t0, 6)) },
		"CompareAndSet": func(ctx context.Context) error { return s.CompareAndSet(ctx, "user:alice", 5, casSet(t0, 6)) },
		"Delete":        func(ctx context.Context) error { return s.Delete(ctx, "user:alice") },
	}
	for name, write := range writes {
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := write(short)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s while another instance holds the write lock: err = %v, want the context's deadline", name, err)
		}
		if got, err := s.Get(ctx, "user:alice"); err != nil || got.Version != 5 {
			t.Fatalf("after %s: Get = %v, %v; want version 5 untouched", name, got, err)
		}
	}
	// A dead set is reported, but left until the lock is free.
	c.Advance(181 * 24 * time.Hour)
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := s.Get(short, "user:alice")
	cancel()
	if !errors.Is(err, tokenstore.ErrExpired) {
		t.Fatalf("Get of a dead set = %v, want ErrExpired", err)
	}
	if _, err := fsys.Load(ctx, storagePrefix+keyHash("user:alice")); err != nil {
		t.Fatalf("the dead set was removed while the write lock was held: %v", err)
	}
	held = false
	if err := fsys.Unlock(ctx, lock); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrExpired) {
		t.Fatalf("Get of a dead set = %v, want ErrExpired", err)
	}
	if _, err := fsys.Load(ctx, storagePrefix+keyHash("user:alice")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the dead set is still there once the lock was free: %v", err)
	}
}

// Instances that all read version 1 race to store its successor over
// Caddy's file system storage: exactly one wins. (Its lock polls every
// second: few writers keep this short.)
func TestStorage_CompareAndSetRace(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := newTestClock(t0)
	if err := newTestStorage(t, dir, c).Set(ctx, "user:alice", casSet(t0, 1)); err != nil {
		t.Fatal(err)
	}
	const writers = 3
	var won, lost atomic.Int64
	var winner atomic.Uint64
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range writers {
		s := newTestStorage(t, dir, c)
		wg.Go(func() {
			tok := casSet(t0, uint64(100+i))
			<-start
			switch err := s.CompareAndSet(ctx, "user:alice", 1, tok); {
			case err == nil:
				won.Add(1)
				winner.Store(tok.Version)
			case errors.Is(err, tokenstore.ErrConflict):
				lost.Add(1)
			default:
				t.Error(err)
			}
		})
	}
	close(start)
	wg.Wait()
	if won.Load() != 1 || lost.Load() != writers-1 {
		t.Fatalf("%d writers won and %d lost, want 1 and %d", won.Load(), lost.Load(), writers-1)
	}
	if got, err := newTestStorage(t, dir, c).Get(ctx, "user:alice"); err != nil || !sameToken(got, casSet(t0, winner.Load())) {
		t.Fatalf("Get = %v, %v; want the winner's set, version %d", got, err, winner.Load())
	}
	if locks, _ := os.ReadDir(filepath.Join(dir, "locks")); len(locks) != 0 {
		t.Errorf("%d lock files left", len(locks))
	}
}

// Writers rotate a set with CompareAndSet from the version they last saw
// while another instance deletes it, over a storage module with fast
// locks (many rounds). None writes with old 0, so once Delete has returned
// nothing may be stored again.
func TestStorage_DeleteRacesCompareAndSet(t *testing.T) {
	ctx := context.Background()
	const rounds, writers = 30, 3
	for round := range rounds {
		backend := newLockingStorage(t.TempDir())
		c := newTestClock(t0)
		open := func() *Storage {
			s, err := NewStorage(backend, StorageOptions{Now: c.Now})
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if err := open().Set(ctx, "user:alice", casSet(t0, 1)); err != nil {
			t.Fatal(err)
		}
		var deleted atomic.Bool // Delete has returned
		var resurrected atomic.Int64
		wrote := make(chan struct{}, writers)
		var wg sync.WaitGroup
		for w := range writers {
			s := open()
			wg.Go(func() {
				cur := uint64(1)
				for i := uint64(1); i < 100_000; i++ {
					next := casSet(t0, uint64(w+1)<<32|i)
					after := deleted.Load()
					switch err := s.CompareAndSet(ctx, "user:alice", cur, next); {
					case err == nil:
						if after {
							resurrected.Add(1)
							return
						}
						cur = next.Version
						select {
						case wrote <- struct{}{}:
						default:
						}
					case errors.Is(err, tokenstore.ErrConflict):
						got, err := s.Get(ctx, "user:alice")
						if errors.Is(err, tokenstore.ErrNotFound) {
							return
						}
						if err != nil {
							t.Error(err)
							return
						}
						cur = got.Version
					default:
						t.Error(err)
						return
					}
				}
				t.Error("a writer never saw the set deleted")
			})
		}
		select {
		case <-wrote:
		case <-time.After(30 * time.Second):
			t.Fatal("the writers made no progress")
		}
		if err := open().Delete(ctx, "user:alice"); err != nil {
			t.Fatal(err)
		}
		deleted.Store(true)
		wg.Wait()
		if n := resurrected.Load(); n > 0 {
			t.Errorf("round %d: %d CompareAndSets that began after Delete returned succeeded", round, n)
		}
		if got, err := open().Get(ctx, "user:alice"); !errors.Is(err, tokenstore.ErrNotFound) {
			t.Fatalf("round %d: after Delete returned: Get = %v, %v; want ErrNotFound (a disconnect was undone)", round, got, err)
		}
	}
}
