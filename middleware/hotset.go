package middleware

import (
	"sync"
	"sync/atomic"
)

// hotSet holds, for the subjects served most recently, their token ready
// for the hot path: the header built once per token, looked up by the
// subject itself. A hit costs a lock-free map lookup and, on the
// real clock, an atomic load of the coarse clock (see coarseClock), where
// the bigcache layer behind it costs a SHA-256 of the subject, a shard
// lookup, a copy and a decode, a clock read, and builds the header again.
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
	u *userSource
	// bySubject is what a hit reads, without a lock: sync.Map's reads
	// take none, where a read lock's counter is one cache line that every
	// core writes. Writers (put, drop) hold mu and change both maps.
	bySubject sync.Map // subject → *hotEntry
	mu        sync.Mutex
	byKey     map[string]*hotEntry
	max       int
	drops     atomic.Uint64 // written under mu
	// coarse is the clock a hit is checked with when the Gate runs on the
	// real clock; nil on any other (a test's), which is read instead.
	coarse *coarseClock
}

type hotEntry struct {
	subject string
	h       held
	until   int64 // Unix ns: served from here until then
}

func newHotSet(u *userSource, max int) *hotSet {
	s := &hotSet{u: u, byKey: make(map[string]*hotEntry), max: max}
	s.coarse = coarseClockFor(u.g.clock)
	return s
}

// The hot set's bound follows Config.CacheSizeMB, 256 subjects per MB (the
// default 64 MB gives the most, 16,384), between hotMin and hotMax: its
// entries are pointers the collector scans, and at hotMax a million users
// behind one Gate still cost over 20x less GC CPU than a map of *Token
// (BenchmarkUsers1M_Gate).
const (
	hotEntriesPerMB = 256
	hotMin          = 1024
	hotMax          = 16384
)

func hotBound(cacheMB int) int { return min(max(hotMin, cacheMB*hotEntriesPerMB), hotMax) }

// get returns subject's token when it is held and not yet due.
func (s *hotSet) get(subject string) *held {
	v, ok := s.bySubject.Load(subject)
	if !ok {
		return nil
	}
	e := v.(*hotEntry)
	var now int64
	if s.coarse != nil {
		now = s.coarse.now()
	} else {
		now = s.u.g.clock.Now().UnixNano()
	}
	if now >= e.until {
		return nil
	}
	return &e.h
}

// mark is taken before the lookup whose token put may store.
func (s *hotSet) mark() uint64 { return s.drops.Load() }

// put makes h, fresh, subject's entry, unless some entry was dropped
// since mark (checked under the lock that drop takes: a refresh that
// cached a new set and dropped the entry cannot be undone by a late put
// of the token it replaced; the next request puts again).
func (s *hotSet) put(subject string, h held, mark uint64) {
	refreshAt, _ := s.u.g.schedule(h.tok)
	if s.coarse != nil {
		refreshAt = refreshAt.Add(-coarseSlack)
	}
	e := &hotEntry{subject: subject, h: h, until: refreshAt.UnixNano()}
	e.h.phase = phaseFresh
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drops.Load() != mark {
		return
	}
	if old, ok := s.bySubject.Load(subject); ok {
		s.removeLocked(old.(*hotEntry))
	}
	if old := s.byKey[h.key]; old != nil {
		s.removeLocked(old)
	}
	if len(s.byKey) >= s.max {
		for _, victim := range s.byKey {
			s.removeLocked(victim)
			break
		}
	}
	s.bySubject.Store(subject, e)
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
	s.bySubject.CompareAndDelete(e.subject, e)
	delete(s.byKey, e.h.key)
}

func (s *hotSet) close() {
	s.coarse.close()
}

func (s *hotSet) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.byKey)
}
