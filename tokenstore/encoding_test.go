package tokenstore_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
)

// v1Record is a set in format 1 as written before ConnectedAt existed,
// built by hand from the documented layout.
func v1Record(tok *tokenstore.Token, scopes string) []byte {
	b := []byte{1}
	for _, ts := range []time.Time{tok.Expiry, tok.RefreshExpiry, tok.ObtainedAt} {
		b = binary.BigEndian.AppendUint64(b, uint64(ts.UnixNano()))
	}
	b = binary.BigEndian.AppendUint64(b, tok.Version)
	for _, s := range []string{tok.AccessToken, tok.TokenType, tok.RefreshToken, scopes} {
		b = binary.AppendUvarint(b, uint64(len(s)))
	}
	for _, s := range []string{tok.AccessToken, tok.TokenType, tok.RefreshToken, scopes} {
		b = append(b, s...)
	}
	return b
}

func TestToken_Format1StaysFormat1(t *testing.T) {
	tok := sample(t0)
	old := v1Record(tok, "supply::businesses supply::leads offline_access")
	var got tokenstore.Token
	if err := got.UnmarshalBinary(old); err != nil {
		t.Fatalf("a format 1 record does not decode: %v", err)
	}
	if !equal(&got, tok) || !got.ConnectedAt.IsZero() {
		t.Fatalf("decoded %v (connected at %v), want %v and no connect time", got, got.ConnectedAt, tok)
	}
	// A set without a connect time is written exactly as before: Sealed's
	// additional data is this encoding.
	again, _ := got.MarshalBinary()
	if !bytes.Equal(again, old) {
		t.Fatalf("a set without a connect time re-encodes differently:\n old %x\n new %x", old, again)
	}
}

func TestToken_ConnectedAtRoundTrip(t *testing.T) {
	tok := sample(t0)
	tok.ConnectedAt = t0.Add(-48 * time.Hour)
	b, _ := tok.MarshalBinary()
	if b[0] != 2 {
		t.Fatalf("format %d, want 2 for a set with a connect time", b[0])
	}
	var got tokenstore.Token
	if err := got.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if !equal(&got, tok) {
		t.Fatalf("decoded %v connected at %v, want connected at %v", got, got.ConnectedAt, tok.ConnectedAt)
	}
	for _, bad := range [][]byte{
		b[:34],                                   // header cut inside the connect time
		append([]byte{2}, make([]byte, 40+4)...), // format 2 with a zero connect time
	} {
		if err := new(tokenstore.Token).UnmarshalBinary(bad); err == nil {
			t.Errorf("corrupt format 2 record %x decoded", bad)
		}
	}
}

// A set sealed before ConnectedAt existed (format 1 additional data) opens,
// and a connect time edited at rest fails authentication.
func TestSealed_ConnectTime(t *testing.T) {
	ctx := context.Background()
	c := newClock(t0)
	key := bytes.Repeat([]byte{7}, tokenstore.SealKeySize)
	inner := newStore(t, c.Now)
	s := newSealed(t, inner, key)

	old := secretSample(t0)
	if err := s.Set(ctx, "user:old", old); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "user:old")
	if err != nil || !equal(got, old) {
		t.Fatalf("a set without a connect time: %v, %v", got, err)
	}

	tok := secretSample(t0)
	tok.ConnectedAt = t0.Add(-time.Hour)
	if err := s.Set(ctx, "user:new", tok); err != nil {
		t.Fatal(err)
	}
	raw, err := inner.Get(ctx, "user:new")
	if err != nil {
		t.Fatal(err)
	}
	raw.ConnectedAt = raw.ConnectedAt.Add(-time.Hour)
	if err := inner.Set(ctx, "user:new", raw); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "user:new"); !errors.Is(err, tokenstore.ErrTampered) {
		t.Fatalf("edited connect time: err = %v, want ErrTampered", err)
	}
}
