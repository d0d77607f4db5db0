package caddymodule

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// The connects in progress of a subject live in Caddy's storage under
//
//	oauth2_token/pending/<hex SHA-256 of the subject key>/<hex SHA-256 of the id>
//
// each value a header, put order [8] | expiry, Unix ns [8], then the
// record. Puts and takes of a subject hold its write lock (the one its
// token writes hold): a take is a Load and a Delete no other instance can
// come between, so a record is taken once across every instance sharing
// the storage, as far as the storage's locks are exclusive.
const (
	pendingPrefix    = "oauth2_token/pending/"
	pendingHeaderLen = 16
)

// PutPending stores the pending record rec of subjectKey under id for ttl
// and drops the subject's oldest records beyond maxPerSubject, and the
// expired ones (see tokenstore.PendingStore), holding the subject's write
// lock.
func (s *Storage) PutPending(ctx context.Context, subjectKey, id string, rec []byte, ttl time.Duration, maxPerSubject int) error {
	switch {
	case id == "":
		return errors.New("oauth2_token: caddy storage: put pending: empty id")
	case ttl <= 0:
		return fmt.Errorf("oauth2_token: caddy storage: put pending: ttl %v is not positive", ttl)
	case maxPerSubject < 1:
		return fmt.Errorf("oauth2_token: caddy storage: put pending: max per subject %d is below 1", maxPerSubject)
	}
	b := s.backend.Load()
	hash := keyHash(subjectKey)
	dir := pendingPrefix + hash
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: put pending: %w", err)
	}
	defer unlock()
	now := s.now()
	type entry struct {
		name string
		seq  uint64
	}
	var live []entry
	names, err := b.storage.List(ctx, dir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("oauth2_token: caddy storage: put pending %s: %w", dir, err)
	}
	var next uint64
	for _, name := range names {
		v, err := b.storage.Load(ctx, name)
		if errors.Is(err, fs.ErrNotExist) {
			continue // gone since the listing
		}
		if err != nil {
			return fmt.Errorf("oauth2_token: caddy storage: put pending %s: %w", name, err)
		}
		seq, expires, ok := pendingHeader(v)
		if !ok || !now.Before(expires) {
			if err := b.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("oauth2_token: caddy storage: put pending %s: %w", name, err)
			}
			continue
		}
		live = append(live, entry{name, seq})
		next = max(next, seq+1)
	}
	slices.SortFunc(live, func(a, b entry) int { return cmp.Compare(a.seq, b.seq) })
	for len(live) >= maxPerSubject {
		if err := b.storage.Delete(ctx, live[0].name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("oauth2_token: caddy storage: put pending %s: %w", live[0].name, err)
		}
		live = live[1:]
	}
	v := make([]byte, pendingHeaderLen, pendingHeaderLen+len(rec))
	binary.BigEndian.PutUint64(v, next)
	binary.BigEndian.PutUint64(v[8:], uint64(now.Add(ttl).UnixNano()))
	v = append(v, rec...)
	name := dir + "/" + keyHash(id)
	if err := b.storage.Store(ctx, name, v); err != nil {
		return fmt.Errorf("oauth2_token: caddy storage: put pending %s: %w", name, err)
	}
	return nil
}

// TakePending returns the pending record of subjectKey under id and
// deletes it, or tokenstore.ErrNotFound (see tokenstore.PendingStore),
// holding the subject's write lock. An expired record is deleted and not
// returned.
func (s *Storage) TakePending(ctx context.Context, subjectKey, id string) ([]byte, error) {
	if id == "" {
		return nil, tokenstore.ErrNotFound
	}
	b := s.backend.Load()
	hash := keyHash(subjectKey)
	name := pendingPrefix + hash + "/" + keyHash(id)
	if !b.storage.Exists(ctx, name) {
		return nil, tokenstore.ErrNotFound // not worth a lock
	}
	unlock, err := lockWrite(ctx, b, hash)
	if err != nil {
		return nil, fmt.Errorf("oauth2_token: caddy storage: take pending: %w", err)
	}
	defer unlock()
	v, err := b.storage.Load(ctx, name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, tokenstore.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("oauth2_token: caddy storage: take pending %s: %w", name, err)
	}
	if err := b.storage.Delete(ctx, name); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("oauth2_token: caddy storage: take pending %s: %w", name, err)
	}
	_, expires, ok := pendingHeader(v)
	if !ok {
		return nil, fmt.Errorf("oauth2_token: caddy storage: take pending %s: not a pending record (damaged, or written by something else)", name)
	}
	if !s.now().Before(expires) {
		return nil, tokenstore.ErrNotFound
	}
	return v[pendingHeaderLen:], nil
}

// pendingHeader reads the header of a stored pending record.
func pendingHeader(v []byte) (seq uint64, expires time.Time, ok bool) {
	if len(v) < pendingHeaderLen {
		return 0, time.Time{}, false
	}
	return binary.BigEndian.Uint64(v), time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))), true
}

var _ tokenstore.PendingStore = (*Storage)(nil)
