package caddymodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// Where token sets live in Caddy's storage.
const (
	// storagePrefix is the storage "directory" of the token sets.
	storagePrefix = "oauth2_token/tokens/"
	// lockPrefix names the storage locks of Lock (the refresh locks). It
	// is a single path component of word characters, so that it survives
	// the sanitizing some storages apply to lock names (FileStorage keeps
	// [\w@.-] only).
	lockPrefix = "oauth2_token_refresh_"
	// writeLockPrefix names the storage locks that Set, CompareAndSet and
	// Delete hold (the write locks), word characters too. They are not
	// the refresh locks: a refresh holds its key's refresh lock while it
	// stores the rotated set with CompareAndSet.
	writeLockPrefix = "oauth2_token_write_"
	// unlockTimeout bounds an Unlock: a lock left behind blocks the other
	// instances until the storage deems it stale.
	unlockTimeout = 10 * time.Second
	// removeDeadWait bounds how long Get waits for the write lock to
	// remove a dead set: cleanup is not worth holding a request up for
	// (the next Get tries again).
	removeDeadWait = 2 * time.Second
)

// StorageOptions configures a Storage. The zero value is ready to use.
type StorageOptions struct {
	// Now is the clock used to check expiry on read. Default: time.Now.
	Now func() time.Time
	// Logger receives what cannot be returned (an unlock that failed).
	// Default: no logging.
	Logger *zap.Logger
}

// Storage is a tokenstore.Store and tokenstore.Locker over a Caddy storage
// (certmagic.Storage): the one a Caddy config sets up with its `storage`
// global option (the file system under Caddy's data directory by default,
// or a shared backend). Caddy instances that share a storage share the
// tokens kept in it, and their refreshes of one key hold one lock.
//
// A token set is one storage key, oauth2_token/tokens/<hex SHA-256 of the
// key>, whose value is Token.MarshalBinary: the key is hashed (again) so
// that whatever its characters it is one path component, and no key text
// is visible in the storage. Values are in clear; wrap the Storage in
// tokenstore.NewSealed to encrypt the credentials.
//
// Set, CompareAndSet and Delete of a key hold its write lock, a storage
// lock named oauth2_token_write_<hex SHA-256 of the key>, across their
// Load and Store (or Delete), so a CompareAndSet is atomic with respect to
// the writes of every instance sharing the storage, as far as the
// storage's locks are exclusive (FileStorage's is, unless a holder stops
// keeping it fresh for 10 seconds). A disconnect (Delete) is thus not
// undone by a refresh elsewhere that stores its rotated set with
// CompareAndSet. Every write costs a Lock and an Unlock of the storage.
//
// A Storage is safe for concurrent use, as Caddy requires of its storages.
type Storage struct {
	backend atomic.Pointer[storageBackend]
	now     func() time.Time
}

// storageBackend is what a config reload swaps: the newest config's
// storage and logger.
type storageBackend struct {
	storage certmagic.Storage
	logger  *zap.Logger
}

// NewStorage returns a token store kept in storage.
func NewStorage(storage certmagic.Storage, opts StorageOptions) (*Storage, error) {
	if storage == nil {
		return nil, errors.New("oauth2_token: caddy storage: nil storage")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Storage{now: opts.Now}
	s.use(storage, opts.Logger)
	return s, nil
}

// use makes s read and write through storage from now on. A token source
// pooled across Caddy reloads outlives the config whose storage it was
// built with; each new config hands it its own storage (the same place,
// as the pool key says, but a module instance that the old config's
// cleanup may have shut down).
func (s *Storage) use(storage certmagic.Storage, logger *zap.Logger) {
	if logger == nil {
		logger = zap.NewNop()
	}
	s.backend.Store(&storageBackend{storage: storage, logger: logger})
}

// storageIdentity names where storage keeps its data, for the pool key:
// the type, and its String when it has one (FileStorage: its path).
func storageIdentity(storage certmagic.Storage) string {
	if sv, ok := storage.(fmt.Stringer); ok {
		return fmt.Sprintf("%T:%s", storage, sv.String())
	}
	return fmt.Sprintf("%T", storage)
}

// keyHash is the hex SHA-256 of a caller's key.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// Get returns the token set stored under key, tokenstore.ErrNotFound when
// there is none, and tokenstore.ErrExpired (which wraps ErrNotFound) when
// nothing in it is usable any more; such a set is deleted. A value that
// does not decode is an error that says so.
func (s *Storage) Get(ctx context.Context, key string) (*tokenstore.Token, error) {
	b := s.backend.Load()
	hash := keyHash(key)
	name := storagePrefix + hash
	data, err := b.storage.Load(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, tokenstore.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("oauth2_token: caddy storage: get %s: %w", name, err)
	}
	tok := new(tokenstore.Token)
	if err := tok.UnmarshalBinary(data); err != nil {
		return nil, fmt.Errorf("oauth2_token: caddy storage: get %s: not a token set (damaged, or written by something else): %w", name, err)
	}
	if !tok.Usable(s.now()) {
		s.removeDead(ctx, b, hash, name, data)
		return nil, tokenstore.ErrExpired
	}
	return tok, nil
}

// removeDead deletes the record dead found at name, for the key whose
// hash is hash, unless it has changed since: another instance may have
// stored a new set there in the meantime (a connect). It holds the key's
// write lock, so no write falls between its check and its delete, but it
// waits for it at most removeDeadWait. Removal is best effort; the next
// Get tries again.
func (s *Storage) removeDead(ctx context.Context, b *storageBackend, hash, name string, dead []byte) {
	ctx, cancel := context.WithTimeout(ctx, removeDeadWait)
	defer cancel()
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return
	}
	defer unlock()
	now, err := b.storage.Load(ctx, name)
	if err != nil || !bytes.Equal(now, dead) {
		return
	}
	if err := b.storage.Delete(ctx, name); err != nil {
		b.logger.Warn("removing an expired token set from caddy storage failed", zap.String("key", name), zap.Error(err))
	}
}

// Set stores tok under key, replacing what was there, holding the key's
// write lock.
func (s *Storage) Set(ctx context.Context, key string, tok *tokenstore.Token) error {
	if tok == nil {
		return errors.New("oauth2_token: caddy storage: set: nil token")
	}
	data, err := tok.MarshalBinary()
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: set: %w", err)
	}
	b := s.backend.Load()
	hash := keyHash(key)
	name := storagePrefix + hash
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: set: %w", err)
	}
	defer unlock()
	if err := b.storage.Store(ctx, name, data); err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: set %s: %w", name, err)
	}
	return nil
}

// CompareAndSet stores tok under key if the set stored there has Version
// old, or, when old is 0, if no set is stored or nothing in it is usable
// (Get would say tokenstore.ErrExpired); else it returns an error wrapping
// tokenstore.ErrConflict and stores nothing. Load, compare and Store hold
// the key's write lock. A stored value that does not decode is an error
// that says so (neither a match nor a conflict).
func (s *Storage) CompareAndSet(ctx context.Context, key string, old uint64, tok *tokenstore.Token) error {
	if tok == nil {
		return errors.New("oauth2_token: caddy storage: compare-and-set: nil token")
	}
	data, err := tok.MarshalBinary()
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: compare-and-set: %w", err)
	}
	b := s.backend.Load()
	hash := keyHash(key)
	name := storagePrefix + hash
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: compare-and-set: %w", err)
	}
	defer unlock()
	cur, err := b.storage.Load(ctx, name)
	stored := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("oauth2_token: caddy storage: compare-and-set %s: %w", name, err)
	}
	var have tokenstore.Token
	if stored {
		if err := have.UnmarshalBinary(cur); err != nil {
			return fmt.Errorf("oauth2_token: caddy storage: compare-and-set %s: not a token set (damaged, or written by something else): %w", name, err)
		}
	}
	usable := stored && have.Usable(s.now())
	if !(stored && have.Version == old) && !(old == 0 && !usable) {
		if !usable {
			return fmt.Errorf("oauth2_token: caddy storage: compare-and-set %s: nothing usable is stored, want version %d: %w", name, old, tokenstore.ErrConflict)
		}
		return fmt.Errorf("oauth2_token: caddy storage: compare-and-set %s: version %d is stored, want %d: %w", name, have.Version, old, tokenstore.ErrConflict)
	}
	if err := b.storage.Store(ctx, name, data); err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: compare-and-set %s: %w", name, err)
	}
	return nil
}

// Delete removes key, holding its write lock; deleting an absent key is
// not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	b := s.backend.Load()
	hash := keyHash(key)
	name := storagePrefix + hash
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: delete: %w", err)
	}
	defer unlock()
	if err := b.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("oauth2_token: caddy storage: delete %s: %w", name, err)
	}
	return nil
}

// lockWrite takes the write lock of the key whose hash is hash in b's
// storage and returns the function that releases it, which must be called
// exactly once.
func lockWrite(ctx context.Context, b *storageBackend, hash string) (unlock func(), err error) {
	name := writeLockPrefix + hash
	if err := b.storage.Lock(ctx, name); err != nil {
		return nil, fmt.Errorf("write lock %s: %w", name, err)
	}
	return func() { release(b, name) }, nil
}

// release unlocks the storage lock name on a context of its own: the
// caller's may be done by now, and the lock must go all the same. It
// unlocks on the storage that locked, even if a reload has swapped it
// since.
func release(b *storageBackend, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), unlockTimeout)
	defer cancel()
	if err := b.storage.Unlock(ctx, name); err != nil {
		b.logger.Warn("releasing a token lock in caddy storage failed; other instances wait until it is stale",
			zap.String("lock", name), zap.Error(err))
	}
}

// Lock takes the storage's refresh lock of key, oauth2_token_refresh_<hex
// SHA-256 of the key> (certmagic's Locker: across every instance sharing
// the storage), and returns the function that releases it, which may be
// called more than once (only the first call unlocks). It waits until the
// lock is free or ctx is done. How fast a waiter notices a released lock,
// and when an abandoned lock is deemed stale, is the storage's: Caddy's
// file system storage polls every second and takes over a lock not kept
// fresh for 10 seconds. It only excludes other callers of Lock: the
// writes take the key's write lock, another lock, so the holder can store
// the set it refreshed.
func (s *Storage) Lock(ctx context.Context, key string) (unlock func(), err error) {
	b := s.backend.Load()
	name := lockPrefix + keyHash(key)
	if err := b.storage.Lock(ctx, name); err != nil {
		return nil, fmt.Errorf("oauth2_token: caddy storage: lock %s: %w", name, err)
	}
	var once sync.Once
	return func() { once.Do(func() { release(b, name) }) }, nil
}

// Interface guards
var (
	_ tokenstore.Store    = (*Storage)(nil)
	_ tokenstore.Locker   = (*Storage)(nil)
	_ tokenstore.CASStore = (*Storage)(nil)
)
