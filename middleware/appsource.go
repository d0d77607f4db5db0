package middleware

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/tasknation/tokengate/tokenstore"
)

// appSource is the application token of a client (client_credentials):
// one key, one token, shared by every request.
//
// The token in use is an entry behind an atomic pointer, with its header
// built once and timers that move its phase along, so that the hot path is
// one atomic load of the pointer and one of the phase: no clock read.
//
// The store (Config.Store, or the Gate's own memory store) is shared with
// other Gates of the same client: a refresh takes the store's lock when it
// is a tokenstore.Locker (Redis, Caddy storage, a file store), re-reads
// the store under it, and only asks the endpoint when no fresh token is
// stored there; the new token is written with compare-and-set. A fleet
// sharing Redis makes one token request at a cold start and one per token
// lifetime after.
type appSource struct {
	g     *Gate
	store tokenstore.Store
	k     string // the store and singleflight key
	cur   atomic.Pointer[entry]
	// coarse is the wall clock the hot path checks an entry with when the
	// Gate runs on the real clock (nil on any other: a test's clock fires
	// the timers itself). The phase timers run on the monotonic clock,
	// which stands still while the machine is suspended: without this, a
	// machine that wakes past a token's expiry would serve it until the
	// timers caught up.
	coarse *coarseClock
}

// entry is an application token ready for the hot path.
type entry struct {
	h         held
	refreshAt time.Time // phaseDue from here
	expireAt  time.Time // phaseExpired from here
	phase     atomic.Int32
	timers    [2]Timer // set before the entry is published
	// until is refreshAt less coarseSlack, in Unix ns: the hot path
	// serves e until then by the coarse clock.
	until int64
}

func newAppSource(g *Gate, store tokenstore.Store) *appSource {
	return &appSource{g: g, store: store, k: appKey(g.cfg), coarse: coarseClockFor(g.clock)}
}

// appKey identifies the application token of a client: same endpoint,
// client and scopes, same token. Hashed so that no store holds the client
// id in clear.
func appKey(c Config) string {
	h := sha256.Sum256([]byte(strings.Join([]string{"app", c.TokenURL, c.ClientID, strings.Join(c.Scopes, " ")}, "\x00")))
	return "app:" + hex.EncodeToString(h[:16])
}

// ready is one atomic load of the entry and one of its phase, and on the
// real clock one of the coarse clock.
func (a *appSource) ready(string) *held {
	if e := a.cur.Load(); e != nil && e.phase.Load() == phaseFresh && (a.coarse == nil || a.coarse.now() < e.until) {
		return &e.h
	}
	return nil
}

func (a *appSource) key(string) (string, error) { return a.k, nil }

func (a *appSource) cached(_, _ string) (held, bool, error) {
	e := a.cur.Load()
	if e == nil {
		return held{}, false, nil
	}
	return e.at(a.g.clock.Now()), true, nil
}

// renew refreshes the application token: lock, re-read the store,
// request, persist, install.
func (a *appSource) renew(ctx context.Context, key, _ string) (held, error) {
	g := a.g
	now := g.clock.Now()
	cur := a.cur.Load()
	var curPhase int32
	if cur != nil {
		curPhase = cur.at(now).phase
	}
	if cur != nil && curPhase == phaseFresh {
		return cur.at(now), nil // refreshed by the flight that just ended
	}
	holding := cur != nil && curPhase != phaseExpired
	if b, blocked := g.backoffs.blocked(key, now); blocked {
		// Failed in the flight that just ended: callers that checked
		// before it failed must not start another request in this step.
		return held{}, b.unavailable(now, nil)
	}
	unlock, err := g.lock(ctx, a.store, key)
	if err != nil {
		// The store only spares the fleet token requests: with it down,
		// a token from the endpoint is better than none.
		g.logger().Warn("token store lock failed; requesting a token without it", zap.Error(err))
		unlock = func() {}
	}
	defer unlock()

	// Under the lock: another Gate sharing the store, or one this Gate
	// replaced, may have stored a fresh token already.
	var old uint64
	stored, err := a.store.Get(ctx, key)
	switch {
	case err == nil:
		old = stored.Version
		if cur != nil && stored.Version == cur.h.tok.Version {
			break // the token being replaced (due, expired or refused)
		}
		if e := a.newEntry(stored); now.Before(e.refreshAt) {
			a.install(e)
			g.backoffs.reset(key)
			return e.at(now), nil
		}
	case errors.Is(err, tokenstore.ErrNotFound):
	default:
		g.logger().Warn("token store read failed", zap.Error(err))
	}

	tok, err := g.endpoint.clientCredentials(ctx)
	if err != nil {
		b := g.failed(key, err, holding, "token request failed")
		return held{}, b.unavailable(g.clock.Now(), err)
	}
	tok.Version = nextVersion(stored)
	e := a.newEntry(tok)
	if !g.clock.Now().Before(e.expireAt) {
		// Clock skew, or a lifetime shorter than the time on the wire:
		// using it would only earn a 401 and another request at once.
		err := errExpiredOnArrival(tok)
		b := g.failed(key, err, holding, "token request failed")
		return held{}, b.unavailable(g.clock.Now(), err)
	}
	g.backoffs.reset(key)
	switch err := g.writeFenced(a.store, key, old, tok); {
	case errors.Is(err, tokenstore.ErrConflict):
		// Another Gate stored a token meanwhile (its lease and ours
		// overlapped): both are valid; every instance should use one.
		if newer, gerr := a.store.Get(ctx, key); gerr == nil {
			if ne := a.newEntry(newer); g.clock.Now().Before(ne.refreshAt) {
				e.stop()
				e = ne
			}
		}
	case err != nil:
		g.logger().Warn("token store write failed", zap.Error(err))
	}
	a.install(e)
	g.logger().Info("token obtained",
		zap.String("grant", "client_credentials"),
		zap.Duration("lifetime", e.h.tok.Lifetime()),
		zap.Strings("scopes", e.h.tok.Scopes),
		zap.Uint64("version", e.h.tok.Version))
	return e.at(g.clock.Now()), nil
}

// nextVersion is the version of a set that replaces prev (nil: none): the
// next generation of its lineage, or a new lineage.
func nextVersion(prev *tokenstore.Token) uint64 {
	if prev != nil && prev.Version != 0 {
		return prev.Version + 1
	}
	return newLineage()
}

// newLineage is the first version of a new lineage of token sets (a
// connect, or a key with nothing stored): random, so that two lineages
// never share versions, and far enough below 2^64 that its generations
// never wrap to 0, which means "none".
func newLineage() uint64 { return rand.Uint64()>>2 + 1 }

// newEntry computes when tok must be refreshed and when it stops being used.
func (a *appSource) newEntry(tok *tokenstore.Token) *entry {
	refreshAt, expireAt := a.g.schedule(tok)
	return &entry{h: newHeld(a.k, tok, phaseFresh), refreshAt: refreshAt, expireAt: expireAt,
		until: refreshAt.Add(-coarseSlack).UnixNano()}
}

// at is e as a held at now: its phase is the later of the one its timers
// (or a rejection) set and the one the clock gives, so that a wall clock
// that jumped past a timer is followed at once.
func (e *entry) at(now time.Time) held {
	h := e.h
	h.phase = e.phase.Load()
	switch {
	case !now.Before(e.expireAt):
		h.phase = phaseExpired
	case !now.Before(e.refreshAt):
		h.phase = max(h.phase, phaseDue)
	}
	return h
}

// install publishes e as the current entry, with timers for its phases,
// and stops the timers of the entry it replaces. Only renew calls it, so
// there is one writer.
func (a *appSource) install(e *entry) {
	now := a.g.clock.Now()
	if d := e.refreshAt.Sub(now); d > 0 {
		e.timers[0] = a.g.clock.AfterFunc(d, func() { e.phase.CompareAndSwap(phaseFresh, phaseDue) })
	} else {
		e.phase.Store(phaseDue)
	}
	if d := e.expireAt.Sub(now); d > 0 {
		e.timers[1] = a.g.clock.AfterFunc(d, func() { e.phase.Store(phaseExpired) })
	} else {
		e.phase.Store(phaseExpired)
	}
	if old := a.cur.Swap(e); old != nil && old != e {
		old.stop()
	}
}

func (e *entry) stop() {
	for _, t := range e.timers {
		if t != nil {
			t.Stop()
		}
	}
}

func (a *appSource) reject(_ string, version uint64, now time.Time) bool {
	e := a.cur.Load()
	if e == nil || e.h.tok.Version != version {
		return true // moved past it already
	}
	if young(e.h.tok, now) {
		return false
	}
	for {
		p := e.phase.Load()
		if p == phaseExpired {
			return true // marked by another request
		}
		if e.phase.CompareAndSwap(p, phaseExpired) {
			return true
		}
	}
}

func (a *appSource) close() error {
	if e := a.cur.Load(); e != nil {
		e.stop()
	}
	a.coarse.close()
	return nil
}
