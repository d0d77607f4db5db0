package tokenstore_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tasknation/tokengate/internal/testkit"
	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// The test kit's clock and the contract's fixtures, under the names these
// tests use.
type clock = testkit.Clock

var (
	newClock = testkit.NewClockAt
	sample   = storetest.Sample
	equal    = storetest.Equal
)

var t0 = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func newStore(t testing.TB, now func() time.Time) *tokenstore.MemoryStore {
	t.Helper()
	m, err := tokenstore.NewMemoryStore(tokenstore.MemoryConfig{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestMemoryStore_Concurrent(t *testing.T) {
	c := newClock(t0)
	m := newStore(t, c.Now)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				key := fmt.Sprintf("k%d", i%16)
				tok := sample(t0)
				tok.Version = uint64(w*1000 + i)
				if err := m.Set(ctx, key, tok); err != nil {
					t.Error(err)
					return
				}
				got, err := m.Get(ctx, key)
				if err != nil {
					t.Error(err)
					return
				}
				if got.AccessToken != tok.AccessToken {
					t.Errorf("torn read: %q", got.AccessToken)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func TestToken_StringHidesSecrets(t *testing.T) {
	tok := sample(t0)
	for _, s := range []string{fmt.Sprint(tok), fmt.Sprintf("%v", tok), fmt.Sprintf("%+v", tok), fmt.Sprintf("%#v", tok), fmt.Sprint(*tok)} {
		if strings.Contains(s, tok.AccessToken) || strings.Contains(s, tok.RefreshToken) {
			t.Fatalf("formatted token leaks a credential: %s", s)
		}
	}
}

func TestToken_UnmarshalBinaryRejectsCorrupt(t *testing.T) {
	good, _ := sample(t0).MarshalBinary()
	cases := map[string][]byte{
		"empty":          nil,
		"short header":   good[:10],
		"unknown format": append([]byte{9}, good[1:]...),
		"truncated text": good[:len(good)-3],
		"trailing bytes": append(append([]byte(nil), good...), 'x'),
		"huge length":    append(append([]byte(nil), good[:33]...), 0xff, 0xff, 0xff, 0xff, 0x0f),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			var tok tokenstore.Token
			if err := tok.UnmarshalBinary(b); err == nil {
				t.Fatal("corrupt record decoded without error")
			}
		})
	}
	var tok tokenstore.Token
	if err := tok.UnmarshalBinary(good); err != nil || !equal(&tok, sample(t0)) {
		t.Fatalf("good record: %v, %v", err, &tok)
	}
}

func TestToken_ManyScopes(t *testing.T) {
	tok := sample(t0)
	tok.Scopes = strings.Fields("a b c d e f g h i j k")
	b, _ := tok.MarshalBinary()
	var got tokenstore.Token
	if err := got.UnmarshalBinary(b); err != nil || !equal(&got, tok) {
		t.Fatalf("got %v, %v", &got, err)
	}
}
