package middleware_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tasknation/tokengate/middleware"
	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// TestHotSet_Bounded: the hot set in front of the bigcache layer holds at
// most its bound (1024 with a 1 MB cache), however many subjects are
// served, and every one of them is still served, from the layers behind.
func TestHotSet_Bounded(t *testing.T) {
	durable, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { durable.Close() })
	f := newUserFixture(t, tasknationtest.Options{}, func(c *middleware.Config) {
		c.Store = durable
		c.CacheSizeMB = 1
	})
	now := f.clock.Now()
	const subjects = 1500
	for i := range subjects {
		tok := &tokenstore.Token{AccessToken: fmt.Sprintf("tn_at_hot-%d", i), TokenType: "Bearer", RefreshToken: "tn_rt_x",
			Expiry: now.Add(time.Hour), ObtainedAt: now.Add(-time.Minute), Version: uint64(1000 + i)}
		if err := durable.Set(context.Background(), middleware.SubjectKeyForTest(f.gate, fmt.Sprint("user-", i)), tok); err != nil {
			t.Fatal(err)
		}
	}
	for round := range 2 {
		for i := range subjects {
			tok, err := f.gate.UserToken(context.Background(), fmt.Sprint("user-", i))
			if err != nil || tok.AccessToken != fmt.Sprintf("tn_at_hot-%d", i) {
				t.Fatalf("round %d, subject %d: %v %q", round, i, err, tok.AccessToken)
			}
		}
	}
	if n := middleware.HotEntries(f.gate); n == 0 || n > 1024 {
		t.Errorf("hot entries = %d, want 1..1024", n)
	}
}

// TestHotSet_NeverServesAReplacedToken: a subject served from the hot set
// whose set is refreshed (the API refused its token), or who disconnects,
// is never served the old token again.
func TestHotSet_NeverServesAReplacedToken(t *testing.T) {
	f := newUserFixture(t, tasknationtest.Options{}, nil)
	alice := f.browser(t, "alice")
	alice.connect(f, "tn-alice")
	first, _ := f.gate.UserToken(context.Background(), "alice")
	f.gate.UserToken(context.Background(), "alice") // now in the hot set
	if middleware.HotEntries(f.gate) != 1 {
		t.Fatalf("hot entries = %d, want alice's", middleware.HotEntries(f.gate))
	}
	f.clock.Advance(10 * time.Minute)
	f.gate.Invalidate("alice", first.Version)
	second, err := f.gate.UserToken(context.Background(), "alice")
	if err != nil || second.AccessToken == first.AccessToken {
		t.Fatalf("after the API refused the token: %v, same token %v", err, second.AccessToken == first.AccessToken)
	}
	f.gate.UserToken(context.Background(), "alice")
	if err := f.gate.Disconnect(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.gate.UserToken(context.Background(), "alice"); err == nil {
		t.Fatal("a token after the disconnect")
	}
}

// TestHotSet_CoarseClockBoundary: on the real clock, the hot set checks
// entries against the coarse clock, and an entry stops being served
// CoarseSlack before its refresh point, so that a coarse clock late by
// less than that never serves a token the exact path would refresh.
func TestHotSet_CoarseClockBoundary(t *testing.T) {
	f, subjects := manyConnected(t, 1)
	alice := subjects[0]
	for range 2 { // the first request puts the entry
		if _, err := f.gate.UserToken(context.Background(), alice); err != nil {
			t.Fatal(err)
		}
	}
	tok, err := f.gate.UserToken(context.Background(), alice)
	if err != nil {
		t.Fatal(err)
	}
	// The refresh point: 20 % of the lifetime before expiry, less a jitter
	// of Version ns (Version < a quarter of the window).
	window := tok.Expiry.Sub(tok.ObtainedAt) / 5
	refreshAt := tok.Expiry.Add(-window - time.Duration(tok.Version))
	for _, c := range []struct {
		at   time.Time
		want bool
	}{
		{tok.ObtainedAt, true},
		{refreshAt.Add(-middleware.CoarseSlack - time.Millisecond), true},
		{refreshAt.Add(-middleware.CoarseSlack), false},
		{refreshAt, false},
		{tok.Expiry, false},
		{refreshAt.Add(-middleware.CoarseSlack - time.Millisecond), true}, // a clock stepped back
	} {
		middleware.FreezeHotClock(f.gate, c.at)
		if got := middleware.HotHit(f.gate, alice); got != c.want {
			t.Errorf("coarse clock at refresh point %+v: hot hit %v, want %v", c.at.Sub(refreshAt), got, c.want)
		}
	}
}

// TestCoarseClock_FollowsWallJumps: the coarse clock reads the wall clock
// every tick, so a jump of the wall clock (a suspended machine, a stepped
// clock), which a timer on the monotonic clock never sees, shows within a
// tick; once stop returns it no longer moves.
func TestCoarseClock_FollowsWallJumps(t *testing.T) {
	var wall atomic.Int64
	base := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	wall.Store(base.UnixNano())
	read, stop := middleware.StartCoarseClock(func() time.Time { return time.Unix(0, wall.Load()) }, time.Millisecond)
	if got := read(); !got.Equal(base) {
		t.Fatalf("at start: %v, want %v", got, base)
	}
	for _, jump := range []time.Duration{2 * time.Hour, -time.Hour} {
		want := time.Unix(0, wall.Add(int64(jump)))
		deadline := time.Now().Add(5 * time.Second)
		for !read().Equal(want) {
			if time.Now().After(deadline) {
				t.Fatalf("after a jump of %v: coarse clock %v, want %v", jump, read(), want)
			}
			runtime.Gosched()
		}
	}
	stop()
	last := read()
	wall.Add(int64(time.Hour))
	if got := read(); !got.Equal(last) {
		t.Fatalf("after stop the coarse clock moved from %v to %v", last, got)
	}
}

// TestHotSet_RefusedAfterCacheEviction: the bigcache layer let a subject's
// set go (it ran out of room) while the hot set still holds it; the API
// refuses its token: the hot set stops serving it, and the next request
// reads the set again from the store.
func TestHotSet_RefusedAfterCacheEviction(t *testing.T) {
	f, subjects := manyConnected(t, 1)
	alice := subjects[0]
	for range 2 {
		if _, err := f.gate.UserToken(context.Background(), alice); err != nil {
			t.Fatal(err)
		}
	}
	if !middleware.HotHit(f.gate, alice) {
		t.Fatal("alice is not in the hot set")
	}
	tok, _ := f.gate.UserToken(context.Background(), alice)
	if err := middleware.EvictCacheForTest(f.gate, alice); err != nil {
		t.Fatal(err)
	}
	f.gate.Invalidate(alice, tok.Version)
	if middleware.HotHit(f.gate, alice) {
		t.Error("the hot set still serves the refused token after the cache let the set go")
	}
	if got, err := f.gate.UserToken(context.Background(), alice); err != nil || got.Version != tok.Version {
		t.Errorf("after the eviction: %v, version %d, want the store's set %d", err, got.Version, tok.Version)
	}
}
