package caddymodule

import (
	"context"
	"errors"
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

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sealKey is the sealing key of the tests of Sealed over a Storage.
var sealKey = []byte(strings.Repeat("k", tokenstore.SealKeySize))

// setOf is a full set of version v.
func setOf(v uint64) *tokenstore.Token {
	tok := storetest.SecretSample(t0)
	tok.Version = v
	return tok
}

// newStorage is a Storage over backend that reads the time from now.
func newStorage(t *testing.T, backend certmagic.Storage, now func() time.Time) *Storage {
	t.Helper()
	s, err := NewStorage(backend, StorageOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newTestStorage is a Storage over Caddy's file system storage in dir.
func newTestStorage(t *testing.T, dir string, now func() time.Time) *Storage {
	t.Helper()
	return newStorage(t, &certmagic.FileStorage{Path: dir}, now)
}

// Keys stay one file under the prefix whatever their characters, and no
// key text shows in the storage.
func TestStorage_KeyLayout(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s := newTestStorage(t, dir, testkit.NewClockAt(t0).Now)
	const key = "user:../../escape/alice@example.com"
	if err := s.Set(ctx, key, storetest.Sample(t0)); err != nil {
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

// A value that does not decode is an error that says so, for Get and
// CompareAndSet alike: neither not found, nor a match, nor a conflict.
func TestStorage_DamagedRecord(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fsys := &certmagic.FileStorage{Path: dir}
	s := newTestStorage(t, dir, testkit.NewClockAt(t0).Now)
	for _, tt := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not a token set at all")},
		{"truncated", func() []byte { b, _ := storetest.Sample(t0).MarshalBinary(); return b[:len(b)-3] }()},
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
			err = s.CompareAndSet(ctx, "k", 0, setOf(1))
			if err == nil || errors.Is(err, tokenstore.ErrConflict) || !strings.Contains(err.Error(), "not a token set") {
				t.Fatalf("CompareAndSet over a damaged value = %v, want an error saying so", err)
			}
		})
	}
}

func TestStorage_Sealed(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := testkit.NewClockAt(t0)
	key1 := sealKey
	key2 := []byte(strings.Repeat("K", tokenstore.SealKeySize))
	sealed := func(key []byte) *tokenstore.Sealed {
		s, err := tokenstore.NewSealed(newTestStorage(t, dir, c.Now), key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	want := storetest.Sample(t0)
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
	if err != nil || !storetest.Equal(got, want) {
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

	// Compare-and-set passes through, sealed (its semantics through
	// Sealed: TestStorage_CASContract).
	var cas tokenstore.CASStore = sealed(key1)
	next := setOf(want.Version + 1)
	if err := cas.CompareAndSet(ctx, "user:alice", want.Version, next); err != nil {
		t.Fatalf("CompareAndSet through Sealed: %v", err)
	}
	if got, err := sealed(key1).Get(ctx, "user:alice"); err != nil || !storetest.Equal(got, next) {
		t.Fatalf("after CompareAndSet through Sealed: %v, %v", got, err)
	}
	raw, err = (&certmagic.FileStorage{Path: dir}).Load(ctx, storagePrefix+keyHash("user:alice"))
	if err != nil || strings.Contains(string(raw), "S3CRET") {
		t.Fatalf("CompareAndSet through Sealed stored a credential in clear (Load: %v)", err)
	}
}

func TestStorage_LockExcludes(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := testkit.NewClockAt(t0)
	a, b := newTestStorage(t, dir, c.Now), newTestStorage(t, dir, c.Now) // two instances, one storage

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
	s := newTestStorage(t, dir, testkit.NewClockAt(t0).Now)
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

// held lists the locks held now.
func (s *lockingStorage) held() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	for name, sem := range s.locks {
		if len(sem) > 0 {
			names = append(names, name)
		}
	}
	return names
}

// store caddy works over any storage module: reads and writes go through
// its Store/Load/Delete, refreshes of one key hold its own Lock (one lock
// name per key, a single path component of word characters), and a
// waiter gives up at its context's deadline.
func TestStorage_OtherBackendsLock(t *testing.T) {
	ctx := context.Background()
	backend := newLockingStorage(t.TempDir())
	c := testkit.NewClockAt(t0)
	a, b := newStorage(t, backend, c.Now), newStorage(t, backend, c.Now)
	if err := a.Set(ctx, "user:alice", storetest.Sample(t0)); err != nil {
		t.Fatal(err)
	}
	if got, err := b.Get(ctx, "user:alice"); err != nil || !storetest.Equal(got, storetest.Sample(t0)) {
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

// The middleware stores the set it refreshed while holding the refresh
// lock: the writes take another lock, and do not wait for that one.
func TestStorage_WritesUnderRefreshLock(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	c := testkit.NewClockAt(t0)
	a, b := newTestStorage(t, dir, c.Now), newTestStorage(t, dir, c.Now)
	unlock, err := a.Lock(ctx, "user:alice")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.CompareAndSet(short, "user:alice", 0, setOf(1)); err != nil {
		t.Fatalf("CompareAndSet under the refresh lock: %v", err)
	}
	if err := b.Set(short, "user:alice", setOf(2)); err != nil {
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
	c := testkit.NewClockAt(t0)
	s := newTestStorage(t, dir, c.Now)
	if err := s.Set(ctx, "user:alice", setOf(5)); err != nil {
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
		"Set":           func(ctx context.Context) error { return s.Set(ctx, "user:alice", setOf(6)) },
		"CompareAndSet": func(ctx context.Context) error { return s.CompareAndSet(ctx, "user:alice", 5, setOf(6)) },
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
