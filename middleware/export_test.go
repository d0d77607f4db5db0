package middleware

import (
	"context"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// BackoffEntries is the number of keys whose backoff state the Gate holds,
// for the tests of its bound.
func BackoffEntries(g *Gate) int { return g.backoffs.len() }

// SubjectKeyForTest is the store key of subject's token set.
func SubjectKeyForTest(g *Gate, subject string) string { return g.users.subjectKey(subject) }

// HotEntries is the number of subjects in the Gate's hot set.
func HotEntries(g *Gate) int { return g.users.hot.len() }

// HotBound is the most subjects the Gate's hot set holds.
func HotBound(g *Gate) int { return g.users.hot.max }

// HotHit reports whether subject's request would be served from the hot
// set.
func HotHit(g *Gate, subject string) bool {
	return g.users.hot.get(subject) != nil
}

// FreezeHotClock stops the hot set's coarse clock (a Gate on the real
// clock has one) and sets it to t.
func FreezeHotClock(g *Gate, t time.Time) {
	c := g.users.hot.coarse
	c.close()
	c.ns.Store(t.UnixNano())
}

// CoarseSlack is how long before its refresh point an entry leaves the hot
// set.
const CoarseSlack = coarseSlack

// StartCoarseClock runs a coarse clock on now, ticking every tick.
func StartCoarseClock(now func() time.Time, tick time.Duration) (read func() time.Time, stop func()) {
	c := startCoarseClock(now, tick)
	return func() time.Time { return time.Unix(0, c.now()) }, c.close
}

// CacheUserForTest puts tok as subject's set in the Gate's bigcache layer,
// as a connect or a read from the store would.
func CacheUserForTest(g *Gate, subject string, tok *tokenstore.Token) error {
	return g.users.cache.Set(context.Background(), g.users.subjectKey(subject), tok)
}

// EvictCacheForTest drops subject's set from the Gate's bigcache layer
// only, as bigcache does when it runs out of room.
func EvictCacheForTest(g *Gate, subject string) error {
	return g.users.cache.Delete(context.Background(), g.users.subjectKey(subject))
}

// UseAppCoarseClock gives the Gate's application token a coarse clock on
// now, ticking every tick, as a Gate on the real clock has on time.Now;
// read is that clock. Call it before the first request.
func UseAppCoarseClock(g *Gate, now func() time.Time, tick time.Duration) (read func() time.Time) {
	a := g.src.(*appSource)
	a.coarse.close()
	a.coarse = startCoarseClock(now, tick)
	return func() time.Time { return time.Unix(0, a.coarse.now()) }
}
