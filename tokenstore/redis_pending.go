package tokenstore

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The connects in progress of a subject sit beside its token set, in the
// same hash slot (RedisStore key layout):
//
//	<ns>:{<hex sha256(subject key)>}:pend        ZSET: the subject's pending ids, scored in put order
//	<ns>:{<hex sha256(subject key)>}:pend:<hex sha256(id)>   STRING: expiry, Unix ms [8] | the record
//
// Every key carries a TTL: a record the connect's lifetime, the set the
// lifetime of its newest record. The expiry in the record is checked on
// take with the store's clock, as a token set's is on read; the TTL only
// clears what nobody took.

// redisPutPending stores ARGV[2] under KEYS[1] (the record of id ARGV[1],
// whose name is KEYS[2]..ARGV[1]) for ARGV[3] ms, files ARGV[1] in the
// subject's set KEYS[2] after every id already there, and drops the
// oldest records of the set beyond ARGV[4]. Every key it names is built
// from KEYS[2], which shares its hash tag: one slot.
var redisPutPending = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
local top = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
local score = 0
if top[2] then score = tonumber(top[2]) + 1 end
redis.call('ZADD', KEYS[2], score, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  local old = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #old, 2 do
    redis.call('DEL', KEYS[2] .. ':' .. old[i])
  end
end
return 1
`)

// redisTakePending returns the record KEYS[1] and deletes it, and removes
// its id ARGV[1] from the subject's set KEYS[2]: a GETDEL that also keeps
// the set tidy, in one step.
var redisTakePending = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if v then
  redis.call('DEL', KEYS[1])
end
return v
`)

// pendingKeys returns the names of the subject's pending set and of the
// record id, the record's member in the set, and a reference to them for
// errors. The id is hashed too, whatever the caller made it from.
func (s *RedisStore) pendingKeys(subjectKey, id string) (rec, set, member, ref string) {
	set, ref = s.redisKey("pend", subjectKey)
	sum := sha256.Sum256([]byte(id))
	member = hex.EncodeToString(sum[:])
	return set + ":" + member, set, member, ref
}

// PutPending stores the pending record rec of subjectKey under id for ttl
// (see PendingStore) and drops the subject's oldest records beyond
// maxPerSubject, in one script.
func (s *RedisStore) PutPending(ctx context.Context, subjectKey, id string, rec []byte, ttl time.Duration, maxPerSubject int) error {
	if err := checkPending(id, ttl, maxPerSubject); err != nil {
		return err
	}
	k, set, member, ref := s.pendingKeys(subjectKey, id)
	v := make([]byte, 8, 8+len(rec))
	binary.BigEndian.PutUint64(v, uint64(ceilMilli(s.now().Add(ttl))))
	v = append(v, rec...)
	ms := strconv.FormatInt(int64((ttl+time.Millisecond-1)/time.Millisecond), 10)
	if err := redisPutPending.Run(ctx, s.c, []string{k, set}, member, v, ms, strconv.Itoa(maxPerSubject)).Err(); err != nil {
		s.reroute(err)
		return fmt.Errorf("tokenstore: redis put pending %s: %w", ref, err)
	}
	return nil
}

// TakePending returns the pending record of subjectKey under id and
// deletes it, or ErrNotFound (see PendingStore).
func (s *RedisStore) TakePending(ctx context.Context, subjectKey, id string) ([]byte, error) {
	if id == "" {
		return nil, ErrNotFound
	}
	k, set, member, ref := s.pendingKeys(subjectKey, id)
	v, err := redisTakePending.Run(ctx, s.c, []string{k, set}, member).Text()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		s.reroute(err)
		return nil, fmt.Errorf("tokenstore: redis take pending %s: %w", ref, err)
	}
	if len(v) < 8 {
		return nil, fmt.Errorf("tokenstore: redis take pending %s: not a pending record (damaged, or written by something else)", ref)
	}
	if s.now().UnixMilli() >= int64(binary.BigEndian.Uint64([]byte(v[:8]))) {
		return nil, ErrNotFound // expired: gone all the same
	}
	return []byte(v[8:]), nil
}

// checkPending checks the arguments of a PutPending.
func checkPending(id string, ttl time.Duration, maxPerSubject int) error {
	switch {
	case id == "":
		return errors.New("tokenstore: put pending: empty id")
	case ttl <= 0:
		return fmt.Errorf("tokenstore: put pending: ttl %v is not positive", ttl)
	case maxPerSubject < 1:
		return fmt.Errorf("tokenstore: put pending: max per subject %d is below 1", maxPerSubject)
	}
	return nil
}

var _ PendingStore = (*RedisStore)(nil)
