package tokenstore

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// A RedisStore keeps two keys per caller key in Redis, both named from the
// hex SHA-256 of the caller's key so that nothing readable lands in Redis:
//
//	<ns>:{<hex sha256(key)>}:tok    HASH: the token set
//	    v  Token.Version in decimal (what CompareAndSet compares)
//	    d  Token.MarshalBinary
//	    u  until when something in the set is usable, Unix ms rounded up,
//	       or "-" for no limit (a refresh token of unknown lifetime)
//	<ns>:{<hex sha256(key)>}:lock   STRING: the random owner of the refresh lease
//
// The hash in braces is a Redis Cluster hash tag: a key's set and lease
// live in one hash slot, on one node, and fail over together.
//
// The set's key expires a minute after the last moment anything in it is
// usable: the refresh token's expiry, the access token's when there is no
// refresh token, 180 days (TaskNation's refresh lifetime) for a refresh
// token of unknown lifetime. The TTL is relative and computed with the
// store's clock, so a Redis server whose clock is off does not shorten it.
const (
	redisTTLMargin       = time.Minute
	redisUnknownRefresh  = 180 * 24 * time.Hour
	redisDefaultLeaseTTL = 15 * time.Second
	// redisMinLeaseTTL keeps the renewal period (a third of the lease) at
	// something a round trip to Redis fits in.
	redisMinLeaseTTL = 30 * time.Millisecond
	redisLockPollMin = 2 * time.Millisecond
	redisLockPollMax = 100 * time.Millisecond
	// redisUnlockTimeout bounds the release of a lease; one that cannot be
	// released runs out by itself within LeaseTTL.
	redisUnlockTimeout = 2 * time.Second
	redisNoLimit       = "-"
	redisDefaultNS     = "tokengate"
	// redisDefaultWaitTimeout bounds the wait for replicas to acknowledge a
	// write: a replica on the same network acknowledges in a millisecond.
	redisDefaultWaitTimeout = time.Second
)

// redisWrite replaces the set in KEYS[1], unconditionally (ARGV[1] "set")
// or only if its version is still ARGV[2] (ARGV[1] "cas"; "0" also matches
// no set, or a set of which nothing is usable at ARGV[3], Unix ms).
// ARGV[4..6] are the new v, d and u, ARGV[7] the TTL in ms. It returns {1,
// connected replicas} when it wrote (the replicas counted only when ARGV[8]
// is "1", else 0), else {0, stored version or "", usable "1"/"0"}.
// Versions are compared as strings: Lua numbers are doubles and lose
// uint64s.
var redisWrite = redis.NewScript(`
if ARGV[1] == 'cas' then
  local cur = redis.call('HMGET', KEYS[1], 'v', 'u')
  local v, u = cur[1], cur[2]
  local until_ms = tonumber(u)
  local usable = v and not (until_ms and until_ms <= tonumber(ARGV[3]))
  if v ~= ARGV[2] and not (ARGV[2] == '0' and not usable) then
    return {0, v or '', usable and '1' or '0'}
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[4], 'd', ARGV[5], 'u', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
local replicas = 0
if ARGV[8] == '1' then
  replicas = tonumber(string.match(redis.call('INFO', 'replication'), 'connected_slaves:(%d+)')) or 0
end
return {1, replicas}
`)

// redisDelete deletes the set in KEYS[1] for Delete when replicas are to
// be waited for. It then writes KEYS[2], a marker in the same hash slot
// that lives ARGV[1] ms, so that the connection has written something
// even when the set was gone already (deleted by an earlier Delete that
// no replica acknowledged): a WAIT after it then covers everything the
// primary wrote before, that delete included. With ARGV[2] '1' it counts
// the connected replicas first and, with none, only deletes: a standalone
// Redis has no one to wait for. It returns the count (-1 uncounted).
var redisDelete = redis.NewScript(`
local replicas = -1
if ARGV[2] == '1' then
  replicas = tonumber(string.match(redis.call('INFO', 'replication'), 'connected_slaves:(%d+)')) or 0
end
redis.call('DEL', KEYS[1])
if replicas ~= 0 then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
return replicas
`)

// redisDeleteMark is how long Delete's marker (see redisDelete) lives.
const redisDeleteMark = time.Minute

// redisDeleteIfSame deletes the set in KEYS[1] if its record is still
// ARGV[1]: Get drops a dead set without losing one written since it read.
var redisDeleteIfSame = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'd') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// redisAcquire takes the lease KEYS[1] for owner ARGV[1] for ARGV[2] ms if
// it is free (SET NX PX). It also answers 1 when ARGV[1] holds it already:
// a SET that go-redis retried after losing the first reply must not leave
// the caller waiting for its own lease.
var redisAcquire = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return 1
end
return 0
`)

// redisRenew extends the lease in KEYS[1] to ARGV[2] ms if ARGV[1] still
// owns it; 0 when the lease was lost.
var redisRenew = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// redisRelease deletes the lease in KEYS[1] if ARGV[1] still owns it, so a
// holder whose lease ran out does not free the next holder's.
var redisRelease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// RedisOptions configures a RedisStore. The zero value is ready to use.
type RedisOptions struct {
	// Namespace prefixes every key the store writes, so that several
	// deployments can share one Redis database. Default: tokengate
	Namespace string
	// LeaseTTL is the lifetime of a refresh lease (Lock). The holder
	// renews it every LeaseTTL/3 while it holds it; a holder that dies
	// without unlocking blocks the key for at most LeaseTTL. At least
	// 30ms. Default: 15s
	LeaseTTL time.Duration
	// MinReplicas is how many replicas must acknowledge a compare-and-set
	// (the write of a rotated refresh token, whose predecessor is spent)
	// or a Delete (a disconnect) before it counts as stored: the store
	// sends WAIT on the connection that wrote, to the primary that owns
	// the key. A write fewer replicas acknowledged within WaitTimeout is
	// an error wrapping ErrNotReplicated (it is on the primary, but a
	// failover may lose it). 0 waits for one replica when the primary
	// reports any connected, and for none when it has no replica (a
	// standalone Redis); -1 never waits. Default: 0
	MinReplicas int
	// WaitTimeout bounds the wait for MinReplicas. Default: 1s
	WaitTimeout time.Duration
	// Now is the clock used to check expiry on read and to compute TTLs.
	// Default: time.Now
	Now func() time.Time
}

// RedisStore is a durable Store and Locker shared by every process using
// the same Redis: a standalone server, a Sentinel-managed primary
// (redis.NewFailoverClient) or a cluster (redis.NewClusterClient); every
// command and script touches the keys of one hash slot.
//
// Key names carry only the namespace and a hash of the caller's key (see
// above), but the token sets are stored as Token.MarshalBinary: wrap the
// store in Sealed to encrypt the credentials.
//
// Lock is a lease: SET NX PX with a random owner, renewed while held and
// released only by its owner. A holder cut off from Redis for longer than
// LeaseTTL, or whose lease a failover lost (the lease is not waited for),
// loses it while it may still be refreshing; CompareAndSet keeps such a
// holder from overwriting the set the next holder stored.
//
// A RedisStore is safe for concurrent use. It does not own the client.
type RedisStore struct {
	c           redis.UniversalClient
	ns          string
	lease       time.Duration
	minReplicas int
	waitTimeout time.Duration
	now         func() time.Time
}

// NewRedisStore returns a store over c. It does not contact Redis; the
// caller owns c and closes it after the last use of the store.
func NewRedisStore(c redis.UniversalClient, opts RedisOptions) (*RedisStore, error) {
	if c == nil {
		return nil, errors.New("tokenstore: redis store: nil client")
	}
	if opts.Namespace == "" {
		opts.Namespace = redisDefaultNS
	}
	if strings.ContainsAny(opts.Namespace, "{}") {
		// A brace would move the hash tag off the key's hash.
		return nil, errors.New("tokenstore: redis store: the namespace must not contain { or }")
	}
	if opts.MinReplicas < -1 {
		return nil, fmt.Errorf("tokenstore: redis store: min replicas %d is below -1", opts.MinReplicas)
	}
	if opts.WaitTimeout == 0 {
		opts.WaitTimeout = redisDefaultWaitTimeout
	}
	if opts.WaitTimeout < time.Millisecond {
		return nil, fmt.Errorf("tokenstore: redis store: wait timeout %v is below 1ms", opts.WaitTimeout)
	}
	if opts.LeaseTTL == 0 {
		opts.LeaseTTL = redisDefaultLeaseTTL
	}
	if opts.LeaseTTL < redisMinLeaseTTL {
		return nil, fmt.Errorf("tokenstore: redis store: lease TTL %v is below %v", opts.LeaseTTL, redisMinLeaseTTL)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &RedisStore{c: c, ns: opts.Namespace, lease: opts.LeaseTTL,
		minReplicas: opts.MinReplicas, waitTimeout: opts.WaitTimeout, now: opts.Now}, nil
}

// redisKey returns "<ns>:{<hex sha256(key)>}:<kind>" and, for errors, a
// short reference to it (the start of the hash: never the key's text).
func (s *RedisStore) redisKey(kind, key string) (name, ref string) {
	sum := sha256.Sum256([]byte(key))
	b := make([]byte, 0, len(s.ns)+len(kind)+4+hex.EncodedLen(len(sum)))
	b = append(b, s.ns...)
	b = append(b, ':', '{')
	b = hex.AppendEncode(b, sum[:])
	b = append(b, '}', ':')
	b = append(b, kind...)
	name = bytesString(b)
	return name, name[len(s.ns)+2:][:12]
}

// Get returns the token set stored under key, or ErrNotFound when there is
// none, or ErrExpired when nothing in it is usable any more (it is then
// deleted). A record that does not decode is an error, left in place.
func (s *RedisStore) Get(ctx context.Context, key string) (*Token, error) {
	k, ref := s.redisKey("tok", key)
	b, err := s.c.HGet(ctx, k, "d").Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		s.reroute(err)
		return nil, fmt.Errorf("tokenstore: redis get %s: %w", ref, err)
	}
	r, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("tokenstore: redis get %s: %s", ref, strings.TrimPrefix(err.Error(), "tokenstore: "))
	}
	if !r.usable(s.now()) {
		// Best effort: a set left behind expires with its TTL.
		_ = redisDeleteIfSame.Run(ctx, s.c, []string{k}, b).Err()
		return nil, ErrExpired
	}
	d := decode(b, &r, true) // go-redis allocates every reply afresh
	return &d.Token, nil
}

// Set stores tok under key, replacing what was there.
func (s *RedisStore) Set(ctx context.Context, key string, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: redis set: nil token")
	}
	k, ref := s.redisKey("tok", key)
	if _, _, err := s.write(ctx, k, "set", 0, tok); err != nil {
		s.reroute(err)
		return fmt.Errorf("tokenstore: redis set %s: %w", ref, err)
	}
	return nil
}

// CompareAndSet stores tok under key if the set stored there has Version
// old, or, when old is 0, if no set is stored or nothing in it is usable;
// else it returns an error wrapping ErrConflict. Compare and write are one
// script, atomic in Redis. A write stored on the primary but acknowledged
// by fewer replicas than RedisOptions.MinReplicas asks is an error
// wrapping ErrNotReplicated.
func (s *RedisStore) CompareAndSet(ctx context.Context, key string, old uint64, tok *Token) error {
	if tok == nil {
		return errors.New("tokenstore: redis compare-and-set: nil token")
	}
	k, ref := s.redisKey("tok", key)
	res, waitErr, err := s.write(ctx, k, "cas", old, tok)
	switch {
	case err != nil:
		s.reroute(err)
		return fmt.Errorf("tokenstore: redis compare-and-set %s: %w", ref, err)
	case waitErr != nil:
		return fmt.Errorf("%w: redis compare-and-set %s: %w", ErrNotReplicated, ref, waitErr)
	}
	if len(res) == 3 && res[0] == int64(0) {
		stored, _ := res[1].(string)
		usable, _ := res[2].(string)
		switch {
		case stored == "" || usable != "1":
			return fmt.Errorf("%w: redis compare-and-set %s: nothing usable is stored, want version %d", ErrConflict, ref, old)
		default:
			return fmt.Errorf("%w: redis compare-and-set %s: version %s is stored, want %d", ErrConflict, ref, stored, old)
		}
	}
	if len(res) == 0 || res[0] != int64(1) {
		return fmt.Errorf("tokenstore: redis compare-and-set %s: unexpected script reply", ref)
	}
	return nil
}

// write runs redisWrite for tok in mode "set" or "cas". A compare-and-set
// that wrote is then waited for (see RedisOptions.MinReplicas) on the
// same connection: WAIT counts the writes of its own connection.
func (s *RedisStore) write(ctx context.Context, k, mode string, old uint64, tok *Token) (res []any, waitErr, err error) {
	now := s.now()
	until, limited := usableUntil(tok)
	u, horizon := redisNoLimit, now.Add(redisUnknownRefresh)
	if limited {
		u = strconv.FormatInt(ceilMilli(until), 10)
		horizon = until
	} else if tok.Expiry.After(horizon) {
		horizon = tok.Expiry
	}
	ttl := max(horizon.Sub(now), 0) + redisTTLMargin
	wait := mode == "cas" && s.minReplicas >= 0
	count := "0" // whether the script counts the connected replicas
	if wait && s.minReplicas == 0 {
		count = "1"
	}
	args := []any{
		mode,
		strconv.FormatUint(old, 10),
		strconv.FormatInt(now.UnixMilli(), 10),
		strconv.FormatUint(tok.Version, 10),
		tok.appendBinary(nil),
		u,
		strconv.FormatInt(int64((ttl+time.Millisecond-1)/time.Millisecond), 10),
		count,
	}
	if !wait {
		res, err = redisWrite.Run(ctx, s.c, []string{k}, args...).Slice()
		return res, nil, err
	}
	// Watch runs fn on one connection to the primary that owns k (a
	// cluster client follows the slot); the key is watched but no
	// transaction is run, so the WATCH has no effect of its own.
	err = s.c.Watch(ctx, func(tx *redis.Tx) error {
		var err error
		if res, err = redisWrite.Run(ctx, tx, []string{k}, args...).Slice(); err != nil {
			return err
		}
		if len(res) != 2 || res[0] != int64(1) {
			return nil // not written: nothing to wait for
		}
		replicas, _ := res[1].(int64)
		waitErr = s.awaitReplicas(ctx, tx, replicas)
		return nil
	}, k)
	return res, waitErr, err
}

// awaitReplicas sends WAIT on tx, the connection that wrote, for
// MinReplicas replicas (for 0: one, unless the script counted none
// connected) and says how it fell short. An error of WAIT leaves the
// write's fate on the replicas unknown: it counts as not acknowledged.
func (s *RedisStore) awaitReplicas(ctx context.Context, tx *redis.Tx, replicas int64) error {
	need := s.minReplicas
	if need == 0 {
		if replicas == 0 {
			return nil // no replica to wait for
		}
		need = 1
	}
	acked, err := tx.Wait(ctx, need, s.waitTimeout).Result()
	switch {
	case err != nil:
		return fmt.Errorf("WAIT: %w", err)
	case acked < int64(need):
		return fmt.Errorf("%d of %d replicas acknowledged within %v", acked, need, s.waitTimeout)
	}
	return nil
}

// usableUntil is the last moment anything in tok is usable, as the stores
// judge it on read (record.usable); limited is false when a refresh token
// of unknown lifetime keeps the set usable for good.
func usableUntil(tok *Token) (until time.Time, limited bool) {
	if tok.RefreshToken != "" {
		if tok.RefreshExpiry.IsZero() {
			return time.Time{}, false
		}
		if tok.RefreshExpiry.After(tok.Expiry) {
			return tok.RefreshExpiry, true
		}
	}
	return tok.Expiry, true // the zero time: never usable
}

// ceilMilli is t in Unix milliseconds rounded up (0 for the zero time), so
// that a set is never judged dead before it is.
func ceilMilli(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	ms := t.UnixMilli()
	if t.Sub(time.UnixMilli(ms)) > 0 {
		ms++
	}
	return ms
}

// Delete removes key; deleting an absent key is not an error. A lease on
// the key is not touched. Like a compare-and-set, a delete is waited for
// (see RedisOptions.MinReplicas): a disconnect that a failover loses
// would bring the user's tokens back. A delete fewer replicas
// acknowledged is an error wrapping ErrNotReplicated: the set is gone
// from the primary, and calling Delete again waits again.
func (s *RedisStore) Delete(ctx context.Context, key string) error {
	k, ref := s.redisKey("tok", key)
	if s.minReplicas < 0 {
		if err := s.c.Del(ctx, k).Err(); err != nil {
			s.reroute(err)
			return fmt.Errorf("tokenstore: redis delete %s: %w", ref, err)
		}
		return nil
	}
	mark, _ := s.redisKey("del", key)
	count := "0"
	if s.minReplicas == 0 {
		count = "1"
	}
	var waitErr error
	// One connection for the delete and its WAIT, as in write.
	err := s.c.Watch(ctx, func(tx *redis.Tx) error {
		replicas, err := redisDelete.Run(ctx, tx, []string{k, mark},
			strconv.FormatInt(redisDeleteMark.Milliseconds(), 10), count).Int64()
		if err != nil {
			return err
		}
		waitErr = s.awaitReplicas(ctx, tx, replicas)
		return nil
	}, k)
	if err != nil {
		s.reroute(err)
		return fmt.Errorf("tokenstore: redis delete %s: %w", ref, err)
	}
	if waitErr != nil {
		return fmt.Errorf("%w: redis delete %s: %w", ErrNotReplicated, ref, waitErr)
	}
	return nil
}

// Lock takes the refresh lease of key, shared by every RedisStore on the
// same Redis and namespace, and returns the function that releases it. It
// polls (backing off from a few ms to 100ms) until the lease is free or
// ctx is done; a failing Redis is an error at once. While held, the lease
// is renewed every LeaseTTL/3; if a renewal finds it lost (Redis was cut
// off for longer than LeaseTTL, or restarted), renewal stops and the next
// holder may already be refreshing: store the result with CompareAndSet.
//
// unlock stops the renewal and deletes the lease if this holder still owns
// it; extra calls do nothing. Like FileStore.Lock, it only excludes other
// callers of Lock.
func (s *RedisStore) Lock(ctx context.Context, key string) (unlock func(), err error) {
	k, ref := s.redisKey("lock", key)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("tokenstore: redis lock %s: %w", ref, context.Cause(ctx))
	}
	owner := rand.Text()
	ms := s.lease.Milliseconds()
	var timer *time.Timer
	for wait := redisLockPollMin; ; wait = min(2*wait, redisLockPollMax) {
		n, err := redisAcquire.Run(ctx, s.c, []string{k}, owner, ms).Int64()
		if err != nil {
			s.reroute(err)
			// The SET may have landed before the error came back.
			s.release(k, owner)
			if ctx.Err() != nil {
				return nil, fmt.Errorf("tokenstore: redis lock %s: %w", ref, context.Cause(ctx))
			}
			return nil, fmt.Errorf("tokenstore: redis lock %s: %w", ref, err)
		}
		if n == 1 {
			break
		}
		// Jitter keeps the waiters of one key from polling in step.
		d := wait/2 + mrand.N(wait/2+1)
		if timer == nil {
			timer = time.NewTimer(d)
			defer timer.Stop()
		} else {
			timer.Reset(d)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("tokenstore: redis lock %s: %w", ref, context.Cause(ctx))
		case <-timer.C:
		}
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go s.renew(rctx, k, owner, done)
	var once sync.Once
	return func() {
		once.Do(func() {
			stop()
			<-done
			s.release(k, owner)
		})
	}, nil
}

// renew extends the lease k of owner every LeaseTTL/3 until ctx is done or
// the lease is found lost. A renewal that fails (Redis unreachable) is
// tried again at the next tick: the lease may still be alive.
func (s *RedisStore) renew(ctx context.Context, k, owner string, done chan<- struct{}) {
	defer close(done)
	period := s.lease / 3
	t := time.NewTicker(period)
	defer t.Stop()
	ms := s.lease.Milliseconds()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, period)
		n, err := redisRenew.Run(rctx, s.c, []string{k}, owner, ms).Int64()
		cancel()
		s.reroute(err)
		if err == nil && n == 0 {
			return // lost: someone else may hold it now
		}
	}
}

// release deletes the lease k if owner still holds it, on a context of its
// own: the caller's may be done already.
func (s *RedisStore) release(k, owner string) {
	ctx, cancel := context.WithTimeout(context.Background(), redisUnlockTimeout)
	defer cancel()
	s.reroute(redisRelease.Run(ctx, s.c, []string{k}, owner).Err())
}

// reroute has a cluster client reload its slot map after a failed call:
// after a failover it would otherwise send the slots of the dead primary
// there until its periodic reload (a minute by default). Reloads are
// coalesced by go-redis; other clients follow the primary by themselves
// (a failover client through the sentinels).
func (s *RedisStore) reroute(err error) {
	if cc, ok := s.c.(*redis.ClusterClient); ok && err != nil && !errors.Is(err, redis.Nil) {
		cc.ReloadState(context.Background())
	}
}

var (
	_ Store    = (*RedisStore)(nil)
	_ Locker   = (*RedisStore)(nil)
	_ CASStore = (*RedisStore)(nil)
)
