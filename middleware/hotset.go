package middleware

import (
	"sync"
	"sync/atomic"
	"time"
)

// hotSet holds, for the subjects served most recently, their token ready
// for the hot path: the header built once per token, looked up by the
// subject itself. A hit costs a map lookup under a read lock and a clock
// read, where the bigcache layer behind it costs a SHA-256 of the subject,
// a shard lookup, a copy and a decode, and builds the header again.
//
// It is bounded (past max entries an arbitrary one goes), so that a
// million subjects still live in bigcache, out of the garbage collector's
// sight, and only the hot ones are pointers here. An entry holds only a
// token outside its refresh window: from its refresh point on, requests
// take the engine's path, which refreshes it. Every change to a subject's
// tokens (a refresh, a connect, a disconnect, a refusal by the API, a
// logout) drops its entry first; an entry is put only if no drop came
// between the lookup that found its token and the put.
type hotSet struct {
	u         *userSource
	mu        sync.RWMutex
	bySubject map[string]*hotEntry
	byKey     map[string]*hotEntry
	max       int
	drops     atomic.Uint64 // written under mu
}

type hotEntry struct {
	subject   string
	h         held
	refreshAt int64 // Unix ns
}

func newHotSet(u *userSource, max int) *hotSet {
	return &hotSet{u: u, bySubject: make(map[string]*hotEntry), byKey: make(map[string]*hotEntry), max: max}
}

// hotEntriesPerMB sizes the hot set from Config.CacheSizeMB: 256 entries
// per MB of the bigcache layer (16,384 for the default 64 MB).
const hotEntriesPerMB = 256

// get returns subject's token when it is held and not yet due at now.
func (s *hotSet) get(subject string, now time.Time) (held, bool) {
	s.mu.RLock()
	e := s.bySubject[subject]
	s.mu.RUnlock()
	if e == nil || now.UnixNano() >= e.refreshAt {
		return held{}, false
	}
	return e.h, true
}

// mark is taken before the lookup whose token put may store.
func (s *hotSet) mark() uint64 { return s.drops.Load() }

// put makes h, fresh, subject's entry, unless some entry was dropped
// since mark (checked under the lock that drop takes: a refresh that
// cached a new set and dropped the entry cannot be undone by a late put
// of the token it replaced; the next request puts again).
func (s *hotSet) put(subject string, h held, mark uint64) {
	refreshAt, _ := s.u.g.schedule(h.tok)
	e := &hotEntry{subject: subject, h: h, refreshAt: refreshAt.UnixNano()}
	e.h.phase = phaseFresh
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drops.Load() != mark {
		return
	}
	if old := s.bySubject[subject]; old != nil {
		s.removeLocked(old)
	}
	if old := s.byKey[h.key]; old != nil {
		s.removeLocked(old)
	}
	if len(s.bySubject) >= s.max {
		for _, victim := range s.bySubject {
			s.removeLocked(victim)
			break
		}
	}
	s.bySubject[subject] = e
	s.byKey[h.key] = e
}

// drop forgets the entry of key, if any.
func (s *hotSet) drop(key string) {
	s.mu.Lock()
	s.drops.Add(1)
	if e := s.byKey[key]; e != nil {
		s.removeLocked(e)
	}
	s.mu.Unlock()
}

func (s *hotSet) removeLocked(e *hotEntry) {
	delete(s.bySubject, e.subject)
	delete(s.byKey, e.h.key)
}

func (s *hotSet) len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.bySubject)
}
