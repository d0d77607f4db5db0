package caddyfile_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/tasknation/tokengate/middleware/tasknationtest"
	"github.com/tasknation/tokengate/tokenstore"
)

// keyThree is a third encryption key, which sealed nothing.
var keyThree = base64.StdEncoding.EncodeToString([]byte("tokengate test key number three3"))

// sealKeyID is the key id of the base64 encryption key b64, as the sealed
// format defines it: the first 4 bytes of
// SHA-256("tokengate sealed key id\x00" || key).
func sealKeyID(t *testing.T, b64 string) [4]byte {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(append([]byte("tokengate sealed key id\x00"), key...))
	return [4]byte(sum[:4])
}

// sealedWith checks that every token set in Caddy's storage, both
// credentials of each, is sealed with the key whose key id is want, and
// that there are n sets.
func (s *userSite) sealedWith(t *testing.T, n int, want [4]byte, when string) {
	t.Helper()
	files := s.tokenFiles(t)
	if len(files) != n {
		t.Fatalf("%s: Caddy's storage holds %d token sets, want %d", when, len(files), n)
	}
	for i, b := range files {
		var tok tokenstore.Token
		if err := tok.UnmarshalBinary(b); err != nil {
			t.Fatalf("%s: token set %d: %v", when, i, err)
		}
		for what, v := range map[string]string{"access token": tok.AccessToken, "refresh token": tok.RefreshToken} {
			enc, ok := strings.CutPrefix(v, "tgs1.")
			blob, err := base64.RawURLEncoding.DecodeString(enc)
			if !ok || err != nil || len(blob) < 4 {
				t.Fatalf("%s: token set %d: the %s is not sealed", when, i, what)
			}
			if got := [4]byte(blob[:4]); got != want {
				t.Errorf("%s: token set %d: the %s is sealed with key id %x, want %x", when, i, what, got, want)
			}
		}
	}
}

// TestUserContext_KeyRotation rotates encryption_key through a real Caddy
// with three connected users, as the README's procedure says:
//
//  1. key OLD: alice, bob and carol connect; their sets are sealed with OLD.
//  2. restart with `encryption_key NEW OLD`: all three are served from the
//     store without connecting again, and reading does not rewrite a set;
//     each user's next refresh (forced: the API revokes the access tokens)
//     reseals the set with NEW.
//  3. restart with `encryption_key NEW`: all three are still served.
//  4. restart with a key that opens nothing: every call is answered 503
//     token_unavailable and not forwarded, the log names the problem
//     without a key, and nobody is logged out: the sets stay, and the
//     right key serves them again.
func TestUserContext_KeyRotation(t *testing.T) {
	s := newUserSite(t)
	users := []struct {
		site *siteUser
		tn   string
	}{{s.user(t, "alice"), "tn-alice"}, {s.user(t, "bob"), "tn-bob"}, {s.user(t, "carol"), "tn-carol"}}
	allServed := func(when string) {
		t.Helper()
		for _, u := range users {
			u.site.mustCallAPIAs(t, u.tn)
		}
		if n := s.fake.TokenRequests(tasknationtest.GrantAuthorizationCode); n != int64(len(users)) {
			t.Fatalf("%s: code exchanges = %d, want still %d: a user had to connect again", when, n, len(users))
		}
	}
	restart := func(o userOptions) {
		t.Helper()
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
		s.start(o)
	}
	oldKey, newKey := keyOne, keyTwo
	rotating := userOptions{extra: "\t\tstore caddy\n\t\tencryption_key {env.TOKENGATE_KEY} {env.TOKENGATE_OLD_KEY}\n"}
	single := userOptions{extra: "\t\tstore caddy\n\t\tencryption_key {env.TOKENGATE_KEY}\n"}

	// 1. Sealed with OLD.
	t.Setenv("TOKENGATE_KEY", oldKey)
	s.start(single)
	for _, u := range users {
		u.site.connect(t, u.tn)
	}
	allServed("connected with OLD")
	s.sealedWith(t, len(users), sealKeyID(t, oldKey), "connected with OLD")

	// 2. NEW seals, OLD still opens. A restart: nothing in memory, every
	// user is read from the store, with OLD.
	t.Setenv("TOKENGATE_KEY", newKey)
	t.Setenv("TOKENGATE_OLD_KEY", oldKey)
	restart(rotating)
	allServed("after the restart with NEW OLD")
	if n := s.fake.TokenRequests(tasknationtest.GrantRefreshToken); n != 0 {
		t.Fatalf("refreshes = %d, want 0: the access tokens are valid", n)
	}
	s.sealedWith(t, len(users), sealKeyID(t, oldKey), "read, not refreshed, with NEW OLD")

	// Each user's next refresh: the API revokes the access tokens (once
	// they are old enough for the gateway to replace a refused one), the
	// gateway refreshes, stores the set and replays the call.
	tokenAgePasses()
	if n := s.fake.RevokeAllAccessTokens(); n != len(users) {
		t.Fatalf("revoked %d access tokens, want %d", n, len(users))
	}
	allServed("refreshed with NEW OLD")
	if n := s.fake.TokenRequests(tasknationtest.GrantRefreshToken); n != int64(len(users)) {
		t.Fatalf("refreshes = %d, want one per user (%d)", n, len(users))
	}
	// The new set is stored before its access token is used: the calls
	// above have returned, so every set is stored, sealed with NEW.
	s.sealedWith(t, len(users), sealKeyID(t, newKey), "refreshed with NEW OLD")

	// 3. OLD retired.
	t.Setenv("TOKENGATE_OLD_KEY", "")
	restart(single)
	allServed("after the restart with NEW alone")
	if n := s.fake.TokenRequests(tasknationtest.GrantRefreshToken); n != int64(len(users)) {
		t.Errorf("refreshes = %d, want still %d: the access tokens are valid", n, len(users))
	}

	// 4. A key that opens nothing.
	logFile := filepath.Join(s.dir, "caddy.log")
	t.Setenv("TOKENGATE_KEY", keyThree)
	before := s.tokenFiles(t)
	restart(userOptions{extra: single.extra, log: logFile})
	for _, u := range users {
		_, e := u.site.mustBeRefused(t, http.StatusServiceUnavailable, "token_unavailable")
		if e.Description != "no valid access token: the token store could not be read" {
			t.Errorf("%s: error_description %q, want that the token store could not be read", u.site.name, e.Description)
		}
	}
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	logs, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(logs, []byte("token store read failed")) || !bytes.Contains(logs, []byte("token sealed with a different key")) {
		t.Errorf("Caddy's log does not say that the token store could not be read for a wrong key:\n%s", logs)
	}
	for _, secret := range []string{oldKey, newKey, keyThree, tasknationtest.AccessTokenPrefix, tasknationtest.RefreshTokenPrefix} {
		if bytes.Contains(logs, []byte(secret)) {
			t.Errorf("Caddy's log shows a key or a token (%.6s...)", secret)
		}
	}
	if after := s.tokenFiles(t); len(after) != len(before) {
		t.Fatalf("Caddy's storage holds %d token sets after the wrong key, want the %d it had: a user was logged out", len(after), len(before))
	} else {
		for i := range after {
			if !bytes.Equal(after[i], before[i]) {
				t.Errorf("token set %d changed under a key that opens nothing", i)
			}
		}
	}
	// The right key back: everyone is served as before.
	t.Setenv("TOKENGATE_KEY", newKey)
	s.start(single)
	allServed("with NEW back")
}
