package tokenstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/allegro/bigcache/v3"
)

// MemoryConfig sizes a MemoryStore. The zero value is a small store
// (a few MB): unlike bigcache.DefaultConfig it does not preallocate
// hundreds of megabytes, starts no cleanup goroutine and logs nothing.
type MemoryConfig struct {
	// Shards is the number of independently locked shards, a power of two.
	// Default: 16.
	Shards int
	// ExpectedEntries sizes the initial allocation. Default: 1024.
	ExpectedEntries int
	// MaxSizeMB caps the memory the store may use. bigcache reclaims the
	// space of an overwritten entry only by eviction, oldest first, once
	// the cap is reached: without a cap every refresh would grow the heap.
	// Past the cap the oldest entries are evicted, so a MemoryStore is a
	// cache: keep refresh tokens in a durable store. Default: 32.
	MaxSizeMB int
	// Now is the clock used to check expiry on read. Default: time.Now.
	Now func() time.Time
}

// MemoryStore is a Store in process memory, backed by bigcache so that many
// token sets cost the garbage collector nothing.
type MemoryStore struct {
	cache *bigcache.BigCache
	now   func() time.Time
}

// NewMemoryStore returns an empty MemoryStore. Close releases it.
func NewMemoryStore(cfg MemoryConfig) (*MemoryStore, error) {
	if cfg.Shards == 0 {
		cfg.Shards = 16
	}
	if cfg.ExpectedEntries <= 0 {
		cfg.ExpectedEntries = 1024
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxSizeMB <= 0 {
		cfg.MaxSizeMB = 32
	}
	cache, err := bigcache.New(context.Background(), bigcache.Config{
		Shards:             cfg.Shards,
		MaxEntriesInWindow: cfg.ExpectedEntries,
		MaxEntrySize:       256,
		HardMaxCacheSize:   cfg.MaxSizeMB,
		// Expiry is checked per entry on read; bigcache's own life window
		// only has to outlast the longest refresh token (180 days).
		LifeWindow: 200 * 24 * time.Hour,
		Logger:     bigcache.DefaultLogger(),
	})
	if err != nil {
		return nil, fmt.Errorf("tokenstore: memory store: %w", err)
	}
	return &MemoryStore{cache: cache, now: cfg.Now}, nil
}

// Get returns the token set stored under key, or ErrNotFound when there is
// none or nothing in it is usable any more (the entry is then deleted).
func (m *MemoryStore) Get(_ context.Context, key string) (*Token, error) {
	b, err := m.cache.Get(key)
	if err != nil {
		if errors.Is(err, bigcache.ErrEntryNotFound) {
			return nil, ErrNotFound
		}
		return nil, fmt.Errorf("tokenstore: memory get: %w", err)
	}
	r, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("tokenstore: memory get: %w", err)
	}
	if !r.usable(m.now()) {
		_ = m.cache.Delete(key)
		return nil, ErrExpired
	}
	d := decode(b, &r, true) // bigcache.Get returns a fresh copy
	return &d.Token, nil
}

// Set stores tok under key, replacing what was there.
func (m *MemoryStore) Set(_ context.Context, key string, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: memory set: nil token")
	}
	if err := m.cache.Set(key, tok.appendBinary(nil)); err != nil {
		return fmt.Errorf("tokenstore: memory set: %w", err)
	}
	return nil
}

// Delete removes key; deleting an absent key is not an error.
func (m *MemoryStore) Delete(_ context.Context, key string) error {
	if err := m.cache.Delete(key); err != nil && !errors.Is(err, bigcache.ErrEntryNotFound) {
		return fmt.Errorf("tokenstore: memory delete: %w", err)
	}
	return nil
}

// Len is the number of entries held, including ones not yet found expired.
func (m *MemoryStore) Len() int { return m.cache.Len() }

// Close releases the cache's memory. The store must not be used after.
func (m *MemoryStore) Close() error { return m.cache.Close() }

var _ Store = (*MemoryStore)(nil)
