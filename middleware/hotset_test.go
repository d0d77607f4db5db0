package middleware_test

import (
	"context"
	"fmt"
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
