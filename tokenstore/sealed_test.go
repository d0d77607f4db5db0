package tokenstore_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tasknation/tokengate/tokenstore"
	"github.com/tasknation/tokengate/tokenstore/storetest"
)

// testKey is a fixed 32-byte key named by label.
func testKey(label string) []byte {
	k := sha256.Sum256([]byte("tokenstore test key " + label))
	return k[:]
}

// Credentials that must never appear at rest.
const (
	secretAccess  = storetest.SecretAccess
	secretRefresh = storetest.SecretRefresh
)

var secretSample = storetest.SecretSample

// inners are the stores Sealed is used over; raw returns every byte the
// store keeps for the test (empty for stores that cannot be inspected).
var inners = []struct {
	name string
	new  func(t testing.TB, c *clock) (s tokenstore.Store, raw func() []byte)
}{
	{"memory", func(t testing.TB, c *clock) (tokenstore.Store, func() []byte) {
		m := newStore(t, c.Now)
		return m, nil
	}},
	{"file", func(t testing.TB, c *clock) (tokenstore.Store, func() []byte) {
		dir := t.TempDir()
		return newFileStore(t, dir, c.Now), func() []byte {
			var all []byte
			filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					b, _ := os.ReadFile(path)
					all = append(all, b...)
				}
				return nil
			})
			return all
		}
	}},
}

func newSealed(t testing.TB, inner tokenstore.Store, key []byte, older ...[]byte) *tokenstore.Sealed {
	t.Helper()
	s, err := tokenstore.NewSealed(inner, key, older...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// keyID is the key id of key, as the sealed format defines it.
func keyID(key []byte) [4]byte {
	sum := sha256.Sum256(append([]byte("tokengate sealed key id\x00"), key...))
	return [4]byte(sum[:4])
}

// sealedKeyIDs returns the key ids that the credentials of the set stored
// in inner under key name, access token first.
func sealedKeyIDs(t *testing.T, inner tokenstore.Store, key string) [2][4]byte {
	t.Helper()
	raw, err := inner.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	var ids [2][4]byte
	for i, v := range []string{raw.AccessToken, raw.RefreshToken} {
		enc, ok := strings.CutPrefix(v, "tgs1.")
		blob, err := base64.RawURLEncoding.DecodeString(enc)
		if !ok || err != nil || len(blob) < 4 {
			t.Fatalf("credential %d of %q is not a sealed value", i, key)
		}
		ids[i] = [4]byte(blob[:4])
	}
	return ids
}

func TestSealed_RoundTrip(t *testing.T) {
	ctx := context.Background()
	toks := []struct {
		name string
		tok  func() *tokenstore.Token
	}{
		{"full set", func() *tokenstore.Token { return secretSample(t0) }},
		{"access token only", func() *tokenstore.Token {
			tok := secretSample(t0)
			tok.RefreshToken, tok.RefreshExpiry = "", time.Time{}
			return tok
		}},
		{"refresh token only", func() *tokenstore.Token {
			tok := secretSample(t0)
			tok.AccessToken, tok.Expiry = "", time.Time{}
			return tok
		}},
		{"large access token, many scopes", func() *tokenstore.Token {
			tok := secretSample(t0)
			tok.AccessToken = "eyJ" + strings.Repeat("x.Y-z_0", 1200)
			tok.Scopes = strings.Fields("a b c d e f g h i j k l m n o p")
			return tok
		}},
		{"with connect time (format 2)", func() *tokenstore.Token {
			tok := secretSample(t0)
			tok.ConnectedAt = t0.Add(-24 * time.Hour)
			return tok
		}},
		{"one-byte credentials", func() *tokenstore.Token {
			tok := secretSample(t0)
			tok.AccessToken, tok.RefreshToken = "a", "r"
			return tok
		}},
	}
	for _, in := range inners {
		for _, tt := range toks {
			t.Run(in.name+"/"+tt.name, func(t *testing.T) {
				inner, _ := in.new(t, newClock(t0))
				s := newSealed(t, inner, testKey("one"))
				want := tt.tok()
				orig := *want
				if err := s.Set(ctx, "user-1", want); err != nil {
					t.Fatal(err)
				}
				if !equal(want, &orig) {
					t.Fatal("Set modified its argument")
				}
				raw, err := inner.Get(ctx, "user-1")
				if err != nil {
					t.Fatal(err)
				}
				for _, v := range []string{raw.AccessToken, raw.RefreshToken} {
					if v != "" && !strings.HasPrefix(v, "tgs1.") {
						t.Fatalf("inner store holds an unsealed credential of %d bytes", len(v))
					}
				}
				if (raw.AccessToken == "") != (want.AccessToken == "") || (raw.RefreshToken == "") != (want.RefreshToken == "") {
					t.Fatal("sealing changed which credentials are present")
				}
				got, err := s.Get(ctx, "user-1")
				if err != nil {
					t.Fatal(err)
				}
				if !equal(got, want) {
					t.Fatalf("got %v, want %v", got, want)
				}
				// A second Sealed with the same key (a restart) opens it too.
				if got, err := newSealed(t, inner, testKey("one")).Get(ctx, "user-1"); err != nil || !equal(got, want) {
					t.Fatalf("after restart: %v, %v", got, err)
				}
				if err := s.Delete(ctx, "user-1"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Get(ctx, "user-1"); !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("after delete: %v", err)
				}
			})
		}
	}
}

func TestSealed_ExpiryCheckedOnRead(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		advance time.Duration
		found   bool
	}{{59 * time.Minute, true}, {2 * time.Hour, true}, {181 * 24 * time.Hour, false}}
	for _, in := range inners {
		for _, tt := range tests {
			t.Run(in.name+"/"+tt.advance.String(), func(t *testing.T) {
				c := newClock(t0)
				inner, _ := in.new(t, c)
				s := newSealed(t, inner, testKey("one"))
				if err := s.Set(ctx, "k", secretSample(t0)); err != nil {
					t.Fatal(err)
				}
				c.Advance(tt.advance)
				got, err := s.Get(ctx, "k")
				if tt.found && (err != nil || !equal(got, secretSample(t0))) {
					t.Fatalf("Get = %v, %v", got, err)
				}
				if !tt.found && !errors.Is(err, tokenstore.ErrNotFound) {
					t.Fatalf("Get = %v, %v; want ErrNotFound", got, err)
				}
			})
		}
	}
}

func TestSealed_NothingInClearAtRest(t *testing.T) {
	ctx := context.Background()
	for _, in := range inners {
		t.Run(in.name, func(t *testing.T) {
			inner, raw := in.new(t, newClock(t0))
			s := newSealed(t, inner, testKey("one"))
			for _, k := range []string{"a", "b", "c"} {
				if err := s.Set(ctx, k, secretSample(t0)); err != nil {
					t.Fatal(err)
				}
			}
			var rest []byte
			if raw != nil {
				rest = raw()
			}
			for _, k := range []string{"a", "b", "c"} {
				tok, err := inner.Get(ctx, k)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := tok.MarshalBinary()
				rest = append(rest, b...)
			}
			for _, secret := range []string{secretAccess, secretRefresh, "S3CRET", base64.StdEncoding.EncodeToString([]byte(secretAccess))[:16]} {
				if bytes.Contains(rest, []byte(secret)) {
					t.Fatalf("%q found at rest", secret)
				}
			}
			if !bytes.Contains(rest, []byte("offline_access")) {
				t.Fatal("the test did not look at the stored records (scopes are kept in clear)")
			}
		})
	}
}

func TestSealed_FreshNonces(t *testing.T) {
	ctx := context.Background()
	inner := newStore(t, newClock(t0).Now)
	s := newSealed(t, inner, testKey("one"))
	seen := map[string]bool{}
	for range 20 {
		if err := s.Set(ctx, "k", secretSample(t0)); err != nil {
			t.Fatal(err)
		}
		raw, err := inner.Get(ctx, "k")
		if err != nil {
			t.Fatal(err)
		}
		if seen[raw.AccessToken] || seen[raw.RefreshToken] {
			t.Fatal("the same plaintext sealed twice to the same ciphertext")
		}
		seen[raw.AccessToken], seen[raw.RefreshToken] = true, true
	}
}

// TestSealed_OpenFailures edits what the inner store holds, as someone with
// write access to it could, and checks each edit is refused.
func TestSealed_OpenFailures(t *testing.T) {
	ctx := context.Background()
	// replaceAt changes the base64 character at i of a sealed value (away
	// from the last one, whose low bits may be padding).
	replaceAt := func(v string, i int) string {
		c := byte('A')
		if v[i] == 'A' {
			c = 'B'
		}
		return v[:i] + string(c) + v[i+1:]
	}
	tests := []struct {
		name string
		// edit changes the raw token stored under "k"; it may instead
		// move it and return the key to read.
		edit func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string
		want error
	}{
		{"sealed with another key", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			other := newSealed(t, inner, testKey("three"))
			if err := other.Set(ctx, "k", secretSample(t0)); err != nil {
				t.Fatal(err)
			}
			return "k"
		}, tokenstore.ErrWrongKey},
		{"moved to another key", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			if err := inner.Set(ctx, "someone-else", raw); err != nil {
				t.Fatal(err)
			}
			return "someone-else"
		}, tokenstore.ErrTampered},
		{"access and refresh swapped", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken, raw.RefreshToken = raw.RefreshToken, raw.AccessToken
			return ""
		}, tokenstore.ErrTampered},
		{"access ciphertext edited", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken = replaceAt(raw.AccessToken, len(raw.AccessToken)-10)
			return ""
		}, tokenstore.ErrTampered},
		{"refresh nonce edited", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.RefreshToken = replaceAt(raw.RefreshToken, len("tgs1.")+8)
			return ""
		}, tokenstore.ErrTampered},
		{"key id edited", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken = replaceAt(raw.AccessToken, len("tgs1."))
			return ""
		}, tokenstore.ErrWrongKey},
		{"key id of the store's other key", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			// The value now names a key the store has, but not the one
			// that sealed it.
			blob, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(raw.RefreshToken, "tgs1."))
			if err != nil {
				t.Fatal(err)
			}
			id := keyID(testKey("two"))
			copy(blob, id[:])
			raw.RefreshToken = "tgs1." + base64.RawURLEncoding.EncodeToString(blob)
			return ""
		}, tokenstore.ErrTampered},
		{"ciphertext truncated", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken = raw.AccessToken[:len(raw.AccessToken)-4]
			return ""
		}, tokenstore.ErrTampered},
		{"shorter than a tag", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.RefreshToken = raw.RefreshToken[:len("tgs1.")+20]
			return ""
		}, tokenstore.ErrTampered},
		{"bad base64", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken = "tgs1.!!not base64!!"
			return ""
		}, tokenstore.ErrTampered},
		{"access expiry extended", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.Expiry = raw.Expiry.Add(24 * time.Hour)
			return ""
		}, tokenstore.ErrTampered},
		{"refresh expiry extended", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.RefreshExpiry = raw.RefreshExpiry.Add(365 * 24 * time.Hour)
			return ""
		}, tokenstore.ErrTampered},
		{"version changed", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.Version++
			return ""
		}, tokenstore.ErrTampered},
		{"scope added", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.Scopes = append(raw.Scopes, "admin")
			return ""
		}, tokenstore.ErrTampered},
		{"token type changed", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.TokenType = "MAC"
			return ""
		}, tokenstore.ErrTampered},
		{"clear-text token planted", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.AccessToken = "tn_at_planted"
			return ""
		}, tokenstore.ErrNotSealed},
		{"refresh token removed", func(t *testing.T, inner tokenstore.Store, raw *tokenstore.Token) string {
			raw.RefreshToken = ""
			return ""
		}, nil}, // allowed: deleting a credential needs no key, and yields no token it did not have
	}
	for _, in := range inners {
		for _, tt := range tests {
			t.Run(in.name+"/"+tt.name, func(t *testing.T) {
				inner, _ := in.new(t, newClock(t0))
				// The store's older key "two" opens only what it sealed.
				s := newSealed(t, inner, testKey("one"), testKey("two"))
				if err := s.Set(ctx, "k", secretSample(t0)); err != nil {
					t.Fatal(err)
				}
				raw, err := inner.Get(ctx, "k")
				if err != nil {
					t.Fatal(err)
				}
				key := tt.edit(t, inner, raw)
				if key == "" {
					key = "k"
					if err := inner.Set(ctx, key, raw); err != nil {
						t.Fatal(err)
					}
				}
				got, err := s.Get(ctx, key)
				if tt.want == nil {
					if err != nil || got.AccessToken != secretAccess || got.RefreshToken != "" {
						t.Fatalf("Get = %v, %v", got, err)
					}
					return
				}
				if !errors.Is(err, tt.want) {
					t.Fatalf("Get = %v, %v; want %v", got, err, tt.want)
				}
				msg := err.Error()
				t.Log(msg)
				if !strings.HasPrefix(msg, "tokenstore: ") || strings.Contains(msg, "S3CRET") || strings.Contains(msg, "tgs1.") {
					t.Fatalf("bad error message: %s", msg)
				}
				if _, err := inner.Get(ctx, key); err != nil {
					t.Fatalf("the record was not left in place: %v", err)
				}
			})
		}
	}
}

// TestSealed_Rotation walks a key rotation over each inner store: sets
// sealed with the old key open once the new key is added before it, stay
// sealed with the old key until written again, are sealed with the new
// key by the next Set or CompareAndSet, and then open with the new key
// alone; a store with only the old key no longer opens them.
func TestSealed_Rotation(t *testing.T) {
	ctx := context.Background()
	oldKey, newKey := testKey("old"), testKey("new")
	for _, in := range inners {
		t.Run(in.name, func(t *testing.T) {
			inner, _ := in.new(t, newClock(t0))
			before := newSealed(t, inner, oldKey)
			users := []string{"set", "cas", "idle"}
			for _, u := range users {
				if err := before.Set(ctx, u, secretSample(t0)); err != nil {
					t.Fatal(err)
				}
			}

			during := newSealed(t, inner, newKey, oldKey)
			for _, u := range users {
				got, err := during.Get(ctx, u)
				if err != nil || !equal(got, secretSample(t0)) {
					t.Fatalf("%s: Get with the new key first = %v, %v", u, got, err)
				}
				if ids := sealedKeyIDs(t, inner, u); ids != [2][4]byte{keyID(oldKey), keyID(oldKey)} {
					t.Fatalf("%s: a read rewrote the set (key ids %x)", u, ids)
				}
			}
			next := secretSample(t0)
			next.AccessToken, next.RefreshToken = "tn_at_S3CRET-next", "tn_rt_S3CRET-next"
			if err := during.Set(ctx, "set", next); err != nil {
				t.Fatal(err)
			}
			cas := *next
			cas.Version++
			err := during.CompareAndSet(ctx, "cas", secretSample(t0).Version, &cas)
			if errors.Is(err, errors.ErrUnsupported) { // the memory store
				err = during.Set(ctx, "cas", &cas)
			}
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]*tokenstore.Token{"set": next, "cas": &cas, "idle": secretSample(t0)}
			sealedWith := map[string][]byte{"set": newKey, "cas": newKey, "idle": oldKey}
			for _, u := range users {
				if ids := sealedKeyIDs(t, inner, u); ids != [2][4]byte{keyID(sealedWith[u]), keyID(sealedWith[u])} {
					t.Errorf("%s: key ids %x, want both %x", u, ids, keyID(sealedWith[u]))
				}
				if got, err := during.Get(ctx, u); err != nil || !equal(got, want[u]) {
					t.Errorf("%s: Get during the rotation = %v, %v", u, got, err)
				}
			}

			// The old key retired: what was written again opens; the set
			// never written since opens with no key, and is left in place.
			after := newSealed(t, inner, newKey)
			for _, u := range []string{"set", "cas"} {
				if got, err := after.Get(ctx, u); err != nil || !equal(got, want[u]) {
					t.Errorf("%s: Get with the new key alone = %v, %v", u, got, err)
				}
				if _, err := before.Get(ctx, u); !errors.Is(err, tokenstore.ErrWrongKey) {
					t.Errorf("%s: Get with the old key alone = %v, want ErrWrongKey", u, err)
				}
			}
			if _, err := after.Get(ctx, "idle"); !errors.Is(err, tokenstore.ErrWrongKey) {
				t.Errorf("idle: Get with the new key alone = %v, want ErrWrongKey", err)
			}
			if _, err := inner.Get(ctx, "idle"); err != nil {
				t.Errorf("idle: the set that did not open was not left in place: %v", err)
			}
		})
	}
}

// TestSealed_OpensWithEveryKey: a set sealed with any of a store's keys
// opens, whatever the key's place in the list.
func TestSealed_OpensWithEveryKey(t *testing.T) {
	ctx := context.Background()
	keys := [][]byte{testKey("a"), testKey("b"), testKey("c"), testKey("d")}
	inner := newStore(t, newClock(t0).Now)
	s := newSealed(t, inner, keys[0], keys[1:]...)
	for i, k := range keys {
		user := fmt.Sprint("user-", i)
		if err := newSealed(t, inner, k).Set(ctx, user, secretSample(t0)); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, user); err != nil || !equal(got, secretSample(t0)) {
			t.Errorf("sealed with key %d of %d: Get = %v, %v", i+1, len(keys), got, err)
		}
	}
	if err := newSealed(t, inner, testKey("e")).Set(ctx, "other", secretSample(t0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "other"); !errors.Is(err, tokenstore.ErrWrongKey) {
		t.Errorf("sealed with none of the keys: Get = %v, want ErrWrongKey", err)
	}
}

func TestNewSealed_Errors(t *testing.T) {
	inner := newStore(t, newClock(t0).Now)
	tests := []struct {
		name  string
		inner tokenstore.Store
		key   []byte
	}{
		{"nil inner", nil, testKey("one")},
		{"nil key", inner, nil},
		{"AES-128 key", inner, make([]byte, 16)},
		{"31 bytes", inner, make([]byte, 31)},
		{"33 bytes", inner, make([]byte, 33)},
		{"64 bytes", inner, make([]byte, 64)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tokenstore.NewSealed(tt.inner, tt.key)
			if err == nil || s != nil {
				t.Fatalf("NewSealed = %v, %v", s, err)
			}
			if !strings.HasPrefix(err.Error(), "tokenstore: ") {
				t.Fatalf("error %q", err)
			}
		})
	}
	one, two, three := testKey("one"), testKey("two"), testKey("three")
	several := []struct {
		name  string
		keys  [][]byte
		error string // the whole message
	}{
		{"older key short", [][]byte{one, two[:16]},
			"tokenstore: sealed: key 2 of 2 is 16 bytes, want 32 (AES-256)"},
		{"older key nil", [][]byte{one, two, nil},
			"tokenstore: sealed: key 3 of 3 is 0 bytes, want 32 (AES-256)"},
		{"the same key twice", [][]byte{one, one},
			"tokenstore: sealed: key 2 of 2 repeats key 1 of 2"},
		{"an older key twice", [][]byte{one, two, three, bytes.Clone(two)},
			"tokenstore: sealed: key 4 of 4 repeats key 2 of 4"},
		{"five keys", [][]byte{one, two, three, testKey("four"), testKey("five")},
			"tokenstore: sealed: 5 keys, want at most 4 (the key that seals and the older keys that still open)"},
	}
	for _, tt := range several {
		t.Run(tt.name, func(t *testing.T) {
			s, err := tokenstore.NewSealed(inner, tt.keys[0], tt.keys[1:]...)
			if err == nil || s != nil {
				t.Fatalf("NewSealed = %v, %v", s, err)
			}
			if err.Error() != tt.error {
				t.Fatalf("error %q, want %q", err, tt.error)
			}
		})
	}
	if _, err := tokenstore.NewSealed(inner, one, two, three, testKey("four")); err != nil {
		t.Fatalf("NewSealed with %d keys: %v", tokenstore.MaxSealKeys, err)
	}
	if _, err := newSealed(t, inner, testKey("one")).Lock(context.Background(), "k"); !errors.Is(err, tokenstore.ErrLockUnsupported) {
		t.Fatalf("Lock over a MemoryStore: %v", err)
	}
}

func TestParseKey(t *testing.T) {
	// 0xfb 0xff... encodes with '+' and '/' in the standard alphabet.
	key := bytes.Repeat([]byte{0xfb, 0xff, 0xbf}, 11)[:32]
	ok := map[string]string{
		"standard":                base64.StdEncoding.EncodeToString(key),
		"standard, unpadded":      base64.RawStdEncoding.EncodeToString(key),
		"URL":                     base64.URLEncoding.EncodeToString(key),
		"URL, unpadded":           base64.RawURLEncoding.EncodeToString(key),
		"trailing newline":        base64.StdEncoding.EncodeToString(key) + "\n",
		"surrounding white space": "  " + base64.StdEncoding.EncodeToString(key) + "\t",
	}
	if !strings.ContainsAny(ok["standard"], "+/") || !strings.ContainsAny(ok["URL"], "-_") {
		t.Fatal("the test key does not tell the alphabets apart")
	}
	for name, in := range ok {
		t.Run(name, func(t *testing.T) {
			got, err := tokenstore.ParseKey(in)
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("ParseKey = %x, %v", got, err)
			}
			if _, err := tokenstore.NewSealed(newStore(t, newClock(t0).Now), got); err != nil {
				t.Fatal(err)
			}
		})
	}
	bad := map[string]string{
		"empty":               "",
		"white space":         " \n ",
		"not base64":          "correct horse battery staple is not a key!!",
		"mixed alphabets":     strings.Replace(ok["standard"], "+", "-", 1),
		"16 bytes":            base64.StdEncoding.EncodeToString(key[:16]),
		"31 bytes":            base64.StdEncoding.EncodeToString(key[:31]),
		"33 bytes":            base64.StdEncoding.EncodeToString(append(key, 1)),
		"hex, not base64":     strings.Repeat("ab", 32),
		"inner white space":   ok["standard"][:20] + " " + ok["standard"][20:],
		"truncated character": ok["standard, unpadded"][:len(ok["standard, unpadded"])-1],
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			got, err := tokenstore.ParseKey(in)
			if err == nil {
				t.Fatalf("ParseKey accepted it: %x", got)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "tokenstore: ") {
				t.Fatalf("error %q", msg)
			}
			if s := strings.TrimSpace(in); len(s) >= 8 && (strings.Contains(msg, s) || strings.Contains(msg, s[:8])) {
				t.Fatalf("the error echoes the key: %s", msg)
			}
		})
	}
}
